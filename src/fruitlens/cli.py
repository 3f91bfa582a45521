"""Command line: a thin layer that fills in the typed configs and calls the runner."""

from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import replace

import click

from . import FruitlensError, __version__, note
from .config import (
    DEFAULT_BACKBONE,
    DEFAULT_VARIANCE,
    INDEX_DIMS,
    SOLVERS,
    ClassifyConfig,
    EmbedSettings,
    FeaturizeConfig,
    ReduceConfig,
    ServeConfig,
    SparkConfig,
    TrainConfig,
    default,
)
from .embedding.backbones import ALIASES, SPECS
from .embedding.views import SIZES as VIEW_SIZES
from .storage.location import Location, S3Options


def spark_options(f):
    @click.option(
        "--master",
        default=default(SparkConfig, "master"),
        show_default=True,
        help="Spark master: local[N], spark://HOST:PORT, yarn. Ignored under spark-submit.",
    )
    @click.option(
        "--driver-memory", default=default(SparkConfig, "driver_memory"), show_default=True, help="Spark driver memory."
    )
    @click.option(
        "--conf",
        "conf",
        multiple=True,
        metavar="KEY=VALUE",
        help="Extra Spark setting, repeatable (e.g. --conf spark.executor.memory=4g).",
    )
    @click.option("--quiet", is_flag=True, help="Do not print the summary.")
    @s3_options
    @click.option(
        "--s3-max-attempts",
        type=click.IntRange(1, 50),
        default=default(S3Options, "max_attempts"),
        show_default=True,
        help="Attempts per S3 request, with adaptive backoff on throttling and transient errors.",
    )
    @functools.wraps(f)
    def wrapper(*args, master, driver_memory, conf, s3, s3_max_attempts, **kwargs):
        extra = {}
        for item in conf:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--conf")
            extra[key.strip()] = value
        spark = SparkConfig(master=master, driver_memory=driver_memory, extra_conf=extra)
        return f(*args, spark_cfg=spark, s3=replace(s3, max_attempts=s3_max_attempts), **kwargs)

    return wrapper


def s3_options(f):
    @click.option(
        "--s3-endpoint-url",
        default=None,
        metavar="URL",
        help="S3-compatible endpoint (default: $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, else AWS).",
    )
    @click.option("--s3-region", default=None, help="S3 region (default: $AWS_REGION / profile).")
    @functools.wraps(f)
    def wrapper(*args, s3_endpoint_url, s3_region, **kwargs):
        return f(*args, s3=S3Options(endpoint_url=s3_endpoint_url, region=s3_region), **kwargs)

    return wrapper


def backbone_file_option(f):
    """--backbone-file, and its names before 0.2 (`--model` of featurize/run, `--backbone-model`
    of predict/serve), accepted with a note until 0.3.0 (CHANGELOG.md)."""

    @click.option(
        "--backbone-file",
        type=click.Path(),
        default=None,
        help="Local backbone file (.tflite), or a folder holding it under its published name "
        "(default: $FRUITLENS_MODEL_DIR, else downloaded once, sha256-checked, to the user cache).",
    )
    @click.option(
        f.__name__ in ("featurize", "run") and "--model" or "--backbone-model",
        "old_backbone_file",
        type=click.Path(),
        default=None,
        hidden=True,
    )
    @functools.wraps(f)
    def wrapper(*args, backbone_file, old_backbone_file, **kwargs):
        if old_backbone_file is not None:
            old = "--model" if f.__name__ in ("featurize", "run") else "--backbone-model"
            note(f"{old} is now --backbone-file (the backbone's .tflite file); {old} is accepted until 0.3.0")
            backbone_file = backbone_file or old_backbone_file
        return f(*args, backbone_file=backbone_file, **kwargs)

    return wrapper


