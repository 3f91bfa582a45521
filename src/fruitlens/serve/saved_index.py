"""The similar-images index built once and saved beside the embeddings: `fruitlens index OUTPUT
--model MODEL` writes `OUTPUT/index/`, `serve --ann` memory-maps it.

- `hnsw.usearch`: a usearch HNSW graph of every embedding of `OUTPUT/embeddings`, projected into the
  model's input space and L2-normalised (inner product = cosine, as the exact search), stored as
  float16 (`--dtype`, half the memory of float32 for the same neighbours); each image's key is its
  id (the first 64 bits of the sha256 of its path, the id the API shows).
- `entries.parquet`: key, path, label, split, path_bytes and the image's identity (size, mtime,
  ETag), sorted by key: a key's image is found by binary search, with no dict of a million
  Python objects at start-up.
- `projection.npy` (with `--dims N` below the model's inputs, the default: 256 of the product's
  1,992): the model's inputs, L2-normalised, are projected on the N principal axes of the model's
  own reference features (uncentred, the directions of their dot products) and normalised again; a
  query is projected the same way. A million-image graph is then ~0.5 GB of float16 instead of
  ~4 GB, and each distance ~8x cheaper, with about the same neighbours (docs/benchmarks.md,
  "Similar photos": the share of same-species neighbours on GroceryStore val at 1,992 and 256).
- `_SUCCESS`: the manifest, whose params name the model it was built for (a fingerprint of its
  scaler and projection), the embeddings' params, the dimensions, the reduction's fingerprint and
  the dtype.

A rerun is incremental: images new since the last build are added, those removed or changed are
removed (and changed ones added again), the graph is saved under a new name and published with its
manifest, so a running `serve` keeps the old one until it restarts. `serve` opens the graph with
`view=True` (memory-mapped: the operating system pages it in as searches touch it) and starts in
about a second whatever its size (docs/benchmarks.md, "Index").
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import FruitlensError
from ..config import INDEX_DIMS
from ..engine.model import PortableModel, one_blas_thread
from ..storage.dataset import Dataset
from ..storage.location import Location, S3Options
from ..storage.publish import publish_tree
from ..storage.writer import Target, new_run_id
from .entries import ID_PATTERN, Entry, Neighbour, image_id, read_image

INDEX = "index"
GRAPH = "hnsw.usearch"
ENTRIES = "entries.parquet"
PROJECTION = "projection.npy"
DTYPES = ("f16", "f32", "i8")
ENTRY_COLUMNS = ("path", "label", "split", "path_bytes", "size_bytes", "modified_ns", "etag")


def image_key(path: str) -> int:
    """The image's key: its API id (16 hex digits of the sha256 of its path) as a 64-bit integer."""
    return int(image_id(path), 16)


def model_fingerprint(model: PortableModel) -> str:
    """What the index's vectors depend on: the model's scaler and projection."""
    h = hashlib.sha256()
    for array in (model.mean, model.std, model.projection if model.projection is not None else np.zeros(0)):
        h.update(np.ascontiguousarray(array, np.float64).tobytes())
    return h.hexdigest()[:16]


def reduction(model: PortableModel, dims: int) -> np.ndarray | None:
    """(d, dims) float32: the top `dims` principal axes (uncentred) of the model's reference
    features, which sample the space the index lives in; None when the inputs have no more than
    `dims` values (or dims is 0)."""
    refs = np.asarray(model.refs, np.float64)
    d = refs.shape[1]
    if dims <= 0 or d <= dims:
        return None
    values, axes = np.linalg.eigh(refs.T @ refs)
    basis = axes[:, np.argsort(values)[::-1][:dims]]
    basis *= np.where(basis[np.abs(basis).argmax(axis=0), np.arange(dims)] < 0, -1.0, 1.0)  # one sign per axis
    return np.ascontiguousarray(basis, np.float32)


def project(vectors: np.ndarray, basis: np.ndarray | None) -> np.ndarray:
    """Rows of the model's inputs -> the index's unit vectors (normalised, projected, normalised)."""
    v = np.asarray(vectors, np.float32)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    if basis is not None:
        v = v @ basis
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(v, np.float32)


