"""Training the identification engine: one or more collections of embeddings -> a model folder.

1. **Collections and the catalogue.** Each EMBEDDINGS is a collection (a `featurize`/`run` OUTPUT);
   the catalogue (`--catalogue FILE`, `builtin`, or none: each label its own class) maps each
   photo's label (folder name) to the species the model names and its family, so one species is
   learnt from every collection that shows it. Photos whose label the catalogue does not know are
   left out (counted in the report).
2. **Splits.** `train` rows fit, `test` rows evaluate once at the end. Choices are made on a
   validation split: a collection's own `validation` rows (a `val/` folder) when it has them, else
   the last `--validation` share of each class's train photos in path order (Fruits-360's frames of
   one fruit are near-copies: a contiguous block behaves like the separately shot Test split).
3. **Views.** A collection featurized with `--views N` contributes every view of each training
   photo as a training row; validation and test photos are scored on their whole photo and on the
   views averaged (1, 2, 4 or 12 of them), and the number of views `predict` averages is chosen on
   validation.
4. **Candidates** (`--candidates`, KIND:SETTING): the scaler and the PCA fitted once per split and
   shared; each candidate's validation accuracy, macro-F1 and seconds go to the report. The
   default list is the best trade of accuracy for time on validation (docs/benchmarks.md).
5. **Thresholds** on validation: the species is answered when its probability reaches the
   threshold at which answered validation photos are `--target-precision` right; else the family
   when its probability (its species' summed) reaches the threshold at which those family answers
   are as precise; "unlike the training images" above the `--target-precision` quantile of the
   validation photos' novelty (each collection's photos of a species; the loosest collection's).
6. **Refit** the chosen candidate on every train photo (fit + validation), score test per
   collection (species and family), export: `spark/` (Spark ML PipelineModel), `portable.npz` +
   `model.json`, `catalogue.csv`, `report.json`, `confusion.png`, `per_class.csv`.

Solvers (`engine/solvers.py`): on the driver when the training rows fit in its memory (`--solver
auto`), else on Spark; both fit the same model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict

import numpy as np

from .. import FruitlensError
from ..catalogue import NOT_PRODUCE, Catalogue, normalise
from ..config import TrainConfig
from ..spark.progress import spark_progress
from ..storage.dataset import Dataset
from ..storage.location import Location
from ..storage.publish import publish_tree
from ..storage.writer import Target
from .data import FIT, TEST, VAL, Collection, Scores, load, views_in
from .model import PortableModel
from .solvers import Candidate, DriverSolver, Fit, SparkSolver

# Parameters every collection's embeddings must share (views may differ between collections).
SHARED_PARAMS = ("backbone", "model_sha256", "input_size", "resize")
_DRIVER_BYTES = 3 * 2**30  # --solver auto: the driver solver up to this many bytes of training rows


# -- scoring ------------------------------------------------------------------------------------------

def portable(fit: Fit, classes: list[str], families: list[str], refs: np.ndarray, meta: dict) -> PortableModel:
    return PortableModel(classes=classes, mean=fit.front.mean, std=fit.front.std, projection=fit.projection,
                         layers=fit.layers, threshold=0.0, refs=refs, novelty_threshold=np.inf, meta=meta,
                         families=families)


def normalized(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# -- metrics ------------------------------------------------------------------------------------------

def metrics(y: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    n_classes = len(classes)
    known = y >= 0
    y, probs = y[known], probs[known]
    pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
    top5 = np.argsort(-probs, axis=1)[:, :5]
    confusion = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(confusion, (y, pred), 1)
    tp = np.diag(confusion).astype(float)
    precision = np.divide(tp, confusion.sum(axis=0), out=np.zeros(n_classes), where=confusion.sum(axis=0) > 0)
    recall = np.divide(tp, confusion.sum(axis=1), out=np.zeros(n_classes), where=confusion.sum(axis=1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n_classes), where=(precision + recall) > 0)
    present = confusion.sum(axis=1) > 0
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    pairs = [(int(off[i, j]), classes[i], classes[j]) for i, j in zip(*np.nonzero(off))]
    pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
    return {
        "rows": int(len(y)),
        "accuracy": float((pred == y).mean()) if len(y) else None,
        "top5_accuracy": float((top5 == y[:, None]).any(axis=1).mean()) if len(y) else None,
        "macro_f1": float(f1[present].mean()) if present.any() else None,
        "per_class": {c: {"precision": round(float(precision[i]), 4), "recall": round(float(recall[i]), 4),
                          "support": int(confusion[i].sum())} for i, c in enumerate(classes) if present[i]},
        "most_confused": [{"true": t, "predicted": p, "count": n} for n, t, p in pairs[:20]],
        "_confusion": confusion,
    }


def answers(model: PortableModel, y: np.ndarray, probs: np.ndarray, nov: np.ndarray) -> dict:
    """What the rules answer and how often it is right, per level (species and family)."""
    level, fam, _ = model.decide(probs, nov)
    n = len(y)
    true_fam = np.where(y >= 0, model.family_index[np.clip(y, 0, None)], -1)
    species_right = (level == 2) & (probs.argmax(axis=1) == y)
    family_right = (level >= 1) & (fam == true_fam)  # a species answer's family counts at family level
    answered = level > 0
    return {
        "photos": int(n),
        "answered": round(float(answered.mean()), 4) if n else None,
        "answered_species": round(float((level == 2).mean()), 4) if n else None,
        "answered_family_only": round(float((level == 1).mean()), 4) if n else None,
        "answers_right": round(float(((level == 2) & species_right | (level == 1) & family_right).sum()
                                     / max(1, answered.sum())), 4) if answered.any() else None,
        "species_answers_right": round(float(species_right.sum() / max(1, (level == 2).sum())), 4)
        if (level == 2).any() else None,
        "family_answers_right": round(float(family_right[level == 1].mean()), 4) if (level == 1).any() else None,
        "not_sure": round(float((level == 0).mean()), 4) if n else None,
    }


def per_collection(model: PortableModel, scores: Scores, names: list[str]) -> dict:
    """Accuracy (species and family, from the labels through the catalogue) and answers per collection."""
    out = {}
    probs, nov = scores.probs, scores.novelty
    fam_probs = model.family_probabilities(probs) if len(probs) else np.zeros((0, 1))
    for c, name in enumerate(names):
        rows = scores.collection == c
        known = of_a_species(scores, model.not_produce)[rows]
        y = scores.y[rows]
        if not rows.any():
            continue
        p, fp = probs[rows][known], fam_probs[rows][known]
        yk = y[known]
        out[name] = {
            "photos": int(rows.sum()), "photos_of_a_known_species": int(known.sum()),
            "species_accuracy": float((p.argmax(axis=1) == yk).mean()) if len(yk) else None,
            "family_accuracy": float((fp.argmax(axis=1) == model.family_index[yk]).mean()) if len(yk) else None,
            "answers": answers(model, yk, p, nov[rows][known]) if len(yk) else None,
        }
    return out


def of_a_species(scores: Scores, not_produce: int) -> np.ndarray:
    """The photos of a species: of a class of the model, and not NOT_PRODUCE (index `not_produce`, -1: none)."""
    return (scores.y >= 0) & (scores.y != not_produce)


def species_rows_by_collection(scores: Scores, not_produce: int):
    """Each collection's photos of a species (a mask), for the collections that have any."""
    species = of_a_species(scores, not_produce)
    for c in np.unique(scores.collection):
        rows = species & (scores.collection == c)
        if rows.any():
            yield rows