def embed_options(f):
    """How the embedding tasks run (featurize, run, classify): EmbedSettings' defaults."""

    @click.option(
        "--batch-size",
        type=int,
        default=default(EmbedSettings, "batch_size"),
        show_default=True,
        help="Images per inference call.",
    )
    @click.option(
        "--threads",
        type=int,
        default=default(EmbedSettings, "threads"),
        show_default=True,
        help="Inference threads per Python worker (Spark runs one worker per task slot).",
    )
    @click.option(
        "--images-per-partition",
        type=int,
        default=default(EmbedSettings, "images_per_partition"),
        show_default=True,
        help="Images per Spark task.",
    )
    @click.option(
        "--io-threads",
        type=int,
        default=default(EmbedSettings, "io_threads"),
        show_default=True,
        help="Concurrent reads and decodes per task.",
    )
    @click.option(
        "--incremental/--full",
        default=default(EmbedSettings, "incremental"),
        show_default=True,
        help="--incremental: read and embed only images that are new or changed since what OUTPUT "
        "holds (and resume an interrupted run); --full: embed every image again.",
    )
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)

    return wrapper


def featurize_options(f):
    @click.option(
        "--backbone",
        default=DEFAULT_BACKBONE,
        show_default=True,
        type=click.Choice([*SPECS, *ALIASES]),
        help="Pretrained network and the embedding taken from it, values per image: "
        + ", ".join(f"{name} ({spec.embedding_dim})" for name, spec in SPECS.items())
        + "; "
        + ", ".join(f"{alias} = {name}" for alias, name in ALIASES.items())
        + " (README, 'Two backbones').",
    )
    @backbone_file_option
    @embed_options
    @click.option(
        "--max-pixels",
        type=int,
        default=default(FeaturizeConfig, "max_pixels"),
        show_default=True,
        help="Larger images are rejected as decompression bombs.",
    )
    @click.option(
        "--image-size",
        type=click.IntRange(min=32),
        default=None,
        help="Side in pixels of the square the backbone runs at (default: its own, 224; 260 for "
        "EfficientNet-Lite2). Smaller is "
        "faster and less accurate: see docs/benchmarks.md. Recorded with the embeddings; "
        "classify/predict/serve use the size the model was trained with.",
    )
    @click.option(
        "--views",
        type=click.Choice([str(n) for n in VIEW_SIZES]),
        default=str(default(FeaturizeConfig, "views")),
        show_default=True,
        callback=lambda ctx, param, value: int(value),
        help="Views of each photo embedded: 1 = the whole photo; 2 = and its centre crop; 4 = those and "
        "their mirror images; 6 = the whole photo, four corner crops and the centre crop; 12 = "
        "those and their mirror images. The whole photo is the `embedding` column, the others the "
        "`views` column: `train` learns from every view (README, 'Real photos').",
    )
    @click.option(
        "--crop",
        type=click.FloatRange(0.2, 1.0),
        default=default(FeaturizeConfig, "crop"),
        show_default=True,
        help="Side of a crop view, as a share of the photo's short side.",
    )
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)

    return wrapper


def reduce_options(f):
    @click.option("--k", type=int, default=None, help="Number of principal components.")
    @click.option(
        "--variance",
        type=float,
        default=None,
        help=f"Keep the smallest k reaching this share of variance (default {DEFAULT_VARIANCE} when --k is not given).",
    )
    @click.option(
        "--reuse-model",
        is_flag=True,
        help="Project with the StandardScaler + PCA OUTPUT already holds (OUTPUT/pca/) instead of refitting.",
    )
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)

    return wrapper


def _feat_cfg(input, output, kw) -> FeaturizeConfig:
    names = {f for f in FeaturizeConfig.__dataclass_fields__} - {"input", "output"}
    return FeaturizeConfig(input=input, output=output, **{k: v for k, v in kw.items() if k in names})


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="fruitlens")
def cli():
    """fruitlens: fruit photos -> MobileNetV2 (or EfficientNet-Lite2) embeddings -> StandardScaler + PCA, on Spark.

    INPUT is a folder (path, file:// or s3://bucket/prefix) of images, one sub-folder per class,
    optionally under Training/ and Test/. OUTPUT (local or s3://) gets Parquet datasets, each with a
    _SUCCESS manifest, plus report.json. AWS credentials come from the standard AWS chain only.
    """


