"""Training the identification engine on Spark ML, with fit/transform vocabulary.

Candidates (all on the embeddings `featurize` wrote, StandardScaler first):
- `lr_pca`:  PCA (smallest k reaching --pca-variance of the train split) -> multinomial logistic regression
- `lr_full`: multinomial logistic regression on every standardized dimension of the embedding
- `mlp`:     PCA -> MultilayerPerceptronClassifier (128 sigmoid units, softmax output)

Hyper-parameters and the default model are chosen on a validation split carved from train, never
on test. Fruits-360 training images of a class are consecutive frames of one fruit turning, so a
random split would put near-copies of the training frames in validation and flatter every model;
validation is instead the last `--validation` share of each class's images in path order (a
contiguous block of frames), which behaves like the separately shot Test split. The chosen model
is then refit on the whole train split and evaluated once on test.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict

import numpy as np

from .. import FruitlensError, schemas
from ..config import TrainConfig
from ..spark.progress import spark_progress
from ..storage.publish import publish_tree
from ..storage.writer import Target
from .model import PortableModel, novelty, stored_refs
from .nearest import CosineSearch

GRIDS = {  # small on purpose: each point is one Spark ML fit
    "lr_pca": [{"regParam": r} for r in (1e-4, 3e-4, 1e-3, 1e-2)],
    "lr_full": [{"regParam": r} for r in (1e-4, 3e-4, 1e-3, 1e-2)],
    "mlp": [{"hidden": h} for h in (128,)],
}


# -- the Spark ML pipelines --------------------------------------------------------------------------

def _pipeline(name: str, hp: dict, n_classes: int, k: int | None, dim: int, cfg: TrainConfig):
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import (
        LogisticRegression,
        MultilayerPerceptronClassifier,
    )
    from pyspark.ml.feature import StandardScaler

    from ..reduction.sparkml import ArrayToVector, EigenPCA

    stages = [ArrayToVector(inputCol="embedding", outputCol="features"),
              StandardScaler(withMean=True, withStd=True, inputCol="features", outputCol="scaled")]
    features = "scaled"
    if name in ("lr_pca", "mlp"):
        stages.append(EigenPCA(k=k, inputCol="scaled", outputCol="pca"))  # fits Spark ML's PCAModel
        features = "pca"
    if name == "mlp":
        stages.append(MultilayerPerceptronClassifier(
            featuresCol=features, labelCol="label_idx", layers=[k, hp["hidden"], n_classes],
            maxIter=min(cfg.max_iter, 100),  # L-BFGS on a network: each iteration costs ~10 logistic ones
            seed=cfg.seed, blockSize=128))
    else:
        stages.append(LogisticRegression(
            featuresCol=features, labelCol="label_idx", family="multinomial", regParam=hp["regParam"],
            elasticNetParam=0.0, maxIter=cfg.max_iter, standardization=False))
    return Pipeline(stages=stages)


def portable_from(model, classes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list]:
    """(mean, std, projection, layers) of a fitted pipeline, for `engine.PortableModel`."""
    stages = model.stages
    scaler, last = stages[1], stages[-1]
    projection = stages[2].pc.toArray() if len(stages) == 4 else None
    if hasattr(last, "coefficientMatrix"):
        layers = [(last.coefficientMatrix.toArray(), last.interceptVector.toArray())]
    else:  # MLP: Spark's flat weights, per affine layer a column-major (out x in) matrix then the bias
        sizes, flat, layers, offset = list(last.getLayers()), last.weights.toArray(), [], 0
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            w = flat[offset:offset + n_in * n_out].reshape(n_in, n_out).T
            offset += n_in * n_out
            layers.append((w, flat[offset:offset + n_out]))
            offset += n_out
    return scaler.mean.toArray(), scaler.std.toArray(), projection, layers


# -- metrics (NumPy, on the collected predictions) ------------------------------------------------

def metrics(y: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    n_classes = len(classes)
    pred = probs.argmax(axis=1)
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


def choose_threshold(y: np.ndarray, probs: np.ndarray, target: float) -> tuple[float, float, float]:
    """Smallest winning-probability threshold whose answered predictions are at least `target`
    precise: (threshold, precision, coverage) on the data given (validation)."""
    p = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    order = np.argsort(-p, kind="stable")
    p_sorted, c_sorted = p[order], correct[order]
    precision = np.cumsum(c_sorted) / np.arange(1, len(p) + 1)
    # Only cut between distinct probabilities: everything at or above the threshold is answered.
    last_of_value = np.r_[p_sorted[1:] != p_sorted[:-1], True]
    ok = np.nonzero((precision >= target) & last_of_value)[0]
    if not len(ok):
        return float(np.nextafter(p_sorted[0], 2.0)), 1.0, 0.0
    i = ok[-1]
    return float(p_sorted[i]), float(precision[i]), float((i + 1) / len(p))


def answered(y, probs, threshold, not_novel=None) -> dict:
    keep = probs.max(axis=1) >= threshold
    if not_novel is not None:
        keep &= not_novel
    n = int(keep.sum())
    right = int((probs.argmax(axis=1)[keep] == y[keep]).sum())
    return {"coverage": n / len(y) if len(y) else None, "precision": right / n if n else None, "answered": n}


def normalized(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# -- the job ----------------------------------------------------------------------------------------

def train(spark, cfg: TrainConfig, embeddings, params: dict | None, target: Target) -> dict:
    """Fit, compare and evaluate; publish the model folder at `target.final`; return the report."""
    from pyspark.ml.feature import StringIndexer
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    schemas.check_embeddings_columns(embeddings.columns, cfg.input)
    data = embeddings.select("path", "label", "split", "embedding").filter(F.col("label").isNotNull())
    by_class = Window.partitionBy("label").orderBy("path")
    train_all = (data.filter(F.col("split") == "train")
                 .withColumn("_pos", F.percent_rank().over(by_class))
                 .withColumn("_val", F.col("_pos") >= 1.0 - cfg.validation).drop("_pos").cache())
    test = data.filter(F.col("split") == "test")
    counts = {r["split"]: r["count"] for r in data.groupBy("split").count().collect()}
    if not counts.get("train"):
        raise FruitlensError(f"{cfg.input} has no `train` rows (images under a Training/ folder): nothing to fit on")
    indexer = StringIndexer(inputCol="label", outputCol="label_idx", stringOrderType="alphabetAsc",
                            handleInvalid="skip").fit(train_all)
    classes = list(indexer.labels)
    if len(classes) < 2:
        raise FruitlensError(f"{cfg.input} has {len(classes)} class in its train split: need at least 2")
    fit_part = indexer.transform(train_all.filter(~F.col("_val"))).cache()
    val_part = indexer.transform(train_all.filter(F.col("_val"))).cache()
    full_train = indexer.transform(train_all).cache()
    test_part = indexer.transform(test).cache()
    n_val, n_fit = val_part.count(), fit_part.count()
    if n_val == 0 or n_fit == 0:
        raise FruitlensError("too few train images per class to carve a validation split")
    dim = len(full_train.first()["embedding"])
    k = _pca_k(spark, fit_part, cfg.pca_variance, dim) if {"lr_pca", "mlp"} & set(cfg.models) else None

    report: dict = {"config": asdict(cfg), "classes": len(classes), "embedding_dim": dim, "pca_k": k,
                    "rows": {"fit": n_fit, "validation": n_val, "train": n_fit + n_val,
                             "test": test_part.count(), "test_unknown_label": counts.get("test", 0) - test_part.count()},
                    "validation_split": f"last {cfg.validation:.0%} of each class's train images in path order",
                    "candidates": []}
    fitted = []
    for name in cfg.models:
        for hp in GRIDS[name]:
            t0 = time.perf_counter()
            with spark_progress(spark, f"fitting {name} {hp} on {n_fit:,} rows"):
                model = _pipeline(name, hp, len(classes), k, dim, cfg).fit(fit_part)
            fit_s = time.perf_counter() - t0
            y, probs = _collect(model, val_part, len(classes))
            m = metrics(y, probs, classes)
            report["candidates"].append({"model": name, "params": hp, "fit_s": round(fit_s, 1),
                                         "validation_accuracy": m["accuracy"], "validation_top5": m["top5_accuracy"],
                                         "validation_macro_f1": m["macro_f1"]})
            fitted.append({"name": name, "hp": hp, "score": (m["accuracy"], m["macro_f1"]), "model": model,
                           "y": y, "probs": probs})
    eligible = [f for f in fitted if cfg.default in (None, f["name"])]
    best = max(eligible, key=lambda f: f["score"])  # first among equals: the order of --models

    # Thresholds on validation: confidence for 99.5% precision, novelty from the nearest reference.
    threshold, val_precision, val_coverage = choose_threshold(best["y"], best["probs"], cfg.target_precision)
    val_feats = _features(best["model"], val_part)
    fit_refs = _features(best["model"], _refs(fit_part, cfg.refs_per_class))
    # the same computation, on references stored the same way, as the model's novelty_of at serve time
    val_novelty = novelty(val_feats, CosineSearch(stored_refs(normalized(fit_refs))))
    novelty_threshold = float(np.quantile(val_novelty, cfg.target_precision))

    # Every compared model (its best point) refit on the whole train split and scored on test.
    comparison, final = [], None
    for name in cfg.models:
        points = [c for c in report["candidates"] if c["model"] == name]
        point = max(points, key=lambda c: (c["validation_accuracy"], c["validation_macro_f1"]))
        t0 = time.perf_counter()
        with spark_progress(spark, f"refitting {name} on {n_fit + n_val:,} train rows"):
            model = _pipeline(name, point["params"], len(classes), k, dim, cfg).fit(full_train)
        fit_s = time.perf_counter() - t0
        y, probs = _collect(model, test_part, len(classes))
        m = metrics(y, probs, classes)
        comparison.append({"model": name, "params": point["params"], "train_s": round(fit_s, 1),
                           "validation_accuracy": point["validation_accuracy"], "test_accuracy": m["accuracy"],
                           "test_top5": m["top5_accuracy"], "test_macro_f1": m["macro_f1"]})
        if name == best["name"]:
            final = {"model": model, "y": y, "probs": probs, "metrics": m, "params": point["params"]}
    report["comparison"] = comparison

    mean, std, projection, layers = portable_from(final["model"], classes)
    refs = normalized(_features(final["model"], _refs(full_train, cfg.refs_per_class)))
    portable = PortableModel(classes=classes, mean=mean, std=std, projection=projection, layers=layers,
                             threshold=threshold, refs=refs.astype(np.float32), novelty_threshold=novelty_threshold,
                             meta={"kind": best["name"], "params": final["params"], "embedding_params": params or {},
                                   "embedding_dim": dim, "pca_k": k if best["name"] != "lr_full" else None})
    test_feats = _features(final["model"], test_part)
    test_novel = portable.novelty_of(test_feats) > novelty_threshold if len(test_feats) else np.zeros(0, bool)
    m = final["metrics"]
    report["chosen"] = {
        "model": best["name"], "params": final["params"], "chosen_on": "validation accuracy (then macro-F1)",
        "test": {k2: v for k2, v in m.items() if not k2.startswith("_")},
        "not_sure": {
            "thresholds_from": "the chosen model fit on the fit split (train minus validation), scored on validation; "
                               "applied unchanged to the model refit on all of train",
            "target_precision": cfg.target_precision,
            "threshold": threshold, "validation_precision": val_precision, "validation_coverage": val_coverage,
            "test_confidence_only": answered(final["y"], final["probs"], threshold),
            "novelty_threshold": novelty_threshold,
            "test_with_novelty": answered(final["y"], final["probs"], threshold, ~test_novel),
        },
    }
    _publish(spark, final["model"], portable, report, m["_confusion"], classes, target)
    for df in (train_all, fit_part, val_part, full_train, test_part):
        df.unpersist()
    return report


def _pca_k(spark, fit_part, variance: float, dim: int) -> int:
    from pyspark.ml.feature import StandardScaler

    from ..reduction.sparkml import ArrayToVector, choose_k, spectrum

    with spark_progress(spark, "choosing the PCA size on the fit split"):
        vec = ArrayToVector(inputCol="embedding", outputCol="features").transform(fit_part)
        scaled = StandardScaler(withMean=True, withStd=True, inputCol="features", outputCol="scaled").fit(vec).transform(vec)
        explained = spectrum(scaled, "scaled")
    return choose_k(explained, variance)


def _collect(model, df, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    from pyspark.ml.functions import vector_to_array

    rows = model.transform(df).select("label_idx", vector_to_array("probability").alias("p")).collect()
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, n_classes))
    return np.array([r["label_idx"] for r in rows], np.int64), np.array([r["p"] for r in rows], np.float64)


def _features(model, df) -> np.ndarray:
    """The classifier's input features (after scaler, and PCA when there is one) of `df`'s rows."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.functions import vector_to_array

    front = PipelineModel(stages=model.stages[:-1])
    col = "pca" if len(model.stages) == 4 else "scaled"
    rows = front.transform(df).select(vector_to_array(col).alias("x")).collect()
    return np.array([r["x"] for r in rows], np.float64) if rows else np.zeros((0, 1))


