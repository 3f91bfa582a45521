"""Runner: composes listing -> embedding -> reduction -> report for each command."""

from __future__ import annotations

import time
from dataclasses import asdict

from . import FruitlensError, backbones
from .config import FeaturizeConfig, ReduceConfig, SparkConfig
from .featurize import featurize
from .listing import check_input
from .reduce import fit_and_transform
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
from .session import get_session, versions
from .spark_io import dataset_files, read_parquet
from .storage import S3Options, configure, filesystem, is_local, join, normalize, storage_errors
from .writer import STAGING, Target, cleanup, new_run_id

DATASETS = ("embeddings", "errors", "features", "model")
FILES = ("report.json", "scree.png", "explained_variance.csv")


def layout(output: str) -> dict[str, str]:
    """Where each command writes under OUTPUT."""
    return {name: join(output, name) for name in DATASETS + FILES}


def preflight_output(uri: str) -> None:
    """Fail before any work if OUTPUT cannot be written."""
    fs, path = filesystem(uri)
    with storage_errors(uri, "cannot write OUTPUT"):
        if fs.exists(path) and fs.isfile(path):
            raise FruitlensError(f"OUTPUT exists and is not a folder: {uri}")
        probe = filesystem(join(uri, STAGING, ".write-test"))[1]
        if is_local(uri):
            fs.makedirs(filesystem(join(uri, STAGING))[1], exist_ok=True)
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)


def _checked_input(uri: str) -> None:
    with storage_errors(uri, "cannot read INPUT"):
        check_input(uri)


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
    """One command's run: its id, its staging targets, and cleanup of what it staged."""

    def __init__(self, output: str):
        self.output = normalize(output)
        self.id = new_run_id()
        self.paths = layout(self.output)

    def target(self, name: str) -> Target:
        return Target(final=self.paths[name], output=self.output, run_id=self.id)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        cleanup(self.output, self.id)


def run_featurize(cfg: FeaturizeConfig, spark_cfg: SparkConfig, spark=None, quiet: bool = False,
                  s3: S3Options | None = None) -> dict:
    cfg.validate()
    configure(s3 or S3Options())
    _checked_input(cfg.input)
    preflight_output(cfg.output)
    spark = spark or get_session(spark_cfg)
    report = _header("featurize", spark, {"featurize": asdict(cfg)})
    t0 = time.perf_counter()
    with _Run(cfg.output) as run:
        result = featurize(spark, cfg, run.target("embeddings"), run.target("errors"))
    report["featurize"] = featurize_section(result, backbones.get_spec(cfg.backbone))
    report["outputs"] = {k: run.paths[k] for k in ("embeddings", "errors", "report.json")}
    return _finish(report, cfg.output, t0, quiet)


def run_reduce(cfg: ReduceConfig, spark_cfg: SparkConfig, spark=None, quiet: bool = False,
               s3: S3Options | None = None) -> dict:
    cfg.validate()
    configure(s3 or S3Options())
    source = embeddings_location(cfg.input)
    preflight_output(cfg.output)
    spark = spark or get_session(spark_cfg)
    report = _header("reduce", spark, {"reduce": {**asdict(cfg), "embeddings": source}})
    t0 = time.perf_counter()
    with _Run(cfg.output) as run:
        with storage_errors(source, "cannot read EMBEDDINGS"):
            embeddings = read_parquet(spark, source)
        _reduce_into(spark, cfg, embeddings, run, report)
    report["outputs"] = {k: run.paths[k] for k in ("features", "model", "explained_variance.csv", "scree.png", "report.json")}
    return _finish(report, cfg.output, t0, quiet)


def run_all(feat_cfg: FeaturizeConfig, red_cfg: ReduceConfig, spark_cfg: SparkConfig, spark=None,
            quiet: bool = False, s3: S3Options | None = None) -> dict:
    feat_cfg.validate()
    red_cfg.validate()
    configure(s3 or S3Options())
    _checked_input(feat_cfg.input)
    preflight_output(feat_cfg.output)
    spark = spark or get_session(spark_cfg)
    report = _header("run", spark, {"featurize": asdict(feat_cfg), "reduce": asdict(red_cfg)})
    t0 = time.perf_counter()
    with _Run(feat_cfg.output) as run:
        result = featurize(spark, feat_cfg, run.target("embeddings"), run.target("errors"))
        report["featurize"] = featurize_section(result, backbones.get_spec(feat_cfg.backbone))
        if result.ok == 0:
            raise FruitlensError(f"none of the {result.found:,} images could be used; see {run.paths['errors']}")
        _reduce_into(spark, red_cfg, read_parquet(spark, run.paths["embeddings"]), run, report)
    report["outputs"] = dict(run.paths)
    return _finish(report, feat_cfg.output, t0, quiet)


def _reduce_into(spark, cfg: ReduceConfig, embeddings, run: _Run, report: dict) -> None:
    with storage_errors(run.output, "cannot write OUTPUT"):
        result = fit_and_transform(spark, cfg, embeddings, run.target("features"), run.target("model"))
        report["reduce"] = reduce_section(result, cfg.variance)
        write_explained_variance_csv(run.paths["explained_variance.csv"], result)
        write_scree(run.paths["scree.png"], result, cfg.variance)


def _finish(report: dict, output: str, t0: float, quiet: bool) -> dict:
    report["finished_at"] = now()
    report["wall_s"] = round(time.perf_counter() - t0, 3)
    with storage_errors(output, "cannot write OUTPUT"):
        write_report(output, report)
    if not quiet:
        print_summary(report, output)
    return report


def embeddings_location(uri: str) -> str:
    """reduce accepts the folder `featurize`/`run` wrote, or an embeddings Parquet dataset itself."""
    uri = normalize(uri)
    with storage_errors(uri, "cannot read EMBEDDINGS"):
        fs, path = filesystem(uri)
        if not fs.exists(path):
            raise FruitlensError(f"EMBEDDINGS not found: {uri}")
        nested = join(uri, "embeddings")
        if fs.exists(filesystem(nested)[1]):
            return nested
        if dataset_files(uri):
            return uri
    raise FruitlensError(f"EMBEDDINGS has no Parquet data: {uri} (give the folder featurize wrote)")
