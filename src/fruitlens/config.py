"""Typed configuration of every job, with every default, in one place. The CLI only fills these in
(its option defaults are read from here), and a config checks itself when it is made: a config
object that exists is valid, and nothing validates it again."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from . import FruitlensError

# The embedding's defaults are defined beside the code that applies them (embedding/, which sits
# below config); everything else reads every default from here.
from .embedding.backbones import DEFAULT_BACKBONE
from .embedding.decode import DEFAULT_MAX_PIXELS
from .embedding.views import DEFAULT_CROP, Views
from .storage.location import S3Options

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# Images per Spark task. Each task costs ~0.1 s of Python and ~0.04 s of JVM CPU besides its images
# (stream set-up, part files, the UDF itself): 1024 instead of 256 took featurize on 40k images from
# 209 to 192 CPU-seconds. Partitions are rounded up to whole waves of the task slots, so the last
# wave leaves no slot idle for long (docs/benchmarks.md, Performance II).
DEFAULT_IMAGES_PER_PARTITION = 1024
DEFAULT_VARIANCE = 0.95  # PCA: the smallest k reaching this share of the variance
# `fruitlens index --dims`: the saved similar-images index projects the model's inputs (1,992 for the
# product) on this many principal axes of its references; the same-species share of a shop photo's 8
# neighbours stays the same (docs/benchmarks.md, "Similar photos"); 0 keeps every dimension.
INDEX_DIMS = 256


def default(config: type, name: str):
    """A config field's default (for the CLI's option defaults)."""
    for f in fields(config):
        if f.name == name:
            return f.default
    raise KeyError(name)


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
class EmbedSettings:
    """How the embedding tasks run: shared by featurize, run and classify."""

    batch_size: int = 16  # images per inference call
    threads: int = 1  # inference threads per Python worker (one worker per Spark task slot)
    images_per_partition: int = DEFAULT_IMAGES_PER_PARTITION
    io_threads: int = 4  # concurrent reads and decodes per task (matters for object stores)
    incremental: bool = True  # reuse rows OUTPUT already holds for unchanged inputs (and resume)

    def __post_init__(self):
        for name in ("batch_size", "threads", "images_per_partition", "io_threads"):
            _positive(f"--{name.replace('_', '-')}", getattr(self, name))


@dataclass(frozen=True, kw_only=True)
class FeaturizeConfig(EmbedSettings):
    input: str
    output: str
    backbone: str = DEFAULT_BACKBONE
    backbone_file: str | None = None  # the backbone's file, or a folder holding it under its published name
    max_pixels: int = DEFAULT_MAX_PIXELS
    image_size: int | None = None  # square side the backbone runs at (None: its own, 224 or 260)
    views: int = 1  # views of each photo embedded (embedding/views.py): 1, 2, 4, 6 or 12
    crop: float = DEFAULT_CROP  # a crop view's side, as a share of the photo's short side

    def __post_init__(self):
        super().__post_init__()
        _positive("--max-pixels", self.max_pixels)
        Views(self.views, self.crop)  # checks them
        if self.image_size is not None and self.image_size < 32:
            raise FruitlensError(f"--image-size must be at least 32, got {self.image_size}")


@dataclass(frozen=True)
class ReduceConfig:
    input: str
    output: str
    k: int | None = None
    variance: float | None = None  # None with no k: DEFAULT_VARIANCE
    reuse_model: bool = False  # project with the scaler + PCA OUTPUT already holds instead of refitting

    def __post_init__(self):
        if self.reuse_model:
            if self.k is not None or self.variance is not None:
                raise FruitlensError("--reuse-model keeps the model's own k: give neither --k nor --variance")
            return
        if self.k is not None and self.variance is not None:
            raise FruitlensError("give either --k or --variance, not both")
        if self.k is None and self.variance is None:
            object.__setattr__(self, "variance", DEFAULT_VARIANCE)
        if self.k is not None:
            _positive("--k", self.k)
        if self.variance is not None and not 0.0 < self.variance <= 1.0:
            raise FruitlensError(f"--variance must be in (0, 1], got {self.variance}")


MODELS = ("lr_pca", "lr_full", "mlp")  # the kinds of head `train` compares
# `train --models` before 0.2: each kind's grid (accepted until 0.3.0, as --candidates)
MODEL_GRIDS = {"lr_pca": ("1e-4", "3e-4", "1e-3", "1e-2"), "lr_full": ("1e-4", "3e-4", "1e-3", "1e-2"), "mlp": ("128",)}
# The default candidates: the best trade of validation accuracy for time (docs/benchmarks.md, "Train").
DEFAULT_CANDIDATES = ("lr_full:1e-4", "lr_full:1e-3")
SOLVERS = ("auto", "driver", "spark")
KINDS = ("lr_full", "lr_pca", "mlp")  # logistic regression on every standardised dimension, on PCA; perceptron


@dataclass(frozen=True)
class Candidate:
    """One head to compare: `kind`, and its setting (the regularisation of a logistic regression,
    the hidden units of a perceptron). Written `lr_full:1e-4`, `mlp:128`."""

    kind: str
    setting: float

    @property
    def name(self) -> str:
        return f"{self.kind}:{int(self.setting) if self.kind == 'mlp' else f'{self.setting:g}'}"

    @classmethod
    def parse(cls, text: str) -> Candidate:
        kind, sep, value = text.strip().partition(":")
        if kind not in KINDS or not sep:
            raise FruitlensError(
                f"--candidates: {text.strip()!r} is not KIND:SETTING with KIND one of "
                f"{', '.join(KINDS)} (e.g. lr_full:1e-4, mlp:128)"
            )
        try:
            setting = float(value)
        except ValueError:
            raise FruitlensError(f"--candidates: {text.strip()!r}: {value!r} is not a number") from None
        if not (setting > 0 if kind == "mlp" else setting >= 0) or not math.isfinite(setting):
            raise FruitlensError(
                f"--candidates: {text.strip()!r}: the setting must be "
                + ("a positive number of hidden units" if kind == "mlp" else "a regularisation >= 0")
            )
        return cls(kind, setting)

    @property
    def uses_pca(self) -> bool:
        return self.kind in ("lr_pca", "mlp")


@dataclass(frozen=True)
class TrainConfig:
    input: str | tuple[str, ...]  # one or more embeddings datasets (collections)
    output: str
    candidates: tuple[str, ...] = DEFAULT_CANDIDATES  # KIND:SETTING (`Candidate`)
    default: str | None = None  # force this candidate (or kind) as the exported one (default: best on validation)
    validation: float = 0.2
    pca_variance: float = DEFAULT_VARIANCE
    target_precision: float = 0.995
    temperature: bool = False  # the classifier's temperature chosen on validation (log-loss) before the thresholds
    refs_per_class: int = 50
    max_iter: int = 200
    seed: int = 7
    catalogue: str | None = None  # a CSV label,species,family, `builtin`, or None: each label its own class
    solver: str = "auto"  # driver (NumPy), spark (Spark ML), auto: driver when the rows fit its memory
    models: tuple[str, ...] | None = None  # before 0.2: kinds, each with its grid (use candidates; until 0.3.0)

    def __post_init__(self):
        inputs = (self.input,) if isinstance(self.input, str) else tuple(self.input)
        if not inputs:
            raise FruitlensError("give at least one EMBEDDINGS folder")
        object.__setattr__(self, "input", inputs)
        if self.models is not None:
            unknown = set(self.models) - set(MODELS)
            if unknown or not self.models:
                raise FruitlensError(
                    f"--models: choose among {', '.join(MODELS)}, got {', '.join(self.models) or 'none'}"
                )
            object.__setattr__(self, "candidates", tuple(f"{m}:{g}" for m in self.models for g in MODEL_GRIDS[m]))
        parsed = [Candidate.parse(c) for c in self.candidates]
        if not parsed:
            raise FruitlensError("--candidates: give at least one (e.g. lr_full:1e-4)")
        object.__setattr__(self, "candidates", tuple(c.name for c in parsed))
        if self.default is not None and self.default not in {c.kind for c in parsed} | {c.name for c in parsed}:
            raise FruitlensError(f"--default {self.default} is not among --candidates {','.join(self.candidates)}")
        if self.solver not in SOLVERS:
            raise FruitlensError(f"--solver must be one of {', '.join(SOLVERS)}, got {self.solver}")
        if not 0.05 <= self.validation <= 0.5:
            raise FruitlensError(f"--validation must be in [0.05, 0.5], got {self.validation}")
        if not 0.0 < self.pca_variance <= 1.0:
            raise FruitlensError(f"--pca-variance must be in (0, 1], got {self.pca_variance}")
        if not 0.5 <= self.target_precision < 1.0:
            raise FruitlensError(f"--target-precision must be in [0.5, 1), got {self.target_precision}")


@dataclass(frozen=True, kw_only=True)
class ClassifyConfig(EmbedSettings):
    model: str  # a model folder `train` wrote (local or s3://)
    input: str
    output: str


@dataclass(frozen=True)
class ServeConfig:
    model: str
    index: str | tuple[str, ...]  # one collection's folder, or several (searched as one)
    info: str | tuple[str, ...] = ()  # species information folders (Fruits-360 metadata, GroceryStore)
    host: str = "127.0.0.1"
    port: int = 8000
    ann: bool = False
    interpreters: int = 2
    threads: int | None = None  # per interpreter; default: cores / interpreters
    neighbours: int = 8
    max_upload_bytes: int = 10 * 1024 * 1024  # per photo
    max_photos: int = 5  # photos of one fruit in one identify request
    max_pixels: int = 50_000_000
    max_connections: int = 64  # requests in flight; beyond: a JSON 503 (retry)
    backbone_file: str | None = None
    feedback: str | None = None  # where consented photos go (a folder or s3://); None: feedback off
    feedback_retention_days: int = 365
    photo_cache_s: int = 900  # an identified photo stays referable by its id for feedback this long
    api_keys: str | None = None  # a file of keys' hashes (serve/limits.py)
    require_key: bool = False  # refuse requests without a key (else: the client address's rate)
    rate_limit: int = 60  # identify/feedback requests per minute per client address
    key_rate_limit: int = 600  # ... per API key
    max_decodes: int | None = None  # requests' photos decoding at once; default: CPUs, at most 2 (serve/decodes.py)
    decode_queue: int = 32  # requests waiting for a decode beyond those; more: a JSON 503
    header_timeout: float = 10.0  # s for a request's line and headers (from connecting or the previous answer)
    body_timeout: float = 20.0  # s for each part of an upload's body (and >= 500 B/s past the first 20 s)
    max_idle_connections: int = 256  # connections without a request in progress; beyond, the oldest is closed
    forwarded_allow_ips: str | None = None  # proxies whose X-Forwarded-For/-Proto is trusted; None: none
    limits_storage: str = "memory://"  # where rate limits and photo ids live: memory:// or redis://HOST:PORT
    workers: int = 1  # server processes (each loads the model); > 1 needs a shared --limits-storage
    s3: S3Options = S3Options()

    def __post_init__(self):
        object.__setattr__(self, "info", (self.info,) if isinstance(self.info, str) else tuple(self.info))
        object.__setattr__(self, "index", (self.index,) if isinstance(self.index, str) else tuple(self.index))
        if not self.index:
            raise FruitlensError("--index: give at least one collection folder")
        for name in (
            "interpreters",
            "max_photos",
            "max_connections",
            "feedback_retention_days",
            "rate_limit",
            "key_rate_limit",
            "photo_cache_s",
            "decode_queue",
            "max_idle_connections",
            "workers",
        ):
            _positive(f"--{name.replace('_', '-')}", getattr(self, name))
        if self.max_decodes is not None:
            _positive("--max-decodes", self.max_decodes)
        for name in ("header_timeout", "body_timeout"):
            if not getattr(self, name) > 0:
                raise FruitlensError(f"--{name.replace('_', '-')} must be a positive number of seconds")
        if self.require_key and not self.api_keys:
            raise FruitlensError("--require-key needs --api-keys FILE")
        if self.workers > 1 and self.limits_storage.lower().startswith("memory"):
            raise FruitlensError(
                f"--workers {self.workers} needs --limits-storage redis://HOST:PORT: with memory:// each process "
                "would count its own rate limits and know only its own photo ids"
            )


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise FruitlensError(f"{name} must be a positive integer, got {value}")