def index_params(model: PortableModel, embedding_params: dict, dtype: str, basis: np.ndarray | None = None) -> dict:
    params = {
        "model": model_fingerprint(model),
        "embeddings": embedding_params,
        "dtype": dtype,
        "space": "the model's inputs, L2-normalised; inner product",
    }
    if basis is not None:
        params["dims"] = int(basis.shape[1])
        params["reduction"] = hashlib.sha256(basis.tobytes()).hexdigest()[:16]
        params["space"] = "the model's inputs, L2-normalised, on the references' top principal axes, normalised"
    return params


def build(output: Location, model: PortableModel, dtype: str = "f16", say=print, dims: int = INDEX_DIMS) -> dict:
    """Build or update OUTPUT/index for `model`; the report (added, removed, kept, seconds)."""
    from usearch.index import Index

    if dtype not in DTYPES:
        raise FruitlensError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype}")
    t0 = time.perf_counter()
    embeddings = Dataset.at(output / "embeddings")
    if not embeddings.published:
        raise FruitlensError(
            f"no embeddings dataset at {embeddings.location.uri} (give a folder `fruitlens run` or `featurize` wrote)"
        )
    model.check_embeddings(embeddings.params, "the embeddings")
    basis = reduction(model, dims)
    params = index_params(
        model, {k: v for k, v in embeddings.params.items() if k not in ("views", "crop")}, dtype, basis
    )
    table = embeddings.table(ENTRY_COLUMNS)
    if table.num_rows == 0:
        raise FruitlensError(f"{(output / 'embeddings').uri} holds no embeddings")
    keys = np.array([image_key(p) for p in table.column("path").to_pylist()], np.uint64)
    if len(np.unique(keys)) != len(keys):
        raise FruitlensError("two images of the embeddings share a key (the same path twice)")
    identity = _identity(table)
    previous = Dataset.at(output / INDEX).manifest
    work = tempfile.mkdtemp(prefix="fruitlens-index-")
    try:
        graph_path = os.path.join(work, GRAPH)
        reuse = previous is not None and previous.params == params
        if reuse:
            with (output / INDEX / GRAPH).open("rb") as src, open(graph_path, "wb") as dst:
                shutil.copyfileobj(src, dst, 16 << 20)
            index = Index.restore(graph_path)
            old = Dataset.at(output / INDEX / ENTRIES).table()
            old_identity = dict(zip(old.column("key").to_numpy(zero_copy_only=False).tolist(), _identity(old)))
        else:
            index = Index(
                ndim=_dim(model, basis),
                metric="ip",
                dtype=dtype,
                connectivity=16,
                expansion_add=128,
                expansion_search=64,
            )
            old_identity = {}
        now = dict(zip(keys.tolist(), identity))
        removed = [k for k in old_identity if k not in now]
        changed = [k for k, ident in now.items() if k in old_identity and old_identity[k] != ident]
        added = [k for k in now if k not in old_identity]
        if removed or changed:
            index.remove(np.array(removed + changed, np.uint64))
        _add(index, embeddings, model, set(added) | set(changed), basis)
        index.save(graph_path)
        if basis is not None:
            np.save(os.path.join(work, PROJECTION), basis)
        order = np.argsort(keys)
        entries = table.append_column("key", pa.array(keys, pa.uint64())).take(pa.array(order))
        pq.write_table(entries, os.path.join(work, ENTRIES), compression="zstd")
        target = Target(final=output / INDEX, output=output, run_id=new_run_id())
        publish_tree(work, target, params)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "index": (output / INDEX).uri,
        "images": len(keys),
        "added": len(added),
        "removed": len(removed),
        "changed": len(changed),
        "kept": len(keys) - len(added) - len(changed),
        "incremental": reuse,
        "dtype": dtype,
        "dim": _dim(model, basis),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return report


def _dim(model: PortableModel, basis: np.ndarray | None = None) -> int:
    if basis is not None:
        return int(basis.shape[1])
    return model.projection.shape[1] if model.projection is not None else len(model.mean)


def _identity(table: pa.Table) -> list[tuple]:
    cols = [
        table.column(c).to_pylist() if c in table.column_names else [None] * table.num_rows
        for c in ("size_bytes", "modified_ns", "etag")
    ]
    return list(zip(*cols))


