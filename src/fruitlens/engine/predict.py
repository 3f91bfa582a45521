"""predict: photos -> top-5 species, without Spark or a JVM. The photo goes through the `Embedder`
the model's embeddings were made with (the same path as featurize's tasks: the same image gives
the same embedding), then the portable classifier."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from .. import FruitlensError
from ..embedding.decode import DecodeError
from ..embedding.embedder import Embedder
from ..embedding.views import DEFAULT_CROP, Views
from ..storage.location import Location, read_failure
from .model import PortableModel, Prediction


@dataclass
class Answer:
    path: str
    prediction: Prediction | None = None
    reason: str | None = None
    detail: str | None = None
    photos: list[Answer] | None = None  # several photos of one fruit: each photo's own answer

    def to_json(self) -> dict:
        if self.prediction is None:
            return {"path": self.path, "ok": False, "reason": self.reason, "detail": self.detail}
        out = {"path": self.path, "ok": True, **self.prediction.to_json()}
        if self.photos is not None:
            out["photos"] = [a.to_json() for a in self.photos]
        return out


@dataclass
class Identification:
    prediction: Prediction  # the answer (for several photos: combined)
    inputs: np.ndarray  # the classifier's inputs (the service searches similar images with them)
    timing_ms: dict  # decode, embed, classify
    photos: list[Prediction] | None = None  # each photo's own answer, when there were several


def embedder_for(model: PortableModel, backbone_file: str | None = None, **settings) -> Embedder:
    """The embedder a model's photos go through: the backbone, file and size its embeddings were
    made with, and the views it averages."""
    return Embedder.for_params(
        model.embedding_params,
        backbone_file,
        views=Views(model.views, float(model.meta.get("crop") or DEFAULT_CROP)),
        **settings,
    )


class Identifier:
    """A loaded classifier and the embedder its embeddings were made with: answers photos (bytes)
    in milliseconds. Safe for concurrent callers: each embedding takes one of the embedder's
    interpreters."""

    def __init__(self, model: PortableModel, embedder: Embedder):
        self.model = model
        self.embedder = embedder

    @classmethod
    def load(
        cls,
        model: str | Location,
        s3=None,
        backbone_file: str | None = None,
        threads: int | None = None,
        interpreters: int = 1,
    ) -> Identifier:
        portable = PortableModel.load(Location.of(model, s3))
        return cls(
            portable,
            embedder_for(
                portable, backbone_file, threads=threads or max(1, os.cpu_count() or 1), interpreters=interpreters
            ),
        )

    def identify(self, data: bytes, k: int = 5) -> Prediction:
        """Raises DecodeError for bytes that are not a usable image."""
        return self.identification(data, k).prediction

    def identification(self, data: bytes, k: int = 5, max_pixels: int | None = None) -> Identification:
        """The prediction, the classifier's inputs it came from, and the time each step took.
        `max_pixels`: a lower limit than the model's. Raises DecodeError."""
        t0 = time.perf_counter()
        pixels = self.embedder.view_pixels(data, max_pixels)  # the views the model averages, whole first
        return self.identification_of([pixels], k, time.perf_counter() - t0)

    def identify_photos(
        self, photos: list[bytes], k: int = 5, max_pixels: int | None = None, names: list[str] | None = None
    ) -> Identification:
        """Several photos of one fruit -> one answer (`PortableModel.predict_photos`); the inputs are
        the photos' whole views' unit vectors averaged (the similar images of the set). Raises
        DecodeError for the first photo that cannot be used, with its position (or its name from `names`)."""
        t0 = time.perf_counter()
        pixels = self.photo_pixels(photos, max_pixels, names)
        return self.identification_of(pixels, k, time.perf_counter() - t0, combine=True)

    def photo_pixels(
        self, photos: list[bytes], max_pixels: int | None = None, names: list[str] | None = None
    ) -> list[list[np.ndarray]]:
        """Each photo's views' pixels (the decoding step alone, which the service bounds). Raises
        DecodeError for the first photo that cannot be used, with its position (or its name from `names`)
        when there are several."""
        pixels = []
        for i, data in enumerate(photos):
            try:
                pixels.append(self.embedder.view_pixels(data, max_pixels))
            except DecodeError as exc:
                where = names[i] if names else f"photo {i + 1}"
                raise DecodeError(exc.reason, f"{where}: {exc.detail}" if len(photos) > 1 else exc.detail) from None
        return pixels

    def identification_of(
        self, pixels: list[list[np.ndarray]], k: int = 5, decode_s: float = 0.0, combine: bool | None = None
    ) -> Identification:
        """The answer for photos already decoded (`photo_pixels`): one photo's as `identification`,
        several (or `combine`) combined as `identify_photos`."""
        t1 = time.perf_counter()
        if not (len(pixels) > 1 if combine is None else combine):
            embedding = self.embedder.embed(pixels[0])
            t2 = time.perf_counter()
            predictions, inputs = self.model.predict_with_inputs(embedding, k, views=len(pixels[0]))
            return Identification(predictions[0], inputs[0], _timing(decode_s, t1, t2, time.perf_counter()))
        flat = self.embedder.embed([p for views in pixels for p in views])
        t2 = time.perf_counter()
        per_photo, start = [], 0
        for views in pixels:
            per_photo.append(flat[start : start + len(views)])
            start += len(views)
        combined, alone, inputs = self.model.predict_photos(per_photo, k)
        units = [x / max(float(np.linalg.norm(x)), 1e-12) for x in inputs]
        return Identification(combined, np.mean(units, axis=0), _timing(decode_s, t1, t2, time.perf_counter()), alone)

    def answer_paths(self, paths: list[str], s3=None) -> list[Answer]:
        """Each photo answered alone; a photo that cannot be read or used: its reason."""
        out = []
        for p in paths:
            data = _read(p, s3)
            if isinstance(data, Answer):
                out.append(data)
                continue
            try:
                out.append(Answer(p, prediction=self.identify(data)))
            except DecodeError as exc:
                out.append(Answer(p, reason=exc.reason, detail=exc.detail))
        return out

    def answer_together(self, paths: list[str], s3=None) -> Answer:
        """Photos of one fruit -> one answer (`identify_photos`, as the service's identify), with
        each photo's own answer in `photos`; the first photo that cannot be read or used: its
        reason, and no answer."""
        datas = []
        for p in paths:
            data = _read(p, s3)
            if isinstance(data, Answer):
                return data
            datas.append(data)
        path = " + ".join(paths)
        try:
            result = self.identify_photos(datas, names=list(paths))
        except DecodeError as exc:
            return Answer(path, reason=exc.reason, detail=exc.detail)
        alone = result.photos or [result.prediction]
        each = [Answer(p, prediction=a) for p, a in zip(paths, alone)]
        return Answer(path, prediction=result.prediction, photos=each)


def _read(path: str, s3=None) -> bytes | Answer:
    """A photo's bytes, or the Answer saying why it cannot be read."""
    try:
        return Location.of(path, s3).read_bytes()
    except FruitlensError as exc:
        return Answer(path, reason="unreadable", detail=str(exc))
    except Exception as exc:  # noqa: BLE001 - gone, denied, S3 failures after retries: a reason each
        reason, detail = read_failure(exc)
        return Answer(path, reason=reason, detail="no such file" if reason == "missing" else detail)


def _timing(decode_s: float, t1: float, t2: float, t3: float) -> dict[str, float]:
    return {
        "decode": round(decode_s * 1e3, 2),
        "embed": round((t2 - t1) * 1e3, 2),
        "classify": round((t3 - t2) * 1e3, 2),
    }