def _produce(model: PortableModel, scores: Scores):
    """(y, probs, novelty) of the photos of a species (known, and not NOT_PRODUCE)."""
    keep = of_a_species(scores, model.not_produce)
    return scores.y[keep], scores.probs[keep], scores.novelty[keep]


def _not_produce_report(model: PortableModel, by_role: dict) -> dict | None:
    """How often photos of no fruit or vegetable (NOT_PRODUCE) get "not sure", per split."""
    if model.not_produce < 0:
        return None
    out = {}
    for role, scores in by_role.items():
        rows = scores.y == model.not_produce
        if rows.any():
            level, _, _ = model.decide(scores.probs[rows], scores.novelty[rows])
            out[role] = {"photos": int(rows.sum()), "not_sure": round(float((level == 0).mean()), 4)}
    return out


def _macro_accuracy(scores: Scores, classes: list[str]) -> float:
    """The mean over collections of the species accuracy (photos of a known class)."""
    not_produce = classes.index(NOT_PRODUCE) if NOT_PRODUCE in classes else -1
    accs = [float((scores.probs[rows].argmax(axis=1) == scores.y[rows]).mean())
            for rows in species_rows_by_collection(scores, not_produce)]
    return float(np.mean(accs)) if accs else 0.0


def thresholds(model: PortableModel, scores: Scores, target: float) -> tuple[float, float]:
    """(species, family) thresholds: in every collection, the answered validation photos (of a
    species) at least `target` right at each level: the smallest thresholds every collection keeps. The species
    threshold first (the model has one, so the family level is chosen on the photos each collection
    leaves below it; a collection with none there sets nothing). A photo answered "not a fruit or
    vegetable" is no answer."""
    produce = []
    for rows in species_rows_by_collection(scores, model.not_produce):
        p = scores.probs[rows].copy()
        if model.not_produce >= 0:  # photos it calls no produce are not answered: below every threshold
            p[p.argmax(axis=1) == model.not_produce] = 0.0
        produce.append((p, scores.y[rows]))
    t_species = common_threshold([(y, p) for p, y in produce], target)
    below = [(p, y, p.max(axis=1) < t_species) for p, y in produce]
    family = []
    for p, y, rows in below:
        fam = model.family_probabilities(p[rows])
        if model.not_produce >= 0:
            fam[:, model.family_index[model.not_produce]] = 0.0
        family.append((model.family_index[y[rows]], fam))
    return t_species, common_threshold(family, target)


