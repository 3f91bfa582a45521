"""Spark ML stages fruitlens adds: `ArrayToVector` lets a saved PipelineModel take the `embedding`
column (array<float>) as it is in the embeddings dataset. Pure Python (saved with Spark ML's
DefaultParamsWriter), so `PipelineModel.load` needs fruitlens importable on the driver.
`EigenPCA` fits Spark ML's own PCAModel from the covariance's eigendecomposition (see
`pca.principal_components`), the covariance summed over the partitions in a Spark tree."""

from __future__ import annotations

import numpy as np
from pyspark import keyword_only
from pyspark.ml import Estimator, PipelineModel, Transformer
from pyspark.ml.classification import LogisticRegression, LogisticRegressionModel
from pyspark.ml.common import _py2java
from pyspark.ml.feature import PCA, PCAModel, StandardScaler, StandardScalerModel
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.linalg import DenseMatrix, DenseVector, VectorUDT
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType

from .pca import Moments, choose_k, principal_components  # choose_k: also part of this module's API

_MOMENTS = "n long, mean binary, m2 binary"  # a block's row count, mean and centred X'X (float64 bytes)
_GRAM_ROWS = 2048  # rows per X'X product: bounds the float64 block a Python worker converts at a time


class ArrayToVector(Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable):
    """array<float|double> column -> ML vector column."""

    @keyword_only
    def __init__(self, *, inputCol: str = "embedding", outputCol: str = "features"):
        super().__init__()
        self._setDefault(inputCol="embedding", outputCol="features")
        self._set(**self._input_kwargs)

    def _transform(self, dataset):
        return dataset.withColumn(self.getOutputCol(), array_to_vector(dataset[self.getInputCol()]))


def covariance(dataset, input_col: str) -> np.ndarray:
    """The sample covariance of a vector or array column, as a dim x dim NumPy array on the driver
    (`moments(...).covariance()`)."""
    return moments(dataset, input_col).covariance()


