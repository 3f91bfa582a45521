"""Mapper: image records -> embedding rows or error rows. Plain Python, no Spark.

Each Python worker keeps one loaded backbone per (model, threads) for its whole life, so the model
is loaded once per worker, not per batch or per partition. Reads and decodes run on a small thread
pool ahead of inference (Pillow and LiteRT release the GIL), which overlaps I/O, decoding and the
network's compute.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from ..embedding import backbones
from ..embedding.decode import DecodeError, decode_image
from ..schemas import real_path

_WORKER_BACKBONES: dict[tuple, backbones.Backbone] = {}
_STATS_LOCK = threading.Lock()


@dataclass(frozen=True)
class MapperSettings:
    backbone: str
    model_path: str
    threads: int = 1
    batch_size: int = 16
    max_pixels: int = 100_000_000
    io_threads: int = 4
    input_size: tuple[int, int] | None = None  # (width, height) the backbone runs at; None: its own


@dataclass
class MapperStats:
    """Seconds spent per stage, summed over all tasks (thread time for read and decode)."""

    read_s: float = 0.0
    decode_s: float = 0.0
    infer_s: float = 0.0
    infer_cpu_s: float = 0.0  # CPU time of the inferring thread (infer_s minus time preempted)
    read_decode_cpu_s: float = 0.0  # CPU time of the I/O threads reading and decoding
    write_s: float = 0.0  # writing Parquet parts inside the tasks
    model_load_s: float = 0.0
    model_loads: int = 0
    images: int = 0
    errors: int = 0
    batches: int = 0

    def merge(self, other: "MapperStats") -> "MapperStats":
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self


@dataclass
class Record:
    """One input on its way through a task: identity, label, split, then pixels and an
    embedding, or an error (`reason` from schemas.REASONS, and a one-line `detail`)."""

    path: str
    label: str | None
    split: str | None
    size_bytes: int
    modified_ns: int | None = None
    etag: str | None = None
    path_bytes: bytes | None = None
    embedding: np.ndarray | None = None
    reason: str | None = None
    detail: str | None = None
    pixels: np.ndarray | None = field(default=None, repr=False)

    @property
    def error(self) -> str | None:
        return f"{self.reason}: {self.detail}" if self.reason else None

    def fail(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail


def get_backbone(settings: MapperSettings, stats: MapperStats) -> backbones.Backbone:
    key = (settings.backbone, settings.model_path, settings.threads, settings.input_size)
    backbone = _WORKER_BACKBONES.get(key)
    if backbone is None:
        t0 = time.perf_counter()
        spec = backbones.at_size(backbones.get_spec(settings.backbone), settings.input_size)
        backbone = backbones.load(spec, settings.model_path, settings.threads)
        stats.model_load_s += time.perf_counter() - t0
        stats.model_loads += 1
        _WORKER_BACKBONES[key] = backbone
    return backbone


def read_bytes(record: Record, fs=None) -> bytes:
    """The record's bytes: local files by their exact name, objects through `fs` (the INPUT
    location's filesystem, which carries its S3 options)."""
    if fs is None:
        with open(real_path(record.path, record.path_bytes), "rb") as f:
            return f.read()
    return fs.cat_file(record.path)


def load_record(record: Record, size: tuple[int, int], max_pixels: int, stats: MapperStats, fs=None,
                upscale: bool = True) -> Record:
    """Read and decode one image in a pool thread; failures become the record's error.
    `upscale=False`: small images keep their size (a backbone that resizes in its graph)."""
    t0, c0 = time.perf_counter(), time.thread_time()
    data = b""
    try:
        data = read_bytes(record, fs)
        record.size_bytes = len(data)
    except FileNotFoundError:
        record.fail("missing", "the file disappeared after it was listed")
    except IsADirectoryError:
        record.fail("unreadable", "is a directory")
    except PermissionError:
        record.fail("unreadable", "permission denied")
    except Exception as exc:  # noqa: BLE001 - after the S3 client's bounded retries: throttling, 5xx, network
        record.fail("unreadable", _read_failure(exc))
    t1 = time.perf_counter()
    if record.reason is None:
        try:
            record.pixels = decode_image(data, size, max_pixels, upscale=upscale)
        except DecodeError as exc:
            record.fail(exc.reason, getattr(exc, "detail", str(exc)))
    t2 = time.perf_counter()
    cpu = time.thread_time() - c0
    with _STATS_LOCK:
        stats.read_s += t1 - t0
        stats.decode_s += t2 - t1
        stats.read_decode_cpu_s += cpu
    return record


def _read_failure(exc: Exception) -> str:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
    text = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).splitlines()[0][:200]
    return f"{code}: {text}" if code and code not in text else text


def embed_records(
    records: Iterable[Record],
    settings: MapperSettings,
    stats: MapperStats,
    fs=None,
    backbone: backbones.Backbone | None = None,
) -> Iterator[list[Record]]:
    """Yield lists of finished records (one list per inference batch), in input order.
    `fs`: the filesystem of remote inputs (None: local files); `backbone`: an already loaded
    one (default: this worker's cached backbone for `settings`)."""
    backbone = backbone or get_backbone(settings, stats)
    spec = backbone.spec
    upscale = not getattr(backbone, "resizes_in_graph", False)
    load = lambda r: load_record(r, spec.input_size, settings.max_pixels, stats, fs, upscale)  # noqa: E731
    window = max(settings.batch_size * 2, settings.io_threads * 2)
    with ThreadPoolExecutor(settings.io_threads, thread_name_prefix="fruitlens-io") as pool:
        pending: deque = deque()
        batch: list[Record] = []
        usable = 0
        iterator = iter(records)
        exhausted = False
        while True:
            while not exhausted and len(pending) < window:
                try:
                    pending.append(pool.submit(load, next(iterator)))
                except StopIteration:
                    exhausted = True
            if not pending:
                break
            record = pending.popleft().result()
            batch.append(record)
            usable += record.reason is None
            if usable >= settings.batch_size or (exhausted and not pending):
                yield _infer(batch, backbone, stats)
                batch, usable = [], 0
        if batch:
            yield _infer(batch, backbone, stats)


def _infer(batch: list[Record], backbone: backbones.Backbone, stats: MapperStats) -> list[Record]:
    good = [r for r in batch if r.reason is None]
    by_shape: dict[tuple, list[Record]] = {}  # one inference per image size (one for Fruits-360)
    for r in good:
        by_shape.setdefault(r.pixels.shape, []).append(r)
    for group in by_shape.values():
        t0, c0 = time.perf_counter(), time.thread_time()
        embeddings = backbone.embed(np.stack([r.pixels for r in group]))
        stats.infer_s += time.perf_counter() - t0
        stats.infer_cpu_s += time.thread_time() - c0
        stats.batches += 1
        for r, e in zip(group, embeddings):
            r.embedding = e
            r.pixels = None
    stats.images += len(good)
    stats.errors += len(batch) - len(good)
    return batch