def common_threshold(groups: list[tuple[np.ndarray, np.ndarray]], target: float) -> float:
    """The smallest winning-probability threshold at which every group's answered photos ((labels,
    probabilities) of one collection) are at least `target` right (a group with none answered
    sets nothing); above every photo when only answering none would do; `inf` with no photos."""
    groups = [(y, p) for y, p in groups if len(y)]
    if not groups:
        return float("inf")
    candidates = np.unique(np.concatenate([p.max(axis=1) for _, p in groups]))
    ok = np.ones(len(candidates), bool)
    for y, p in groups:
        best = p.max(axis=1)
        order = np.argsort(best)
        ascending, right = best[order], (p.argmax(axis=1) == y)[order]
        right_from = np.r_[np.cumsum(right[::-1])[::-1], 0]  # right answers among photos order[i:]
        first = np.searchsorted(ascending, candidates, side="left")
        answered = len(y) - first
        ok &= (answered == 0) | (right_from[first] >= target * answered)
    feasible = candidates[ok & (candidates > 0)]  # 0: photos called "not produce", never answered
    return float(feasible[0]) if len(feasible) else float(np.nextafter(candidates[-1], 2.0))


def novelty_threshold_of(model: PortableModel, scores: Scores, target: float) -> float:
    """The novelty above which a photo is "unlike the training images": in every collection, at
    least `target` of the validation photos of a species stay below it (each collection's
    `target` quantile; the loosest). Shop photos lie farther from their references than turntable
    frames do from theirs: one quantile over every photo would send most shop photos to "not sure"."""
    quantiles = [float(np.quantile(scores.novelty[rows], target))
                 for rows in species_rows_by_collection(scores, model.not_produce)]
    return max(quantiles) if quantiles else np.inf


# -- the job ------------------------------------------------------------------------------------------

