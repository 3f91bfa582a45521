"""Reduction: StandardScaler (mean and std) + PCA from Spark ML, fit/transform vocabulary. The PCA is
Spark ML's PCAModel, fit from the covariance's eigendecomposition (sparkml.EigenPCA).

Fit on the `train` split when there is one, else on every row; k given, or the smallest k whose
cumulative explained variance reaches the target. The fitted PipelineModel takes a vector column
`features` (`pyspark.ml.functions.array_to_vector("embedding")`) and outputs `pca`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from .. import FruitlensError, schemas
from ..config import ReduceConfig
from ..spark.datasets import jvm_can_read, write_dataframe
from ..spark.progress import spark_progress
from ..storage.dataset import Dataset
from ..storage.location import Location
from ..storage.publish import publish_staged_tree, publish_tree
from ..storage.writer import Target


@dataclass
class ReduceResult:
    rows: int
    fit_rows: int
    fit_on: str
    k: int
    explained_variance: list[float]  # per component, for every component
    timings: dict

    @property
    def cumulative(self) -> list[float]:
        return np.cumsum(self.explained_variance).tolist()

    @property
    def explained_at_k(self) -> float:
        return float(sum(self.explained_variance[: self.k]))


def fit_and_transform(
    spark,
    cfg: ReduceConfig,
    embeddings,
    features: Target,
    model_target: Target,
    params: dict | None = None,
    fitted: Location | None = None,
) -> ReduceResult:
    """`embeddings`: a DataFrame with path, label, split, embedding (array<float>). `params`: what
    the embeddings were made with (recorded with the model, checked by --reuse-model). `fitted`:
    the scaler + PCA to project with instead of fitting (--reuse-model)."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import StandardScaler
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    from .sparkml import EigenPCA  # pyspark.ml: imported when fitting

    schemas.check_embeddings_columns(embeddings.columns, cfg.input)
    timings: dict[str, float] = {}
    data = embeddings.select("path", "label", "split", array_to_vector("embedding").alias("features")).cache()
    t0 = time.perf_counter()
    if fitted is not None:
        model = load_model(spark, fitted, params)
        pca = model.stages[-1]
        rows = data.count()
        if rows == 0:
            raise FruitlensError(f"{cfg.input} holds no embeddings to reduce")
        timings["load_model_s"] = time.perf_counter() - t0
        _project(spark, model, data, rows, pca.getK(), features, timings)
        if fitted.uri != model_target.final.uri:  # read under its old name: saved under the new one
            save_model(spark, model, model_target, params)
        return ReduceResult(
            rows=rows,
            fit_rows=0,
            fit_on="reused model",
            k=pca.getK(),
            explained_variance=pca.explainedVariance.toArray().tolist(),
            timings=timings,
        )
    with spark_progress(spark, "fitting StandardScaler + PCA"):
        counts = {r["split"]: r["count"] for r in data.groupBy("split").count().collect()}
        rows = sum(counts.values())
        if rows == 0:
            raise FruitlensError(f"{cfg.input} holds no embeddings to reduce")
        fit_on = "train" if counts.get("train") else "all"
        fit_data = data.filter(F.col("split") == "train") if fit_on == "train" else data
        fit_rows = counts["train"] if fit_on == "train" else rows
        if fit_rows < 2:
            raise FruitlensError(
                f"PCA needs at least 2 rows to fit on; {cfg.input} has {fit_rows} "
                f"{'train rows' if fit_on == 'train' else 'rows'}"
            )
        dim = len(data.first()["features"])
        if cfg.k is not None and cfg.k > dim:
            raise FruitlensError(f"--k {cfg.k} is larger than the embedding dimension {dim}")

        scaler = StandardScaler(withMean=True, withStd=True, inputCol="features", outputCol="scaled").fit(fit_data)
        scaled = scaler.transform(fit_data).select("scaled")
        # One pass for the covariance, one eigendecomposition for the whole spectrum: k is chosen
        # from it and the components taken from the same decomposition (no second fit).
        estimator = EigenPCA(k=cfg.k, variance=cfg.variance, inputCol="scaled", outputCol="pca")
        pca = estimator.fit(scaled)
        explained, k = estimator.spectrum_.tolist(), pca.getK()
        model = PipelineModel(stages=[scaler, pca])
    timings["fit_s"] = time.perf_counter() - t0
    _project(spark, model, data, rows, k, features, timings)
    save_model(spark, model, model_target, params)
    return ReduceResult(rows=rows, fit_rows=fit_rows, fit_on=fit_on, k=k, explained_variance=explained, timings=timings)


def _project(spark, model, data, rows: int, k: int, features: Target, timings: dict) -> None:
    from pyspark.ml.functions import vector_to_array

    t0 = time.perf_counter()
    with spark_progress(spark, f"projecting {rows:,} rows on {k} components"):
        projected = model.transform(data).select("path", "label", "split", vector_to_array("pca").alias("pca"))
        write_dataframe(projected, features, schemas.FEATURES)
    timings["transform_write_s"] = time.perf_counter() - t0
    data.unpersist()


def save_model(spark, model, target: Target, params: dict | None = None) -> None:
    """Spark ML writes through the JVM (the executors write some of the files). Where the JVM
    reaches the output store (EMR's EMRFS for s3://, HDFS), save into the staging area directly;
    else (no S3 connector) save to a local temporary folder, then publish it with its manifest."""
    if not target.final.is_local and jvm_can_read(spark, target.final):
        model.write().overwrite().save(target.staging.uri)
        publish_staged_tree(target, params)
        return
    tmp = tempfile.mkdtemp(prefix="fruitlens-model-")
    try:
        model.write().overwrite().save("file://" + tmp + "/model")
        publish_tree(tmp + "/model", target, params)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_model(spark, where: Location, params: dict | None):
    """The PipelineModel published at `where`, refused if it was fit on other embeddings."""
    from pyspark.ml import PipelineModel

    manifest = Dataset.at(where).manifest
    if manifest is None or manifest.format != "tree":
        raise FruitlensError(f"--reuse-model: no fitted model at {where.uri} (run once without --reuse-model)")
    if params and manifest.params and manifest.params != params:
        raise FruitlensError(
            f"--reuse-model: the model at {where.uri} was fit on other embeddings "
            f"({manifest.params.get('backbone')}, {manifest.params.get('model_sha256', '')[:12]}); "
            "run without --reuse-model to refit"
        )
    if jvm_can_read(spark, where):
        return PipelineModel.load(where.spark_uri)
    tmp = tempfile.mkdtemp(prefix="fruitlens-model-")
    try:
        for f in manifest.files:
            dest = os.path.join(tmp, f["path"])
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            where.fs.get_file(f"{where.path}/{f['path']}", dest)
        return PipelineModel.load("file://" + tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