def _add(index, embeddings: Dataset, model: PortableModel, todo: set[int], basis: np.ndarray | None) -> None:
    """Add the embeddings whose keys are in `todo`, one pass over the dataset, projected and added
    a batch (at most 8,192 rows) at a time: memory stays flat."""
    if not todo:
        return
    for batch in embeddings.batches(["path", "embedding"], batch_size=8192):
        keys = np.array([image_key(p) for p in batch.column("path").to_pylist()], np.uint64)
        keep = np.array([int(k) in todo for k in keys], bool)
        if not keep.any():
            continue
        emb = batch.column("embedding").filter(pa.array(keep))
        flat = np.asarray(pc.list_flatten(emb).to_numpy(zero_copy_only=False), np.float32)
        with one_blas_thread():
            v = project(model.inputs(flat.reshape(int(keep.sum()), -1)), basis)
        index.add(keys[keep], v, threads=os.cpu_count() or 1)


class SavedIndex:
    """OUTPUT/index opened for search: the graph memory-mapped, the entries as Arrow columns."""

    def __init__(
        self,
        where: Location,
        index,
        entries: pa.Table,
        s3: S3Options | None,
        local_copy: str | None,
        basis: np.ndarray | None = None,
    ):
        self.where, self.ann, self.entries_table, self.s3 = where, index, entries, s3 or S3Options()
        self.basis = basis
        self.keys = entries.column("key").to_numpy(zero_copy_only=False).astype(np.uint64)
        self._local_copy = local_copy  # an object store's graph copied to a local file to map

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def kind(self) -> str:
        return "approximate (usearch HNSW, saved index memory-mapped)"

    @property
    def dim(self) -> int:
        return int(self.ann.ndim)

    def _row(self, key: int) -> int | None:
        i = int(np.searchsorted(self.keys, np.uint64(key)))
        return i if i < len(self.keys) and int(self.keys[i]) == key else None

    def entry_at(self, row: int) -> Entry:
        get = lambda c: self.entries_table.column(c)[row].as_py() if c in self.entries_table.column_names else None  # noqa: E731
        path, raw = get("path"), get("path_bytes")
        return Entry(
            f"{int(self.keys[row]):016x}",
            path,
            os.fsdecode(raw) if raw is not None else path,
            get("label"),
            get("split"),
        )

    def search(self, inputs: np.ndarray, k: int = 8) -> list[Neighbour]:
        k = min(k, len(self.keys))
        if k <= 0:
            return []
        q = project(np.asarray(inputs, np.float32).reshape(1, -1), self.basis)[0]
        found = self.ann.search(q, k)
        out = []
        for key, distance in zip(np.atleast_1d(found.keys)[:k], np.atleast_1d(found.distances)[:k]):
            row = self._row(int(key))
            if row is not None:
                out.append(Neighbour(self.entry_at(row), float(1.0 - distance)))  # ip distance = 1 - inner product
        return out

    def entry(self, id_: str) -> Entry | None:
        if not isinstance(id_, str) or not ID_PATTERN.match(id_):
            return None
        row = self._row(int(id_, 16))
        return None if row is None else self.entry_at(row)

    def read_image(self, entry: Entry) -> tuple[bytes, str]:
        """The image's bytes and media type. Raises FileNotFoundError when it is gone."""
        return read_image(entry, self.s3)

    @classmethod
    def open(cls, where: Location, model: PortableModel) -> SavedIndex | None:
        """OUTPUT/index when it was built for this model (else None: the caller builds one in memory)."""
        from usearch.index import Index

        manifest = Dataset.at(where / INDEX).manifest
        if manifest is None or manifest.params.get("model") != model_fingerprint(model):
            return None
        local_copy = None
        graph = where / INDEX / GRAPH
        if graph.is_local:
            path = graph.path
        else:  # a mapped file must be local: copied once per start
            fd, local_copy = tempfile.mkstemp(prefix="fruitlens-hnsw-", suffix=".usearch")
            with os.fdopen(fd, "wb") as dst, graph.open("rb") as src:
                shutil.copyfileobj(src, dst, 16 << 20)
            path = local_copy
        index = Index.restore(path, view=True)
        entries = Dataset.at(where / INDEX / ENTRIES).table(["key", "path", "label", "split", "path_bytes"])
        basis = None
        if manifest.params.get("dims"):
            basis = np.load(io.BytesIO((where / INDEX / PROJECTION).read_bytes()))
        return cls(where, index, entries, where.s3, local_copy, basis)
