"""Incremental runs and resume: decide, from what OUTPUT already holds, which inputs must be
embedded and which rows can be kept as they are.

Sources of reusable rows:
- the published `embeddings` and `errors` datasets, when their manifest's `params` (backbone,
  model sha256, input size, --max-pixels) equal this run's;
- complete part files left in `OUTPUT/_staging/<run>/` by a run that died (driver killed, machine
  lost), when that run's `_run.json` names the same params. A part file is complete once its
  Parquet footer is written, so a file cut short by the crash is simply not used.

An input is *unchanged* when a source row has exactly its identity (path, size, modification time,
ETag: `schemas.IDENTITY`); error rows are reused only for content reasons (an unreadable or missing
file is tried again). Each current input takes at most one source row. A source file all of whose
rows are taken is kept by reference (local: hard link; S3: stays where it is); a file with rows no
longer wanted (removed or changed inputs) is rewritten without them (copy-on-write, no image read
again); a file with none is dropped. Everything runs in Spark: the driver only collects per-file
counts and the (few) row numbers to drop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from .. import schemas
from ..spark.datasets import spark_type
from ..storage.dataset import Dataset
from ..storage.location import Location
from ..storage.writer import STAGING

RUN_INFO = "_run.json"
DATASETS = ("embeddings", "errors")


@dataclass(frozen=True)
class SourceFile:
    dataset: str  # "embeddings" | "errors"
    location: Location
    origin: str  # "published" | "resumed"
    run_id: str

    @property
    def name(self) -> str:
        return self.location.name


@dataclass
class Plan:
    to_embed: object  # DataFrame of INPUT rows to read and embed
    n_embed: int
    keep: list[tuple[SourceFile, int]] = field(default_factory=list)  # whole files kept: (file, rows)
    rewrite: list[tuple[SourceFile, list[int]]] = field(default_factory=list)  # (file, row numbers to drop)
    counts: dict = field(default_factory=dict)
    cached: list = field(default_factory=list)  # DataFrames persisted for the plan; see release()

    def release(self) -> None:
        for df in self.cached:
            df.unpersist()


def find_sources(output: Location, params: dict, current_run: str) -> tuple[list[SourceFile], list[str]]:
    """Reusable part files under OUTPUT: published (same params) and left by interrupted runs."""
    sources: list[SourceFile] = []
    notes: list[str] = []
    for dataset in DATASETS:
        manifest = Dataset.at(output / dataset).manifest
        if manifest is None:
            continue
        if manifest.params != params:
            notes.append(
                f"previous {dataset} not reused: made with other settings ({_difference(manifest.params, params)})"
            )
            continue
        sources += [
            SourceFile(dataset, output / dataset / f["path"], "published", manifest.run_id)
            for f in manifest.files
            if f.get("rows")
        ]
    staging = output / STAGING
    if not staging.exists():
        return sources, notes
    fs = staging.fs
    for info in sorted(fs.ls(staging.path, detail=True), key=lambda i: i["name"]):
        run = staging.child(info["name"])
        if info.get("type") != "directory" or run.name == current_run:
            continue
        try:
            info = json.loads((run / RUN_INFO).read_bytes())
        except (OSError, ValueError):  # no run info (not a featurize run), or unreadable
            continue
        if info.get("params") != params:
            notes.append(f"interrupted run {run.name} not resumed: made with other settings")
            continue
        for dataset in DATASETS:
            folder = run / dataset
            if not folder.exists():
                continue
            for path in sorted(fs.find(folder.path)):
                if path.endswith(".parquet"):
                    sources.append(SourceFile(dataset, run.child(path), "resumed", run.name))
    return sources, notes


def _difference(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    return "; ".join(changed) or "no params recorded"


IDENTITY_ROWS = pa.schema(
    [
        pa.field("src", pa.int32()),
        pa.field("row", pa.int64()),
        *schemas.IDENTITY_FIELDS,
        pa.field("reusable", pa.bool_()),
    ]
)


def read_identities(sources: list[SourceFile], indices):
    """Inside a task: the identity of every row of the given source files. A file that cannot be
    read whole (cut short by a crash) yields one row with row = -1."""
    for i in indices:
        src = sources[i]
        columns = schemas.IDENTITY + (["reason"] if src.dataset == "errors" else [])
        try:
            with src.location.open("rb") as f:
                table = pq.ParquetFile(f).read(columns=columns)
        except Exception:  # noqa: BLE001 - incomplete or unreadable: not a source
            yield pa.RecordBatch.from_pydict(
                {**{f.name: [None] for f in IDENTITY_ROWS}, "src": [i], "row": [-1]}, schema=IDENTITY_ROWS
            )
            continue
        n = table.num_rows
        if src.dataset == "errors":
            reasons = table.column("reason").to_pylist()
            reusable = [r in schemas.CONTENT_REASONS for r in reasons]
        else:
            reusable = [True] * n
        arrays = {
            "src": pa.array([i] * n, pa.int32()),
            "row": pa.array(range(n), pa.int64()),
            **{c: table.column(c) for c in schemas.IDENTITY},
            "reusable": pa.array(reusable, pa.bool_()),
        }
        yield from pa.Table.from_pydict(arrays, schema=IDENTITY_ROWS).to_batches(max_chunksize=65536)


def plan(spark, current, n_current: int, sources: list[SourceFile]) -> Plan:
    """What to embed and what to keep. `current`: DataFrame of this run's INPUT rows.

    One full outer join of the current inputs with every source row on the path, one window per
    path, persisted; then one aggregation and (when some files are partly kept) one small collect.
    """
    from pyspark.sql import functions as F

    counts = {
        "found": n_current,
        "new": n_current,
        "changed": 0,
        "retried": 0,
        "removed": 0,
        "unchanged": 0,
        "resumed_rows": 0,
        "resumed_files": 0,
        "kept_files": 0,
        "rewritten_files": 0,
        "dropped_files": 0,
        "incomplete_files": 0,
    }
    if not sources:
        return Plan(to_embed=current, n_embed=n_current, counts=counts)
    published = [i for i, s in enumerate(sources) if s.origin == "published"]
    decided = _decided(spark, current, sources, published)
    summary = decided.groupBy("action", "category", "src", (F.col("row") < 0).alias("incomplete")).count().collect()
    for r in summary:
        if r["category"] in ("changed", "retried", "removed"):
            counts[r["category"]] += r["count"]
    n_embed = sum(r["count"] for r in summary if r["action"] == "embed")
    files = _files(summary, sources)
    drops: dict[int, list[int]] = {i: [] for i in files.partial}
    if files.partial:
        dropped = decided.filter((F.col("action") != "keep") & F.col("src").isin(files.partial))
        for r in dropped.select("src", "row").collect():
            drops[r["src"]].append(r["row"])
    rewrite = [(sources[i], sorted(drops[i])) for i in files.partial]
    resumed = {r["src"]: r["count"] for r in summary if r["action"] == "keep" and r["src"] not in published}
    n_new = sum(r["count"] for r in summary if r["category"] == "new")
    counts.update(
        new=n_new,
        unchanged=n_current - n_embed,
        resumed_rows=sum(resumed.values()),
        resumed_files=len(resumed),
        kept_files=len(files.keep),
        rewritten_files=len(rewrite),
        dropped_files=files.dropped,
        incomplete_files=files.incomplete,
    )
    to_embed = decided.filter(F.col("action") == "embed").select(*schemas.INPUT.names)
    return Plan(to_embed=to_embed, n_embed=n_embed, keep=files.keep, rewrite=rewrite, counts=counts, cached=[decided])


def _decided(spark, current, sources: list[SourceFile], published: list[int]):
    """Every current input and every source row, joined on the path, each with its `action` (keep,
    embed, drop) and `category` (unchanged, new, changed, retried, removed); persisted."""
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    def read(batches):
        for batch in batches:
            yield from read_identities(sources, batch.column(0).to_pylist())

    index = spark.createDataFrame([(i,) for i in range(len(sources))], "src int")
    index = index.repartition(max(1, min(len(sources), spark.sparkContext.defaultParallelism * 4)))
    rank = F.col("src").isin(published).cast("int") if published else F.lit(0)
    version = ["size_bytes", "modified_ns", "etag"]
    prev = index.mapInArrow(read, spark_type(IDENTITY_ROWS)).select(
        "src",
        "row",
        "path",
        "path_bytes",
        F.struct(*version).alias("p_version"),
        "reusable",
        (1 - rank).alias("p_rank"),
    )
    cur = current.select(*schemas.INPUT.names, F.struct(*version).alias("c_version"))
    on = cur["path"].eqNullSafe(prev["path"]) & cur["path_bytes"].eqNullSafe(prev["path_bytes"])
    joined = cur.join(prev, on, "full_outer").select(
        F.coalesce(cur["path"], prev["path"]).alias("key"),
        F.coalesce(cur["path_bytes"], prev["path_bytes"]).alias("key_bytes"),
        *[cur[c] for c in schemas.INPUT.names],
        "c_version",
        "src",
        "row",
        "p_version",
        "reusable",
        "p_rank",
    )
    same = F.col("c_version").eqNullSafe(F.col("p_version")) & F.col("c_version").isNotNull()
    match = same & F.coalesce(F.col("reusable"), F.lit(False))
    by_path = Window.partitionBy("key", "key_bytes")
    ordered = by_path.orderBy(match.desc(), F.col("p_rank"), F.col("src"), F.col("row"))
    return (
        joined.withColumn("match", match)
        .withColumn("first", F.row_number().over(ordered) == 1)
        .withColumn("any_match", F.max(match.cast("int")).over(by_path) == 1)
        .withColumn("pub_same", F.max((same & (F.col("p_rank") == 0)).cast("int")).over(by_path) == 1)
        .withColumn("pub_known", F.max((F.col("p_rank") == 0).cast("int")).over(by_path) == 1)
        .withColumn(
            "action",
            F.when(F.col("c_version").isNull(), F.lit("drop"))  # input removed
            .when(F.col("first") & F.col("match"), F.lit("keep"))
            .when(F.col("first"), F.lit("embed"))
            .otherwise(F.lit("drop")),
        )
        .withColumn(
            "category",
            F.when(F.col("action") == "keep", F.lit("unchanged"))
            .when(
                F.col("c_version").isNull() & (F.col("p_rank") == 0) & F.col("first") & F.col("reusable"),
                F.lit("removed"),
            )
            .when(F.col("action") != "embed", F.lit(None))
            .when(F.col("pub_same"), F.lit("retried"))
            .when(F.col("pub_known"), F.lit("changed"))
            .otherwise(F.lit("new")),
        )
        .select("action", "category", "src", "row", "p_rank", *schemas.INPUT.names)
        .persist(StorageLevel.MEMORY_AND_DISK)
    )


@dataclass(frozen=True)
class _Files:
    """What becomes of the source files, from the decisions counted per file."""

    keep: list[tuple[SourceFile, int]]  # every row kept: the file kept whole, (file, rows)
    partial: list[int]  # some rows kept (indices into the sources): rewritten without the others
    dropped: int  # no row kept
    incomplete: int  # not read whole (cut short by a crash): no source


def _files(summary, sources: list[SourceFile]) -> _Files:
    per_src: dict[int, dict] = {}
    incomplete: set[int] = set()
    for r in summary:
        if r["src"] is not None:
            if r["incomplete"]:
                incomplete.add(r["src"])
            else:
                per_src.setdefault(r["src"], {"keep": 0, "drop": 0, "embed": 0})[r["action"]] += r["count"]
    keep, partial, dropped = [], [], 0
    for i, src in enumerate(sources):
        if i in incomplete:
            continue
        got = per_src.get(i, {"keep": 0, "drop": 0, "embed": 0})
        kept, total = got["keep"], got["keep"] + got["drop"] + got["embed"]
        if kept and kept == total:
            keep.append((src, kept))
        elif kept:
            partial.append(i)
        else:
            dropped += 1
    return _Files(keep, partial, dropped, len(incomplete))
