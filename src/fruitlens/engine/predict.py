"""predict: photos -> top-5 species, without Spark or a JVM. The same decode and backbone code as
featurize, so a photo gets the same embedding in both paths; then the portable classifier."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .. import FruitlensError
from ..embedding import backbone_file as model_store
from ..embedding import backbones
from ..embedding.decode import DecodeError, decode_image
from ..storage.location import Location
from .model import PortableModel, Prediction


@dataclass
class Answer:
    path: str
    prediction: Prediction | None = None
    reason: str | None = None
    detail: str | None = None

    def to_json(self) -> dict:
        if self.prediction is None:
            return {"path": self.path, "ok": False, "reason": self.reason, "detail": self.detail}
        return {"path": self.path, "ok": True, **self.prediction.to_json()}


class Identifier:
    """A loaded classifier + its backbone: answers photos (bytes) in milliseconds. Thread-safe for
    concurrent callers when each call is serialised by the caller (the backbone is stateful)."""

    def __init__(self, model: PortableModel, backbone_model: str | None = None, threads: int | None = None):
        self.model = model
        params = model.embedding_params
        if not params.get("backbone"):
            raise FruitlensError("the model folder does not say which backbone made its embeddings")
        # The size the classifier's embeddings were made at (--image-size; older models: 224).
        spec = backbones.at_size(backbones.get_spec(params["backbone"]), params.get("input_size"))
        if params.get("model_sha256") and params["model_sha256"] != spec.file.sha256:
            raise FruitlensError(f"the model was trained on embeddings of another {spec.name} model file "
                                 f"(sha256 {params['model_sha256'][:12]}…) than this fruitlens uses")
        self.spec = spec
        self.max_pixels = int(params.get("max_pixels") or 100_000_000)
        path = model_store.resolve(spec.file, backbone_model)
        self.backbone = backbones.load(spec, str(path), threads or max(1, os.cpu_count() or 1))

    @classmethod
    def load(cls, model: str | Location, s3=None, backbone_model: str | None = None, threads: int | None = None):
        return cls(PortableModel.load(Location.of(model, s3)), backbone_model, threads)

    def embed_bytes(self, data: bytes) -> np.ndarray:
        return self.backbone.embed(self.decode(data)[None])[0]

    def decode(self, data: bytes, max_pixels: int | None = None) -> np.ndarray:
        """Pixels for this backbone: small photos at their own size when it resizes in its graph.
        `max_pixels`: a lower limit than the model's (serve's --max-pixels)."""
        upscale = not getattr(self.backbone, "resizes_in_graph", False)
        return decode_image(data, self.spec.input_size, max_pixels or self.max_pixels, upscale=upscale)

    def identify(self, data: bytes, k: int = 5) -> Prediction:
        """Raises DecodeError for bytes that are not a usable image."""
        return self.model.predict(self.embed_bytes(data)[None], k)[0]

    def answer_paths(self, paths: list[str], s3=None) -> list[Answer]:
        out = []
        for p in paths:
            try:
                data = Location.of(p, s3).read_bytes()
            except FruitlensError as exc:
                out.append(Answer(p, reason="unreadable", detail=str(exc)))
                continue
            except FileNotFoundError:
                out.append(Answer(p, reason="missing", detail="no such file"))
                continue
            except IsADirectoryError:
                out.append(Answer(p, reason="unreadable", detail="is a directory"))
                continue
            except PermissionError:
                out.append(Answer(p, reason="unreadable", detail="permission denied"))
                continue
            except Exception as exc:  # noqa: BLE001 - S3 failures after retries, I/O errors
                out.append(Answer(p, reason="unreadable", detail=(str(exc) or type(exc).__name__).splitlines()[0][:200]))
                continue
            try:
                out.append(Answer(p, prediction=self.identify(data)))
            except DecodeError as exc:
                out.append(Answer(p, reason=exc.reason, detail=exc.detail))
        return out