def make_solver(data, spark_session, roles: tuple[str, ...], n_classes: int, cfg: TrainConfig):
    """The solver of the data's kind, on the training rows of `roles` (every view a row)."""
    if data.kind == "driver":
        x, y = data.training_rows(roles)
        return DriverSolver(x, y, n_classes, cfg.pca_variance, cfg.max_iter), len(x)
    rows = data.training_rows(roles)
    solver = SparkSolver(spark_session(), rows, n_classes, cfg.pca_variance, cfg.max_iter, cfg.seed)
    return solver, solver.rows


def train(spark_session, cfg: TrainConfig, collections: list[Collection], target: Target, say=print) -> dict:
    """Fit, compare and evaluate; publish the model folder at `target.final`; return the report.
    `spark_session`: a function returning the SparkSession (started only when needed)."""
    t_start = time.perf_counter()
    first = collections[0].params or {}
    for coll in collections[1:]:
        for key in SHARED_PARAMS:
            if (coll.params or {}).get(key) != first.get(key):
                raise FruitlensError(f"{coll.location.uri} was made with {key} {coll.params.get(key)!r}, "
                                     f"{collections[0].location.uri} with {first.get(key)!r}: featurize every "
                                     "collection with the same backbone and image size")
    catalogue = Catalogue.load(cfg.catalogue, _all_labels(collections))
    candidates = [Candidate.parse(c) for c in cfg.candidates]
    solver_kind = "spark" if any(c.kind == "mlp" for c in candidates) and cfg.solver == "auto" else cfg.solver
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data = load(collections, catalogue, cfg.validation, solver_kind, spark_session, _DRIVER_BYTES)
    classes, families = data.classes, data.families
    timings["read_s"] = time.perf_counter() - t0
    names = [c.name for c in collections]
    t0 = time.perf_counter()
    solver, fit_rows = make_solver(data, spark_session, (FIT,), len(classes), cfg)
    timings["scaler_pca_s"] = time.perf_counter() - t0
    dim = len(solver.front.mean)
    kind = data.kind
    say(f"[train] {data.size(FIT):,} fit photos ({fit_rows:,} rows with their views), {data.size(VAL):,} "
        f"validation, {data.size(TEST):,} test; {len(classes)} classes; solver: {kind}")
    refs_fit = data.references((FIT,), cfg.refs_per_class)
    view_sets = views_in(collections)
    report: dict = {
        "config": {**asdict(cfg), "candidates": [c.name for c in candidates]}, "classes": len(classes),
        "catalogue": {"source": catalogue.source, "species": len(classes), "families": len(set(families))},
        "embedding_dim": dim, "pca_k": solver.pca_k, "solver": kind, "blas": blas_report(kind, spark_session),
        "collections": data.counts, "left_out_labels": data.unknown,
        "rows": {"fit": data.size(FIT), "fit_rows_with_views": fit_rows, "validation": data.size(VAL),
                 "train": data.size(FIT) + data.size(VAL), "test": data.size(TEST)},
        "candidates": [],
    }
    fitted = []
    # strongest regularisation first: each fit of a kind starts from the one before (driver solver)
    for candidate in sorted(candidates, key=lambda c: (c.kind, -c.setting)):
        with _progress(spark_session, kind, f"fitting {candidate.name} on {fit_rows:,} rows", say):
            fit = solver.fit(candidate)
        refs = normalized(_inputs(fit, refs_fit)).astype(np.float32)
        model = portable(fit, classes, families, refs, {})
        scores = {v: data.score(model, VAL, v) for v in view_sets}
        by_views = {v: metrics(sc.y, sc.probs, classes) for v, sc in scores.items()}
        for v, sc in scores.items():  # the collections count alike, whatever their size
            by_views[v]["accuracy"] = _macro_accuracy(sc, classes)
        best_views = _fewest_views(by_views)
        m = by_views[best_views]
        report["candidates"].append({
            "candidate": candidate.name, "model": candidate.kind, "params": _params(candidate),
            "seconds": round(fit.seconds, 1), "iterations": fit.iterations,
            "validation_accuracy": m["accuracy"], "validation_accuracy_is": "the mean of the collections' "
                                                                             "species accuracies",
            "validation_macro_f1": m["macro_f1"],
            "validation_top5": m["top5_accuracy"], "predict_views": best_views,
            "validation_accuracy_by_views": {str(v): round(mv["accuracy"], 4) for v, mv in by_views.items()}})
        fitted.append((candidate, fit, model, scores[best_views], best_views, (m["accuracy"], m["macro_f1"])))
    eligible = [f for f in fitted if cfg.default in (None, f[0].kind, f[0].name)]
    if not eligible:
        raise FruitlensError(f"--default {cfg.default} is not among --candidates")
    best_candidate, best_fit, best_model, val_scores, views, _ = max(eligible, key=lambda f: f[5])

    # Thresholds on validation (the chosen candidate fitted on the fit split).
    novelty_threshold = novelty_threshold_of(best_model, val_scores, cfg.target_precision)
    threshold, family_threshold = thresholds(best_model, val_scores, cfg.target_precision)
    best_model.threshold, best_model.family_threshold = threshold, family_threshold
    best_model.novelty_threshold = novelty_threshold
    val_answers = answers(best_model, *_produce(best_model, val_scores))

    # The chosen candidate refit on every train photo, scored once on test.
    t0 = time.perf_counter()
    refit_solver, all_rows = make_solver(data, spark_session, (FIT, VAL), len(classes), cfg)
    with _progress(spark_session, kind, f"refitting {best_candidate.name} on {all_rows:,} train rows", say):
        final = refit_solver.fit(best_candidate, start=best_fit)
    timings["refit_s"] = time.perf_counter() - t0
    refs = normalized(_inputs(final, data.references((FIT, VAL), cfg.refs_per_class))).astype(np.float32)
    first = collections[0].params or {}
    meta = {"kind": best_candidate.kind, "candidate": best_candidate.name, "params": _params(best_candidate),
            "embedding_params": {k: v for k, v in first.items() if k not in ("views", "crop")},
            "embedding_dim": dim, "pca_k": final.projection.shape[1] if final.projection is not None else None,
            "crop": _crop(collections)}
    model = PortableModel(classes=classes, mean=final.front.mean, std=final.front.std, projection=final.projection,
                          layers=final.layers, threshold=threshold, refs=refs, novelty_threshold=novelty_threshold,
                          meta=meta, families=families, family_threshold=family_threshold, views=views)
    test = data.score(model, TEST, views)
    m = metrics(test.y, test.probs, classes)
    report["rows"]["test_unknown_label"] = int((test.y < 0).sum())
    report["rows"]["test"] = int((test.y >= 0).sum())
    report["chosen"] = {
        "candidate": best_candidate.name, "model": best_candidate.kind, "params": _params(best_candidate),
        "chosen_on": "validation accuracy (the collections' mean, then macro-F1)", "predict_views": views,
        "test": {k: v for k, v in m.items() if not k.startswith("_")},
        "test_by_collection": per_collection(model, test, names),
        "validation_by_collection": per_collection(best_model, val_scores, names),
        "not_sure": {
            "thresholds_from": "the chosen model fit on the fit split, scored on validation; applied unchanged to "
                               "the model refit on all of train",
            "target_precision": cfg.target_precision,
            "rule": "the smallest species threshold at which every collection's validation answers are at least "
                    "target_precision right, then the family threshold chosen so on the photos left below it; "
                    "novelty: the loosest collection's target_precision quantile",
            "threshold": threshold, "validation_precision": val_answers["species_answers_right"],
            "validation_coverage": val_answers["answered_species"],
            "family_threshold": family_threshold if np.isfinite(family_threshold) else None,
            "novelty_threshold": novelty_threshold, "validation": val_answers,
            "test": answers(model, *_produce(model, test)) if (test.y >= 0).any() else None,
            "not_produce": _not_produce_report(model, {VAL: val_scores, TEST: test}),
        },
    }
    report["timings"] = {k: round(v, 1) for k, v in timings.items()}
    t0 = time.perf_counter()
    _publish(spark_session(), final, model, catalogue.restricted_to(_trained_labels(catalogue, collections)),
             report, m["_confusion"], classes, target)
    report["timings"]["save_s"] = round(time.perf_counter() - t0, 1)
    report["timings"]["total_s"] = round(time.perf_counter() - t_start, 1)
    return report


