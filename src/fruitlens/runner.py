"""Runner: composes listing -> embedding -> reduction -> report for each command."""

from __future__ import annotations

import time
from dataclasses import asdict

from . import FruitlensError
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
from .storage import exists, filesystem, join, normalize, spark_uri


def layout(output: str) -> dict[str, str]:
    """Where each command writes under OUTPUT."""
    names = ["embeddings", "errors", "features", "model", "report.json", "scree.png", "explained_variance.csv"]
    return {name: join(output, name) for name in names}


def preflight_output(uri: str) -> None:
    """Fail before any work if OUTPUT cannot be written."""
    fs, path = filesystem(uri)
    if fs.exists(path) and not fs.isdir(path):
        raise FruitlensError(f"OUTPUT exists and is not a folder: {uri}")
    probe = join(uri, ".fruitlens-write-test")
    try:
        fs.makedirs(path, exist_ok=True)
        fs.pipe_file(filesystem(probe)[1], b"")
        fs.rm_file(filesystem(probe)[1])
    except PermissionError:
        raise FruitlensError(f"cannot write OUTPUT {uri}: permission denied") from None
    except OSError as exc:
        raise FruitlensError(f"cannot write OUTPUT {uri}: {exc.strerror or exc}") from None


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


def run_featurize(cfg: FeaturizeConfig, spark_cfg: SparkConfig, spark=None, quiet: bool = False) -> dict:
    cfg.validate()
    check_input(cfg.input)
    preflight_output(cfg.output)
    out = layout(cfg.output)
    spark = spark or get_session(spark_cfg)
    report = _header("featurize", spark, {"featurize": asdict(cfg)})
    t0 = time.perf_counter()
    from . import backbones

    result = featurize(spark, cfg, out["embeddings"], out["errors"])
    report["featurize"] = featurize_section(result, backbones.get_spec(cfg.backbone))
    report["outputs"] = {k: out[k] for k in ("embeddings", "errors", "report.json")}
    return _finish(report, cfg.output, t0, quiet)


def run_reduce(cfg: ReduceConfig, spark_cfg: SparkConfig, spark=None, quiet: bool = False) -> dict:
    cfg.validate()
    source = embeddings_location(cfg.input)
    preflight_output(cfg.output)
    out = layout(cfg.output)
    spark = spark or get_session(spark_cfg)
    report = _header("reduce", spark, {"reduce": {**asdict(cfg), "embeddings": source}})
    t0 = time.perf_counter()
    _reduce_into(spark, cfg, spark.read.parquet(spark_uri(source)), out, report)
    report["outputs"] = {k: out[k] for k in ("features", "model", "explained_variance.csv", "scree.png", "report.json")}
    return _finish(report, cfg.output, t0, quiet)


def run_all(
    feat_cfg: FeaturizeConfig, red_cfg: ReduceConfig, spark_cfg: SparkConfig, spark=None, quiet: bool = False
) -> dict:
    feat_cfg.validate()
    red_cfg.validate()
    check_input(feat_cfg.input)
    preflight_output(feat_cfg.output)
    out = layout(feat_cfg.output)
    spark = spark or get_session(spark_cfg)
    report = _header("run", spark, {"featurize": asdict(feat_cfg), "reduce": asdict(red_cfg)})
    t0 = time.perf_counter()
    from . import backbones

    result = featurize(spark, feat_cfg, out["embeddings"], out["errors"])
    report["featurize"] = featurize_section(result, backbones.get_spec(feat_cfg.backbone))
    if result.ok == 0:
        raise FruitlensError(f"none of the {result.found:,} images could be used; see {out['errors']}")
    _reduce_into(spark, red_cfg, spark.read.parquet(spark_uri(out["embeddings"])), out, report)
    report["outputs"] = {k: out[k] for k in out}
    return _finish(report, feat_cfg.output, t0, quiet)


def _reduce_into(spark, cfg: ReduceConfig, embeddings, out: dict, report: dict) -> None:
    result = fit_and_transform(spark, cfg, embeddings, out["features"], out["model"])
    report["reduce"] = reduce_section(result, cfg.variance)
    write_explained_variance_csv(out["explained_variance.csv"], result)
    write_scree(out["scree.png"], result, cfg.variance)


def _finish(report: dict, output: str, t0: float, quiet: bool) -> dict:
    report["finished_at"] = now()
    report["wall_s"] = round(time.perf_counter() - t0, 3)
    write_report(output, report)
    if not quiet:
        print_summary(report, output)
    return report


def embeddings_location(uri: str) -> str:
    """reduce accepts the folder `featurize`/`run` wrote, or an embeddings Parquet dataset itself."""
    uri = normalize(uri)
    if not exists(uri):
        raise FruitlensError(f"EMBEDDINGS not found: {uri}")
    nested = join(uri, "embeddings")
    if exists(nested):
        return nested
    fs, path = filesystem(uri)
    if fs.isfile(path) or any(p.endswith(".parquet") for p in fs.ls(path, detail=False)):
        return uri
    raise FruitlensError(f"EMBEDDINGS has no Parquet data: {uri} (give the folder featurize wrote)")
