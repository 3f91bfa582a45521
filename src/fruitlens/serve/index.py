"""The neighbour index: the images of a fruitlens output folder, projected into the classifier's
own feature space, for "the most similar images" to a photo.

`--index` is a folder `fruitlens run`/`featurize` wrote (its `embeddings/` dataset: `path, label,
split, embedding, ...`), or that embeddings dataset itself, local or s3://. It is read with pyarrow
(no Spark), each embedding projected with `PortableModel.inputs` (the model's StandardScaler
[+ PCA]) and L2-normalised, so similarity is the cosine in the space the classifier sees.

Search is exact by default (`nearest.CosineSearch`: a bound from the vectors' principal axes
skips the rows that cannot be among the k nearest; the answer is the full product's). `ann=True`
builds a usearch HNSW graph (inner product on the normalised vectors = cosine) instead: approximate,
sub-linear, what a collection of millions of images would need (see docs/benchmarks.md).

Images are addressed by a stable id only (`entries.image_id`), looked up in a dict. No
client-sent string ever becomes a path.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow.compute as pc

from .. import FruitlensError
from ..engine.model import PortableModel, one_blas_thread
from ..engine.nearest import CosineSearch
from ..storage.dataset import Dataset
from ..storage.location import Location, S3Options
from .entries import ID_PATTERN, Entry, Neighbour, image_id, read_image
from .saved_index import SavedIndex


class NeighbourIndex:
    def __init__(
        self,
        entries: list[Entry],
        vectors: np.ndarray,
        ann: bool = False,
        s3: S3Options | None = None,
        basis: np.ndarray | None = None,
    ):
        """`basis`: principal axes of the feature space for the exact search's bound (the model's
        references' axes: the index is in the same space); None: computed from the vectors."""
        if len(entries) != len(vectors):
            raise ValueError("one vector per entry")
        self.entries = entries
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.by_id = {e.id: i for i, e in enumerate(entries)}
        if len(self.by_id) != len(entries):
            raise FruitlensError("the index holds the same image path twice")
        self.s3 = s3 or S3Options()
        self.ann = None
        self.exact = None
        if not ann:
            self.exact = CosineSearch(self.vectors, basis) if basis is not None else CosineSearch.build(self.vectors)
        elif len(entries):
            from usearch.index import Index

            self.ann = Index(
                ndim=self.vectors.shape[1],
                metric="ip",
                dtype="f32",
                connectivity=16,
                expansion_add=128,
                expansion_search=64,
            )
            # Insertion order shapes an HNSW graph: threads make it vary from run to run (a loaded
            # machine once gave a small index 95% recall instead of 100%). Below 100k images one
            # thread builds it in seconds, the same graph every time.
            threads = 1 if len(entries) < 100_000 else (os.cpu_count() or 1)
            self.ann.add(np.arange(len(entries), dtype=np.uint64), self.vectors, threads=threads)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def kind(self) -> str:
        return "approximate (usearch HNSW)" if self.ann is not None else "exact"

    # -- queries ---------------------------------------------------------------------------------
    def search(self, inputs: np.ndarray, k: int = 8) -> list[Neighbour]:
        """The k indexed images nearest to one photo's classifier inputs (the model's space)."""
        k = min(k, len(self.entries))
        if k <= 0:
            return []
        q = np.asarray(inputs, np.float32).ravel()
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        if self.ann is not None:
            found = self.ann.search(q, k)
            keys = [int(x) for x in np.atleast_1d(found.keys)[:k]]
            # score with the stored vectors: the same similarity figures as the exact search
            return [Neighbour(self.entries[i], float(self.vectors[i] @ q)) for i in keys]
        with one_blas_thread():
            rows, sims = self.exact.top(q, k)
        return [Neighbour(self.entries[i], float(s)) for i, s in zip(rows, sims)]

    def entry(self, id_: str) -> Entry | None:
        if not isinstance(id_, str) or not ID_PATTERN.match(id_):
            return None
        i = self.by_id.get(id_)
        return None if i is None else self.entries[i]

    def read_image(self, entry: Entry) -> tuple[bytes, str]:
        """The image's bytes and media type. Raises FileNotFoundError when it is gone."""
        return read_image(entry, self.s3)

    # -- loading ---------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @classmethod
    def load(cls, where: Location, model: PortableModel, ann: bool = False, say=None):
        """`ann`: the saved index (OUTPUT/index, `fruitlens index`) memory-mapped when it was built
        for this model, else an HNSW graph built here from the embeddings."""
        if ann:
            saved = SavedIndex.open(where, model)
            if saved is not None:
                return saved
            if say is not None:
                say(
                    f"[serve] no saved index of this model in {(where / 'index').uri}: building one in memory "
                    f"(`fruitlens index {where.uri} --model MODEL` saves it once: start-up in seconds)"
                )
        dataset = Dataset.at(where / "embeddings")
        if not dataset.exists:
            dataset = Dataset.at(where)  # the embeddings dataset itself
        if not dataset.exists:
            raise FruitlensError(
                f"--index: no embeddings dataset at {where.uri} (give a folder `fruitlens run` or `featurize` wrote)"
            )
        if dataset.published:
            model.check_embeddings(dataset.params, "--index: the index's embeddings")
        entries: list[Entry] = []
        chunks: list[np.ndarray] = []
        dim = len(model.mean)
        for f, table in dataset.tables(["path", "label", "split", "embedding", "path_bytes"]):
            if "embedding" not in table.column_names or "path" not in table.column_names:
                raise FruitlensError(f"--index: {f.uri} has no path/embedding columns")
            if not len(table):
                continue
            emb = table.column("embedding").combine_chunks()
            flat = np.asarray(pc.list_flatten(emb).to_numpy(zero_copy_only=False), np.float32)
            if len(flat) != len(table) * dim:
                raise FruitlensError(
                    f"--index: embeddings of {len(flat) // max(len(table), 1)} values in {f.uri}, "
                    f"but the model takes {dim}: not made with the model's backbone"
                )
            feats = model.inputs(flat.reshape(len(table), dim)).astype(np.float32)
            feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
            chunks.append(feats)
            paths = table.column("path").to_pylist()
            labels = table.column("label").to_pylist() if "label" in table.column_names else [None] * len(paths)
            splits = table.column("split").to_pylist() if "split" in table.column_names else [None] * len(paths)
            raw = table.column("path_bytes").to_pylist() if "path_bytes" in table.column_names else [None] * len(paths)
            for p, lab, sp, b in zip(paths, labels, splits, raw):
                entries.append(Entry(image_id(p), p, os.fsdecode(b) if b is not None else p, lab, sp))
        vectors = np.concatenate(chunks) if chunks else np.zeros((0, 1), np.float32)
        # The model's references are a sample of the same feature space: their axes bound the index
        # as tightly as the index's own (same pruning on the sample), and cost no eigendecomposition.
        basis = model.refs_search.basis if len(vectors) and vectors.shape[1] == model.refs.shape[1] else None
        return cls(entries, vectors, ann=ann, s3=where.s3, basis=basis)
