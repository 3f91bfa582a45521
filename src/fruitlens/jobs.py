"""Jobs: compose listing -> embedding -> reduction -> report for each command. Every location is
resolved once here into a `Location` (with the S3 options) and passed down as it is."""

from __future__ import annotations

import time
from dataclasses import asdict

from . import FruitlensError
from .chain.featurize import embedding_params, featurize, featurize_spec, resolve_model
from .chain.listing import check_input
from .config import (
    ClassifyConfig,
    FeaturizeConfig,
    ReduceConfig,
    SparkConfig,
    TrainConfig,
)
from .reduction.reduce import fit_and_transform
from .report import (
    featurize_section,
    library_versions,
    now,
    print_summary,
    reduce_section,
    write_explained_variance_csv,
    write_report,
    write_scree,
)
from .spark.datasets import read_parquet
from .spark.session import get_session, versions
from .storage.location import Location, S3Options, storage_errors
from .storage.manifest import dataset_files, read_manifest
from .storage.publish import cleanup
from .storage.writer import STAGING, Target, new_run_id

DATASETS = ("embeddings", "errors", "features", "model")
FILES = ("report.json", "scree.png", "explained_variance.csv")


def preflight_output(out: Location) -> None:
    """Fail before any work if OUTPUT cannot be written."""
    with storage_errors(out, "cannot write OUTPUT"):
        if out.fs.exists(out.path) and out.fs.isfile(out.path):
            raise FruitlensError(f"OUTPUT exists and is not a folder: {out.uri}")
        probe = out / STAGING / ".write-test"
        probe.write_bytes(b"")
        probe.rm()


def _checked_input(source: Location) -> None:
    with storage_errors(source, "cannot read INPUT"):
        check_input(source)


def _header(command: str, spark, params: dict) -> dict:
    return {
        "command": command,
        "started_at": now(),
        "parameters": params,
        "versions": {**library_versions(), **versions(spark)},
        "spark": {
            "master": spark.sparkContext.master,
            "default_parallelism": spark.sparkContext.defaultParallelism,
            "application_id": spark.sparkContext.applicationId,
        },
    }


class _Run:
    """One command's run: its id and its staging targets. The staging area is removed when the
    run succeeds; after a failure it stays, so the next run into OUTPUT can resume from it."""

    def __init__(self, output: Location):
        self.output = output
        self.id = new_run_id()
        self.resumed: set[str] = set()  # interrupted runs whose staged parts this run took over

    def path(self, name: str) -> Location:
        return self.output / name

    def target(self, name: str) -> Target:
        return Target(final=self.output / name, output=self.output, run_id=self.id)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            cleanup(self.output, self.id, *sorted(self.resumed))  # this run's staging, and what it resumed


def run_featurize(cfg: FeaturizeConfig, spark_cfg: SparkConfig, spark=None, quiet: bool = False,
                  s3: S3Options | None = None) -> dict:
    cfg.validate()
    source, out = Location.of(cfg.input, s3), Location.of(cfg.output, s3)
    _checked_input(source)
    preflight_output(out)
    resolve_model(cfg)  # a missing or wrong model fails now, before Spark starts and nothing is staged
    spark = spark or get_session(spark_cfg)
    report = _header("featurize", spark, {"featurize": asdict(cfg)})
    t0 = time.perf_counter()
    with _Run(out) as run:
        result = featurize(spark, cfg, source, run.target("embeddings"), run.target("errors"))
        run.resumed = result.resumed_runs
    report["featurize"] = featurize_section(result, featurize_spec(cfg))
    report["outputs"] = {k: run.path(k).uri for k in ("embeddings", "errors", "report.json")}
    return _finish(report, out, t0, quiet)


