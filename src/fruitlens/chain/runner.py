"""Runner: one partition's work in plain Python, no Spark — read, decode, embed the partition's
images, write its Parquet part files into the run's staging area, and say what it wrote.

`featurize` wires this into Spark (one call per task); tests call it directly with a fake
backbone and a temporary folder.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import schemas
from ..config import FeaturizeConfig
from ..embedding.embedder import Embedder
from ..storage.location import Location
from ..storage.writer import PartWriter, Target
from .mapper import MapperStats, Record, embed_records


@dataclass(frozen=True)
class EmbedTask:
    """Everything an embedding task needs; picklable, so it travels into Spark tasks as it is."""

    input: Location  # INPUT, whose filesystem (and S3 options) reads remote images
    embeddings: Target
    errors: Target
    embedder: Embedder
    batch_size: int = FeaturizeConfig.batch_size
    io_threads: int = FeaturizeConfig.io_threads


@dataclass
class PartitionResult:
    parts: list[tuple[str, str, int]] = field(default_factory=list)  # (dataset, file name, rows)
    reasons: Counter = field(default_factory=Counter)  # error rows written, by reason
    stats: MapperStats = field(default_factory=MapperStats)


def run_partition(task: EmbedTask, rows: Iterable[dict], partition: int, attempt: int) -> PartitionResult:
    """Embed one partition's images (INPUT rows); good ones go to an embeddings part, failures
    (with a reason) to an errors part. Every row handed in ends in exactly one of the two."""
    result = PartitionResult()
    stats = result.stats
    views = task.embedder.views.count > 1
    ok_part = PartWriter(task.embeddings, schemas.embeddings_schema(views), partition, attempt)
    err_part = PartWriter(task.errors, schemas.ERRORS, partition, attempt)
    fs = None if task.input.is_local else task.input.fs
    records = (Record(schemas.ImageRef.from_row(r)) for r in rows)
    for finished in embed_records(
        records, task.embedder, stats, batch_size=task.batch_size, io_threads=task.io_threads, fs=fs
    ):
        t0 = time.perf_counter()
        good = [r for r in finished if r.reason is None]
        bad = [r for r in finished if r.reason is not None]
        ok_part.write(embeddings_batch(good, views))
        err_part.write(errors_batch(bad))
        result.reasons.update(r.reason for r in bad)
        stats.write_s += time.perf_counter() - t0
    t0 = time.perf_counter()
    for name, part in (("embeddings", ok_part), ("errors", err_part)):
        written = part.close()
        if written:
            result.parts.append((name, *written))
    stats.write_s += time.perf_counter() - t0
    return result


def embeddings_batch(records: list[Record], views: bool = False) -> pa.RecordBatch:
    """Embedding rows: every column but `embedding` (and `views`) is the image's own (schemas.ImageRef)."""
    schema = schemas.embeddings_schema(views)
    computed = {"embedding": _lists([r.embedding for r in records])}
    if views:
        per_photo = [len(r.views) for r in records]
        offsets = pa.array(np.concatenate([[0], np.cumsum(per_photo)]).astype(np.int32))
        inner = _lists([v for r in records for v in r.views])
        computed["views"] = pa.ListArray.from_arrays(offsets, inner)
    return pa.RecordBatch.from_arrays(
        [
            computed[f.name] if f.name in computed else pa.array([getattr(r, f.name) for r in records], f.type)
            for f in schema
        ],
        schema=schema,
    )


def _lists(vectors) -> pa.ListArray:
    """float32 vectors of one length as an Arrow list<float> array, without a Python loop per value."""
    n = len(vectors)
    dim = len(vectors[0]) if n else 0
    flat = np.concatenate(vectors).astype(np.float32, copy=False) if n else np.zeros(0, np.float32)
    offsets = pa.array(np.arange(0, n * dim + 1, dim or 1, dtype=np.int32)[: n + 1])
    return pa.ListArray.from_arrays(offsets, pa.array(flat, pa.float32()))


def errors_batch(records) -> pa.RecordBatch:
    """Error rows from Records or listing Problems (anything with path, reason, detail, ...)."""
    get = lambda name: [getattr(r, name, None) for r in records]  # noqa: E731
    return pa.RecordBatch.from_pydict({f.name: get(f.name) for f in schemas.ERRORS}, schema=schemas.ERRORS)


def write_problems(target: Target, problems: list, partition: int) -> tuple[str, int] | None:
    """Error rows for what the listing found unreadable (driver side, one part file)."""
    part = PartWriter(target, schemas.ERRORS, partition, 0)
    part.write(errors_batch(problems))
    return part.close()


def rewrite_part(
    source: Location, target: Target, schema: pa.Schema, drop_rows: list[int], partition: int, attempt: int
) -> tuple[str, int] | None:
    """Copy-on-write of a kept part file that holds rows no longer wanted (inputs removed or
    changed since): the other rows, as they are, into a new part. No image is read again."""
    with source.open("rb") as f:
        table = pq.read_table(f)
    mask = np.ones(table.num_rows, dtype=bool)
    mask[np.asarray(drop_rows, dtype=np.int64)] = False
    part = PartWriter(target, schema, partition, attempt)
    part.write(table.filter(pa.array(mask)).cast(schema))
    return part.close()