def _all_labels(collections: list[Collection]) -> list[str]:
    labels = set()
    for coll in collections:
        for _, table in Dataset.at(coll.location).tables(["label"]):
            labels.update(x for x in table.column("label").to_pylist() if x)
    return sorted(labels)


def _trained_labels(catalogue: Catalogue, collections) -> list[str]:
    labels = _all_labels(collections)
    return [label for label in labels if catalogue.species_of(label) is not None]


def _crop(collections: list[Collection]) -> float:
    crops = {float(c.params.get("crop")) for c in collections if c.params and c.params.get("crop")}
    return crops.pop() if len(crops) == 1 else 0.7


def _fewest_views(by_views: dict) -> int:
    """The fewest views averaged at predict time within half a point of the best on validation."""
    best = max(m["accuracy"] for m in by_views.values())
    return min(v for v, m in by_views.items() if m["accuracy"] >= best - 0.005)


def _inputs(fit: Fit, x: np.ndarray) -> np.ndarray:
    return fit.front.inputs(x, fit.candidate.uses_pca).astype(np.float64)


def _params(candidate: Candidate) -> dict:
    return {"hidden": int(candidate.setting)} if candidate.kind == "mlp" else {"regParam": candidate.setting}


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
    from threadpoolctl import threadpool_info

    numpy_blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads)"
                  for i in threadpool_info() if i.get("user_api") == "blas"]
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


