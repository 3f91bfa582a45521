"""Distributor for the embedding step: the Spark wiring around `runner.run_partition`.

1. List INPUT: local folders on the driver; object stores inside tasks, one per class prefix.
2. Plan (`incremental`): which inputs need embedding, which rows OUTPUT already holds (published,
   or left by an interrupted run) are kept.
3. Embed the rest: each task runs one partition in plain Python and writes its own part files.
4. Rewrite kept files that hold rows no longer wanted; publish both datasets with manifests.

Nothing is collected on the driver but file names, counts, and row numbers to drop.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, replace

import pyarrow as pa

from .. import FruitlensError, schemas
from ..config import EmbedSettings
from ..embedding.embedder import Embedder
from ..schemas import ImageRef
from ..spark.datasets import spark_type
from ..spark.progress import spark_progress
from ..storage.dataset import Dataset
from ..storage.location import Location, storage_errors
from ..storage.publish import Part, publish
from ..storage.writer import Target
from . import incremental
from .listing import Listing, list_local, list_prefix, plan_prefixes
from .mapper import MapperStats
from .runner import EmbedTask, rewrite_part, run_partition, write_problems


@dataclass
class FeaturizeResult:
    listing: Listing
    found: int
    ok: int
    errors: int
    errors_by_reason: dict
    stats: MapperStats
    timings: dict
    backbone_file: str
    partitions: int
    manifests: dict
    listing_mode: str
    changes: dict
    notes: list
    resumed_runs: set


def task_count(images: int, per_task: int, slots: int) -> int:
    """Tasks for `images`: about `per_task` each, rounded up to whole waves of the `slots` (so
    3,000 images on 2 slots are 4 tasks of 750, not 3 that leave one slot idle for a third)."""
    slots = max(1, slots)
    waves = math.ceil(max(math.ceil(images / max(1, per_task)), slots) / slots)
    return max(1, min(images, waves * slots))


def featurize(
    spark,
    cfg: EmbedSettings,
    embedder: Embedder,
    source: Location,
    embeddings: Target,
    errors: Target,
    listing: Listing | None = None,
) -> FeaturizeResult:
    """Every image under `source` through `embedder` (resolved once by the job) into the
    `embeddings` and `errors` datasets. `listing`: what to embed, when already listed (default:
    list `source` now)."""
    timings: dict[str, float] = {}
    params = embedder.params
    embeddings_schema = schemas.embeddings_schema(embedder.views.count > 1)
    targets = {"embeddings": embeddings, "errors": errors}
    (embeddings.staging_root / incremental.RUN_INFO).write_json(
        {"run_id": embeddings.run_id, "command": "featurize", "input": source.uri, "params": params}
    )
    with _timed(timings, "list_s"):
        listed = _list(spark, source, listing)
    listing, found = listed.listing, listed.found
    if found == 0 and not listing.problems:
        others = f" ({listing.skipped_total} other files)" if listing.skipped_total else ""
        raise FruitlensError(f"no images (jpg, jpeg, png, webp, bmp) under {source.uri}{others}")
    with _timed(timings, "plan_s"):
        planned = _plan(spark, cfg, embeddings, params, listed)
    plan = planned.plan
    embedded = _embed(spark, cfg, embedder, source, targets, plan)
    timings["embed_wall_s"] = embedded.wall_s
    with _timed(timings, "rewrite_s"):
        parts = embedded.parts + _rewritten(spark, plan, targets, listing, embedded.partitions, embeddings_schema)
    with _timed(timings, "publish_s"):
        manifests = _publish(plan, parts, targets, embeddings_schema, params, found + len(listing.problems))
    plan.release()
    if listed.persisted is not None:
        listed.persisted.unpersist()

    ok = manifests["embeddings"]["rows"]
    n_errors = manifests["errors"]["rows"]
    if ok + n_errors != found + len(listing.problems):  # every input exactly once, or say so
        raise FruitlensError(
            f"internal error: {found + len(listing.problems)} inputs but {ok} embeddings + {n_errors} errors"
        )
    return FeaturizeResult(
        listing=listing,
        found=found,
        ok=ok,
        errors=n_errors,
        errors_by_reason=_reasons(errors.final) if n_errors else {},
        stats=embedded.stats,
        timings=timings,
        backbone_file=embedder.file,
        partitions=embedded.partitions if plan.n_embed else 0,
        manifests=manifests,
        listing_mode=listed.mode,
        changes={**plan.counts, "embedded": plan.n_embed},
        notes=planned.notes,
        resumed_runs=planned.resumed_runs,
    )


# -- the stages ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Listed:
    rows: object  # DataFrame of INPUT rows
    found: int
    listing: Listing  # what the driver saw (the tasks' other files added to `skipped`)
    mode: str  # "driver" | "in tasks, N prefixes"
    persisted: object | None  # the listing the tasks made, persisted until the end (None: listed by the driver)


@dataclass(frozen=True)
class _Planned:
    plan: incremental.Plan
    notes: list[str]
    resumed_runs: set[str]  # the interrupted runs rows are taken from


@dataclass(frozen=True)
class _Embedded:
    parts: list[dict]  # (dataset, file, rows) of each part file the tasks wrote
    partitions: int  # the tasks the images were (or would have been) spread over
    stats: MapperStats  # summed over the tasks
    wall_s: float  # the embedding job's seconds


def _list(spark, source: Location, listing: Listing | None = None) -> _Listed:
    """The INPUT rows as a DataFrame: listed by the driver (local folders, or `listing` given), or
    inside tasks, one per class prefix (object stores)."""
    with storage_errors(source, "cannot list INPUT"):
        if listing is not None:
            prefixes = []
        elif source.is_local:
            listing = list_local(source)
            prefixes = []
        else:
            prefixes, listing = plan_prefixes(source)
    names = schemas.INPUT.names
    rows = [tuple(r.row()[n] for n in names) for r in listing.images]
    found = len(rows)
    df = spark.createDataFrame(
        spark.sparkContext.parallelize(rows, max(1, min(found // 2048, 64))) if rows else [], spark_type(schemas.INPUT)
    )
    del rows
    if not prefixes:
        return _Listed(df, found, listing, "driver", None)
    images, remote_found, remote_skipped, listed = _list_in_tasks(spark, prefixes, source)
    listing.skipped.update(remote_skipped)
    return _Listed(df.unionByName(images), found + remote_found, listing, f"in tasks, {len(prefixes)} prefixes", listed)


def _plan(spark, cfg: EmbedSettings, embeddings: Target, params: dict, listed: _Listed) -> _Planned:
    """Which inputs to embed and which rows OUTPUT holds (published, or left by interrupted runs) are kept."""
    if cfg.incremental:
        sources, notes = incremental.find_sources(embeddings.output, params, embeddings.run_id)
    else:
        sources, notes = [], ["--full: every image embedded again"]
    with spark_progress(spark, "comparing with what OUTPUT holds") if sources else _nothing():
        plan = incremental.plan(spark, listed.rows, listed.found, sources)
    return _Planned(plan, notes, {s.run_id for s in sources if s.origin == "resumed"})


def _embed(
    spark, cfg: EmbedSettings, embedder: Embedder, source: Location, targets: dict[str, Target], plan: incremental.Plan
) -> _Embedded:
    """The images the plan names embedded in tasks, each writing its own part files."""
    from pyspark import SparkFiles, TaskContext

    sc = spark.sparkContext
    # The backbone file travels to every executor with the job (no pre-installed copy needed on workers).
    sc.addFile(embedder.file)
    file_name = os.path.basename(embedder.file)
    task = EmbedTask(
        input=source,
        embeddings=targets["embeddings"],
        errors=targets["errors"],
        embedder=embedder,
        batch_size=cfg.batch_size,
        io_threads=cfg.io_threads,
    )
    accumulator = sc.accumulator(MapperStats(), _StatsParam())

    def embed_partition(batches):
        context = TaskContext.get()
        local_task = replace(task, embedder=task.embedder.at_file(SparkFiles.get(file_name)))
        rows = (row for batch in batches for row in batch.to_pylist())
        result = run_partition(local_task, rows, context.partitionId(), context.attemptNumber())
        accumulator.add(result.stats)
        yield _parts_batch(result.parts)

    partitions = task_count(plan.n_embed, cfg.images_per_partition, sc.defaultParallelism)
    t0 = time.perf_counter()
    parts: list[dict] = []
    if plan.n_embed:
        to_embed = plan.to_embed.select(*schemas.INPUT.names).repartition(partitions)
        with spark_progress(spark, f"embedding {plan.n_embed:,} images"):
            embedded = to_embed.mapInArrow(embed_partition, spark_type(schemas.PARTS))
            parts = [r.asDict() for r in embedded.collect()]
    return _Embedded(parts, partitions, accumulator.value, time.perf_counter() - t0)


def _rewritten(
    spark, plan: incremental.Plan, targets: dict[str, Target], listing: Listing, partitions: int, embeddings_schema
) -> list[dict]:
    """The part files of kept files rewritten without the rows no longer wanted, and of the errors
    the listing met (a file it could not read is an error row too)."""
    parts = _rewrite(spark, plan.rewrite, targets, partitions, embeddings_schema) if plan.rewrite else []
    if listing.problems:
        written = write_problems(targets["errors"], listing.problems, partitions + len(plan.rewrite) + 1)
        if written:
            parts.append({"dataset": "errors", "file": written[0], "rows": written[1]})
    return parts


def _publish(
    plan: incremental.Plan,
    parts: list[dict],
    targets: dict[str, Target],
    embeddings_schema,
    params: dict,
    expected: int,
) -> dict:
    """Both datasets published with their manifests (the new part files and the kept ones), once
    every one of the `expected` inputs is in exactly one row; their manifests as JSON."""
    files: dict[str, list[Part]] = {"embeddings": [], "errors": []}
    for part in parts:
        files[part["dataset"]].append(Part(part["file"], part["rows"], targets[part["dataset"]].staging / part["file"]))
    for src, rows in plan.keep:
        files[src.dataset].append(Part(src.name, rows, src.location))
    publishing = sum(p.rows for parts_ in files.values() for p in parts_)
    if publishing != expected:  # every input exactly once, checked before anything is published
        raise FruitlensError(
            f"internal error: {expected} inputs but {publishing} rows to publish; nothing was published"
        )
    manifests = {}
    with storage_errors(targets["embeddings"].output, "cannot write OUTPUT"):
        for name, schema in (("embeddings", embeddings_schema), ("errors", schemas.ERRORS)):
            manifests[name] = publish(targets[name], files[name], schema, params).to_json()
    return manifests


def _list_in_tasks(spark, prefixes: list[Location], root: Location):
    """List the keys under each prefix inside Spark tasks. Returns the images as a DataFrame
    (never collected), their count, the other files by extension, and the persisted listing."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    def list_partition(batches):
        for batch in batches:
            for i in batch.column(0).to_pylist():
                rows = []
                for item in list_prefix(prefixes[i], root):
                    if isinstance(item, ImageRef):
                        rows.append({"kind": "image", **item.row()})
                    else:
                        rows.append({"kind": "other", "path": item})
                yield pa.RecordBatch.from_pylist(rows, schema=schemas.LISTED)

    sc = spark.sparkContext
    listed = (
        spark.createDataFrame([(i,) for i in range(len(prefixes))], "prefix int")
        .repartition(min(len(prefixes), sc.defaultParallelism * 4))
        .mapInArrow(list_partition, spark_type(schemas.LISTED))
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    with spark_progress(spark, f"listing {len(prefixes):,} prefixes"):
        counts = listed.groupBy("kind", F.when(F.col("kind") == "other", F.col("path")).alias("ext")).count().collect()
    found = sum(r["count"] for r in counts if r["kind"] == "image")
    skipped = Counter({r["ext"]: r["count"] for r in counts if r["kind"] == "other"})
    images = listed.filter(F.col("kind") == "image").select(*schemas.INPUT.names)
    return images, found, skipped, listed


def _rewrite(spark, rewrites, targets: dict, first_partition: int, embeddings_schema) -> list[dict]:
    """Copy-on-write of kept part files holding rows no longer wanted, inside tasks."""
    from pyspark import TaskContext

    schema_of = {"embeddings": embeddings_schema, "errors": schemas.ERRORS}

    def rewrite_partition(batches):
        attempt = TaskContext.get().attemptNumber()
        out = []
        for batch in batches:
            for i in batch.column(0).to_pylist():
                src, drop = rewrites[i]
                written = rewrite_part(
                    src.location, targets[src.dataset], schema_of[src.dataset], drop, first_partition + i, attempt
                )
                if written:
                    out.append((src.dataset, written[0], written[1]))
        yield _parts_batch(out)

    index = spark.createDataFrame([(i,) for i in range(len(rewrites))], "i int")
    index = index.repartition(max(1, min(len(rewrites), spark.sparkContext.defaultParallelism * 2)))
    with spark_progress(spark, f"rewriting {len(rewrites):,} part files without removed rows"):
        return [r.asDict() for r in index.mapInArrow(rewrite_partition, spark_type(schemas.PARTS)).collect()]


def _reasons(errors: Location) -> dict:
    """Error rows by reason, read from the published errors dataset (small)."""
    counts: Counter = Counter()
    for _, table in Dataset.at(errors).tables(["reason"]):
        counts.update(table.column("reason").to_pylist())
    return dict(counts.most_common())


def _parts_batch(parts) -> pa.RecordBatch:
    """(dataset, file, rows) of each part file a task wrote, for the driver."""
    return pa.RecordBatch.from_pylist([dict(zip(schemas.PARTS.names, p)) for p in parts], schema=schemas.PARTS)


@contextmanager
def _timed(timings: dict[str, float], key: str):
    """timings[key]: the seconds the block took."""
    t0 = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - t0


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _StatsParam:
    """Spark AccumulatorParam summing MapperStats from every task."""

    def zero(self, value: MapperStats) -> MapperStats:
        return MapperStats()

    def addInPlace(self, a: MapperStats, b: MapperStats) -> MapperStats:
        return a.merge(b)
