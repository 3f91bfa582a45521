"""The loaded service: one classifier, its backbone interpreter(s), the species catalog and the
neighbour index, shared by every request. Plain Python, no HTTP: app.py puts it on the web.

The LiteRT backbone is stateful (one input tensor, one invoke at a time), so concurrent requests
take an interpreter from the embedder's pool (`interpreters`, default 2, each with cores / 2 threads;
on 2 cores, 2 interpreters x 1 thread answered more requests/s than 1 x 2 threads in 7 of 9 runs, see
docs/benchmarks.md). Decoding a photo and the
classifier's and the index's small matrix products run outside that pool, in the request's
worker thread.
"""

from __future__ import annotations

import os
import time

from .. import FruitlensError
from ..config import ServeConfig
from ..embedding.decode import DecodeError, image_format
from ..embedding.embedder import Embedder
from ..engine.model import PortableModel
from ..engine.predict import Identification, Identifier
from ..storage.location import Location
from .index import NeighbourIndex
from .metadata import Catalog

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")


class Service:
    def __init__(self, identifier: Identifier, catalog: Catalog, index: NeighbourIndex, cfg: ServeConfig):
        self.identifier = identifier
        self.model = identifier.model
        self.catalog = catalog
        self.index = index
        self.cfg = cfg

    @property
    def interpreters(self) -> int:
        return self.identifier.embedder.interpreters

    def identify(self, data: bytes) -> Identification:
        """A photo's prediction and the classifier's inputs (for the neighbours). Raises
        DecodeError, also for formats the service does not accept."""
        if data and image_format(data) is None:
            raise DecodeError("not an image", "format not recognised (accepted: JPEG, PNG, WebP, BMP, GIF)")
        return self.identifier.identification(data, 5, self.cfg.max_pixels)


def load_service(cfg: ServeConfig, say=print) -> Service:
    """Load everything once; one-line FruitlensErrors for what the user got wrong."""
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
    embedder = Embedder.for_params(model.embedding_params, cfg.backbone_file, threads=threads,
                                   interpreters=cfg.interpreters)
    embedder.load()
    identifier = Identifier(model, embedder)
    t1 = time.perf_counter()
    index = NeighbourIndex.load(index_loc, model, ann=cfg.ann)
    t2 = time.perf_counter()
    say(f"[serve] model: {len(model.classes)} classes ({model.meta.get('kind', '?')}), "
        f"backbone {embedder.spec.name}, {cfg.interpreters} interpreter(s) x {threads} thread(s)")
    say(f"[serve] index: {len(index):,} images, {index.vectors.shape[1]}-d features, {index.kind} search "
        f"(loaded in {t2 - t1:.1f} s)")
    missing = catalog.missing
    say(f"[serve] species information: {len(model.classes) - len(missing)} of {len(model.classes)} classes"
        + (f"; no metadata for: {', '.join(missing)}" if missing else "; every class has metadata"))
    say(f"[serve] ready in {time.perf_counter() - t0:.1f} s")
    return Service(identifier, catalog, index, cfg)
