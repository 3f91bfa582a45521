"""The identification engine without Spark: a fitted classifier exported as NumPy arrays, applied
to embeddings, with the "not sure" rules. Used by `predict` (one photo, no JVM), by `classify`
inside Spark tasks, and by the HTTP service.

A model folder (written by `fruitlens train`) holds:
- `spark/`: the Spark ML PipelineModel (embedding column in, `probability`/`prediction` out);
- `portable.npz` + `model.json`: the same model as arrays (scaler, PCA projection, classifier
  layers), the class names, the thresholds, reference features for novelty (float16) with the
  axes of the bound that finds one photo's nearest reference exactly without reading them all
  (`refs_basis`, see `nearest.CosineSearch`; models saved before it have none and use the full
  product, same answers), and the backbone's name and sha256 it was trained on;
- `report.json`, `confusion.png`, `per_class.csv`: the evaluation.

Two "not sure" rules, both chosen on the validation split (never on test):
- *low confidence*: the winning probability is below `threshold`, chosen so that answered
  validation predictions are at least `target_precision` (99.5%) precise;
- *unlike the training images*: the cosine distance from the photo's features to the nearest
  reference training image is above `novelty_threshold` (the 99.5th percentile of that distance
  over validation images). A softmax is confident far from its training data; this rule is what
  keeps a cat, a cup of coffee or a blank image from getting a species.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import ThreadpoolController

from .. import FruitlensError
from ..catalogue import NOT_PRODUCE
from ..storage.location import Location
from .nearest import CosineSearch

PORTABLE = "portable.npz"
META = "model.json"


_BLAS = None


def one_blas_thread():
    """A context in which BLAS runs on one thread: for the small matrix products of one photo
    (classifier, novelty, neighbours). Multi-threaded BLAS keeps its threads spinning after each
    call, and they take the cores the backbone (XNNPACK) needs next: 2x the latency. One
    threadpoolctl controller per process (finding the BLAS libraries costs milliseconds)."""
    global _BLAS
    if _BLAS is None:
        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def stored_refs(refs: np.ndarray) -> np.ndarray:
    """Reference features as a model keeps them: float16 in `portable.npz`, float32 in memory."""
    return np.asarray(refs, np.float16).astype(np.float32)


def novelty(inputs: np.ndarray, refs: CosineSearch) -> np.ndarray:
    """Cosine distance from each row of `inputs` (the classifier's) to its nearest reference: what
    the "unlike the training images" rule compares with `novelty_threshold` (train chooses it with
    this too)."""
    x = (inputs / np.maximum(np.linalg.norm(inputs, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    return 1.0 - np.maximum(refs.best(x), -1.0).astype(np.float64)


SPECIES, FAMILY = "species", "family"  # the levels an answer can be at

# How the photos of one question combine (`combine_photos`): the rule and its temperature, chosen on
# GroceryStore val/ pairs and triples of one product (bench/several_photos_bench.py, docs/benchmarks.md).
PHOTO_RULES = ("mean", "product", "confident", "agreed")
PHOTO_RULE, PHOTO_TEMPERATURE = "agreed", 1.0
PHOTOS_COMBINED = (  # what the service says of an answer from several photos
    "the photos' probabilities multiplied when their best species agree (each photo evidence for the answer); "
    "when they differ, the one photo sure alone, else their mean; unlike the training images only if every photo is"
)


def combine_photos(
    probs: np.ndarray,
    novelty: np.ndarray,
    novelty_threshold: float,
    rule: str = PHOTO_RULE,
    temperature: float = PHOTO_TEMPERATURE,
    sure: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Several photos of one question -> one photo's probabilities and novelty, vectorised over
    questions: `probs` (..., photos, classes) each photo's (its views averaged), `novelty` (...,
    photos). A photo unlike the training images (novelty above the threshold) does not vote while
    another photo of the question is like them; the question is unlike them only when every photo
    is (the smallest novelty). Rules: `mean` of the probabilities; `product` of experts, the photos'
    log-probabilities summed and divided by `temperature` (1: each photo is independent evidence;
    the number of photos: their geometric mean, the same as averaging the logits); `confident`: the
    photo whose best probability is highest; `agreed`: the product when the voting photos' best
    species are the same; when they differ, the one photo sure alone (best probability >= `sure`,
    the model's species threshold) if only one is, else the mean (photos that each name another
    species surely are a doubt, not evidence for either)."""
    probs = np.asarray(probs, np.float64)
    novelty = np.asarray(novelty, np.float64)
    if rule not in PHOTO_RULES:
        raise ValueError(f"unknown photo rule {rule!r}: one of {', '.join(PHOTO_RULES)}")
    known = novelty <= novelty_threshold
    votes = np.where(known.any(axis=-1, keepdims=True), known, True)  # every photo when none is known
    w = votes[..., None].astype(np.float64)
    mean = (probs * w).sum(axis=-2) / w.sum(axis=-2)
    if rule == "mean":
        out = mean
    elif rule in ("product", "agreed"):
        z = (np.log(np.maximum(probs, 1e-300)) * w).sum(axis=-2) / temperature
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        out = e / e.sum(axis=-1, keepdims=True)
        if rule == "agreed":
            tops = probs.argmax(axis=-1)
            first = np.take_along_axis(tops, votes.argmax(axis=-1)[..., None], axis=-1)
            agree = np.where(votes, tops == first, True).all(axis=-1)
            confident = np.where(votes, probs.max(axis=-1), -1.0)
            alone = np.take_along_axis(probs, confident.argmax(axis=-1)[..., None, None], axis=-2)[..., 0, :]
            one_sure = (confident >= sure).sum(axis=-1) == 1
            out = np.where(agree[..., None], out, np.where(one_sure[..., None], alone, mean))
    else:
        best = np.where(votes, probs.max(axis=-1), -1.0).argmax(axis=-1)
        out = np.take_along_axis(probs, best[..., None, None], axis=-2)[..., 0, :]
    return out, novelty.min(axis=-1)


@dataclass
class Prediction:
    top: list[tuple[str, float]]  # (species, probability), best first
    not_sure: bool
    why: str | None  # "low confidence" | "unlike the training images" | "not a fruit or vegetable" | None
    novelty: float
    level: str | None = SPECIES  # the level answered: species, family, or None when not sure
    family: str | None = None  # the answered family, or the best species' family
    family_probability: float | None = None  # that family's probability (its species' summed)

    @property
    def predicted(self) -> str:
        """The best species; read it together with `not_sure` and `level`."""
        return self.top[0][0]

    @property
    def answer(self) -> str | None:
        """What the app says: the species, the family when only the family is sure, else None."""
        return None if self.not_sure else (self.predicted if self.level == SPECIES else self.family)

    def to_json(self) -> dict:
        return {
            "predicted": self.predicted,
            "probability": round(self.top[0][1], 6),
            "not_sure": self.not_sure,
            "why_not_sure": self.why,
            "novelty": round(self.novelty, 6),
            "level": self.level,
            "answer": self.answer,
            "family": self.family,
            "family_probability": None if self.family_probability is None else round(self.family_probability, 6),
            "top5": [{"label": c, "probability": round(p, 6)} for c, p in self.top],
        }


@dataclass
class PortableModel:
    classes: list[str]
    mean: np.ndarray
    std: np.ndarray
    projection: np.ndarray | None  # (d, k) PCA components, or None
    layers: list[tuple[np.ndarray, np.ndarray]]  # (W (out, in), b (out)); sigmoid between, softmax last
    threshold: float  # the best species' probability at or above which the species is answered
    refs: np.ndarray  # (n, m) L2-normalised reference features
    novelty_threshold: float
    meta: dict = field(default_factory=dict)  # kind, backbone params, metrics
    refs_search: CosineSearch | None = field(default=None, repr=False, compare=False)  # None: built from refs
    families: list[str] | None = None  # each class's family (None: each class its own)
    family_threshold: float = float("inf")  # the best family's probability at which the family is answered
    views: int = 1  # views of a photo whose probabilities are averaged (embedding/views.py)

    def __post_init__(self):
        search = self.refs_search
        if search is None or search.vectors is not self.refs:
            refs = stored_refs(self.refs)  # the model in memory is the model a load gives
            if search is None or not np.array_equal(search.vectors, refs):
                search = CosineSearch.build(refs)  # new references (also through dataclasses.replace)
        self.refs_search = search
        self.refs = search.vectors
        self.refs.flags.writeable = False  # the search's bound describes these values: no edits in place
        self.families = list(self.families) if self.families else list(self.classes)
        # derived, read-only: the class "(not produce)" (-1: none) and each class's family (an index
        # into the sorted family names)
        self.not_produce = self.classes.index(NOT_PRODUCE) if NOT_PRODUCE in self.classes else -1
        names = sorted(set(self.families))
        self.family_index = np.array([names.index(f) for f in self.families], np.int64)
        self.family_index.flags.writeable = False
        self._family_names = names

    # -- inference -------------------------------------------------------------------------------
    def inputs(self, embeddings: np.ndarray) -> np.ndarray:
        """The classifier's inputs: each embedding standardised, then projected when the model has a PCA."""
        x = np.asarray(embeddings, np.float64)
        scale = np.where(self.std > 0, 1.0 / np.where(self.std > 0, self.std, 1.0), 0.0)  # Spark: std 0 -> 0
        x = (x - self.mean) * scale
        return x @ self.projection if self.projection is not None else x

    def probabilities_of(self, inputs: np.ndarray) -> np.ndarray:
        h = inputs
        for i, (w, b) in enumerate(self.layers):
            z = h @ w.T + b
            if i < len(self.layers) - 1:
                h = 1.0 / (1.0 + np.exp(-z))
            else:
                z = z - z.max(axis=1, keepdims=True)
                e = np.exp(z)
                h = e / e.sum(axis=1, keepdims=True)
        return h

    def novelty_of(self, inputs: np.ndarray) -> np.ndarray:
        """Cosine distance to the nearest reference training image."""
        return novelty(inputs, self.refs_search)

    def family_probabilities(self, probs: np.ndarray) -> np.ndarray:
        """(n, families): each family's probability, the sum of its species' (families sorted by name)."""
        out = np.zeros((len(probs), len(self._family_names)))
        np.add.at(out.T, self.family_index, np.asarray(probs).T)
        return out

    def scores(self, embeddings: np.ndarray, views: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The one scoring of photos, shared by train's evaluation (validation for the thresholds,
        test for the report), `predict`, `serve` and `classify`: `embeddings` holds `views` rows per
        photo (the model's views, the whole photo first); returns each photo's probabilities (its
        views' averaged), its novelty (its whole photo's) and its whole photo's classifier inputs.
        One BLAS thread, so the same rows give the same numbers in every caller."""
        with one_blas_thread():  # small products
            inputs = self.inputs(embeddings)
            probs = self.probabilities_of(inputs)
            whole = inputs[::views]
            if views > 1:
                probs = probs.reshape(len(whole), views, -1).mean(axis=1)
            novelty = self.novelty_of(whole)
        return probs, novelty, whole

    def predict(self, embeddings: np.ndarray, k: int = 5, views: int = 1) -> list[Prediction]:
        return self.predict_with_inputs(embeddings, k, views)[0]

    def predict_with_inputs(
        self, embeddings: np.ndarray, k: int = 5, views: int = 1
    ) -> tuple[list[Prediction], np.ndarray]:
        """The predictions and the classifier's inputs of each photo's whole view (computed once:
        the service also searches neighbours with them). `views` > 1: `embeddings` holds that many
        rows per photo, the whole photo first; their probabilities are averaged (`scores`)."""
        probs, novelty, whole = self.scores(embeddings, views)
        return self._predictions(probs, novelty, k), whole

    def predict_photos(
        self, embeddings: list[np.ndarray], k: int = 5
    ) -> tuple[Prediction, list[Prediction], list[np.ndarray]]:
        """Several photos of one fruit (each a (views, dim) array, the whole photo first): one answer.
        Each photo is scored alone (`scores`: its views averaged), then the photos combine
        (`combine_photos`: the product of their probabilities; a photo unlike the training images
        votes only when every photo is) and the rules decide on the combination. Returns the
        answer, each photo's own answer, and each photo's inputs (its whole view)."""
        per_photo, inputs, novelties = [], [], []
        for e in embeddings:
            p, nov, whole = self.scores(e, len(e))
            per_photo.append(p[0])
            inputs.append(whole[0])
            novelties.append(float(nov[0]))
        probs, novelty = np.stack(per_photo), np.array(novelties)
        alone = self._predictions(probs, novelty, k)
        together, nov = combine_photos(probs, novelty, self.novelty_threshold, sure=self.threshold)
        combined = self._predictions(together[None], np.array([nov]), k)[0]
        return combined, alone, inputs

    def decide(self, probs: np.ndarray, novelty: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rules, vectorised: (level per row: 2 species, 1 family, 0 not sure; family index;
        family probability). Not sure when unlike the training images, else the species when its
        probability reaches `threshold`, else the family when the family's reaches `family_threshold`."""
        families = self.family_probabilities(probs)
        best = probs.argmax(axis=1)
        # the family answered is the best family; when the species is answered, the species' own
        fam = np.where(probs.max(axis=1) >= self.threshold, self.family_index[best], families.argmax(axis=1))
        fam_p = families[np.arange(len(fam)), fam]
        novel = novelty > self.novelty_threshold
        level = np.where(
            novel, 0, np.where(probs.max(axis=1) >= self.threshold, 2, np.where(fam_p >= self.family_threshold, 1, 0))
        )
        if self.not_produce >= 0:  # "not a fruit or vegetable" is never an answer, at either level
            np_family = self.family_index[self.not_produce]
            level = np.where((best == self.not_produce) | ((level == 1) & (fam == np_family)), 0, level)
        return level, fam, fam_p

    def _predictions(self, probs: np.ndarray, novelty: np.ndarray, k: int) -> list[Prediction]:
        level, fam, fam_p = self.decide(probs, novelty)
        out = []
        for p, nov, lv, f, fp in zip(probs, novelty, level, fam, fam_p):
            order = np.argsort(-p)[:k]
            top = [(self.classes[i], float(p[i])) for i in order]
            why = None
            if nov > self.novelty_threshold:
                why = "unlike the training images"
            elif lv == 0 and order[0] == self.not_produce:
                why = "not a fruit or vegetable"
            elif lv == 0:
                why = "low confidence"
            out.append(
                Prediction(
                    top=top,
                    not_sure=why is not None,
                    why=why,
                    novelty=float(nov),
                    level={2: SPECIES, 1: FAMILY}.get(int(lv)),
                    family=self._family_names[f],
                    family_probability=float(fp),
                )
            )
        return out

    # -- files -----------------------------------------------------------------------------------
    def save(self, folder: str) -> None:
        arrays = {
            "mean": self.mean,
            "std": self.std,
            "refs": self.refs.astype(np.float16),
            **self.refs_search.arrays("refs"),
        }
        if self.projection is not None:
            arrays["projection"] = self.projection
        for i, (w, b) in enumerate(self.layers):
            arrays[f"w{i}"], arrays[f"b{i}"] = w, b
        np.savez_compressed(os.path.join(folder, PORTABLE), **arrays)
        meta = {
            **self.meta,
            "classes": self.classes,
            "families": self.families,
            "layers": len(self.layers),
            "threshold": self.threshold,
            "novelty_threshold": self.novelty_threshold,
            "family_threshold": self.family_threshold if np.isfinite(self.family_threshold) else None,
            "views": self.views,
        }
        with open(os.path.join(folder, META), "w") as f:
            json.dump(meta, f, indent=2)

    @classmethod
    def load_folder(cls, folder: str) -> PortableModel:
        try:
            with open(os.path.join(folder, META)) as f:
                meta = json.load(f)
            data = np.load(os.path.join(folder, PORTABLE))
        except FileNotFoundError:
            raise FruitlensError(
                f"not a fruitlens model folder (no {META} / {PORTABLE}): {folder} (make one with `fruitlens train`)"
            ) from None
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise FruitlensError(f"damaged model folder {folder}: {exc}") from None
        try:
            with data:
                layers = [(data[f"w{i}"], data[f"b{i}"]) for i in range(meta["layers"])]
                refs = data["refs"].astype(np.float32)
                # Models saved before the search bound existed have none: the full product, same answers.
                search = CosineSearch.from_arrays(refs, data, "refs")
                family_threshold = meta.get("family_threshold")
                return cls(
                    classes=list(meta["classes"]),
                    mean=data["mean"],
                    std=data["std"],
                    projection=data["projection"] if "projection" in data.files else None,
                    layers=layers,
                    threshold=float(meta["threshold"]),
                    refs=refs,
                    novelty_threshold=float(meta["novelty_threshold"]),
                    meta=meta,
                    refs_search=search,
                    families=meta.get("families"),  # models before 0.2: each class its own family
                    family_threshold=float("inf") if family_threshold is None else float(family_threshold),
                    views=int(meta.get("views") or 1),
                )
        except (KeyError, ValueError, TypeError, IndexError, OSError, zipfile.BadZipFile) as exc:
            raise FruitlensError(
                f"damaged model folder {folder}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from None

    @classmethod
    def load(cls, where: Location) -> PortableModel:
        """From a local folder or an object-store prefix (the two small files are fetched)."""
        if where.is_local:
            if not os.path.isdir(where.path):
                raise FruitlensError(f"--model: no model folder at {where.uri}")
            return cls.load_folder(where.path)
        with tempfile.TemporaryDirectory(prefix="fruitlens-model-") as tmp:
            for name in (META, PORTABLE):
                try:
                    with open(os.path.join(tmp, name), "wb") as f:
                        f.write((where / name).read_bytes())
                except FileNotFoundError:
                    raise FruitlensError(f"not a fruitlens model folder (no {name}): {where.uri}") from None
            return cls.load_folder(tmp)

    @property
    def embedding_params(self) -> dict:
        return self.meta.get("embedding_params", {})

    def check_embeddings(self, params: dict | None, what: str) -> None:
        """Refuse embeddings made by another backbone or model file than the classifier's."""
        mine = self.embedding_params
        if not params or not mine:
            return
        for key in ("backbone", "model_sha256"):
            if params.get(key) != mine.get(key):
                raise FruitlensError(
                    f"{what} were made with {params.get('backbone')} ({str(params.get('model_sha256'))[:12]}), "
                    f"but the model was trained on {mine.get('backbone')} ({str(mine.get('model_sha256'))[:12]}) "
                    "embeddings: featurize them with the same backbone, or train a model on these"
                )
        if (
            params.get("input_size")
            and mine.get("input_size")
            and list(params["input_size"]) != list(mine["input_size"])
        ):
            raise FruitlensError(
                f"{what} were made at image size {params['input_size'][0]}, but the model was trained on embeddings "
                f"made at {mine['input_size'][0]}: featurize them with --image-size {mine['input_size'][0]}, "
                "or train a model on these"
            )