def _publish(spark, fit: Fit, model: PortableModel, catalogue: Catalogue, report: dict, confusion, classes,
             target: Target) -> None:
    from ..reduction.sparkml import classifier_pipeline
    from ..report import write_confusion_png

    tmp = tempfile.mkdtemp(prefix="fruitlens-train-")
    try:
        folder = os.path.join(tmp, "model")
        os.makedirs(folder)
        pipeline = fit.spark_model or classifier_pipeline(spark, model.mean, model.std, model.projection, model.layers,
                                                          fit.front.explained)
        pipeline.write().overwrite().save("file://" + os.path.join(folder, "spark"))
        model.save(folder)
        with open(os.path.join(folder, "catalogue.csv"), "w", encoding="utf-8") as f:
            f.write(catalogue.to_csv())
        with open(os.path.join(folder, "per_class.csv"), "w") as f:
            f.write("class,precision,recall,support\n")
            for c, v in report["chosen"]["test"]["per_class"].items():
                f.write(f"\"{c}\",{v['precision']},{v['recall']},{v['support']}\n")
        accuracy = report["chosen"]["test"]["accuracy"]
        write_confusion_png(os.path.join(folder, "confusion.png"), confusion, classes,
                            f"{report['chosen']['candidate']}: test accuracy "
                            + (f"{accuracy:.2%}" if accuracy is not None else "n/a (no test rows)"))
        with open(os.path.join(folder, "report.json"), "w") as f:
            json.dump(report, f, indent=2, default=float)
        shutil.rmtree(os.path.join(folder, "spark", "_temporary"), ignore_errors=True)
        publish_tree(folder, target, model.embedding_params)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def collection_of(where: Location, name: str | None = None) -> Collection:
    """An embeddings dataset as a collection, named after its folder."""
    folder = where.parent if where.name == "embeddings" else where
    return Collection(name or folder.name, where, Dataset.at(where).params)


__all__ = ["Collection", "collection_of", "normalise", "train"]
