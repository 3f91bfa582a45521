"""Fitting the classifier: the scaler, the PCA and each candidate head, on one split's rows.

Two solvers fit the same model (`Front` + layers, as NumPy arrays), chosen by the size of the
training rows (`train --solver auto`):

- `DriverSolver`: the rows in the driver's memory (float32), the scaler and the PCA from one pass
  of exactly merged moments (`reduction.pca`), and the multinomial logistic regression minimised
  with SciPy's L-BFGS on Spark ML's own objective (mean cross-entropy + regParam/2 ||W||^2, the
  intercept free and centred); the candidates of one kind warm-start each other along the
  regularisation path. No JVM until the model is saved.
- `SparkSolver`: the same moments summed by Spark (`reduction.sparkml.moments`: one pass gives the
  scaler and the PCA, as Spark ML models), then Spark ML's `LogisticRegression` and
  `MultilayerPerceptronClassifier`, for training rows beyond the driver's memory (the same job on
  EMR); each fit caches its own standardised blocks, spilled to disk past the executors' memory.

The logistic regression's objective is strictly convex: both solvers converge to the same model
(tests/engine/test_solvers.py fits one on both and compares). The perceptron is not, so it is
fitted by Spark only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .. import FruitlensError
from ..config import Candidate
from ..reduction.pca import Moments, choose_k, principal_components

_BLOCK = 2048  # rows per float64 block when the driver sums moments (bounds its temporary memory)


@dataclass
class Front:
    """The scaler (mean, std: Spark's StandardScaler with mean and std) and the PCA projection (or
    None) fitted on one split: embeddings -> the classifier's inputs."""

    mean: np.ndarray
    std: np.ndarray
    projection: np.ndarray | None = None  # (dim, k)
    explained: np.ndarray | None = None  # the whole spectrum, for the report

    def scale(self, x: np.ndarray) -> np.ndarray:
        inv = np.where(self.std > 0, 1.0 / np.where(self.std > 0, self.std, 1.0), 0.0)  # Spark: std 0 -> 0
        return ((np.asarray(x, np.float32) - self.mean.astype(np.float32)) * inv.astype(np.float32)).astype(np.float32)

    def inputs(self, x: np.ndarray, pca: bool) -> np.ndarray:
        scaled = self.scale(x)
        return scaled @ self.projection.astype(np.float32) if pca else scaled


@dataclass
class Fit:
    """A fitted candidate: the front it takes its inputs from and its layers ((W (out, in), b))."""

    candidate: Candidate
    front: Front
    layers: list
    iterations: int
    seconds: float
    spark_model: object = field(default=None, repr=False)  # the Spark PipelineModel (Spark solver's perceptron)

    @property
    def projection(self) -> np.ndarray | None:
        return self.front.projection if self.candidate.uses_pca else None


# -- the driver -------------------------------------------------------------------------------------


class DriverSolver:
    """Every fit in the driver's memory: `x` float32 (rows, dim) embeddings, `y` class indices."""

    name = "driver"

    def __init__(
        self, x: np.ndarray, y: np.ndarray, n_classes: int, pca_variance: float, max_iter: int, tol: float = 1e-6
    ):
        self.y, self.n_classes, self.max_iter, self.tol = np.asarray(y, np.int64), n_classes, max_iter, tol
        self.front, self._scaled = _front(np.asarray(x, np.float32), pca_variance)
        self._inputs: dict[bool, np.ndarray] = {False: self._scaled}
        self._warm: dict[str, np.ndarray] = {}

    @property
    def pca_k(self) -> int:
        return self.front.projection.shape[1]

    def fit(self, candidate: Candidate, start: Fit | None = None) -> Fit:
        """`start`: a fit to start from (the same candidate on another split: the refit); else the
        last fit of the same kind (the regularisation path shares its work)."""
        if candidate.kind == "mlp":
            raise FruitlensError("the perceptron (mlp) is fitted by Spark only: use --solver spark")
        pca = candidate.uses_pca
        if pca not in self._inputs:
            self._inputs[pca] = self._scaled @ self.front.projection.astype(np.float32)
        x = self._inputs[pca]
        t0 = time.perf_counter()
        warm = (
            np.concatenate([start.layers[0][0].ravel(), start.layers[0][1]])
            if start is not None and start.candidate.uses_pca == pca and start.layers[0][0].shape[1] == x.shape[1]
            else self._warm.get(candidate.kind)
        )
        w, b, iterations = fit_logistic(x, self.y, self.n_classes, candidate.setting, self.max_iter, self.tol, warm)
        self._warm[candidate.kind] = np.concatenate([w.ravel(), b])
        return Fit(candidate, self.front, [(w, b)], iterations, time.perf_counter() - t0)


def _front(x: np.ndarray, pca_variance: float) -> tuple[Front, np.ndarray]:
    """Scaler and PCA from one pass over the rows in memory; the scaled rows float32."""
    moments = Moments()
    for start in range(0, len(x), _BLOCK):
        moments.add(Moments.of(x[start : start + _BLOCK]))
    front = front_of(moments, pca_variance)
    return front, front.scale(x)