@cli.command()
@click.argument("input")
@click.argument("output")
@featurize_options
@reduce_options
@spark_options
def run(input, output, spark_cfg, s3, k, variance, reuse_model, quiet, **kw):
    """The whole chain in one Spark application.

    Writes OUTPUT/embeddings, OUTPUT/errors, OUTPUT/features, OUTPUT/pca (the fitted StandardScaler +
    PCA), report.json, scree.png.
    Rerun into the same OUTPUT, only new or changed images are embedded (see --full).
    """
    from .jobs import run_all

    run_all(
        _feat_cfg(input, output, kw),
        ReduceConfig(input=output, output=output, k=k, variance=variance, reuse_model=reuse_model),
        spark_cfg,
        quiet=quiet,
        s3=s3,
    )


@cli.command()
@click.argument("input")
@click.argument("output", metavar="EMBEDDINGS")
@featurize_options
@spark_options
def featurize(input, output, spark_cfg, s3, quiet, **kw):
    """Images under INPUT -> EMBEDDINGS/embeddings (path, label, split, size_bytes, embedding),
    EMBEDDINGS/errors (path, reason, detail, ...) and EMBEDDINGS/report.json. Rerun into the same
    EMBEDDINGS, only new or changed images are embedded (see --full)."""
    from .jobs import run_featurize

    run_featurize(_feat_cfg(input, output, kw), spark_cfg, quiet=quiet, s3=s3)


@cli.command()
@click.argument("embeddings")
@click.argument("output")
@reduce_options
@spark_options
def reduce(embeddings, output, spark_cfg, s3, k, variance, reuse_model, quiet):
    """EMBEDDINGS (featurize's folder or an embeddings Parquet dataset) -> OUTPUT/features
    (path, label, split, pca), OUTPUT/pca (the fitted StandardScaler + PCA, a Spark PipelineModel),
    explained variance, report."""
    from .jobs import run_reduce

    run_reduce(
        ReduceConfig(input=embeddings, output=output, k=k, variance=variance, reuse_model=reuse_model),
        spark_cfg,
        quiet=quiet,
        s3=s3,
    )


@cli.command()
@click.argument("embeddings", nargs=-1, required=True)
@click.argument("output", metavar="MODEL")
@click.option(
    "--catalogue",
    default=None,
    metavar="FILE|builtin",
    help="CSV label,species,family: each collection's folder name -> the species the model names -> its "
    "family (one species learnt from every collection that shows it). `builtin`: the product's, for "
    "Fruits-360 and GroceryStore. Default: each label its own species and family.",
)
@click.option(
    "--candidates",
    default=",".join(default(TrainConfig, "candidates")),
    show_default=True,
    help="Heads to compare on validation, comma-separated KIND:SETTING: lr_full:REG (logistic regression on "
    "every standardised dimension, REG its regParam), lr_pca:REG (on PCA), mlp:UNITS (PCA -> hidden "
    "layer -> softmax; Spark solver). The report lists each one's validation accuracy and seconds.",
)
@click.option("--models", default=None, hidden=True)  # before 0.2: kinds, each with its grid; until 0.3.0
@click.option(
    "--default",
    "default_model",
    default=None,
    help="Export this candidate (or kind) whatever the validation says (default: the best on validation).",
)
@click.option(
    "--solver",
    type=click.Choice(list(SOLVERS)),
    default=default(TrainConfig, "solver"),
    show_default=True,
    help="driver: NumPy/SciPy in this process (training rows in memory); spark: Spark ML (any size, "
    "any cluster); auto: driver when the training rows fit in its memory. Both fit the same model.",
)
@click.option(
    "--validation",
    type=float,
    default=default(TrainConfig, "validation"),
    show_default=True,
    help="Share of each class's train images (the last ones in path order) held out to choose, for "
    "collections without a val/ split.",
)
@click.option(
    "--pca-variance",
    type=float,
    default=default(TrainConfig, "pca_variance"),
    show_default=True,
    help="PCA size for lr_pca and mlp: the smallest k reaching this share of variance.",
)
@click.option(
    "--target-precision",
    type=float,
    default=default(TrainConfig, "target_precision"),
    show_default=True,
    help="'Not sure' thresholds: answered validation photos at least this precise (species answers alone, and "
    "species and family answers together).",
)
@click.option(
    "--temperature/--no-temperature",
    default=default(TrainConfig, "temperature"),
    show_default=True,
    help="Scale the classifier's logits by the temperature that fits validation best (log-loss) before "
    "choosing the thresholds (measured: no more answers on GroceryStore val/, docs/benchmarks.md).",
)
@click.option("--max-iter", type=click.IntRange(1, 10_000), default=default(TrainConfig, "max_iter"), show_default=True)
@spark_options
def train(
    embeddings,
    output,
    spark_cfg,
    s3,
    quiet,
    catalogue,
    candidates,
    models,
    default_model,
    solver,
    validation,
    pca_variance,
    target_precision,
    temperature,
    max_iter,
):
    """EMBEDDINGS... (one or more folders run/featurize wrote: collections) -> MODEL, a classifier
    folder: the Spark ML PipelineModel, a portable NumPy export for predict/classify/serve, the
    catalogue it was trained with, report.json, confusion.png.

    Fits on the train splits, chooses on validation (a collection's val/ split, else carved from
    train), evaluates on test.
    """
    from .jobs import run_train

    names = None
    if models is not None:
        names = tuple(m.strip() for m in models.split(",") if m.strip())
        note(
            "--models is now --candidates KIND:SETTING; --models KINDS (each with its old grid) is accepted until 0.3.0"
        )
    run_train(
        TrainConfig(
            input=tuple(embeddings),
            output=output,
            catalogue=catalogue,
            candidates=tuple(c for c in candidates.split(",") if c.strip()),
            models=names,
            default=default_model,
            solver=solver,
            validation=validation,
            pca_variance=pca_variance,
            target_precision=target_precision,
            temperature=temperature,
            max_iter=max_iter,
        ),
        replace(spark_cfg, quick_jit=False),
        quiet=quiet,
        s3=s3,
    )