def run_reduce(cfg: ReduceConfig, spark_cfg: SparkConfig, spark=None, quiet: bool = False,
               s3: S3Options | None = None) -> dict:
    cfg.validate()
    source = embeddings_location(Location.of(cfg.input, s3))
    out = Location.of(cfg.output, s3)
    preflight_output(out)
    spark = spark or get_session(spark_cfg)
    report = _header("reduce", spark, {"reduce": {**asdict(cfg), "embeddings": source.uri}})
    t0 = time.perf_counter()
    with _Run(out) as run:
        with storage_errors(source, "cannot read EMBEDDINGS"):
            embeddings = read_parquet(spark, source)
        manifest = read_manifest(source)
        _reduce_into(spark, cfg, embeddings, run, report, manifest.params if manifest else None)
    report["outputs"] = {k: run.path(k).uri for k in ("features", "model", "explained_variance.csv", "scree.png",
                                                      "report.json")}
    return _finish(report, out, t0, quiet)


def run_all(feat_cfg: FeaturizeConfig, red_cfg: ReduceConfig, spark_cfg: SparkConfig, spark=None,
            quiet: bool = False, s3: S3Options | None = None) -> dict:
    feat_cfg.validate()
    red_cfg.validate()
    source, out = Location.of(feat_cfg.input, s3), Location.of(feat_cfg.output, s3)
    _checked_input(source)
    preflight_output(out)
    if red_cfg.reuse_model:  # before any work: the model must be there, and fit on these embeddings
        previous = read_manifest(out / "model")
        if previous is None or previous.format != "tree":
            raise FruitlensError(f"--reuse-model: no fitted model at {(out / 'model').uri} (run once without --reuse-model)")
    resolve_model(feat_cfg)  # a missing or wrong model fails now, before Spark starts and nothing is staged
    spark = spark or get_session(spark_cfg)
    report = _header("run", spark, {"featurize": asdict(feat_cfg), "reduce": asdict(red_cfg)})
    t0 = time.perf_counter()
    with _Run(out) as run:
        result = featurize(spark, feat_cfg, source, run.target("embeddings"), run.target("errors"))
        run.resumed = result.resumed_runs
        report["featurize"] = featurize_section(result, featurize_spec(feat_cfg))
        if result.ok == 0:
            raise FruitlensError(f"none of the {result.found:,} images could be used; see {run.path('errors').uri}")
        params = embedding_params(featurize_spec(feat_cfg), feat_cfg)
        _reduce_into(spark, red_cfg, read_parquet(spark, run.path("embeddings")), run, report, params)
    report["outputs"] = {name: run.path(name).uri for name in DATASETS + FILES}
    return _finish(report, out, t0, quiet)


def _reduce_into(spark, cfg: ReduceConfig, embeddings, run: _Run, report: dict, params: dict | None) -> None:
    with storage_errors(run.output, "cannot write OUTPUT"):
        result = fit_and_transform(spark, cfg, embeddings, run.target("features"), run.target("model"), params)
        report["reduce"] = reduce_section(result, cfg.variance)
        write_explained_variance_csv(run.path("explained_variance.csv"), result)
        write_scree(run.path("scree.png"), result, None if cfg.reuse_model else cfg.variance)


def _finish(report: dict, out: Location, t0: float, quiet: bool) -> dict:
    report["finished_at"] = now()
    report["wall_s"] = round(time.perf_counter() - t0, 3)
    with storage_errors(out, "cannot write OUTPUT"):
        write_report(out, report)
    if not quiet:
        print_summary(report, out)
    return report


def run_train(cfg: TrainConfig, spark_cfg: SparkConfig, spark=None, quiet: bool = False,
              s3: S3Options | None = None) -> dict:
    """Embeddings (the folder `run`/`featurize` wrote) -> a model folder at OUTPUT."""
    from .engine.train import train

    cfg.validate()
    source = embeddings_location(Location.of(cfg.input, s3))
    out = Location.of(cfg.output, s3)
    _check_model_output(out, source)
    # The model folder is OUTPUT itself: it is staged beside it, then swapped in whole.
    target = Target(final=out, output=out.parent, run_id=new_run_id())
    preflight_output(out)
    preflight_output(target.output)
    manifest = read_manifest(source)
    spark = spark or get_session(spark_cfg)
    t0 = time.perf_counter()
    try:
        with storage_errors(source, "cannot read EMBEDDINGS"):
            embeddings = read_parquet(spark, source)
        with storage_errors(out, "cannot write the model"):
            report = train(spark, cfg, embeddings, manifest.params if manifest else None, target)
    finally:
        cleanup(target.output, target.run_id)
    report["wall_s"] = round(time.perf_counter() - t0, 3)
    if not quiet:
        from .report import print_train_summary

        print_train_summary(report, out)
    return report


