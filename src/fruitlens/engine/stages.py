"""train's stages, each a function returning a typed result (see engine/train.py for the job):

prepare (read the collections, fit the scaler and the PCA on the fit split) -> `Prepared`;
fit_candidates (each candidate fit on the fit split, scored on validation) -> `CandidateResults`;
choose (the best on validation) -> `Choice`; calibrate (engine/calibrate.py) -> `Thresholds`;
refit_and_test (the chosen candidate refit on every train photo, scored on test) -> `Tested`.
The report is made from these results (engine/train_report.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
from threadpoolctl import threadpool_info

from .. import FruitlensError
from ..catalogue import Catalogue
from ..config import TrainConfig
from ..embedding.views import DEFAULT_CROP
from ..spark.progress import spark_progress
from .calibrate import Thresholds, temperature_of
from .data import FIT, TEST, VAL, Collection, DriverData, Scores, SparkData, load, views_in, views_note
from .evaluate import macro_accuracy, metrics
from .model import PortableModel
from .solvers import Candidate, DriverSolver, Fit, SparkSolver

# Parameters every collection's embeddings must share (views may differ between collections).
SHARED_PARAMS = ("backbone", "model_sha256", "input_size", "resize")
_DRIVER_BYTES = 3 * 2**30  # --solver auto: the driver solver up to this many bytes of training rows


# -- the results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """The collections read once (in the driver or in Spark) and the fit split's scaler and PCA,
    shared by every candidate."""

    collections: list[Collection]
    catalogue: Catalogue
    candidates: list[Candidate]
    data: DriverData | SparkData
    solver: DriverSolver | SparkSolver  # on the fit split
    fit_rows: int  # the fit split's rows, every view a row
    blas: dict  # blas_report
    read_s: float
    scaler_pca_s: float

    @property
    def classes(self) -> list[str]:
        return self.data.classes

    @property
    def families(self) -> list[str]:
        return self.data.families

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.collections]

    @property
    def dim(self) -> int:
        return len(self.solver.front.mean)


@dataclass(frozen=True)
class Fitted:
    """One candidate fit on the fit split, scored on validation averaging each number of views."""

    candidate: Candidate
    fit: Fit
    model: PortableModel  # no thresholds yet
    by_views: dict[int, dict]  # views -> validation metrics (`accuracy`: the collections' mean)
    views: int  # the fewest views within half a point of the best
    validation: Scores  # averaging `views`

    @property
    def validation_metrics(self) -> dict:
        return self.by_views[self.views]

    @property
    def rank(self) -> tuple:
        """What the choice compares: validation accuracy (the collections' mean), then macro-F1."""
        return self.validation_metrics["accuracy"], self.validation_metrics["macro_f1"]


@dataclass(frozen=True)
class CandidateResults:
    fitted: tuple[Fitted, ...]  # in fitting order: by kind, the strongest regularisation first


@dataclass(frozen=True)
class Choice:
    """The candidate chosen on validation, as fit on the fit split: its thresholds are calibrated on it."""

    candidate: Candidate
    fit: Fit
    model: PortableModel  # no thresholds yet, as fit (temperature 1)
    validation: Scores  # at `temperature`
    views: int  # predict averages this many views
    temperature: float = 1.0  # chosen on validation (`tempered`); the thresholds carry it


@dataclass(frozen=True)
class Tested:
    """The chosen candidate refit on every train photo (fit + validation), with the thresholds,
    scored once on test."""

    fit: Fit
    model: PortableModel
    test: Scores
    metrics: dict  # evaluate.metrics on test
    refit_s: float


# -- the stages ---------------------------------------------------------------------------------------


def check_shared_params(collections: list[Collection]) -> None:
    """Every collection made with the same backbone and image size (SHARED_PARAMS), or a one-line error."""
    first = collections[0].params or {}
    for coll in collections[1:]:
        for key in SHARED_PARAMS:
            if (coll.params or {}).get(key) != first.get(key):
                raise FruitlensError(
                    f"{coll.location.uri} was made with {key} {coll.params.get(key)!r}, "
                    f"{collections[0].location.uri} with {first.get(key)!r}: featurize every "
                    "collection with the same backbone and image size"
                )


def prepare(
    spark_session, cfg: TrainConfig, collections: list[Collection], catalogue: Catalogue, say=print
) -> Prepared:
    """Read the collections (in the driver when they fit, else in Spark) and fit the fit split's scaler and PCA."""
    candidates = [Candidate.parse(c) for c in cfg.candidates]
    solver_kind = "spark" if any(c.kind == "mlp" for c in candidates) and cfg.solver == "auto" else cfg.solver
    t0 = time.perf_counter()
    data = load(collections, catalogue, cfg.validation, solver_kind, spark_session, _DRIVER_BYTES)
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    solver, fit_rows = make_solver(data, spark_session, (FIT,), len(data.classes), cfg)
    scaler_pca_s = time.perf_counter() - t0
    say(
        f"[train] {data.size(FIT):,} fit photos ({fit_rows:,} rows with their views), {data.size(VAL):,} "
        f"validation, {data.size(TEST):,} test; {len(data.classes)} classes; solver: {data.kind}"
    )
    return Prepared(
        collections=collections,
        catalogue=catalogue,
        candidates=candidates,
        data=data,
        solver=solver,
        fit_rows=fit_rows,
        blas=blas_report(data.kind, spark_session),
        read_s=read_s,
        scaler_pca_s=scaler_pca_s,
    )


def fit_candidates(spark_session, cfg: TrainConfig, prepared: Prepared, say=print) -> CandidateResults:
    """Each candidate fit on the fit split and scored on validation, averaging each number of views
    every collection has (`views_in`: a collection embedded with fewer views limits the choice, and
    train says so), so that each figure is the one `predict` and `classify` give; the collections
    count alike, whatever their size."""
    data, classes, kind = prepared.data, prepared.classes, prepared.data.kind
    refs_fit = data.references((FIT,), cfg.refs_per_class)
    view_sets = views_in(prepared.collections)
    note = views_note(prepared.collections)
    if note:
        say(note)
    fitted = []
    # strongest regularisation first: each fit of a kind starts from the one before (driver solver)
    for candidate in sorted(prepared.candidates, key=lambda c: (c.kind, -c.setting)):
        with _progress(spark_session, kind, f"fitting {candidate.name} on {prepared.fit_rows:,} rows", say):
            fit = prepared.solver.fit(candidate)
        refs = normalized(_inputs(fit, refs_fit)).astype(np.float32)
        model = portable(fit, classes, prepared.families, refs, {})
        scores = {v: data.score(model, VAL, v) for v in view_sets}
        by_views = {v: metrics(sc.y, sc.probs, classes) for v, sc in scores.items()}
        for v, sc in scores.items():
            by_views[v]["accuracy"] = macro_accuracy(sc, classes)
        views = _fewest_views(by_views)
        fitted.append(Fitted(candidate, fit, model, by_views, views, scores[views]))
    return CandidateResults(tuple(fitted))


def choose(results: CandidateResults, default: str | None) -> Choice:
    """The best candidate on validation (the collections' mean accuracy, then macro-F1), among those
    of `default` (a kind or a candidate) when given; the first fitted on a tie."""
    eligible = [f for f in results.fitted if default in (None, f.candidate.kind, f.candidate.name)]
    if not eligible:
        raise FruitlensError(f"--default {default} is not among --candidates")
    best = max(eligible, key=lambda f: f.rank)
    return Choice(
        candidate=best.candidate, fit=best.fit, model=best.model, validation=best.validation, views=best.views
    )


def tempered(prepared: Prepared, choice: Choice) -> Choice:
    """The choice with the temperature at which validation's log-loss is least, and validation
    scored at it (calibrate.temperature_of). A Spark perceptron keeps 1: its exported Spark
    model is Spark's own."""
    if choice.fit.spark_model is not None:
        return choice
    t, validation = temperature_of(choice.model, lambda m: prepared.data.score(m, VAL, choice.views))
    return replace(choice, validation=validation, temperature=t)


def refit_and_test(
    spark_session, cfg: TrainConfig, prepared: Prepared, choice: Choice, thresholds: Thresholds, say=print
) -> Tested:
    """The chosen candidate refit on every train photo (warm-started from its fit), its novelty
    references from them, the thresholds calibrated on validation applied unchanged; scored on test."""
    data, classes = prepared.data, prepared.classes
    t0 = time.perf_counter()
    solver, rows = make_solver(data, spark_session, (FIT, VAL), len(classes), cfg)
    with _progress(spark_session, data.kind, f"refitting {choice.candidate.name} on {rows:,} train rows", say):
        final = solver.fit(choice.candidate, start=choice.fit)
    refit_s = time.perf_counter() - t0
    refs = normalized(_inputs(final, data.references((FIT, VAL), cfg.refs_per_class))).astype(np.float32)
    first = prepared.collections[0].params or {}
    meta = {
        "kind": choice.candidate.kind,
        "candidate": choice.candidate.name,
        "params": candidate_params(choice.candidate),
        "embedding_params": {k: v for k, v in first.items() if k not in ("views", "crop")},
        "embedding_dim": prepared.dim,
        "pca_k": final.projection.shape[1] if final.projection is not None else None,
        "crop": _crop(prepared.collections),
    }
    model = thresholds.applied_to(portable(final, classes, prepared.families, refs, meta, choice.views))
    test = data.score(model, TEST, choice.views)
    return Tested(fit=final, model=model, test=test, metrics=metrics(test.y, test.probs, classes), refit_s=refit_s)


# -- helpers ------------------------------------------------------------------------------------------


def make_solver(data, spark_session, roles: tuple[str, ...], n_classes: int, cfg: TrainConfig):
    """The solver of the data's kind, on the training rows of `roles` (every view a row)."""
    if data.kind == "driver":
        x, y = data.training_rows(roles)
        return DriverSolver(x, y, n_classes, cfg.pca_variance, cfg.max_iter), len(x)
    rows = data.training_rows(roles)
    solver = SparkSolver(spark_session(), rows, n_classes, cfg.pca_variance, cfg.max_iter, cfg.seed)
    return solver, solver.rows


def portable(
    fit: Fit, classes: list[str], families: list[str], refs: np.ndarray, meta: dict, views: int = 1
) -> PortableModel:
    """The fit as a PortableModel without thresholds (`Thresholds.applied_to` sets them)."""
    return PortableModel(
        classes=classes,
        mean=fit.front.mean,
        std=fit.front.std,
        projection=fit.projection,
        layers=fit.layers,
        threshold=0.0,
        refs=refs,
        novelty_threshold=np.inf,
        meta=meta,
        families=families,
        views=views,
    )


def normalized(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def candidate_params(candidate: Candidate) -> dict:
    return {"hidden": int(candidate.setting)} if candidate.kind == "mlp" else {"regParam": candidate.setting}


def _crop(collections: list[Collection]) -> float:
    crops = {float(c.params.get("crop")) for c in collections if c.params and c.params.get("crop")}
    return crops.pop() if len(crops) == 1 else DEFAULT_CROP


def _fewest_views(by_views: dict) -> int:
    """The fewest views averaged at predict time within half a point of the best on validation."""
    best = max(m["accuracy"] for m in by_views.values())
    return min(v for v, m in by_views.items() if m["accuracy"] >= best - 0.005)


def _inputs(fit: Fit, x: np.ndarray) -> np.ndarray:
    return fit.front.inputs(x, fit.candidate.uses_pca).astype(np.float64)


class _progress:
    """A Spark progress bar for the Spark solver; a start/end line for the driver solver."""

    def __init__(self, spark_session, kind, description, say):
        self.kind, self.description, self.say, self.spark_session = kind, description, say, spark_session

    def __enter__(self):
        if self.kind == "spark":
            self._inner = spark_progress(self.spark_session(), self.description)
            return self._inner.__enter__()
        self.t0 = time.perf_counter()
        self.say(f"[fruitlens] {self.description} ...")
        return self

    def __exit__(self, *exc):
        if self.kind == "spark":
            return self._inner.__exit__(*exc)
        if exc[0] is None:
            self.say(f"[fruitlens] {self.description} done in {time.perf_counter() - self.t0:.1f}s")
        return False


def blas_report(kind: str, spark_session) -> dict:
    """Which BLAS runs the products: NumPy's (driver solver, scoring) and Spark ML's (its JVM)."""
    numpy_blas = [
        f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads)"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    out = {"numpy": numpy_blas[0] if numpy_blas else "unknown"}
    if kind == "spark":
        out["spark_ml"] = spark_blas(spark_session())
    return out


def spark_blas(spark) -> str:
    """The BLAS Spark ML's JVM uses: `native (JNIBLAS)` when the system's libblas.so.3 loaded, else a
    Java one (slower: setup.sh installs OpenBLAS)."""
    try:
        jvm = spark.sparkContext._jvm
        name = jvm.dev.ludovic.netlib.blas.BLAS.getInstance().getClass().getSimpleName()
    except Exception:  # noqa: BLE001 - an older Spark without dev.ludovic.netlib
        return "unknown"
    return f"native ({name})" if name.startswith("JNI") else f"Java ({name}): no system libblas.so.3 found"