def front_of(moments: Moments, pca_variance: float) -> Front:
    """The scaler and the PCA from the rows' moments: the mean, the std and the covariance of the
    scaled rows (= D^-1 C D^-1), so one pass fits both (both solvers)."""
    if moments.n < 2:
        raise FruitlensError(f"too few training rows to fit on: {moments.n}")
    cov = moments.covariance()
    std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    inv = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 0.0)
    vectors, explained = principal_components(cov * inv[:, None] * inv[None, :])
    k = choose_k(explained, pca_variance)
    return Front(moments.mean, std, vectors[:, :k].copy(), explained)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, n_classes: int, reg: float, max_iter: int, tol: float, start: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Spark ML's multinomial logistic regression (standardization off: the inputs are scaled
    already; elastic net 0): minimise mean cross-entropy + reg/2 ||W||^2, the intercepts free, with
    L-BFGS; the intercepts centred at the end as Spark centres them. Returns (W (classes, inputs),
    b (classes), iterations)."""
    from scipy.optimize import minimize

    n, m = x.shape
    c = n_classes
    onehot = np.zeros((n, c), np.float32)
    onehot[np.arange(n), y] = 1.0

    def objective(theta: np.ndarray):
        w = theta[: c * m].reshape(c, m).astype(np.float32)
        b = theta[c * m :].astype(np.float32)
        z = x @ w.T + b
        z -= z.max(axis=1, keepdims=True)
        log_sum = np.log(np.exp(z).sum(axis=1, keepdims=True))
        log_p = z - log_sum
        w64 = theta[: c * m]
        loss = -float(log_p[np.arange(n), y].astype(np.float64).sum()) / n + 0.5 * reg * float(w64 @ w64)
        g = (np.exp(log_p) - onehot) / np.float32(n)
        grad_w = (g.T @ x).astype(np.float64).ravel() + reg * w64
        return loss, np.concatenate([grad_w, g.sum(axis=0).astype(np.float64)])

    theta0 = np.zeros(c * m + c) if start is None or len(start) != c * m + c else start
    result = minimize(
        objective,
        theta0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "ftol": tol * 1e-3, "gtol": tol, "maxcor": 10},
    )
    w = result.x[: c * m].reshape(c, m)
    b = result.x[c * m :]
    return w, b - b.mean(), int(result.nit)


# -- Spark ------------------------------------------------------------------------------------------


class SparkSolver:
    """Every fit by Spark ML on a DataFrame of `embedding` (array<float>) and `label_idx` rows (a
    split, its views exploded). The scaler and the PCA come from one pass (the rows' moments, as
    the driver solver's); nothing is cached here: each logistic regression standardises its rows
    into blocks and caches those itself (MEMORY_AND_DISK, spilled to disk beyond the executors'
    storage memory), so caching the rows too would hold them twice (Spark warns of it). Memory
    stays that of the executors whatever the rows: 1M rows of 1,992 floats trained in a 2 GB heap
    (docs/benchmarks.md, "Train")."""

    name = "spark"

    def __init__(self, spark, rows, n_classes: int, pca_variance: float, max_iter: int, seed: int, tol: float = 1e-6):
        from ..reduction.sparkml import ArrayToVector, moments, pca_model, scaler_model

        self.spark, self.n_classes, self.max_iter, self.seed, self.tol = spark, n_classes, max_iter, seed, tol
        summary = moments(rows, "embedding")
        self.rows = summary.n
        self.front = front_of(summary, pca_variance)
        self._scaler = scaler_model(spark, self.front.mean, self.front.std, "features", "scaled")
        k = self.front.projection.shape[1]
        self._pca = pca_model(spark, self.front.projection, self.front.explained[:k], "scaled", "pca")
        vectors = ArrayToVector(inputCol="embedding", outputCol="features").transform(rows)
        self._scaled = self._scaler.transform(vectors).select("scaled", "label_idx")

    @property
    def pca_k(self) -> int:
        return self.front.projection.shape[1]

    def fit(self, candidate: Candidate, start: Fit | None = None) -> Fit:
        """(`start` is for the driver solver: Spark ML's LogisticRegression starts from zero.)"""
        from pyspark.ml import PipelineModel
        from pyspark.ml.classification import (
            LogisticRegression,
            MultilayerPerceptronClassifier,
        )

        from ..reduction.sparkml import ArrayToVector

        data = self._pca.transform(self._scaled).select("pca", "label_idx") if candidate.uses_pca else self._scaled
        column = "pca" if candidate.uses_pca else "scaled"
        t0 = time.perf_counter()
        if candidate.kind == "mlp":
            k = self.pca_k
            model = MultilayerPerceptronClassifier(
                featuresCol=column,
                labelCol="label_idx",
                layers=[k, int(candidate.setting), self.n_classes],
                maxIter=min(self.max_iter, 100),
                seed=self.seed,
                blockSize=128,
            ).fit(data)
            sizes, flat, layers, offset = list(model.getLayers()), model.weights.toArray(), [], 0
            for n_in, n_out in zip(sizes[:-1], sizes[1:]):  # per layer a column-major (out x in) matrix, the bias
                w = flat[offset : offset + n_in * n_out].reshape(n_in, n_out).T
                offset += n_in * n_out
                layers.append((w, flat[offset : offset + n_out]))
                offset += n_out
            iterations = min(self.max_iter, 100)
        else:
            model = LogisticRegression(
                featuresCol=column,
                labelCol="label_idx",
                family="multinomial",
                regParam=candidate.setting,
                elasticNetParam=0.0,
                maxIter=self.max_iter,
                tol=self.tol,
                standardization=False,
                maxBlockSizeInMB=8.0,
            ).fit(data)  # 8 MB blocks: fewer, larger products (docs/benchmarks.md)
            layers = [(model.coefficientMatrix.toArray(), model.interceptVector.toArray())]
            iterations = model.summary.totalIterations
        stages = [ArrayToVector(inputCol="embedding", outputCol="features"), self._scaler]
        stages += [self._pca] if candidate.uses_pca else []
        pipeline = PipelineModel(stages=[*stages, model])  # takes the embedding column as it is
        return Fit(candidate, self.front, layers, iterations, time.perf_counter() - t0, spark_model=pipeline)