def _check_model_output(out: Location, source: Location) -> None:
    """MODEL is replaced whole: refuse a place that holds something else."""
    with storage_errors(out, "cannot write MODEL"):
        if not out.is_local and out.parent == out:
            raise FruitlensError(f"MODEL must be a folder inside the bucket, not the bucket itself: {out.uri}")
        if source.uri == out.uri or source.uri.startswith(out.uri.rstrip("/") + "/"):
            raise FruitlensError(f"MODEL {out.uri} would replace the embeddings it is trained on: choose another folder")
        if out.exists() and (out.fs.isfile(out.path) or out.fs.ls(out.path)):
            manifest = read_manifest(out)
            if manifest is None or manifest.format != "tree" or not (out / "model.json").exists():
                raise FruitlensError(f"MODEL {out.uri} exists and is not a fruitlens model folder: "
                                     "choose a new folder (train replaces MODEL whole)")


def _trained_size(params: dict) -> int | None:
    """The square image size a model's embeddings were made at (None: the backbone's own)."""
    size = params.get("input_size")
    if not size:
        return None
    if len(set(size)) != 1:
        raise FruitlensError(f"the model's embeddings were made at {size[0]}x{size[1]}: only square sizes are supported")
    return int(size[0])


def run_classify(cfg: ClassifyConfig, spark_cfg: SparkConfig, spark=None, quiet: bool = False,
                 s3: S3Options | None = None) -> dict:
    """Every image under INPUT -> OUTPUT/predictions (+ embeddings, errors, report.json)."""
    from .engine.classify import predictions
    from .engine.model import PortableModel

    cfg.validate()
    model = PortableModel.load(Location.of(cfg.model, s3))
    params = model.embedding_params
    feat_cfg = FeaturizeConfig(input=cfg.input, output=cfg.output, backbone=params.get("backbone", "mobilenet_v2"),
                               batch_size=cfg.batch_size, threads=cfg.threads,
                               images_per_partition=cfg.images_per_partition,
                               max_pixels=int(params.get("max_pixels") or 100_000_000), io_threads=cfg.io_threads,
                               incremental=cfg.incremental,
                               image_size=_trained_size(params))
    model.check_embeddings(embedding_params(featurize_spec(feat_cfg), feat_cfg), "INPUT's embeddings")
    source, out = Location.of(cfg.input, s3), Location.of(cfg.output, s3)
    _checked_input(source)
    preflight_output(out)
    spark = spark or get_session(spark_cfg)
    report = _header("classify", spark, {"classify": asdict(cfg)})
    t0 = time.perf_counter()
    with _Run(out) as run:
        result = featurize(spark, feat_cfg, source, run.target("embeddings"), run.target("errors"))
        run.resumed = result.resumed_runs
        report["featurize"] = featurize_section(result, featurize_spec(feat_cfg))
        t1 = time.perf_counter()
        with storage_errors(out, "cannot write OUTPUT"):
            report["classify"] = predictions(spark, read_parquet(spark, run.path("embeddings")), model,
                                             run.target("predictions"))
        report["classify"]["wall_s"] = round(time.perf_counter() - t1, 3)
        report["classify"]["model"] = {"folder": Location.of(cfg.model, s3).uri, "kind": model.meta.get("kind"),
                                       "classes": len(model.classes)}
    report["outputs"] = {name: run.path(name).uri for name in ("predictions", "embeddings", "errors", "report.json")}
    return _finish(report, out, t0, quiet)


def embeddings_location(where: Location) -> Location:
    """reduce accepts the folder `featurize`/`run` wrote, or an embeddings Parquet dataset itself."""
    with storage_errors(where, "cannot read EMBEDDINGS"):
        if not where.exists():
            raise FruitlensError(f"EMBEDDINGS not found: {where.uri}")
        nested = where / "embeddings"
        if nested.exists():
            return nested
        if dataset_files(where):
            return where
    raise FruitlensError(f"EMBEDDINGS has no Parquet data: {where.uri} (give the folder featurize wrote)")
