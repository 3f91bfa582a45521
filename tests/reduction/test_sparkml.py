"""fruitlens' Spark ML stages: the PCA fit from the covariance's eigendecomposition gives what Spark
ML's own PCA gives (same spectrum, same projections up to each component's sign), as a standard
PCAModel that saves and loads; the core decomposition is checked in plain NumPy."""

import numpy as np
import pytest
from conftest import shared

from fruitlens.reduction.sparkml import Moments, principal_components


def _data(rows: int, dims: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # correlated columns with distinct variances, like embeddings
    return rng.normal(size=(rows, dims)) @ rng.normal(size=(dims, dims)) * np.linspace(3, 0.5, dims)


def test_principal_components_match_the_svd_of_the_centred_data():
    x = _data(200, 12)
    components, explained = principal_components(np.cov(x, rowvar=False))
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(explained, s**2 / (s**2).sum(), rtol=1e-9)
    # the same directions, each component's sign fixed so its largest entry is positive
    np.testing.assert_allclose(np.abs(components.T @ vt.T).diagonal(), 1.0, atol=1e-9)
    assert all(c[np.abs(c).argmax()] > 0 for c in components.T)
    assert np.all(np.diff(explained) <= 1e-15) and explained.sum() == pytest.approx(1.0)


def test_rank_deficient_covariance_fewer_rows_than_dimensions():
    x = _data(6, 40)  # 6 rows: rank 5 after centring; Spark's SVD sometimes failed to converge here
    components, explained = principal_components(np.cov(x, rowvar=False))
    assert components.shape == (40, 40) and np.all(explained >= 0)
    assert explained[:5].sum() == pytest.approx(1.0) and explained[5:].max() < 1e-12
    np.testing.assert_allclose(components.T @ components, np.eye(40), atol=1e-9)
    # the same data projected on the first five components keeps all of its variance
    centred = x - x.mean(axis=0)
    assert np.linalg.norm(centred @ components[:, :5]) == pytest.approx(np.linalg.norm(centred))


def test_zero_variance_everywhere_gives_a_zero_spectrum_not_nan():
    _, explained = principal_components(np.zeros((4, 4)))
    assert np.array_equal(explained, np.zeros(4))


def test_moments_merged_in_any_order_give_the_covariance_of_uncentred_data():
    x = _data(1000, 9) + 1e4  # far from zero: a one-pass sum of squares would lose digits here
    merged = Moments()
    for start in range(0, len(x), 97):
        merged.add(Moments.of(x[start : start + 97]))
    tree = Moments().add(Moments.of(x[:10])).add(Moments().add(Moments.of(x[10:600])).add(Moments.of(x[600:])))
    for m in (merged, tree):
        assert m.n == 1000
        np.testing.assert_allclose(m.covariance(), np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)
    back = next(Moments.rows_of(merged.batch()))  # through Arrow, as Spark carries it
    np.testing.assert_array_equal(back.m2, merged.m2)
    with pytest.raises(ValueError, match="at least 2 rows"):
        Moments.of(x[:1]).covariance()


@shared
@pytest.mark.parametrize("column", ["array<double>", "array<float>", "vector"])
def test_spark_covariance_over_many_partitions_matches_numpy(spark, column):
    from pyspark.ml.functions import array_to_vector

    from fruitlens.reduction.sparkml import covariance

    x = (_data(60, 6, seed=2) + 50).astype(np.float32 if column == "array<float>" else np.float64)
    df = spark.createDataFrame([(row.tolist(),) for row in x], f"x {column if column != 'vector' else 'array<double>'}")
    if column == "vector":
        df = df.select(array_to_vector("x").alias("x"))
    # 40 partitions for 60 rows: some empty, and the moments merge in a tree (40 -> 5 -> 1)
    got = covariance(df.repartition(40), "x")
    np.testing.assert_allclose(got, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-9, atol=1e-6)
    with pytest.raises(Exception, match="nulls or rows of different lengths"):
        covariance(spark.createDataFrame([([1.0, 2.0],), ([1.0],), ([3.0, 1.0],)], "x array<double>"), "x")
    with pytest.raises(Exception, match="nulls or rows of different lengths"):
        covariance(spark.createDataFrame([([1.0, 2.0],), (None,), ([3.0, 1.0],)], "x array<double>"), "x")


@shared
def test_eigen_pca_fits_spark_mls_pca_model_with_the_same_projection(spark, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.feature import PCA, PCAModel, StandardScaler
    from pyspark.ml.functions import array_to_vector, vector_to_array

    from fruitlens.reduction.sparkml import EigenPCA

    x = _data(120, 20, seed=1)  # full rank: Spark's own SVD (the reference here) converges on it
    df = spark.createDataFrame([(row.tolist(),) for row in x], "x array<double>").select(
        array_to_vector("x").alias("features")
    )
    scaler = StandardScaler(withMean=True, withStd=True, inputCol="features", outputCol="scaled")
    ours = Pipeline(stages=[scaler, EigenPCA(k=7, inputCol="scaled", outputCol="pca")]).fit(df.repartition(7))
    theirs = Pipeline(stages=[scaler, PCA(k=7, inputCol="scaled", outputCol="pca")]).fit(df)

    pca = ours.stages[-1]
    assert isinstance(pca, PCAModel) and pca.getK() == 7
    np.testing.assert_allclose(
        pca.explainedVariance.toArray(), theirs.stages[-1].explainedVariance.toArray(), rtol=1e-9
    )

    def projected(model):
        return np.array([r.p for r in model.transform(df).select(vector_to_array("pca").alias("p")).collect()])

    a, b = projected(ours), projected(theirs)
    signs = np.sign((a * b).sum(axis=0))  # Spark's SVD picks each component's sign arbitrarily
    np.testing.assert_allclose(a, b * signs, atol=1e-8 * np.abs(b).max())

    ours.write().overwrite().save(str(tmp_path / "model"))
    again = PipelineModel.load(str(tmp_path / "model"))
    # the same components; the JVM's JIT may round the products differently between two calls (1 ulp)
    np.testing.assert_allclose(projected(again), a, rtol=1e-12, atol=1e-15)


@shared
def test_eigen_pca_fits_rank_deficient_data_fewer_rows_than_dimensions(spark):
    from pyspark.ml.functions import array_to_vector

    from fruitlens.reduction.sparkml import EigenPCA

    x = _data(30, 50, seed=3)  # rank 29 after centring: where Spark's SVD now and then did not converge
    df = spark.createDataFrame([(row.tolist(),) for row in x], "x array<double>").select(
        array_to_vector("x").alias("scaled")
    )
    estimator = EigenPCA(k=29)
    model = estimator.fit(df)
    _, s, _ = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    np.testing.assert_allclose(model.explainedVariance.toArray(), (s**2 / (s**2).sum())[:29], rtol=1e-8)
    assert estimator.spectrum_[29:].max() < 1e-12 and model.getK() == 29


@shared
def test_eigen_pca_refuses_k_larger_than_the_dimension(spark):
    from pyspark.ml.functions import array_to_vector

    from fruitlens.reduction.sparkml import EigenPCA

    df = spark.createDataFrame([([1.0, 2.0],), ([2.0, 1.0],), ([0.0, 3.0],)], "x array<double>").select(
        array_to_vector("x").alias("scaled")
    )
    with pytest.raises(ValueError, match="k must be between 1 and 2"):
        EigenPCA(k=3).fit(df)


@shared
def test_eigen_pca_chooses_k_from_the_variance_it_must_explain(spark):
    from pyspark.ml.functions import array_to_vector

    from fruitlens.reduction.sparkml import EigenPCA, choose_k

    x = _data(120, 20, seed=5)
    df = spark.createDataFrame([(row.tolist(),) for row in x], "x array<double>").select(
        array_to_vector("x").alias("scaled")
    )
    _, s, _ = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    share = np.cumsum(s**2) / (s**2).sum()
    for variance in (0.5, 0.9, 0.999):
        estimator = EigenPCA(variance=variance)
        model = estimator.fit(df)
        want = int(np.argmax(share >= variance - 1e-12)) + 1
        assert model.getK() == want == choose_k(estimator.spectrum_, variance)
        assert share[want - 1] >= variance > (share[want - 2] if want > 1 else 0)
    assert EigenPCA(k=4, variance=0.999).fit(df).getK() == 4  # k, when given, wins
    assert EigenPCA().fit(df).getK() == 20  # neither: every component