def _refs(df, per_class: int):
    """Up to `per_class` rows of each class, evenly spread over its images in path order."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy("label").orderBy("path")
    n = Window.partitionBy("label")
    ranked = df.withColumn("_i", F.row_number().over(w) - 1).withColumn("_n", F.count("*").over(n))
    step = F.greatest(F.lit(1.0), F.col("_n") / per_class)
    return ranked.filter(F.floor(F.col("_i") / step) != F.floor((F.col("_i") - 1) / step)).drop("_i", "_n")


def _publish(spark, model, portable: PortableModel, report: dict, confusion, classes, target: Target) -> None:
    from ..report import write_confusion_png

    tmp = tempfile.mkdtemp(prefix="fruitlens-train-")
    try:
        folder = os.path.join(tmp, "model")
        model.write().overwrite().save("file://" + os.path.join(folder, "spark"))
        portable.save(folder)
        import json

        with open(os.path.join(folder, "per_class.csv"), "w") as f:
            f.write("class,precision,recall,support\n")
            for c, v in report["chosen"]["test"]["per_class"].items():
                f.write(f"\"{c}\",{v['precision']},{v['recall']},{v['support']}\n")
        accuracy = report["chosen"]["test"]["accuracy"]
        write_confusion_png(os.path.join(folder, "confusion.png"), confusion, classes,
                            f"{report['chosen']['model']}: test accuracy "
                            + (f"{accuracy:.2%}" if accuracy is not None else "n/a (no test rows)"))
        with open(os.path.join(folder, "report.json"), "w") as f:
            json.dump(report, f, indent=2, default=float)
        shutil.rmtree(os.path.join(folder, "spark", "_temporary"), ignore_errors=True)
        publish_tree(folder, target, portable.embedding_params)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
