"""The loaded service: one classifier, its backbone interpreter(s), the species information and the
neighbour index, shared by every request. Plain Python, no HTTP: app.py and routers/ put it on the web.

The LiteRT backbone is stateful (one input tensor, one invoke at a time), so concurrent requests
take an interpreter from the embedder's pool (`interpreters`, default 2, each with cores / 2 threads;
on 2 cores, 2 interpreters x 1 thread answered more requests/s than 1 x 2 threads in 7 of 9 runs, see
docs/benchmarks.md). Decoding a photo and the
classifier's and the index's small matrix products run outside that pool, in the request's
worker thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from collections import OrderedDict

import numpy as np

from .. import FruitlensError
from ..catalogue import Catalogue
from ..config import ServeConfig
from ..embedding.decode import DecodeError, image_format
from ..engine.model import PortableModel
from ..engine.predict import Identification, Identifier, embedder_for
from ..storage.location import Location
from .decodes import DecodeGate, default_slots
from .feedback import FeedbackStore
from .index import NeighbourIndex
from .limits import ApiKeys, RateLimiter, limits_storage
from .photo_collections import Collections, describe, first_path
from .species_info import SpeciesInformation

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")


class PhotoCache:
    """The photos just identified, by a random id, for a while: feedback can name a photo by its id
    instead of sending it again. Bounded in count and bytes; nothing is written anywhere."""

    def __init__(self, ttl_s: float, max_photos: int = 512, max_bytes: int = 256 * 2**20):
        self.ttl, self.max_photos, self.max_bytes = ttl_s, max_photos, max_bytes
        self._photos: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, data: bytes) -> str:
        pid = secrets.token_hex(16)
        with self._lock:
            self._photos[pid] = (time.monotonic() + self.ttl, data)
            self._bytes += len(data)
            while self._photos and (len(self._photos) > self.max_photos or self._bytes > self.max_bytes):
                _, (_, old) = self._photos.popitem(last=False)
                self._bytes -= len(old)
        return pid

    def get(self, pid: str) -> bytes | None:
        with self._lock:
            found = self._photos.get(pid or "")
            if found is None:
                return None
            if found[0] < time.monotonic():
                del self._photos[pid]
                self._bytes -= len(found[1])
                return None
            return found[1]


class SharedPhotoCache:
    """The photos just identified, by a random id, in Redis (`--limits-storage redis://`) for
    `ttl_s`: every process pointed at it finds a photo another one identified. Held in Redis's
    memory only, each under its own expiry; nothing is written to disk by us. A Redis hiccup
    loses an id (feedback then asks for the photo itself), never an answer."""

    def __init__(self, client, ttl_s: int):
        self.client, self.ttl = client, ttl_s

    def put(self, data: bytes) -> str:
        pid = secrets.token_hex(16)
        try:
            self.client.set(f"fruitlens:photo:{pid}", data, ex=self.ttl)
        except Exception:  # noqa: BLE001 - redis's errors: the id is then unknown, the answer stands
            pass
        return pid

    def get(self, pid: str) -> bytes | None:
        try:
            return self.client.get(f"fruitlens:photo:{pid}")
        except Exception:  # noqa: BLE001 - as if expired: feedback asks for the photo itself
            return None


class Shared:
    """What outlives a model reload and, with `--limits-storage redis://`, is shared by every
    process: the rate limits, the photos by id, the keys (the file, read again when it changes) and
    the feedback store (the folder or prefix)."""

    def __init__(self, cfg: ServeConfig, feedback: FeedbackStore | None, keys: ApiKeys | None):
        self.storage = limits_storage(cfg.limits_storage)
        self.address_limit = RateLimiter(cfg.rate_limit, self.storage, "address")
        self.key_limit = RateLimiter(cfg.key_rate_limit, self.storage, "key")
        client = getattr(self.storage, "storage", None)  # limits' Redis client, when the storage is Redis
        self.photos: PhotoCache | SharedPhotoCache = (
            PhotoCache(cfg.photo_cache_s)
            if cfg.limits_storage.lower().startswith("memory") or client is None
            else SharedPhotoCache(client, cfg.photo_cache_s)
        )
        self.feedback, self.keys = feedback, keys


class Service:
    def __init__(
        self,
        identifier: Identifier,
        information: SpeciesInformation,
        index: Collections,
        cfg: ServeConfig,
        feedback: FeedbackStore | None = None,
        keys: ApiKeys | None = None,
        catalogue: Catalogue | None = None,
        shared: Shared | None = None,
    ):
        self.identifier = identifier
        self.catalogue = catalogue or Catalogue.of_labels(identifier.model.classes)
        self.model = identifier.model
        self.information = information
        self.index = index
        self.cfg = cfg
        self.shared = shared or Shared(cfg, feedback, keys)
        self.feedback = self.shared.feedback
        self.keys = self.shared.keys
        self.address_limit = self.shared.address_limit
        self.key_limit = self.shared.key_limit
        self.photos = self.shared.photos
        self.decodes = DecodeGate(cfg.max_decodes or default_slots(), cfg.decode_queue)  # per process
        self.loaded_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.model_id = model_id(identifier.model)

    @staticmethod
    def check(cfg: ServeConfig) -> None:
        """What `load_service` would refuse, short of loading the model and the index: one-line
        FruitlensErrors (the supervisor of `--workers` checks this before starting them)."""
        if not Location.of(cfg.model, cfg.s3).exists():
            raise FruitlensError(f"--model: no model folder at {cfg.model}")
        for flag, where in [("--index", i) for i in cfg.index] + [("--info", i) for i in cfg.info]:
            place = Location.of(where, cfg.s3)
            if place.is_local and not os.path.isdir(place.path):
                raise FruitlensError(f"{flag}: no folder at {place.uri}")
        if cfg.api_keys:
            ApiKeys.load(cfg.api_keys)
        limits_storage(cfg.limits_storage)
        if cfg.feedback:
            FeedbackStore(Location.of(cfg.feedback, cfg.s3), cfg.feedback_retention_days, [])

    @property
    def interpreters(self) -> int:
        return self.identifier.embedder.interpreters

    def identify(self, photos: list[bytes]) -> Identification:
        """One fruit's photos -> its answer and the classifier's inputs (for the neighbours). Raises
        DecodeError, also for formats the service does not accept. (The routes decode within
        `decodes`, the gate that bounds decodes at once: `decode` then `answer`.)"""
        t0 = time.perf_counter()
        pixels = self.decode(photos)
        return self.answer(pixels, time.perf_counter() - t0)

    def decode(self, photos: list[bytes]) -> list[list[np.ndarray]]:
        """Each photo's views' pixels: the step that costs memory. Raises DecodeError, also for
        formats the service does not accept."""
        for i, data in enumerate(photos):
            if data and image_format(data) is None:
                where = f"photo {i + 1}: " if len(photos) > 1 else ""
                raise DecodeError("not an image", f"{where}format not recognised (accepted: JPEG, PNG, WebP, BMP, GIF)")
        return self.identifier.photo_pixels(photos, self.cfg.max_pixels)

    def answer(self, pixels: list[list[np.ndarray]], decode_s: float = 0.0) -> Identification:
        """The answer for decoded photos (one photo's alone, several combined)."""
        return self.identifier.identification_of(pixels, 5, decode_s)


def model_id(model: PortableModel) -> str:
    """A short fingerprint of a model (its metadata and classes): which model answers, in /health."""
    text = json.dumps({"meta": model.meta, "classes": model.classes}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_service(cfg: ServeConfig, say=print, keep: Service | None = None) -> Service:
    """Load everything once; one-line FruitlensErrors for what the user got wrong. With `keep` (a
    reload), the model, its species information and the index are loaded again, and what is
    shared (limits, photo ids, keys, feedback) is kept."""
    t0 = time.perf_counter()
    model_at = Location.of(cfg.model, cfg.s3)
    model = PortableModel.load(model_at)
    catalogue = Catalogue.of_model(model_at, model.classes)
    places = [Location.of(i, cfg.s3) for i in cfg.info]
    for info in places:
        if info.is_local and not os.path.isdir(info.path):
            raise FruitlensError(f"--info: no folder at {info.uri} (the Fruits-360 metadata or GroceryStore's folder)")
    information = SpeciesInformation.load(places, model.classes, model.families, catalogue)
    index_locs = [Location.of(i, cfg.s3) for i in cfg.index]
    for index_loc in index_locs:
        if index_loc.is_local and not os.path.isdir(index_loc.path):
            raise FruitlensError(f"--index: no folder at {index_loc.uri} (a folder `fruitlens run` wrote)")
    if keep is None:
        keys = ApiKeys.load(cfg.api_keys) if cfg.api_keys else None
        feedback = None
        if cfg.feedback:
            feedback = FeedbackStore(Location.of(cfg.feedback, cfg.s3), cfg.feedback_retention_days, model.classes)
        shared = Shared(cfg, feedback, keys)
    else:
        shared, keys, feedback = keep.shared, keep.keys, keep.feedback
        if feedback is not None:
            feedback.species = {s.casefold(): s for s in model.classes}
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // cfg.interpreters)
    embedder = embedder_for(model, cfg.backbone_file, threads=threads, interpreters=cfg.interpreters)
    embedder.load()
    identifier = Identifier(model, embedder)
    t1 = time.perf_counter()
    indexes = [NeighbourIndex.load(where, model, ann=cfg.ann, say=say) for where in index_locs]
    index = Collections(indexes, [describe(where, first_path(i)) for where, i in zip(index_locs, indexes)])
    t2 = time.perf_counter()
    say(
        f"[serve] model: {len(model.classes)} species in {len(set(model.families))} families "
        f"({model.meta.get('candidate') or model.meta.get('kind', '?')}), backbone {embedder.spec.name}, "
        f"{model.views} view(s) a photo, {cfg.interpreters} interpreter(s) x {threads} thread(s)"
    )
    say(
        f"[serve] index: {len(index):,} images, {index.dim}-d features, {index.kind} search "
        f"(loaded in {t2 - t1:.1f} s); "
        + "; ".join(
            f"{c.name}: {len(i):,} ({c.dataset or 'collection'}, {c.license or 'licence not stated'})"
            for c, i in zip(index.collections, index.indexes)
        )
    )
    missing = information.missing
    say(
        f"[serve] species information: {len(model.classes) - len(missing)} of {len(model.classes)} species"
        + (
            f"; none for: {', '.join(missing[:12])}{' ...' if len(missing) > 12 else ''}"
            if missing
            else "; every species has some"
        )
    )
    say(
        "[serve] feedback: "
        + (
            f"kept with consent in {feedback.where.uri}, {cfg.feedback_retention_days} days"
            if feedback
            else "off (--feedback LOCATION to keep consented corrections)"
        )
    )
    say(
        "[serve] keys: "
        + (f"{len(keys)} key(s), {'required' if cfg.require_key else 'optional'}; " if keys else "none; ")
        + f"{cfg.rate_limit} requests/min per address"
        + (f", {cfg.key_rate_limit} per key" if keys else "")
        + (
            ", counted in this process"
            if cfg.limits_storage.lower().startswith("memory")
            else f", counted in {cfg.limits_storage.split('://')[0]}:// (shared by every process using it)"
        )
    )
    service = Service(identifier, information, index, cfg, catalogue=catalogue, shared=shared)
    say(f"[serve] ready in {time.perf_counter() - t0:.1f} s (model {service.model_id})")
    if feedback is not None and keep is None:
        feedback.start_expiry()
    return service
