"""Jobs: compose listing -> embedding -> reduction -> report for each command. Every location is
resolved once here into a `Location` (with the S3 options), the backbone once into an `Embedder`,
and both are passed down as they are. Every command runs in one job context (`_job`): the Spark
session, the report's header, the run's staging area, the report written and printed at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from . import FruitlensError, note
from .catalogue import Catalogue
from .chain.featurize import featurize
from .chain.listing import check_input
from .config import (
    ClassifyConfig,
    FeaturizeConfig,
    ReduceConfig,
    SparkConfig,
    TrainConfig,
)
from .embedding.embedder import Embedder
from .embedding.views import Views
from .engine.classify import predictions
from .engine.model import PortableModel
from .engine.predict import embedder_for
from .engine.train import collection_of, train
from .engine.train_report import print_train_summary
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
from .spark.datasets import read_dataframe
from .spark.session import get_session, versions
from .storage.dataset import Dataset
from .storage.location import Location, S3Options, storage_errors
from .storage.publish import cleanup
from .storage.writer import STAGING, Target, new_run_id

PCA = "pca"  # OUTPUT/pca/: the fitted StandardScaler + PCA (a Spark PipelineModel)
OLD_PCA = "model"  # its name before 0.2, still read until 0.3.0
DATASETS = ("embeddings", "errors", "features", PCA)
FILES = ("report.json", "scree.png", "explained_variance.csv")


def preflight_output(out: Location) -> None:
    """Fail before any work if OUTPUT cannot be written."""
    with storage_errors(out, "cannot write OUTPUT"):
        if out.fs.exists(out.path) and out.fs.isfile(out.path):
            raise FruitlensError(f"OUTPUT exists and is not a folder: {out.uri}")
        probe = out / STAGING / ".write-test"
        probe.write_bytes(b"")
        probe.rm()


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


@dataclass
class _Context:
    spark: object
    report: dict
    run: _Run


@contextmanager
def _job(
    command: str, out: Location, parameters: dict, outputs: tuple[str, ...], spark_cfg: SparkConfig, spark, quiet: bool
) -> Iterator[_Context]:
    """The Spark session, the report's header, the run's staging area; on success the outputs
    listed, report.json written, the summary printed."""
    spark = spark or get_session(spark_cfg)
    report = {
        "command": command,
        "started_at": now(),
        "parameters": parameters,
        "versions": {**library_versions(), **versions(spark)},
        "spark": {
            "master": spark.sparkContext.master,
            "default_parallelism": spark.sparkContext.defaultParallelism,
            "application_id": spark.sparkContext.applicationId,
        },
    }
    t0 = time.perf_counter()
    with _Run(out) as run:
        yield _Context(spark, report, run)
    report["outputs"] = {name: run.path(name).uri for name in outputs}
    report["finished_at"] = now()
    report["wall_s"] = round(time.perf_counter() - t0, 3)
    with storage_errors(out, "cannot write OUTPUT"):
        write_report(out, report)
    if not quiet:
        print_summary(report, out)


def _images_job(input: str, output: str, s3: S3Options | None) -> tuple[Location, Location]:
    """INPUT and OUTPUT of a command that reads images, checked before Spark starts."""
    source, out = Location.of(input, s3), Location.of(output, s3)
    with storage_errors(source, "cannot read INPUT"):
        check_input(source)
    preflight_output(out)
    return source, out


def _embedder(cfg: FeaturizeConfig) -> Embedder:
    """The backbone resolved once, before Spark starts: a missing or wrong file fails now, with
    nothing staged."""
    return Embedder.resolve(
        cfg.backbone,
        cfg.image_size,
        cfg.backbone_file,
        max_pixels=cfg.max_pixels,
        threads=cfg.threads,
        views=Views(cfg.views, cfg.crop),
    )


def _featurize_into(ctx: _Context, cfg, embedder: Embedder, source: Location):
    result = featurize(ctx.spark, cfg, embedder, source, ctx.run.target("embeddings"), ctx.run.target("errors"))
    ctx.run.resumed = result.resumed_runs
    ctx.report["featurize"] = featurize_section(result, embedder.spec)
    return result


def run_featurize(
    cfg: FeaturizeConfig, spark_cfg: SparkConfig, spark=None, quiet: bool = False, s3: S3Options | None = None
) -> dict:
    source, out = _images_job(cfg.input, cfg.output, s3)
    embedder = _embedder(cfg)
    with _job(
        "featurize", out, {"featurize": asdict(cfg)}, ("embeddings", "errors", "report.json"), spark_cfg, spark, quiet
    ) as ctx:
        _featurize_into(ctx, cfg, embedder, source)
    return ctx.report


def run_reduce(
    cfg: ReduceConfig, spark_cfg: SparkConfig, spark=None, quiet: bool = False, s3: S3Options | None = None
) -> dict:
    source = embeddings_location(Location.of(cfg.input, s3))
    out = Location.of(cfg.output, s3)
    preflight_output(out)
    fitted = fitted_pca(out) if cfg.reuse_model else None
    with _job(
        "reduce",
        out,
        {"reduce": {**asdict(cfg), "embeddings": source.uri}},
        ("features", PCA, "explained_variance.csv", "scree.png", "report.json"),
        spark_cfg,
        spark,
        quiet,
    ) as ctx:
        dataset = Dataset.at(source)
        with storage_errors(source, "cannot read EMBEDDINGS"):
            embeddings = read_dataframe(ctx.spark, dataset)
        _reduce_into(ctx, cfg, embeddings, dataset.params if dataset.published else None, fitted)
    return ctx.report


def run_all(
    feat_cfg: FeaturizeConfig,
    red_cfg: ReduceConfig,
    spark_cfg: SparkConfig,
    spark=None,
    quiet: bool = False,
    s3: S3Options | None = None,
) -> dict:
    source, out = _images_job(feat_cfg.input, feat_cfg.output, s3)
    # before any work: the fitted scaler + PCA must be there (fit on these embeddings: checked when read)
    fitted = fitted_pca(out) if red_cfg.reuse_model else None
    embedder = _embedder(feat_cfg)
    with _job(
        "run",
        out,
        {"featurize": asdict(feat_cfg), "reduce": asdict(red_cfg)},
        DATASETS + FILES,
        spark_cfg,
        spark,
        quiet,
    ) as ctx:
        result = _featurize_into(ctx, feat_cfg, embedder, source)
        if result.ok == 0:
            raise FruitlensError(f"none of the {result.found:,} images could be used; see {ctx.run.path('errors').uri}")
        embeddings = read_dataframe(ctx.spark, Dataset.at(ctx.run.path("embeddings")))
        _reduce_into(ctx, red_cfg, embeddings, embedder.params, fitted)
    return ctx.report


def fitted_pca(out: Location) -> Location:
    """The scaler + PCA OUTPUT holds (--reuse-model): OUTPUT/pca, or OUTPUT/model as written
    before 0.2 (with a note)."""
    for name in (PCA, OLD_PCA):
        previous = Dataset.at(out / name).manifest
        if previous is not None and previous.format == "tree":
            if name == OLD_PCA:
                note(f"{(out / OLD_PCA).uri} is the scaler + PCA saved before 0.2, now named OUTPUT/{PCA}/: reusing it")
            return out / name
    raise FruitlensError(f"--reuse-model: no fitted scaler + PCA at {(out / PCA).uri} (run once without --reuse-model)")


def _reduce_into(ctx: _Context, cfg: ReduceConfig, embeddings, params: dict | None, fitted: Location | None) -> None:
    """`fitted`: the scaler + PCA to project with (--reuse-model); None: fit one."""
    run = ctx.run
    with storage_errors(run.output, "cannot write OUTPUT"):
        result = fit_and_transform(
            ctx.spark, cfg, embeddings, run.target("features"), run.target(PCA), params, fitted=fitted
        )
        ctx.report["reduce"] = reduce_section(result, cfg.variance)
        write_explained_variance_csv(run.path("explained_variance.csv"), result)
        write_scree(run.path("scree.png"), result, None if cfg.reuse_model else cfg.variance)
        old = run.path(OLD_PCA)
        previous = Dataset.at(old).manifest
        if previous is not None and previous.format == "tree":
            old.rm(recursive=True)
            note(f"{old.uri} (the scaler + PCA saved before 0.2) was replaced by OUTPUT/{PCA}/")


def run_train(
    cfg: TrainConfig, spark_cfg: SparkConfig, spark=None, quiet: bool = False, s3: S3Options | None = None
) -> dict:
    """Embeddings (one or more folders `run`/`featurize` wrote: collections) -> a model folder at OUTPUT."""
    sources = [embeddings_location(Location.of(i, s3)) for i in cfg.input]
    out = Location.of(cfg.output, s3)
    for source in sources:
        _check_model_output(out, source)
    # The model folder is OUTPUT itself: it is staged beside it, then swapped in whole.
    target = Target(final=out, output=out.parent, run_id=new_run_id())
    preflight_output(out)
    preflight_output(target.output)
    collections = _named([collection_of(source) for source in sources])
    session = {"spark": spark}

    def spark_session():  # started only when needed: the driver solver fits without a JVM
        if session["spark"] is None:
            session["spark"] = get_session(spark_cfg)
        return session["spark"]

    t0 = time.perf_counter()
    try:
        with storage_errors(out, "cannot write the model"):
            report = train(
                spark_session,
                cfg,
                collections,
                target,
                say=(lambda line: None) if quiet else (lambda line: print(line, file=sys.stderr, flush=True)),
            )
    finally:
        cleanup(target.output, target.run_id)
    report["wall_s"] = round(time.perf_counter() - t0, 3)
    if not quiet:
        print_train_summary(report, out)
    return report


def _named(collections: list) -> list:
    """Collections named after their folders, made unique (`out`, `out-2`, ...)."""
    seen: dict[str, int] = {}
    for c in collections:
        seen[c.name] = seen.get(c.name, 0) + 1
        if seen[c.name] > 1:
            c.name = f"{c.name}-{seen[c.name]}"
    return collections


def _check_model_output(out: Location, source: Location) -> None:
    """MODEL is replaced whole: refuse a place that holds something else."""
    with storage_errors(out, "cannot write MODEL"):
        if not out.is_local and out.parent == out:
            raise FruitlensError(f"MODEL must be a folder inside the bucket, not the bucket itself: {out.uri}")
        if source.uri == out.uri or source.uri.startswith(out.uri.rstrip("/") + "/"):
            raise FruitlensError(
                f"MODEL {out.uri} would replace the embeddings it is trained on: choose another folder"
            )
        if out.exists() and (out.fs.isfile(out.path) or out.fs.ls(out.path)):
            manifest = Dataset.at(out).manifest
            if manifest is None or manifest.format != "tree" or not (out / "model.json").exists():
                raise FruitlensError(
                    f"MODEL {out.uri} exists and is not a fruitlens model folder: "
                    "choose a new folder (train replaces MODEL whole)"
                )


def run_classify(
    cfg: ClassifyConfig, spark_cfg: SparkConfig, spark=None, quiet: bool = False, s3: S3Options | None = None
) -> dict:
    """Every image under INPUT -> OUTPUT/predictions (+ embeddings, errors, report.json)."""
    model = PortableModel.load(Location.of(cfg.model, s3))
    catalogue = Catalogue.of_model(Location.of(cfg.model, s3), model.classes)
    # The embedder the model's embeddings were made with (backbone, file, size, limit) and its views.
    embedder = embedder_for(model, threads=cfg.threads)
    source, out = _images_job(cfg.input, cfg.output, s3)
    with _job(
        "classify",
        out,
        {"classify": asdict(cfg)},
        ("predictions", "embeddings", "errors", "report.json"),
        spark_cfg,
        spark,
        quiet,
    ) as ctx:
        _featurize_into(ctx, cfg, embedder, source)
        t1 = time.perf_counter()
        with storage_errors(out, "cannot write OUTPUT"):
            embeddings = read_dataframe(ctx.spark, Dataset.at(ctx.run.path("embeddings")))
            ctx.report["classify"] = predictions(
                ctx.spark, embeddings, model, catalogue, ctx.run.target("predictions"), source.name
            )
        ctx.report["classify"]["wall_s"] = round(time.perf_counter() - t1, 3)
        ctx.report["classify"]["model"] = {
            "folder": Location.of(cfg.model, s3).uri,
            "kind": model.meta.get("kind"),
            "classes": len(model.classes),
        }
    return ctx.report


def embeddings_location(where: Location) -> Location:
    """reduce and train accept the folder `featurize`/`run` wrote, or an embeddings Parquet dataset itself."""
    with storage_errors(where, "cannot read EMBEDDINGS"):
        if not where.exists():
            raise FruitlensError(f"EMBEDDINGS not found: {where.uri}")
        nested = where / "embeddings"
        if nested.exists():
            return nested
        if Dataset.at(where).files:
            return where
    raise FruitlensError(f"EMBEDDINGS has no Parquet data: {where.uri} (give the folder featurize wrote)")
