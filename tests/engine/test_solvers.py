"""The two solvers of `train` fit the same model: the driver's (NumPy + SciPy's L-BFGS) and Spark
ML's, on the same rows, to convergence. Plus candidate parsing, which needs neither."""

import numpy as np
import pytest

from fruitlens import FruitlensError
from fruitlens.engine.solvers import Candidate, DriverSolver, SparkSolver


def blobs(classes=6, per_class=40, dim=30, seed=3):
    """Overlapping Gaussian classes (not separable: the regularised optimum is well defined)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.2, (classes, dim))
    x = np.concatenate([c + rng.normal(0, 1.0, (per_class, dim)) for c in centres]).astype(np.float32)
    x[:, 5] = 3.0  # a constant column: std 0, which Spark's scaler maps to 0
    x *= rng.uniform(0.5, 20, dim).astype(np.float32)  # unequal scales: the scaler matters
    return x, np.repeat(np.arange(classes), per_class)


@pytest.mark.parametrize("candidate", ["lr_full:0.01", "lr_pca:0.003"])
def test_the_driver_solver_fits_spark_mls_model(spark, candidate):
    x, y = blobs()
    c = Candidate.parse(candidate)
    driver = DriverSolver(x, y, 6, pca_variance=0.9, max_iter=1000, tol=1e-10).fit(c)
    rows = spark.createDataFrame(
        [(r.tolist(), int(label)) for r, label in zip(x, y)], "embedding array<float>, label_idx int"
    )
    ours = SparkSolver(spark, rows, 6, pca_variance=0.9, max_iter=1000, seed=1, tol=1e-10)
    spark_fit = ours.fit(c)
    # the Spark solver's scaler (from the rows' moments, one pass) is Spark ML's StandardScaler's
    from pyspark.ml.feature import StandardScaler

    from fruitlens.reduction.sparkml import ArrayToVector

    vectors = ArrayToVector(inputCol="embedding", outputCol="features").transform(rows)
    theirs = StandardScaler(withMean=True, withStd=True, inputCol="features", outputCol="s").fit(vectors)
    np.testing.assert_allclose(spark_fit.front.mean, theirs.mean.toArray(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(spark_fit.front.std, theirs.std.toArray(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(driver.front.mean, spark_fit.front.mean, rtol=1e-5)
    np.testing.assert_allclose(driver.front.std, spark_fit.front.std, rtol=1e-5)
    assert driver.front.std[5] == 0 == spark_fit.front.std[5]
    if c.uses_pca:
        assert driver.projection.shape == spark_fit.projection.shape
        np.testing.assert_allclose(np.abs(driver.projection), np.abs(spark_fit.projection), atol=1e-4)
    (w1, b1), (w2, b2) = driver.layers[0], spark_fit.layers[0]
    np.testing.assert_allclose(w1, w2, atol=2e-3 * np.abs(w2).max())
    np.testing.assert_allclose(b1, b2, atol=2e-3 * max(1.0, np.abs(b2).max()))
    assert abs(b1.sum()) < 1e-9  # intercepts centred, as Spark centres them

    def probabilities(fit):
        z = fit.front.inputs(x, c.uses_pca) @ fit.layers[0][0].T + fit.layers[0][1]
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p1, p2 = probabilities(driver), probabilities(spark_fit)
    np.testing.assert_allclose(p1, p2, atol=2e-3)
    assert (p1.argmax(axis=1) == p2.argmax(axis=1)).mean() >= 0.995


def test_candidates_are_parsed_or_refused_in_one_line():
    assert Candidate.parse("lr_full:1e-4").name == "lr_full:0.0001"
    assert Candidate.parse(" mlp:128 ").name == "mlp:128" and Candidate.parse("mlp:128").uses_pca
    for bad in ("svm:1", "lr_full", "lr_full:x", "mlp:0", "lr_pca:-1", "lr_full:nan"):
        with pytest.raises(FruitlensError, match="--candidates"):
            Candidate.parse(bad)


def test_the_driver_solver_does_not_fit_a_perceptron():
    x, y = blobs(classes=3, per_class=10, dim=8)
    with pytest.raises(FruitlensError, match="Spark only"):
        DriverSolver(x, y, 3, 0.9, 50).fit(Candidate.parse("mlp:16"))
