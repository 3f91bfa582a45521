"""PCA in plain NumPy: the moments of row blocks merged exactly, the covariance's eigendecomposition,
and the choice of k. `sparkml.EigenPCA` sums the moments over a Spark tree; the training's driver
solver uses the same functions on rows in memory, so both give the same components."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


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


class Moments:
    """Row count, mean and centred scatter matrix sum((x - mean)(x - mean)') of a block of rows.
    Blocks merge exactly (Chan et al.'s pairwise update), so the covariance is computed from
    centred data wherever the rows are summed: no cancellation on uncentred inputs."""

    def __init__(self, n: int = 0, mean: np.ndarray | None = None, m2: np.ndarray | None = None):
        self.n, self.mean, self.m2 = n, mean, m2

    @classmethod
    def of(cls, rows: np.ndarray) -> Moments:
        x = np.asarray(rows, dtype=np.float64)
        mean = x.mean(axis=0)
        centred = x - mean
        return cls(len(x), mean, centred.T @ centred)  # BLAS's symmetric rank-k update

    def add(self, other: Moments) -> Moments:
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
