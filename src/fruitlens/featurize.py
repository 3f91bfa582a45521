"""Distributor for the embedding step. Local folders are listed on the driver; object stores
are listed inside Spark tasks, one per class prefix. Each embedding task reads, decodes and embeds
its images (plain-Python mapper) and writes its own Parquet part files; the driver then publishes
both datasets. One pass over the images, nothing collected but file names and counts.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from . import FruitlensError, backbones, model_store
from .config import FeaturizeConfig
from .listing import ImageRef, Listing, list_images, list_prefix, plan_prefixes
from .mapper import MapperSettings, MapperStats, Record, embed_records
from .progress import spark_progress
from .storage import configure, is_local, normalize, s3_options, storage_errors
from .writer import PartWriter, Target, publish

INPUT_SCHEMA = "path string, label string, split string, size_bytes long"
PARTS_SCHEMA = "dataset string, file string, rows long, reasons string"
EMBEDDINGS_SCHEMA = pa.schema(
    [("path", pa.string()), ("label", pa.string()), ("split", pa.string()),
     ("size_bytes", pa.int64()), ("embedding", pa.list_(pa.float32()))]
)
ERRORS_SCHEMA = pa.schema([("path", pa.string()), ("error", pa.string())])
LISTED_SCHEMA = pa.schema([("kind", pa.string()), ("path", pa.string()), ("label", pa.string()),
                           ("split", pa.string()), ("size_bytes", pa.int64())])


@dataclass
class FeaturizeResult:
    listing: Listing
    found: int
    ok: int
    errors: int
    errors_by_reason: dict
    stats: MapperStats
    timings: dict
    model_path: str
    partitions: int
    manifests: dict
    listing_mode: str


def resolve_model(cfg: FeaturizeConfig) -> tuple[backbones.BackboneSpec, str]:
    spec = backbones.get_spec(cfg.backbone)
    return spec, str(model_store.resolve(spec.model_file, cfg.model))


def featurize(spark, cfg: FeaturizeConfig, embeddings: Target, errors: Target, listing: Listing | None = None) -> FeaturizeResult:
    from pyspark import SparkFiles, TaskContext

    cfg.validate()
    spec, model_path = resolve_model(cfg)
    sc = spark.sparkContext
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    prefixes: list[str] = []
    if listing is None:
        with storage_errors(cfg.input, "cannot list INPUT"):
            if is_local(cfg.input):
                listing = list_images(cfg.input)
            else:
                prefixes, listing = plan_prefixes(cfg.input)
    remote_images = None
    found = len(listing.images)
    if prefixes:
        remote_images, remote_found, remote_skipped, listed = _list_in_tasks(spark, prefixes, normalize(cfg.input))
        found += remote_found
        listing.skipped.update(remote_skipped)
    timings["list_s"] = time.perf_counter() - t0
    if found == 0 and not listing.unreadable:
        others = f" ({listing.skipped_total} other files)" if listing.skipped_total else ""
        raise FruitlensError(f"no images (jpg, jpeg, png, webp, bmp) under {cfg.input}{others}")

    # The model travels to every executor with the job (no pre-installed copy needed on workers).
    sc.addFile(model_path)
    model_name = os.path.basename(model_path)
    settings = dict(backbone=spec.name, threads=cfg.threads, batch_size=cfg.batch_size,
                    max_pixels=cfg.max_pixels, io_threads=cfg.io_threads)
    storage = s3_options()
    accumulator = sc.accumulator(MapperStats(), _StatsParam())

    def embed_partition(batches):
        configure(storage)
        context = TaskContext.get()
        partition, attempt = context.partitionId(), context.attemptNumber()
        stats = MapperStats()
        mapper_settings = MapperSettings(model_path=SparkFiles.get(model_name), **settings)
        ok_part = PartWriter(embeddings, EMBEDDINGS_SCHEMA, partition, attempt)
        err_part = PartWriter(errors, ERRORS_SCHEMA, partition, attempt)
        reasons: Counter = Counter()
        records = (
            Record(path=p, label=l, split=s, size_bytes=n)
            for batch in batches
            for p, l, s, n in zip(*(batch.column(i).to_pylist() for i in range(4)))
        )
        for finished in embed_records(records, mapper_settings, stats):
            t0 = time.perf_counter()
            good = [r for r in finished if r.error is None]
            bad = [r for r in finished if r.error is not None]
            ok_part.write(_embeddings_batch(good))
            err_part.write(pa.RecordBatch.from_pydict(
                {"path": [r.path for r in bad], "error": [r.error for r in bad]}, schema=ERRORS_SCHEMA))
            reasons.update(r.error.split(":", 1)[0] for r in bad)
            stats.write_s += time.perf_counter() - t0
        out = {"dataset": [], "file": [], "rows": [], "reasons": []}
        t0 = time.perf_counter()
        closed = [(name, part.close(), why) for name, part, why in
                  (("embeddings", ok_part, {}), ("errors", err_part, reasons))]
        stats.write_s += time.perf_counter() - t0
        accumulator.add(stats)
        for name, written, why in closed:
            if written:
                for key, value in zip(out, (name, written[0], written[1], json.dumps(why))):
                    out[key].append(value)
        yield pa.RecordBatch.from_pydict(out)

    partitions = max(1, min(found, max(math.ceil(found / cfg.images_per_partition), sc.defaultParallelism)))
    rows = [(r.path, r.label, r.split, r.size_bytes) for r in listing.images]
    paths = spark.createDataFrame(sc.parallelize(rows, max(1, min(partitions, len(rows)))), INPUT_SCHEMA)
    del rows
    if remote_images is not None:
        # Round-robin after a sort (Spark's default), so a retried task sees the same rows.
        paths = paths.unionByName(remote_images).repartition(partitions)

    t0 = time.perf_counter()
    with spark_progress(spark, f"embedding {found:,} images"):
        parts = paths.mapInArrow(embed_partition, PARTS_SCHEMA).collect() if found else []
    timings["embed_wall_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if listing.unreadable:  # folders that could not be listed are errors too
        writer = PartWriter(errors, ERRORS_SCHEMA, partitions, 0)
        writer.write(pa.RecordBatch.from_pydict(
            {"path": [p for p, _ in listing.unreadable], "error": [e for _, e in listing.unreadable]},
            schema=ERRORS_SCHEMA))
        name, n = writer.close()
        parts.append({"dataset": "errors", "file": name, "rows": n,
                      "reasons": json.dumps(Counter(e.split(":", 1)[0] for _, e in listing.unreadable))})
    reasons: Counter = Counter()
    files: dict[str, list] = {"embeddings": [], "errors": []}
    for part in parts:
        files[part["dataset"]].append((part["file"], part["rows"]))
        reasons.update(json.loads(part["reasons"]))
    manifests = {}
    with storage_errors(embeddings.output, "cannot write OUTPUT"):
        manifests["embeddings"] = publish(embeddings, files["embeddings"], EMBEDDINGS_SCHEMA)
        manifests["errors"] = publish(errors, files["errors"], ERRORS_SCHEMA)
    timings["publish_s"] = time.perf_counter() - t0

    if remote_images is not None:
        listed.unpersist()
    ok = manifests["embeddings"]["rows"]
    n_errors = manifests["errors"]["rows"]
    if ok + n_errors != found + len(listing.unreadable):  # every input exactly once, or say so
        raise FruitlensError(f"internal error: {found} inputs but {ok} embeddings + {n_errors} errors")
    return FeaturizeResult(
        listing=listing, found=found, ok=ok, errors=n_errors, errors_by_reason=dict(reasons.most_common()),
        stats=accumulator.value, timings=timings, model_path=model_path, partitions=partitions, manifests=manifests,
        listing_mode=f"in tasks, {len(prefixes)} prefixes" if prefixes else "driver",
    )


def _list_in_tasks(spark, prefixes: list[str], root: str):
    """List the keys under each prefix inside Spark tasks. Returns the images as a DataFrame
    (never collected), their count, the other files by extension, and the persisted listing."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    storage = s3_options()

    def list_partition(batches):
        configure(storage)
        for batch in batches:
            for prefix in batch.column(0).to_pylist():
                rows = {"kind": [], "path": [], "label": [], "split": [], "size_bytes": []}
                for item in list_prefix(prefix, root):
                    image = isinstance(item, ImageRef)
                    rows["kind"].append("image" if image else "other")
                    rows["path"].append(item.path if image else item)
                    rows["label"].append(item.label if image else None)
                    rows["split"].append(item.split if image else None)
                    rows["size_bytes"].append(item.size_bytes if image else 0)
                yield pa.RecordBatch.from_pydict(rows, schema=LISTED_SCHEMA)

    sc = spark.sparkContext
    listed = (
        spark.createDataFrame([(p,) for p in prefixes], "prefix string")
        .repartition(min(len(prefixes), sc.defaultParallelism * 4))
        .mapInArrow(list_partition, "kind string, path string, label string, split string, size_bytes long")
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    with spark_progress(spark, f"listing {len(prefixes):,} prefixes"):
        counts = listed.groupBy("kind", F.when(F.col("kind") == "other", F.col("path")).alias("ext")).count().collect()
    found = sum(r["count"] for r in counts if r["kind"] == "image")
    skipped = Counter({r["ext"]: r["count"] for r in counts if r["kind"] == "other"})
    images = listed.filter(F.col("kind") == "image").select("path", "label", "split", "size_bytes")
    return images, found, skipped, listed


def _embeddings_batch(records: list[Record]) -> pa.RecordBatch:
    n = len(records)
    flat = np.concatenate([r.embedding for r in records]).astype(np.float32, copy=False) if n else np.zeros(0, np.float32)
    dim = len(flat) // n if n else 0
    offsets = pa.array(np.arange(0, n * dim + 1, dim or 1, dtype=np.int32)[: n + 1])
    return pa.RecordBatch.from_arrays(
        [
            pa.array([r.path for r in records], pa.string()),
            pa.array([r.label for r in records], pa.string()),
            pa.array([r.split for r in records], pa.string()),
            pa.array([r.size_bytes for r in records], pa.int64()),
            pa.ListArray.from_arrays(offsets, pa.array(flat, pa.float32())),
        ],
        schema=EMBEDDINGS_SCHEMA,
    )


class _StatsParam:
    """Spark AccumulatorParam summing MapperStats from every task."""

    def zero(self, value: MapperStats) -> MapperStats:
        return MapperStats()

    def addInPlace(self, a: MapperStats, b: MapperStats) -> MapperStats:
        return a.merge(b)
