"""Typed configuration of every job, in one place. The CLI only fills these in."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import FruitlensError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# The TF2 MobileNetV2's pooled output plus its earlier stages' averages, one pass: chosen on the
# validation split over the plain pooled output (docs/benchmarks.md, "The identification engine").
DEFAULT_BACKBONE = "mobilenet_v2_multiscale"
# Pillow's own default is ~89 Mpx; a phone photo is 12-50 Mpx. Anything larger is treated as a
# decompression bomb and recorded as an error rather than decoded.
DEFAULT_MAX_PIXELS = 100_000_000
# Images per Spark task. Each task costs ~0.1 s of Python and ~0.04 s of JVM CPU besides its images
# (stream set-up, part files, the UDF itself): 1024 instead of 256 took featurize on 40k images from
# 209 to 192 CPU-seconds. Partitions are rounded up to whole waves of the task slots, so the last
# wave leaves no slot idle for long (docs/benchmarks.md, Performance II).
DEFAULT_IMAGES_PER_PARTITION = 1024


@dataclass(frozen=True)
class SparkConfig:
    master: str = "local[*]"
    app_name: str = "fruitlens"
    driver_memory: str = "2g"
    extra_conf: dict[str, str] = field(default_factory=dict)
    # The driver JVM with the C1 compiler only: right where it just plans and moves small batches
    # (featurize, classify, reduce), wrong for train, whose optimizers run in the JVM.
    quick_jit: bool = True


@dataclass(frozen=True)
class FeaturizeConfig:
    input: str
    output: str
    backbone: str = DEFAULT_BACKBONE
    model: str | None = None  # a model file or a folder holding it under its published name
    batch_size: int = 16
    threads: int = 1  # inference threads per Python worker (one worker per Spark task slot)
    images_per_partition: int = DEFAULT_IMAGES_PER_PARTITION
    max_pixels: int = DEFAULT_MAX_PIXELS
    io_threads: int = 4  # concurrent reads per task (matters for object stores)
    incremental: bool = True  # reuse rows OUTPUT already holds for unchanged inputs (and resume)
    image_size: int | None = None  # square side the backbone runs at (None: its own, 224)

    def validate(self) -> None:
        _positive("--batch-size", self.batch_size)
        _positive("--threads", self.threads)
        _positive("--images-per-partition", self.images_per_partition)
        _positive("--max-pixels", self.max_pixels)
        _positive("--io-threads", self.io_threads)
        if self.image_size is not None and self.image_size < 32:
            raise FruitlensError(f"--image-size must be at least 32, got {self.image_size}")


@dataclass(frozen=True)
class ReduceConfig:
    input: str
    output: str
    k: int | None = None
    variance: float | None = 0.95
    reuse_model: bool = False  # project with the model OUTPUT already holds instead of refitting

    def validate(self) -> None:
        if self.reuse_model:
            if self.k is not None or self.variance is not None:
                raise FruitlensError("--reuse-model keeps the model's own k: give neither --k nor --variance")
            return
        if self.k is not None and self.variance is not None:
            raise FruitlensError("give either --k or --variance, not both")
        if self.k is None and self.variance is None:
            raise FruitlensError("give --k or --variance")
        if self.k is not None:
            _positive("--k", self.k)
        if self.variance is not None and not 0.0 < self.variance <= 1.0:
            raise FruitlensError(f"--variance must be in (0, 1], got {self.variance}")


MODELS = ("lr_pca", "lr_full", "mlp")  # the classifiers `train` compares


@dataclass(frozen=True)
class TrainConfig:
    input: str
    output: str
    models: tuple[str, ...] = MODELS
    default: str | None = None  # force this model as the exported one (default: best on validation)
    validation: float = 0.2
    pca_variance: float = 0.95
    target_precision: float = 0.995
    refs_per_class: int = 50
    max_iter: int = 200
    seed: int = 7

    def validate(self) -> None:
        unknown = set(self.models) - set(MODELS)
        if unknown or not self.models:
            raise FruitlensError(f"--models: choose among {', '.join(MODELS)}, got {', '.join(self.models) or 'none'}")
        if self.default is not None and self.default not in self.models:
            raise FruitlensError(f"--default {self.default} is not among --models {','.join(self.models)}")
        if not 0.05 <= self.validation <= 0.5:
            raise FruitlensError(f"--validation must be in [0.05, 0.5], got {self.validation}")
        if not 0.0 < self.pca_variance <= 1.0:
            raise FruitlensError(f"--pca-variance must be in (0, 1], got {self.pca_variance}")
        if not 0.5 <= self.target_precision < 1.0:
            raise FruitlensError(f"--target-precision must be in [0.5, 1), got {self.target_precision}")


@dataclass(frozen=True)
class ClassifyConfig:
    model: str  # a model folder `train` wrote (local or s3://)
    input: str
    output: str
    batch_size: int = 16
    threads: int = 1
    images_per_partition: int = DEFAULT_IMAGES_PER_PARTITION
    io_threads: int = 4
    incremental: bool = True

    def validate(self) -> None:
        _positive("--batch-size", self.batch_size)
        _positive("--threads", self.threads)
        _positive("--images-per-partition", self.images_per_partition)
        _positive("--io-threads", self.io_threads)


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise FruitlensError(f"{name} must be a positive integer, got {value}")

