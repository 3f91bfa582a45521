"""Spark ML stages fruitlens adds: `ArrayToVector` lets a saved PipelineModel take the `embedding`
column (array<float>) as it is in the embeddings dataset. Pure Python (saved with Spark ML's
DefaultParamsWriter), so `PipelineModel.load` needs fruitlens importable on the driver.
`EigenPCA` fits Spark ML's own PCAModel from the covariance's eigendecomposition (see
`principal_components`)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pyspark import keyword_only
from pyspark.ml import Estimator, Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable


class ArrayToVector(Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable):
    """array<float|double> column -> ML vector column."""

    @keyword_only
    def __init__(self, *, inputCol: str = "embedding", outputCol: str = "features"):
        super().__init__()
        self._setDefault(inputCol="embedding", outputCol="features")
        self._set(**self._input_kwargs)

    def _transform(self, dataset):
        from pyspark.ml.functions import array_to_vector

        return dataset.withColumn(self.getOutputCol(), array_to_vector(dataset[self.getInputCol()]))


def choose_k(explained_variance, target: float) -> int:
    """Smallest k whose cumulative explained variance reaches `target` (all, if none does)."""
    cumulative = np.cumsum(np.asarray(explained_variance, dtype=np.float64))
    reached = np.nonzero(cumulative >= target - 1e-12)[0]
    return int(reached[0] + 1) if reached.size else int(len(cumulative))


def principal_components(covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(components, explained): the eigenvectors of a covariance matrix as columns (dim x dim), by
    decreasing variance, and the explained variance ratio of each (summing to 1), as Spark ML's PCA
    defines them; a PCA at k keeps the first k columns. A symmetric eigensolver (LAPACK syevd through
    NumPy) instead of Spark's SVD of the same matrix: the same spectrum, without the SVD's failures to
    converge on rank-deficient covariances (fewer rows than dimensions: breeze's dgesdd threw
    `NotConvergedException` now and then). Each component's sign is fixed (its largest entry
    positive), so refits on the same data give the same features, except along components of equal
    (or zero) variance, whose directions within their subspace are not unique."""
    cov = np.asarray(covariance, dtype=np.float64)
    values, vectors = np.linalg.eigh((cov + cov.T) / 2)
    order = np.argsort(values)[::-1]
    values = np.clip(values[order], 0.0, None)  # rounding leaves tiny negatives on a rank-deficient matrix
    vectors = vectors[:, order]
    signs = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(vectors.shape[1])])
    vectors *= np.where(signs == 0, 1.0, signs)
    total = values.sum()
    return vectors, (values / total if total > 0 else np.zeros_like(values))


_MOMENTS = "n long, mean binary, m2 binary"  # a block's row count, mean and centred X'X (float64 bytes)
_GRAM_ROWS = 2048  # rows per X'X product: bounds the float64 block a Python worker converts at a time


class Moments:
    """Row count, mean and centred scatter matrix sum((x - mean)(x - mean)') of a block of rows.
    Blocks merge exactly (Chan et al.'s pairwise update), so the covariance is computed from
    centred data wherever the rows are summed: no cancellation on uncentred inputs."""

    def __init__(self, n: int = 0, mean: np.ndarray | None = None, m2: np.ndarray | None = None):
        self.n, self.mean, self.m2 = n, mean, m2

    @classmethod
    def of(cls, rows: np.ndarray) -> "Moments":
        x = np.asarray(rows, dtype=np.float64)
        mean = x.mean(axis=0)
        centred = x - mean
        return cls(len(x), mean, centred.T @ centred)  # BLAS's symmetric rank-k update

    def add(self, other: "Moments") -> "Moments":
        if not other.n:
            return self
        if not self.n:
            self.n, self.mean, self.m2 = other.n, other.mean.copy(), other.m2.copy()
            return self
        n = self.n + other.n
        delta = other.mean - self.mean
        self.m2 += other.m2
        self.m2 += np.outer(delta, delta) * (self.n * other.n / n)
        self.mean = self.mean + delta * (other.n / n)
        self.n = n
        return self

    def covariance(self) -> np.ndarray:
        """The sample covariance (divided by n - 1, as Spark's RowMatrix does)."""
        if self.n < 2:
            raise ValueError(f"a covariance needs at least 2 rows, got {self.n}")
        return self.m2 / (self.n - 1)

    def batch(self) -> pa.RecordBatch:
        return pa.RecordBatch.from_pydict({"n": [self.n], "mean": [self.mean.tobytes()], "m2": [self.m2.tobytes()]})

    @classmethod
    def rows_of(cls, batch: pa.RecordBatch):
        ns, means, m2s = (batch.column(i) for i in range(3))
        for i in range(batch.num_rows):  # views on the Arrow buffers, no copy into Python bytes
            mean = np.frombuffer(means[i].as_buffer(), np.float64)
            yield cls(ns[i].as_py(), mean, np.frombuffer(m2s[i].as_buffer(), np.float64).reshape(len(mean), len(mean)))


def covariance(dataset, input_col: str) -> np.ndarray:
    """The sample covariance of a vector or array column, as a dim x dim NumPy array on the driver.
    Spark moves the rows (Arrow, in batches of _GRAM_ROWS, so a Python worker holds about
    3 x dim x dim float64 plus one block, whatever the partition size) and merges the partitions'
    moments in a tree; NumPy computes each block's X'X with level-3 BLAS, where Spark's own
    RowMatrix.computeCovariance (what its PCA runs) adds one row at a time (BLAS spr): about 3x faster
    on 13k x 1992 embeddings here, and reduce's fit, which also no longer fits twice, 2.9x-7.1x
    (bench/reduce_bench.py). Nulls and rows of different lengths are refused (ValueError)."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import functions as F

    column = F.col(input_col)
    if isinstance(dataset.schema[input_col].dataType, VectorUDT):
        column = vector_to_array(column)
    data = dataset.select(column.cast("array<double>").alias("x"))

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
    return total.covariance()


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
    variance = Param(Params._dummy(), "variance", "without k: the share of variance the components must explain",
                     typeConverter=TypeConverters.toFloat)

    @keyword_only
    def __init__(self, *, k: int | None = None, variance: float | None = None, inputCol: str = "scaled",
                 outputCol: str = "pca"):
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
            k = choose_k(self.spectrum_, self.getOrDefault(self.variance)) if self.isDefined(self.variance) else len(cov)
        return pca_model(dataset.sparkSession, components[:, :k], self.spectrum_[:k], self.getInputCol(),
                         self.getOutputCol())


def pca_model(spark, pc: np.ndarray, explained: np.ndarray, input_col: str, output_col: str):
    """A Spark ML PCAModel (a JVM object, as `PCA.fit` makes) from components and their explained
    variance."""
    from pyspark.ml.common import _py2java
    from pyspark.ml.feature import PCA, PCAModel
    from pyspark.ml.linalg import DenseMatrix, DenseVector

    dim, k = pc.shape
    sc = spark.sparkContext
    uid = PCA().uid
    java = sc._jvm.org.apache.spark.ml.feature.PCAModel(
        uid, _py2java(sc, DenseMatrix(dim, k, np.asarray(pc, np.float64).ravel(order="F").tolist())),
        _py2java(sc, DenseVector(np.asarray(explained, np.float64).tolist())))
    model = PCAModel(java)
    model._set(k=k, inputCol=input_col, outputCol=output_col)
    model._transfer_params_to_java()
    return model
