"""Mapper: image records -> embedding rows or error rows. Plain Python, no Spark.

Every photo becomes pixels and an embedding through the task's `Embedder` (whose interpreter is
loaded once per worker process, not per batch or per partition). Reads and decodes run on a small
thread pool ahead of inference (Pillow and LiteRT release the GIL), which overlaps I/O, decoding
and the network's compute.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from ..embedding.decode import DecodeError
from ..embedding.embedder import Embedder
from ..schemas import ImageRef, real_path
from ..storage.location import read_failure

_STATS_LOCK = threading.Lock()


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

    def merge(self, other: MapperStats) -> MapperStats:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self


@dataclass
class Record:
    """One input on its way through a task: its image (`ref`, whose fields it reads as its own),
    then pixels and an embedding, or an error (`reason` from schemas.REASONS, a one-line `detail`)."""

    ref: ImageRef
    embedding: np.ndarray | None = None
    views: np.ndarray | None = None  # (views - 1, dim): the other views' embeddings, with --views
    reason: str | None = None
    detail: str | None = None
    pixels: list[np.ndarray] | None = field(default=None, repr=False)  # every view, the whole photo first

    def __getattr__(self, name: str):  # path, label, split, identity: the image's
        return getattr(self.__dict__["ref"], name)

    def fail(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail


def read_bytes(record: Record, fs=None) -> bytes:
    """The record's bytes: local files by their exact name, objects through `fs` (the INPUT
    location's filesystem, which carries its S3 options)."""
    if fs is None:
        with open(real_path(record.path, record.path_bytes), "rb") as f:
            return f.read()
    return fs.cat_file(record.path)


def load_record(record: Record, embedder: Embedder, stats: MapperStats, fs=None) -> Record:
    """Read and decode one image in a pool thread; failures become the record's error."""
    t0, c0 = time.perf_counter(), time.thread_time()
    data = b""
    try:
        data = read_bytes(record, fs)
        record.ref = replace(record.ref, size_bytes=len(data))  # as read
    except Exception as exc:  # noqa: BLE001 - gone, denied, S3 failures after retries: a reason each
        record.fail(*read_failure(exc))
    t1 = time.perf_counter()
    if record.reason is None:
        try:
            record.pixels = embedder.view_pixels(data)
        except DecodeError as exc:
            record.fail(exc.reason, exc.detail)
    t2 = time.perf_counter()
    cpu = time.thread_time() - c0
    with _STATS_LOCK:
        stats.read_s += t1 - t0
        stats.decode_s += t2 - t1
        stats.read_decode_cpu_s += cpu
    return record


def embed_records(
    records: Iterable[Record], embedder: Embedder, stats: MapperStats, *, batch_size: int, io_threads: int, fs=None
) -> Iterator[list[Record]]:
    """Yield lists of finished records (one list per inference batch), in input order.
    `fs`: the filesystem of remote inputs (None: local files)."""
    loaded_s = embedder.load()
    if loaded_s:
        stats.model_load_s += loaded_s
        stats.model_loads += 1
    load = lambda r: load_record(r, embedder, stats, fs)  # noqa: E731
    window = max(batch_size * 2, io_threads * 2)
    with ThreadPoolExecutor(io_threads, thread_name_prefix="fruitlens-io") as pool:
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
            if usable >= batch_size or (exhausted and not pending):
                yield _infer(batch, embedder, stats)
                batch, usable = [], 0
        if batch:
            yield _infer(batch, embedder, stats)


def _infer(batch: list[Record], embedder: Embedder, stats: MapperStats) -> list[Record]:
    good = [r for r in batch if r.reason is None]
    if good:
        pixels = [p for r in good for p in r.pixels]
        t0, c0 = time.perf_counter(), time.thread_time()
        embeddings = embedder.embed(pixels)  # one inference per image size
        stats.infer_s += time.perf_counter() - t0
        stats.infer_cpu_s += time.thread_time() - c0
        stats.batches += len({p.shape for p in pixels})
        start = 0
        for r in good:
            n = len(r.pixels)
            r.embedding, r.views = embeddings[start], (embeddings[start + 1 : start + n] if n > 1 else None)
            r.pixels, start = None, start + n
    stats.images += len(good)
    stats.errors += len(batch) - len(good)
    return batch