def moments(dataset, input_col: str) -> Moments:
    """The row count, mean and centred scatter matrix of a vector or array column, in one pass:
    the mean, the standard deviations and the covariance of the column all follow from it.
    Spark moves the rows (Arrow, in batches of _GRAM_ROWS, so a Python worker holds about
    3 x dim x dim float64 plus one block, whatever the partition size) and merges the partitions'
    moments in a tree; NumPy computes each block's X'X with level-3 BLAS, where Spark's own
    RowMatrix.computeCovariance (what its PCA runs) adds one row at a time (BLAS spr): about 3x faster
    on 13k x 1992 embeddings here, and reduce's fit, which also no longer fits twice, 2.9x-7.1x
    (bench/reduce_bench.py). Nulls and rows of different lengths are refused (ValueError)."""
    column = F.col(input_col)
    kind = dataset.schema[input_col].dataType
    if isinstance(kind, VectorUDT):
        column = vector_to_array(column)
    elif not (isinstance(kind, ArrayType) and isinstance(kind.elementType, FloatType)):
        column = column.cast("array<double>")  # floats travel as floats (half the bytes); NumPy sums in float64
    data = dataset.select(column.alias("x"))

    def partition_moments(batches):
        total = Moments()
        for batch in batches:
            lists = batch.column(0)
            if not len(lists):
                continue
            lengths = lists.value_lengths().to_numpy(zero_copy_only=False)
            if lists.null_count or lengths.min() != lengths.max():
                raise ValueError(f"{input_col} has nulls or rows of different lengths: no covariance")
            dim = int(lengths[0])
            flat = lists.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
            for start in range(0, len(flat), _GRAM_ROWS):
                total.add(Moments.of(flat[start : start + _GRAM_ROWS]))
        if total.n:
            yield total.batch()

    def merge_moments(batches):
        total = Moments()
        for batch in batches:
            for block in Moments.rows_of(batch):
                total.add(block)
        if total.n:
            yield total.batch()

    partials = data.mapInArrow(partition_moments, _MOMENTS)
    parts = data.rdd.getNumPartitions()
    while parts > 4:  # merge in a tree: the driver never holds more than a few dim x dim matrices
        parts = -(-parts // 8)
        partials = partials.repartition(parts).mapInArrow(merge_moments, _MOMENTS)
    conf = dataset.sparkSession.conf
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    before = conf.get(key, None)
    conf.set(key, str(_GRAM_ROWS))  # the default, 10,000 rows of 1992 doubles, is 160 MB per batch
    try:
        collected = partials.collect()
    finally:
        conf.unset(key) if before is None else conf.set(key, before)
    total = Moments()
    for r in collected:
        mean = np.frombuffer(r["mean"], np.float64)
        total.add(Moments(r["n"], mean, np.frombuffer(r["m2"], np.float64).reshape(len(mean), len(mean))))
    if not total.n:
        raise ValueError(f"no rows in {input_col} to compute a covariance from")
    return total


def spectrum(dataset, input_col: str) -> np.ndarray:
    """Explained variance ratio of every principal component of a vector column."""
    return principal_components(covariance(dataset, input_col))[1]


class EigenPCA(Estimator, HasInputCol, HasOutputCol):
    """Spark ML's PCA, fit by an eigendecomposition of the covariance on the driver: fits a standard
    `pyspark.ml.feature.PCAModel` (saved, loaded and applied by Spark ML as usual). `k` fixes the
    number of components; without it, `variance` chooses the smallest k that explains that share
    of the variance (all components when neither is set). `spectrum_` holds every component's
    explained variance after a fit, so choosing k costs no second fit."""

    k = Param(Params._dummy(), "k", "the number of principal components", typeConverter=TypeConverters.toInt)
    variance = Param(
        Params._dummy(),
        "variance",
        "without k: the share of variance the components must explain",
        typeConverter=TypeConverters.toFloat,
    )

    @keyword_only
    def __init__(
        self, *, k: int | None = None, variance: float | None = None, inputCol: str = "scaled", outputCol: str = "pca"
    ):
        super().__init__()
        self._setDefault(inputCol="scaled", outputCol="pca")
        self._set(**{key: value for key, value in self._input_kwargs.items() if value is not None})
        self.spectrum_: np.ndarray | None = None

    def _fit(self, dataset):
        cov = covariance(dataset, self.getInputCol())
        k = self.getOrDefault(self.k) if self.isDefined(self.k) else None
        if k is not None and not 1 <= k <= cov.shape[0]:
            raise ValueError(f"k must be between 1 and {cov.shape[0]}, got {k}")
        components, self.spectrum_ = principal_components(cov)
        if k is None:
            k = (
                choose_k(self.spectrum_, self.getOrDefault(self.variance))
                if self.isDefined(self.variance)
                else len(cov)
            )
        return pca_model(
            dataset.sparkSession, components[:, :k], self.spectrum_[:k], self.getInputCol(), self.getOutputCol()
        )


def pca_model(spark, pc: np.ndarray, explained: np.ndarray, input_col: str, output_col: str):
    """A Spark ML PCAModel (a JVM object, as `PCA.fit` makes) from components and their explained
    variance."""
    dim, k = pc.shape
    sc = spark.sparkContext
    uid = PCA().uid
    java = sc._jvm.org.apache.spark.ml.feature.PCAModel(
        uid,
        _py2java(sc, DenseMatrix(dim, k, np.asarray(pc, np.float64).ravel(order="F").tolist())),
        _py2java(sc, DenseVector(np.asarray(explained, np.float64).tolist())),
    )
    model = PCAModel(java)
    model._set(k=k, inputCol=input_col, outputCol=output_col)
    model._transfer_params_to_java()
    return model


def scaler_model(spark, mean: np.ndarray, std: np.ndarray, input_col: str, output_col: str):
    """A Spark ML StandardScalerModel (with mean and std), as `StandardScaler.fit` makes, from arrays."""
    sc = spark.sparkContext
    java = sc._jvm.org.apache.spark.ml.feature.StandardScalerModel(
        StandardScaler().uid,
        _py2java(sc, DenseVector(np.asarray(std, np.float64).tolist())),
        _py2java(sc, DenseVector(np.asarray(mean, np.float64).tolist())),
    )
    model = StandardScalerModel(java)
    model._set(withMean=True, withStd=True, inputCol=input_col, outputCol=output_col)
    model._transfer_params_to_java()
    return model


def logistic_model(spark, coefficients: np.ndarray, intercepts: np.ndarray, features_col: str):
    """A Spark ML multinomial LogisticRegressionModel from its coefficient matrix (classes x
    features) and intercepts, as `LogisticRegression.fit` makes it."""
    w = np.asarray(coefficients, np.float64)
    sc = spark.sparkContext
    java = sc._jvm.org.apache.spark.ml.classification.LogisticRegressionModel(
        LogisticRegression().uid,
        _py2java(sc, DenseMatrix(w.shape[0], w.shape[1], w.ravel(order="F").tolist())),
        _py2java(sc, DenseVector(np.asarray(intercepts, np.float64).tolist())),
        int(w.shape[0]),
        True,
    )
    model = LogisticRegressionModel(java)
    model._set(featuresCol=features_col, family="multinomial")
    model._transfer_params_to_java()
    return model


def classifier_pipeline(spark, mean, std, projection, layers, explained=None):
    """The classifier as a Spark ML PipelineModel that takes the `embedding` column as it is and
    outputs `probability` and `prediction`: ArrayToVector -> StandardScaler -> [PCA] -> logistic
    regression, built from the arrays a solver fitted."""
    if len(layers) != 1:
        raise ValueError("only a logistic regression is built from arrays; a perceptron keeps its Spark model")
    stages = [
        ArrayToVector(inputCol="embedding", outputCol="features"),
        scaler_model(spark, mean, std, "features", "scaled"),
    ]
    if projection is not None:
        k = projection.shape[1]
        stages.append(
            pca_model(
                spark, projection, explained[:k] if explained is not None else np.full(k, 1.0 / k), "scaled", "pca"
            )
        )
    w, b = layers[0]
    stages.append(logistic_model(spark, w, b, "pca" if projection is not None else "scaled"))
    return PipelineModel(stages=stages)