@cli.command()
@click.option("--model", "model_dir", required=True, help="Model folder `fruitlens train` wrote (local or s3://).")
@click.argument("photos", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout instead of a table.")
@click.option(
    "--together",
    is_flag=True,
    help="The PHOTOS show one fruit: one answer from all of them, as the service's identify gives "
    "(README, 'Several photos of one fruit'), and each photo's own answer.",
)
@backbone_file_option
@s3_options
def predict(model_dir, photos, as_json, together, backbone_file, s3):
    """PHOTOS (files or s3:// objects) -> top-5 species each, without Spark. "not sure" when the
    winning probability is low or the photo is unlike every training image. Exit 1 if any failed."""
    from .engine.predict import Identifier  # noqa: PLC0415 - loaded by its command: --help stays light

    identifier = Identifier.load(model_dir, s3, backbone_file)
    answers = [identifier.answer_together(list(photos), s3)] if together else identifier.answer_paths(list(photos), s3)
    if as_json:
        click.echo(json.dumps([a.to_json() for a in answers], indent=2))
    else:
        _print_answers(answers)
    failed = [a for a in answers if a.prediction is None]
    for a in failed:
        click.echo(f"fruitlens: {a.path}: {a.reason}: {a.detail}", err=True)
    if failed:
        raise SystemExit(1)


def _print_answers(answers) -> None:
    from rich.console import Console  # noqa: PLC0415 - rich's tables load only to print one
    from rich.table import Table  # noqa: PLC0415

    console = Console(highlight=False, soft_wrap=True)
    for a in answers:
        if a.prediction is None:
            continue
        p = a.prediction
        verdict = (
            f"[yellow]not sure[/] ({p.why}); best guess {p.predicted}"
            if p.not_sure
            else f"[bold green]{p.predicted}[/]"
        )
        table = Table(title=f"{a.path}: {verdict}", title_justify="left", show_edge=False)
        table.add_column("#", justify="right")
        table.add_column("species")
        table.add_column("probability", justify="right")
        for i, (c, q) in enumerate(p.top, 1):
            table.add_row(str(i), c, f"{q:.1%}")
        console.print(table)
        for one in a.photos or []:  # several photos of one fruit: what each said alone
            q = one.prediction
            said = f"not sure ({q.why}), best guess {q.predicted}" if q.not_sure else q.answer
            console.print(f"  {one.path} alone: {said} ({q.top[0][1]:.1%})")


@cli.command()
@click.argument("model_dir", metavar="MODEL")
@click.argument("dest", metavar="FILE.tflite", type=click.Path(dir_okay=False))
@click.option(
    "--check",
    "check",
    multiple=True,
    metavar="PHOTO",
    help="Run the file on this photo (repeatable, local or s3://) beside `predict` and say how often both "
    "name the same species.",
)
@backbone_file_option
@s3_options
def export(model_dir, dest, check, backbone_file, s3):
    """MODEL (a folder `train` wrote) -> FILE.tflite: one LiteRT file holding the backbone and the
    classifier, for an app that identifies offline with any LiteRT runtime. Input: one RGB uint8
    photo (1, 224, 224, 3), or (1, 260, 260, 3) for an EfficientNet-Lite2 model, resized to it
    (bilinear). Outputs: probabilities (the model's classes, in
    model.json's order), family probabilities, novelty; the thresholds and names in its `fruitlens`
    metadata (README, "Take it with you")."""
    from .engine.export import export as export_file  # noqa: PLC0415 - the exporter loads with its command

    report = export_file(model_dir, dest, list(check), backbone_file, s3)
    click.echo(json.dumps(report, indent=2))


@cli.command()
@click.option("--model", "model_dir", required=True, help="Model folder `fruitlens train` wrote (local or s3://).")
@click.argument("input")
@click.argument("output")
@embed_options
@spark_options
def classify(model_dir, input, output, spark_cfg, s3, quiet, **kw):
    """Every image under INPUT -> OUTPUT/predictions (path, label, predicted, probability, not_sure,
    top5, ...), with OUTPUT/embeddings, OUTPUT/errors and report.json (accuracy when labels are known)."""
    from .jobs import run_classify

    run_classify(ClassifyConfig(model=model_dir, input=input, output=output, **kw), spark_cfg, quiet=quiet, s3=s3)


@cli.command()
@click.option("--model", "model_dir", required=True, help="Model folder `fruitlens train` wrote (local or s3://).")
@click.option(
    "--index",
    required=True,
    multiple=True,
    metavar="OUTPUT",
    help="Output folder `fruitlens run`/`featurize` wrote (its embeddings/), local or s3://: the similar images; "
    "repeatable, one per collection (shop photos and turntable frames), searched as one.",
)
@click.option(
    "--info",
    multiple=True,
    metavar="FOLDER",
    help="Species information, repeatable: the Fruits-360 metadata folder (dictionary.txt, Meta/) and/or "
    "GroceryStore's folder (classes.csv, iconic-images-and-descriptions/), local or s3://.",
)
@click.option(
    "--host",
    default=default(ServeConfig, "host"),
    show_default=True,
    help="Address to listen on (0.0.0.0: every interface).",
)
@click.option("--port", type=click.IntRange(0, 65535), default=default(ServeConfig, "port"), show_default=True)
@click.option("--ann", is_flag=True, help="Approximate neighbour search (usearch HNSW) instead of exact.")
@click.option(
    "--interpreters",
    type=click.IntRange(1, 16),
    default=default(ServeConfig, "interpreters"),
    show_default=True,
    help="Backbone interpreters shared by concurrent requests (each call takes one).",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 256),
    default=None,
    help="Inference threads per interpreter (default: cores / interpreters).",
)
@click.option(
    "--max-upload-mb",
    type=click.FloatRange(0.01, 1024),
    default=default(ServeConfig, "max_upload_bytes") / 2**20,
    show_default=True,
    help="Largest photo accepted.",
)
@click.option(
    "--max-photos",
    type=click.IntRange(1, 20),
    default=default(ServeConfig, "max_photos"),
    show_default=True,
    help="Photos of one fruit in one identify request.",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(1),
    default=default(ServeConfig, "max_pixels"),
    show_default=True,
    help="Photos with more pixels are refused as decompression bombs (the default covers phones' full "
    "48-50 Mpx modes, e.g. 8160x6120).",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1),
    default=default(ServeConfig, "max_connections"),
    show_default=True,
    help="Requests in flight; beyond, a JSON 503 that says to retry.",
)
@click.option(
    "--feedback",
    default=None,
    metavar="LOCATION",
    help="Keep users' corrections (with their consent, without metadata) in this folder or s3:// prefix, "
    "in the layout featurize reads (README, 'Privacy'). Default: feedback off.",
)
@click.option(
    "--feedback-retention-days",
    type=click.IntRange(1),
    default=default(ServeConfig, "feedback_retention_days"),
    show_default=True,
    help="Kept photos are deleted this long after they were given.",
)
@click.option(
    "--api-keys",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="Keys' hashes (`fruitlens keys add FILE NAME` makes a key): requests with a key get --key-rate-limit.",
)
@click.option(
    "--require-key",
    is_flag=True,
    help="Refuse API requests without a key (401), every route under /api/v1/ but /health and "
    "/openapi.json; the page stays open (and cannot identify without a key).",
)
@click.option(
    "--rate-limit",
    type=click.IntRange(1),
    default=default(ServeConfig, "rate_limit"),
    show_default=True,
    help="identify/feedback requests a minute per client address.",
)
@click.option(
    "--key-rate-limit",
    type=click.IntRange(1),
    default=default(ServeConfig, "key_rate_limit"),
    show_default=True,
    help="... per API key.",
)
@click.option(
    "--max-decodes",
    type=click.IntRange(1, 256),
    default=None,
    help="Requests whose photos decode at once (a photo at the pixel limit holds up to ~400 MB while "
    "it decodes). Default: the CPUs, at most 2.",
)
@click.option(
    "--decode-queue",
    type=click.IntRange(1),
    default=default(ServeConfig, "decode_queue"),
    show_default=True,
    help="Requests waiting for a decode beyond those; more get a JSON 503 that says to retry.",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(0.1, 3600),
    default=default(ServeConfig, "header_timeout"),
    show_default=True,
    help="Seconds for a request's line and headers, from connecting (or the previous answer); past it "
    "the connection is closed.",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(0.1, 3600),
    default=default(ServeConfig, "body_timeout"),
    show_default=True,
    help="Seconds for each part of an upload; past its first such period an upload must also average "
    "500 bytes/s. Else a JSON 408.",
)
@click.option(
    "--max-idle-connections",
    type=click.IntRange(1),
    default=default(ServeConfig, "max_idle_connections"),
    show_default=True,
    help="Connections without a request in progress (opened, sending headers, kept alive); beyond, the "
    "one idle the longest is closed.",
)
@click.option(
    "--forwarded-allow-ips",
    default=None,
    metavar="IPS",
    help="Comma-separated addresses or networks of the reverse proxies whose X-Forwarded-For and "
    "X-Forwarded-Proto are trusted (e.g. 10.0.0.0/8). Default: none (the client is the TCP peer).",
)
@click.option(
    "--limits-storage",
    default=default(ServeConfig, "limits_storage"),
    show_default=True,
    metavar="URI",
    help="Where rate limits and identified photos' ids live: memory:// (this process) or redis://HOST:PORT "
    "(Valkey too; shared by every process and machine pointed at it; pip install 'fruitlens[redis]').",
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=default(ServeConfig, "workers"),
    show_default=True,
    help="Server processes, each with its own model (memory x N); more than 1 needs --limits-storage redis://. "
    "SIGHUP reloads the model without downtime.",
)
@backbone_file_option
@s3_options
def serve(
    model_dir,
    index,
    info,
    host,
    port,
    ann,
    interpreters,
    threads,
    max_upload_mb,
    max_photos,
    max_pixels,
    max_connections,
    feedback,
    feedback_retention_days,
    api_keys,
    require_key,
    rate_limit,
    key_rate_limit,
    max_decodes,
    decode_queue,
    header_timeout,
    body_timeout,
    max_idle_connections,
    forwarded_allow_ips,
    limits_storage,
    workers,
    backbone_file,
    s3,
):
    """HTTP identification service and web page: open http://HOST:PORT/ (API under /api/v1/,
    schema at /api/v1/openapi.json). Send 1 to 5 photos of a fruit: the species (or its family,
    or "not sure"), its names and information in English or French, the most similar images of
    --index; corrections kept with consent (--feedback). `kill -HUP PID` loads the model again
    (a new one written to --model) without downtime: answers in flight finish on the previous one."""
    from .serve import run as run_server  # noqa: PLC0415 - the service (FastAPI) loads only to serve

    run_server(
        ServeConfig(
            model=model_dir,
            index=tuple(index),
            info=tuple(info),
            host=host,
            port=port,
            ann=ann,
            interpreters=interpreters,
            threads=threads,
            max_upload_bytes=int(max_upload_mb * 1024 * 1024),
            max_photos=max_photos,
            max_pixels=max_pixels,
            max_connections=max_connections,
            feedback=feedback,
            feedback_retention_days=feedback_retention_days,
            api_keys=api_keys,
            require_key=require_key,
            rate_limit=rate_limit,
            key_rate_limit=key_rate_limit,
            max_decodes=max_decodes,
            decode_queue=decode_queue,
            header_timeout=header_timeout,
            body_timeout=body_timeout,
            max_idle_connections=max_idle_connections,
            forwarded_allow_ips=forwarded_allow_ips,
            limits_storage=limits_storage,
            workers=workers,
            backbone_file=backbone_file,
            s3=s3,
        )
    )


