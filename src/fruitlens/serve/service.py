"""The loaded service: one classifier, its backbone interpreter(s), the species catalog and the
neighbour index, shared by every request. Plain Python, no HTTP: app.py puts it on the web.

The LiteRT backbone is stateful (one input tensor, one invoke at a time), so concurrent requests
take an interpreter from a small pool (`interpreters`, default 2, each with cores / 2 threads;
on 2 cores, 2 interpreters x 1 thread answered more requests/s than 1 x 2 threads in 7 of 9 runs, see
docs/benchmarks.md). Decoding a photo and the
classifier's and the index's small matrix products run outside that pool, in the request's
worker thread.
"""

from __future__ import annotations

import os
import queue
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .. import FruitlensError
from ..embedding.decode import DecodeError, image_format
from ..engine.model import PortableModel, Prediction
from ..engine.predict import Identifier
from ..storage.location import Location, S3Options
from .index import NeighbourIndex
from .metadata import Catalog

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")


@dataclass(frozen=True)
class ServeConfig:
    model: str
    index: str
    info: str
    host: str = "127.0.0.1"
    port: int = 8000
    ann: bool = False
    interpreters: int = 2
    threads: int | None = None  # per interpreter; default: cores / interpreters
    neighbours: int = 8
    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 50_000_000
    max_connections: int = 64  # beyond: 503, so a flood cannot exhaust memory
    backbone_model: str | None = None
    s3: S3Options = S3Options()


@dataclass
class Identification:
    prediction: Prediction
    features: np.ndarray
    timing_ms: dict


class Service:
    def __init__(self, model: PortableModel, identifiers: list[Identifier], catalog: Catalog,
                 index: NeighbourIndex, cfg: ServeConfig):
        self.model = model
        self.catalog = catalog
        self.index = index
        self.cfg = cfg
        self.spec = identifiers[0].spec
        self._decoder = identifiers[0]  # decodes for every interpreter of the pool (they are all alike)
        self.max_pixels = min(cfg.max_pixels, identifiers[0].max_pixels)
        self._pool: queue.Queue[Identifier] = queue.Queue()
        for ident in identifiers:
            self._pool.put(ident)
        self.interpreters = len(identifiers)

    @contextmanager
    def _interpreter(self):
        ident = self._pool.get()
        try:
            yield ident
        finally:
            self._pool.put(ident)

    def decode(self, data: bytes) -> np.ndarray:
        """Bytes -> pixels, or DecodeError. Only the formats the service accepts."""
        if data and image_format(data) is None:
            raise DecodeError("not an image", "format not recognised (accepted: JPEG, PNG, WebP, BMP, GIF)")
        return self._decoder.decode(data, self.max_pixels)

    def identify(self, data: bytes) -> Identification:
        """A photo's prediction and features (for the neighbours). Raises DecodeError."""
        t0 = time.perf_counter()
        pixels = self.decode(data)
        t1 = time.perf_counter()
        with self._interpreter() as ident:
            embedding = ident.backbone.embed(pixels[None])
        t2 = time.perf_counter()
        predictions, features = self.model.predict_with_features(embedding, 5)
        prediction, features = predictions[0], features[0]
        t3 = time.perf_counter()
        return Identification(prediction, features, {"decode": round((t1 - t0) * 1e3, 2),
                                                     "embed": round((t2 - t1) * 1e3, 2),
                                                     "classify": round((t3 - t2) * 1e3, 2)})


def load_service(cfg: ServeConfig, say=print) -> Service:
    """Load everything once; one-line FruitlensErrors for what the user got wrong."""
    if cfg.interpreters < 1:
        raise FruitlensError("--interpreters must be at least 1")
    t0 = time.perf_counter()
    model = PortableModel.load(Location.of(cfg.model, cfg.s3))
    info = Location.of(cfg.info, cfg.s3)
    if info.is_local and not os.path.isdir(info.path):
        raise FruitlensError(f"--info: no folder at {info.uri} (the Fruits-360 metadata: dictionary.txt, Meta/)")
    catalog = Catalog.load(info, model.classes)
    index_loc = Location.of(cfg.index, cfg.s3)
    if index_loc.is_local and not os.path.isdir(index_loc.path):
        raise FruitlensError(f"--index: no folder at {index_loc.uri} (a folder `fruitlens run` wrote)")
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // cfg.interpreters)
    first = Identifier(model, cfg.backbone_model, threads)
    identifiers = [first] + [Identifier(model, cfg.backbone_model, threads) for _ in range(cfg.interpreters - 1)]
    t1 = time.perf_counter()
    index = NeighbourIndex.load(index_loc, model, ann=cfg.ann)
    t2 = time.perf_counter()
    say(f"[serve] model: {len(model.classes)} classes ({model.meta.get('kind', '?')}), "
        f"backbone {first.spec.name}, {cfg.interpreters} interpreter(s) x {threads} thread(s)")
    say(f"[serve] index: {len(index):,} images, {index.vectors.shape[1]}-d features, {index.kind} search "
        f"(loaded in {t2 - t1:.1f} s)")
    missing = catalog.missing
    say(f"[serve] species information: {len(model.classes) - len(missing)} of {len(model.classes)} classes"
        + (f"; no metadata for: {', '.join(missing)}" if missing else "; every class has metadata"))
    say(f"[serve] ready in {time.perf_counter() - t0:.1f} s")
    return Service(model, identifiers, catalog, index, cfg)
