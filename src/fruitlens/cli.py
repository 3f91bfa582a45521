"""Command line: a thin layer that fills in the typed configs and calls the runner."""

from __future__ import annotations

import functools
import os
import sys

import click

from . import FruitlensError, __version__
from .config import DEFAULT_BACKBONE, DEFAULT_MAX_PIXELS, FeaturizeConfig, ReduceConfig, SparkConfig
from .storage import S3Options


def spark_options(f):
    @click.option("--master", default="local[*]", show_default=True,
                  help="Spark master: local[N], spark://HOST:PORT, yarn. Ignored under spark-submit.")
    @click.option("--driver-memory", default="2g", show_default=True, help="Spark driver memory.")
    @click.option("--conf", "conf", multiple=True, metavar="KEY=VALUE",
                  help="Extra Spark setting, repeatable (e.g. --conf spark.executor.memory=4g).")
    @click.option("--quiet", is_flag=True, help="Do not print the summary.")
    @click.option("--s3-endpoint-url", default=None, metavar="URL",
                  help="S3-compatible endpoint (default: $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, else AWS).")
    @click.option("--s3-region", default=None, help="S3 region (default: $AWS_REGION / profile).")
    @click.option("--s3-max-attempts", type=click.IntRange(1, 50), default=10, show_default=True,
                  help="Attempts per S3 request, with adaptive backoff on throttling and transient errors.")
    @functools.wraps(f)
    def wrapper(*args, master, driver_memory, conf, s3_endpoint_url, s3_region, s3_max_attempts, **kwargs):
        extra = {}
        for item in conf:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--conf")
            extra[key.strip()] = value
        spark = SparkConfig(master=master, driver_memory=driver_memory, extra_conf=extra)
        s3 = S3Options(endpoint_url=s3_endpoint_url, region=s3_region, max_attempts=s3_max_attempts)
        return f(*args, spark_cfg=spark, s3=s3, **kwargs)

    return wrapper


def featurize_options(f):
    @click.option("--backbone", default=DEFAULT_BACKBONE, show_default=True,
                  type=click.Choice(["mobilenet_v2", "mobilenet_v2_tf1"]),
                  help="Pretrained network giving the 1280-d pooled embedding.")
    @click.option("--model", type=click.Path(), default=None,
                  help="Local model file, or a folder holding it under its published name "
                       "(default: $FRUITLENS_MODEL_DIR, else download once, sha256-checked, to the user cache).")
    @click.option("--batch-size", type=int, default=16, show_default=True, help="Images per inference call.")
    @click.option("--threads", type=int, default=1, show_default=True,
                  help="Inference threads per Python worker (Spark runs one worker per task slot).")
    @click.option("--images-per-partition", type=int, default=256, show_default=True,
                  help="Images per Spark task.")
    @click.option("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, show_default=True,
                  help="Larger images are rejected as decompression bombs.")
    @click.option("--io-threads", type=int, default=4, show_default=True,
                  help="Concurrent reads and decodes per task.")
    @click.option("--incremental/--full", default=True, show_default=True,
                  help="--incremental: read and embed only images that are new or changed since what OUTPUT "
                       "holds (and resume an interrupted run); --full: embed every image again.")
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)

    return wrapper


def reduce_options(f):
    @click.option("--k", type=int, default=None, help="Number of principal components.")
    @click.option("--variance", type=float, default=None,
                  help="Keep the smallest k reaching this share of variance (default 0.95 when --k is not given).")
    @click.option("--reuse-model", is_flag=True,
                  help="Project with the StandardScaler + PCA model OUTPUT already holds instead of refitting.")
    @functools.wraps(f)
    def wrapper(*args, k, variance, reuse_model, **kwargs):
        if reuse_model and (k is not None or variance is not None):
            raise click.UsageError("--reuse-model keeps the model's own k: give neither --k nor --variance")
        if k is None and variance is None and not reuse_model:
            variance = 0.95
        return f(*args, k=k, variance=variance, reuse_model=reuse_model, **kwargs)

    return wrapper


def _feat_cfg(input, output, kw) -> FeaturizeConfig:
    return FeaturizeConfig(
        input=input, output=output, backbone=kw["backbone"], model=kw["model"], batch_size=kw["batch_size"],
        threads=kw["threads"], images_per_partition=kw["images_per_partition"], max_pixels=kw["max_pixels"],
        io_threads=kw["io_threads"], incremental=kw["incremental"],
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="fruitlens")
def cli():
    """fruitlens: fruit photos -> MobileNetV2 embeddings -> StandardScaler + PCA, on Spark.

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

    Writes OUTPUT/embeddings, OUTPUT/errors, OUTPUT/features, OUTPUT/model, report.json, scree.png.
    Rerun into the same OUTPUT, only new or changed images are embedded (see --full).
    """
    from .jobs import run_all

    run_all(_feat_cfg(input, output, kw),
            ReduceConfig(input=output, output=output, k=k, variance=variance, reuse_model=reuse_model),
            spark_cfg, quiet=quiet, s3=s3)


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
    (path, label, split, pca), OUTPUT/model (Spark PipelineModel), explained variance, report."""
    from .jobs import run_reduce

    run_reduce(ReduceConfig(input=embeddings, output=output, k=k, variance=variance, reuse_model=reuse_model),
               spark_cfg, quiet=quiet, s3=s3)


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
    except Exception as exc:  # noqa: BLE001 - Spark/JVM or unexpected failures: one line, not a traceback
        if debug:
            raise
        _fail(f"{type(exc).__name__}: {_first_line(exc)} (set FRUITLENS_DEBUG=1 for the traceback)")
        return 1


def _first_line(exc: BaseException) -> str:
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
