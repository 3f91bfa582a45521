"""Distributor for the embedding step: lists on the driver, embeds in Spark tasks, writes Parquet.

Spark is at the edge: tasks call `mapper.embed_records`, which is plain Python.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass

import pyarrow as pa

from . import FruitlensError, backbones, model_store
from .config import FeaturizeConfig
from .listing import Listing, list_images
from .mapper import MapperSettings, MapperStats, Record, embed_records
from .progress import spark_progress
from .storage import spark_uri

INPUT_SCHEMA = "path string, label string, split string, size_bytes long"
RESULT_SCHEMA = "path string, label string, split string, size_bytes long, embedding array<float>, error string"
EMBEDDING_COLUMNS = ["path", "label", "split", "size_bytes", "embedding"]
ERROR_COLUMNS = ["path", "error"]


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


def resolve_model(cfg: FeaturizeConfig) -> tuple[backbones.BackboneSpec, str]:
    spec = backbones.get_spec(cfg.backbone)
    return spec, str(model_store.resolve(spec.model_file, cfg.model))


def featurize(spark, cfg: FeaturizeConfig, embeddings_uri: str, errors_uri: str) -> FeaturizeResult:
    from pyspark import SparkFiles, StorageLevel
    from pyspark.sql import functions as F

    cfg.validate()
    spec, model_path = resolve_model(cfg)
    sc = spark.sparkContext
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    listing = list_images(cfg.input)
    timings["list_s"] = time.perf_counter() - t0
    found = len(listing.images)
    if found == 0 and not listing.unreadable:
        others = f" ({listing.skipped_total} other files)" if listing.skipped_total else ""
        raise FruitlensError(
            f"no images (jpg, jpeg, png, webp, bmp) under {cfg.input}{others}"
        )

    # The model travels to every executor with the job (no pre-installed copy needed on workers).
    sc.addFile(model_path)
    model_name = os.path.basename(model_path)
    settings = dict(
        backbone=spec.name,
        threads=cfg.threads,
        batch_size=cfg.batch_size,
        max_pixels=cfg.max_pixels,
        io_threads=cfg.io_threads,
    )
    accumulator = sc.accumulator(MapperStats(), _StatsParam())

    def embed_partition(batches):
        stats = MapperStats()
        mapper_settings = MapperSettings(model_path=SparkFiles.get(model_name), **settings)
        records = (
            Record(path=p, label=l, split=s, size_bytes=n)
            for batch in batches
            for p, l, s, n in zip(*(batch.column(i).to_pylist() for i in range(4)))
        )
        try:
            for finished in embed_records(records, mapper_settings, stats):
                yield _to_arrow(finished, spec.embedding_dim)
        finally:
            accumulator.add(stats)

    partitions = max(1, min(found, max(math.ceil(found / cfg.images_per_partition), sc.defaultParallelism)))
    rows = [(r.path, r.label, r.split, r.size_bytes) for r in listing.images]
    paths = spark.createDataFrame(sc.parallelize(rows, partitions), INPUT_SCHEMA)
    results = paths.mapInArrow(embed_partition, RESULT_SCHEMA).persist(StorageLevel.DISK_ONLY)

    try:
        t0 = time.perf_counter()
        with spark_progress(spark, f"embedding {found:,} images"):
            results.count() if found else None
        timings["embed_wall_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        with spark_progress(spark, "writing embeddings and errors"):
            ok_rows = results.filter(F.col("error").isNull()).select(*EMBEDDING_COLUMNS)
            ok_rows.write.mode("overwrite").parquet(spark_uri(embeddings_uri))
            error_rows = results.filter(F.col("error").isNotNull()).select(*ERROR_COLUMNS)
            if listing.unreadable:
                error_rows = error_rows.unionByName(spark.createDataFrame(listing.unreadable, "path string, error string"))
            error_rows.coalesce(1).write.mode("overwrite").parquet(spark_uri(errors_uri))
            reasons = Counter(
                {r["reason"]: r["n"] for r in error_rows.groupBy(
                    F.substring_index("error", ":", 1).alias("reason")).agg(F.count("*").alias("n")).collect()}
            )
            ok = ok_rows.count()
        timings["write_s"] = time.perf_counter() - t0
    finally:
        results.unpersist()

    n_errors = sum(reasons.values())
    return FeaturizeResult(
        listing=listing,
        found=found,
        ok=ok,
        errors=n_errors,
        errors_by_reason=dict(reasons.most_common()),
        stats=accumulator.value,
        timings=timings,
        model_path=model_path,
        partitions=partitions,
    )


def _to_arrow(records: list[Record], dim: int) -> pa.RecordBatch:
    import numpy as np

    values = [r.embedding if r.embedding is not None else np.zeros(0, np.float32) for r in records]
    offsets = np.zeros(len(records) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum([len(v) for v in values])
    flat = pa.array(np.concatenate(values) if values else np.zeros(0, np.float32), pa.float32())
    mask = pa.array([r.embedding is None for r in records])
    embedding = pa.ListArray.from_arrays(pa.array(offsets), flat, mask=mask)
    return pa.RecordBatch.from_arrays(
        [
            pa.array([r.path for r in records], pa.string()),
            pa.array([r.label for r in records], pa.string()),
            pa.array([r.split for r in records], pa.string()),
            pa.array([r.size_bytes for r in records], pa.int64()),
            embedding,
            pa.array([r.error for r in records], pa.string()),
        ],
        names=["path", "label", "split", "size_bytes", "embedding", "error"],
    )


class _StatsParam:
    """Spark AccumulatorParam summing MapperStats from every task."""

    def zero(self, value: MapperStats) -> MapperStats:
        return MapperStats()

    def addInPlace(self, a: MapperStats, b: MapperStats) -> MapperStats:
        return a.merge(b)


def stats_dict(stats: MapperStats) -> dict:
    return asdict(stats)