@cli.command()
@click.argument("outputs", nargs=-1, required=True, metavar="OUTPUT [OUTPUT2 ...]")
@click.option("--model", "model_dir", required=True, help="The model folder `serve` will answer with (local or s3://).")
@click.option(
    "--dtype",
    type=click.Choice(["f16", "f32", "i8"]),
    default="f16",
    show_default=True,
    help="How the graph stores each vector (f16: half of f32's memory, the same neighbours).",
)
@click.option(
    "--dims",
    type=click.IntRange(0),
    default=INDEX_DIMS,
    show_default=True,
    help="Index the model's inputs projected on this many principal axes of its reference features when it "
    "has more (0: all of them); the same-species share of neighbours is kept (docs/benchmarks.md).",
)
@s3_options
def index(outputs, model_dir, dtype, dims, s3):
    """The similar-images index of each collection OUTPUT (a folder run/featurize wrote), for MODEL:
    a usearch HNSW graph saved as OUTPUT/index, which `serve --ann --index OUTPUT [--index OUTPUT2]`
    memory-maps (start-up in seconds at a million images) and searches as one. Rerun after `run`:
    only new, changed and removed images are updated."""
    from .engine.model import PortableModel  # noqa: PLC0415 - the engine and the index load with their command
    from .serve.saved_index import build  # noqa: PLC0415

    model = PortableModel.load(Location.of(model_dir, s3))
    reports = [build(Location.of(output, s3), model, dtype, dims=dims) for output in outputs]
    click.echo(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))


