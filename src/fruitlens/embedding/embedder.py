"""The one path from a photo to an embedding: featurize's tasks, `predict`, `classify` and `serve`
all embed through an `Embedder`, so a photo gets the same embedding everywhere and every rule
about how a photo becomes pixels lives here once.

An `Embedder` is a value: the backbone's spec at the size it runs at, a verified local copy of its
file, the decode limit, and how many interpreters to load and with how many threads. It is
resolved once (`Embedder.resolve`: the file found and its sha256 checked) and travels as it is into
Spark tasks (it pickles; only the file's path changes there, `at_file`). Its interpreters are
loaded on first use, once per process and value (a Spark worker loads the backbone once for its
life, not per task), into a small pool: LiteRT interpreters are stateful, so each call takes one,
and concurrent callers (the service's requests) wait for a free one.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np

from .. import FruitlensError
from . import backbones
from .backbone_file import resolve
from .backbones import DEFAULT_BACKBONE, Backbone, BackboneSpec
from .decode import DEFAULT_MAX_PIXELS, decode_image
from .views import Views

# How images smaller than the input size reach it: the bilinear resize the backbone's graph starts
# with (earlier versions upscaled with Pillow: pixels within 1, embeddings cosine >= 0.998).
RESIZE = "graph-bilinear"


@dataclass(frozen=True)
class Embedder:
    spec: BackboneSpec  # at the size the backbone runs at
    file: str  # a local copy of the backbone file whose sha256 was checked
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger photos are decompression bombs
    threads: int = 1  # inference threads per interpreter
    interpreters: int = 1  # loaded copies, for concurrent callers
    views: Views = Views()  # the views of a photo embedded beside the whole photo (none by default)

    # -- resolving -------------------------------------------------------------------------------
    @classmethod
    def resolve(
        cls,
        backbone: str = DEFAULT_BACKBONE,
        image_size: int | None = None,
        backbone_file: str | None = None,
        **settings,
    ) -> Embedder:
        """The backbone by name at `image_size` (None: its own), its file found (`backbone_file`,
        $FRUITLENS_MODEL_DIR, the cache, else downloaded) and its sha256 checked, once."""
        spec = backbones.at_size(backbones.get_spec(backbone), image_size)
        return cls(spec, str(resolve(spec.file, backbone_file)), **settings)

    @classmethod
    def for_params(
        cls, params: dict, backbone_file: str | None = None, what: str = "the model", **settings
    ) -> Embedder:
        """The embedder that made embeddings with these `params` (a model's or a dataset's):
        the same backbone, file (sha256) and input size; refused in one line otherwise."""
        if not params.get("backbone"):
            raise FruitlensError(f"{what} does not say which backbone made its embeddings")
        spec = backbones.get_spec(params["backbone"])
        if params.get("model_sha256") and params["model_sha256"] != spec.file.sha256:
            raise FruitlensError(
                f"{what} was trained on embeddings of another {spec.name} backbone file "
                f"(sha256 {params['model_sha256'][:12]}…) than this fruitlens uses"
            )
        size = params.get("input_size")
        if size and len(set(size)) != 1:
            raise FruitlensError(
                f"{what}'s embeddings were made at {size[0]}x{size[1]}: only square sizes are supported"
            )
        settings.setdefault("max_pixels", int(params.get("max_pixels") or DEFAULT_MAX_PIXELS))
        settings.setdefault("views", Views.of_params(params))
        return cls.resolve(spec.name, int(size[0]) if size else None, backbone_file, **settings)

    def at_file(self, path: str) -> Embedder:
        """The same embedder reading its (already checked) file at another path (a Spark task's copy)."""
        return replace(self, file=path)

    @property
    def params(self) -> dict:
        """What an embedding depends on besides the image: recorded with every embeddings dataset
        (rows made otherwise are not reused) and every model (embeddings made otherwise are refused)."""
        return {
            "backbone": self.spec.name,
            "model_sha256": self.spec.file.sha256,
            "input_size": list(self.spec.input_size),
            "max_pixels": self.max_pixels,
            "resize": RESIZE,
            **self.views.params,
        }

    # -- photos -> pixels -> embeddings ----------------------------------------------------------
    def decode(self, data: bytes, max_pixels: int | None = None) -> np.ndarray:
        """Bytes -> RGB uint8 pixels for this backbone, or DecodeError. Photos larger than the
        input are brought down to it by Pillow (antialiased); smaller ones keep their size when the
        backbone resizes in its graph (a bilinear resize, four times cheaper than Pillow's upscale).
        `max_pixels`: a lower limit than the embedder's (the service's --max-pixels)."""
        limit = min(max_pixels or self.max_pixels, self.max_pixels)
        return decode_image(data, self.spec.input_size, limit, upscale=not self._pool().resizes_in_graph)

    def view_pixels(self, data: bytes, max_pixels: int | None = None) -> list[np.ndarray]:
        """Pixels of every view of the photo (`views`), the whole photo first, exactly as `decode`
        gives it. Raises DecodeError."""
        limit = min(max_pixels or self.max_pixels, self.max_pixels)
        return self.views.pixels(data, self.spec.input_size, limit, upscale=not self._pool().resizes_in_graph)

    def embed(self, pixels: Sequence[np.ndarray]) -> np.ndarray:
        """float32 (n, embedding_dim), in the order given; one interpreter call per image size."""
        out = np.zeros((len(pixels), self.spec.embedding_dim), np.float32)
        by_shape: dict[tuple, list[int]] = {}
        for i, p in enumerate(pixels):
            by_shape.setdefault(p.shape, []).append(i)
        for rows in by_shape.values():
            with self.interpreter() as backbone:
                out[rows] = backbone.embed(np.stack([pixels[i] for i in rows]))
        return out

    def embed_bytes(self, data: bytes) -> np.ndarray:
        """One photo's embedding (embedding_dim,). Raises DecodeError for bytes that are not a usable image."""
        return self.embed([self.decode(data)])[0]

    @contextmanager
    def interpreter(self) -> Iterator[Backbone]:
        """A loaded backbone of this process's pool, for one call at a time."""
        pool = self._pool()
        backbone = pool.free.get()
        try:
            yield backbone
        finally:
            pool.free.put(backbone)

    def load(self) -> float:
        """Load the interpreters now if they are not yet: the seconds it took (0 when already loaded)."""
        before = _POOLS.get(self)
        pool = self._pool()
        return 0.0 if before is not None else pool.load_s

    def _pool(self) -> _Pool:
        pool = _POOLS.get(self)
        if pool is None:
            with _POOLS_LOCK:
                pool = _POOLS.get(self)
                if pool is None:
                    pool = _POOLS[self] = _Pool.load(self)
        return pool


@dataclass
class _Pool:
    free: queue.LifoQueue = field(repr=False)
    resizes_in_graph: bool
    load_s: float

    @classmethod
    def load(cls, embedder: Embedder) -> _Pool:
        t0 = time.perf_counter()
        free: queue.LifoQueue = queue.LifoQueue()
        loaded = [backbones.load(embedder.spec, embedder.file, embedder.threads) for _ in range(embedder.interpreters)]
        for backbone in loaded:
            free.put(backbone)
        # True: the backbone takes any height x width and resizes in its graph (LiteRT's does).
        resizes = all(getattr(b, "resizes_in_graph", False) for b in loaded)
        return cls(free, resizes, time.perf_counter() - t0)


# One pool per process and embedder value: a Spark worker keeps its backbone for its whole life.
_POOLS: dict[Embedder, _Pool] = {}
_POOLS_LOCK = threading.Lock()
