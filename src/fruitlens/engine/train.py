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
   views averaged (1, 2, 4 or 12 of them: only the sets every collection was embedded with, so the
   figures are those `predict` and `classify` give), and the number of views `predict` averages is
   chosen on validation.
4. **Candidates** (`--candidates`, KIND:SETTING): the scaler and the PCA fitted once per split and
   shared; each candidate's validation accuracy, macro-F1 and seconds go to the report. The
   default list is the best trade of accuracy for time on validation (docs/benchmarks.md).
5. **Temperature and thresholds** on validation: with `--temperature`, the classifier's logits
   divided by the temperature with the least validation log-loss; the species is answered
   when its probability reaches the threshold at which answered validation photos are
   `--target-precision` right; else the family when its probability (its species' summed) reaches
   the smallest threshold at which the answers of both levels together are as precise, in every
   collection; "unlike the training images" above the `--target-precision` quantile of the
   validation photos' novelty (each collection's photos of a species; the loosest collection's).
6. **Refit** the chosen candidate on every train photo (fit + validation), score test per
   collection (species and family), export: `spark/` (Spark ML PipelineModel), `portable.npz` +
   `model.json`, `catalogue.csv`, `report.json`, `confusion.png`, `per_class.csv`.

The stages, each a function returning a typed result, are in `engine/stages.py` (the thresholds in
`engine/calibrate.py`, the measures in `engine/evaluate.py`); the report is made from their results
in `engine/train_report.py`. Solvers (`engine/solvers.py`): on the driver when the training rows fit
in its memory (`--solver auto`), else on Spark; both fit the same model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from ..catalogue import Catalogue, normalise
from ..config import TrainConfig
from ..storage.dataset import Dataset
from ..storage.location import Location
from ..storage.publish import publish_tree
from ..storage.writer import Target
from .calibrate import calibrate
from .data import Collection
from .stages import Tested, check_shared_params, choose, fit_candidates, prepare, refit_and_test, tempered
from .train_report import train_report, write_report_files


def train(spark_session, cfg: TrainConfig, collections: list[Collection], target: Target, say=print) -> dict:
    """Fit, compare and evaluate (engine/stages.py); publish the model folder at `target.final`;
    return the report. `spark_session`: a function returning the SparkSession (started only when needed)."""
    t_start = time.perf_counter()
    check_shared_params(collections)
    catalogue = Catalogue.load(cfg.catalogue, _all_labels(collections))
    prepared = prepare(spark_session, cfg, collections, catalogue, say)
    results = fit_candidates(spark_session, cfg, prepared, say)
    choice = choose(results, cfg.default)
    if cfg.temperature:
        choice = tempered(prepared, choice)
    thresholds = calibrate(choice.model, choice.validation, cfg.target_precision, choice.temperature)
    tested = refit_and_test(spark_session, cfg, prepared, choice, thresholds, say)
    report = train_report(cfg, prepared, results, choice, thresholds, tested)
    t0 = time.perf_counter()
    _publish(
        spark_session(),
        tested,
        catalogue.restricted_to(_trained_labels(catalogue, collections)),
        report,
        prepared.classes,
        target,
    )
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


def _publish(spark, tested: Tested, catalogue: Catalogue, report: dict, classes: list[str], target: Target) -> None:
    from ..reduction.sparkml import classifier_pipeline

    fit, model = tested.fit, tested.model
    tmp = tempfile.mkdtemp(prefix="fruitlens-train-")
    try:
        folder = os.path.join(tmp, "model")
        os.makedirs(folder)
        pipeline = fit.spark_model or classifier_pipeline(
            spark, model.mean, model.std, model.projection, model.layers, fit.front.explained
        )
        pipeline.write().overwrite().save("file://" + os.path.join(folder, "spark"))
        model.save(folder)
        with open(os.path.join(folder, "catalogue.csv"), "w", encoding="utf-8") as f:
            f.write(catalogue.to_csv())
        write_report_files(folder, report, tested.metrics["_confusion"], classes)
        shutil.rmtree(os.path.join(folder, "spark", "_temporary"), ignore_errors=True)
        publish_tree(folder, target, model.embedding_params)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def collection_of(where: Location, name: str | None = None) -> Collection:
    """An embeddings dataset as a collection, named after its folder."""
    folder = where.parent if where.name == "embeddings" else where
    return Collection(name or folder.name, where, Dataset.at(where).params)


__all__ = ["Collection", "collection_of", "normalise", "train"]