@cli.group()
def keys():
    """API keys for `serve --api-keys FILE` (the file holds only their hashes)."""


@keys.command("add")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("name")
def keys_add(file, name):
    """Make a key for NAME (who holds it), append its hash to FILE, print the key once."""
    from .serve.limits import add_key  # noqa: PLC0415 - loads the serve package: only for this command

    click.echo(add_key(file, name))
    click.echo(f"fruitlens: the key above is shown once; {file} holds only its hash", err=True)


from .emr.cli import emr  # noqa: E402

cli.add_command(emr)


def main(argv=None) -> int:
    debug = bool(os.environ.get("FRUITLENS_DEBUG"))
    try:
        cli.main(args=argv, prog_name="fruitlens", standalone_mode=False)
        return 0
    except click.exceptions.Abort:
        _fail("interrupted")
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except FruitlensError as exc:
        _fail(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    except Exception as exc:  # Spark/JVM or unexpected failures: one line, not a traceback
        if debug:
            raise
        _fail(f"{type(exc).__name__}: {_first_line(exc)} (set FRUITLENS_DEBUG=1 for the traceback)")
        return 1


def _first_line(exc: BaseException) -> str:
    java = getattr(exc, "java_exception", None)  # Py4JJavaError: the JVM's own exception says what failed
    if java is not None:
        try:
            cause = java
            while cause.getCause() is not None and cause.getCause() != cause:
                cause = cause.getCause()
            own = str(java.toString()).splitlines()[0][:200]
            root = str(cause.toString()).splitlines()[0][:200]
            return own if root == own else f"{own}; caused by {root}"
        except Exception:  # noqa: BLE001 - the JVM may be gone: fall back to the Python text
            pass
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("Traceback", "at ", "File ")):
            return line[:300]
    return type(exc).__name__


def _fail(message: str) -> None:
    click.echo(f"fruitlens: error: {message}", err=True)


if __name__ == "__main__":
    sys.exit(main())


def entry() -> None:
    sys.exit(main())
