"""The exact cosine search with a bound (novelty and the service's neighbours): plain NumPy, no Spark."""

from __future__ import annotations

import numpy as np
import pytest

from fruitlens import FruitlensError
from fruitlens.engine.model import PortableModel
from fruitlens.engine.nearest import CosineSearch, principal_basis


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(rng, n, d, clusters=40, rank=60, spread=0.35, noise=3.5):
    """Rows like features: a few dozen directions matter, around class centres, plus noise that
    leaves about a third of each row outside the bound's basis (real features: 20-45%)."""
    mix = rng.standard_normal((rank, d))
    centres = rng.standard_normal((clusters, rank)) @ mix
    rows = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, rank)) @ mix
    return unit(rows + noise * rng.standard_normal((n, d)))


def brute(vectors, q, k):
    sims = vectors @ q
    order = np.argsort(-sims, kind="stable")[:k]
    return order, sims[order]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    rows = clustered(rng, 6000, 600)
    near = unit(rows[rng.integers(0, len(rows), 60)] + 0.02 * rng.standard_normal((60, 600)))
    far = unit(rng.standard_normal((20, 600)))  # unlike every row: the bound prunes nothing
    return rows, near, far


@pytest.mark.parametrize("k", [1, 8, 50])
def test_top_is_the_full_products_answer_near_and_far(data, k):
    rows, near, far = data
    search = CosineSearch.build(rows)
    assert search.pruned
    for q in np.concatenate([near, far]):
        got_rows, got = search.top(q, k)
        want_rows, want = brute(rows, q, k)
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert np.all(np.diff(got) <= 0)  # best first
        # the same rows, up to ties in the last place
        assert set(got_rows[got > want[-1] + 1e-5]) <= set(want_rows)
        np.testing.assert_allclose(rows[got_rows] @ q, got, atol=1e-5)


def test_a_nearest_row_that_stands_out_only_outside_the_basis_is_found():
    """The approximate scores (inside the basis) rank the true nearest row far down, and 100 decoys
    have better bounds than it: only the Cauchy-Schwarz term, and the second round of exact products
    beyond the best bounds, find it."""
    rng = np.random.default_rng(3)
    d = 600
    subspace = np.linalg.qr(rng.standard_normal((d, 100)))[0]  # where the rows mostly live: the basis
    outside = np.eye(d) - subspace @ subspace.T

    def inside(n):
        return unit(rng.standard_normal((n, 100))) @ subspace.T

    rows = unit(inside(5000))
    w = unit((outside @ rng.standard_normal(d))[None])[0]
    q = unit(0.5 * inside(1) + 0.866 * w)[0]
    needle = unit(0.1 * inside(1) + 0.995 * w)[0]  # similarity ~0.86 through w alone
    away = unit(outside @ rng.standard_normal((d, 100)) - np.outer(w, w @ (outside @ rng.standard_normal((d, 100))))).T
    decoys = unit(0.3 * (q @ subspace) @ subspace.T / np.linalg.norm(q @ subspace) + 0.954 * unit(away))
    rows[:100], rows[1234] = decoys, needle  # decoys: bounds ~0.98, similarities ~0.15
    search = CosineSearch(rows, basis=subspace.astype(np.float32))
    approximate = search.coords @ (q @ search.basis)
    assert (approximate > approximate[1234]).sum() > 1000  # far down the approximate ranking
    for k in (1, 3):
        got_rows, got = search.top(q, k)
        want_rows, want = brute(rows, q, k)
        assert got_rows[0] == 1234 == want_rows[0]
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert search.best(q[None])[0] == pytest.approx(float(rows[1234] @ q), abs=1e-5)


def test_best_for_single_queries_and_batches_and_edge_cases(data):
    rows, near, far = data
    search = CosineSearch.build(rows)
    queries = np.concatenate([near, far, rows[:3]])  # a stored row itself: similarity 1
    want = (queries @ rows.T).max(axis=1)
    np.testing.assert_allclose(search.best(queries), want, atol=1e-5)  # one product for the batch
    np.testing.assert_allclose([search.best(q[None])[0] for q in queries], want, atol=1e-5)  # bound, one by one
    np.testing.assert_allclose(search.best(rows[:3]), 1.0, atol=1e-5)
    assert search.top(near[0], 10_000)[0].shape == (len(rows),)  # k beyond n: every row, ordered
    assert CosineSearch.build(rows[:0]).best(near[:2]).tolist() == [-1.0, -1.0]
    duplicates = np.repeat(rows[:1500], 2, axis=0)  # ties everywhere
    got_rows, got = CosineSearch.build(duplicates).top(duplicates[0], 4)
    np.testing.assert_allclose(got, [1, 1] + list(brute(duplicates, duplicates[0], 4)[1][2:]), atol=1e-5)


def test_no_basis_where_it_would_not_cut_the_work(data):
    rows, _, _ = data
    assert principal_basis(rows[:, :200]) is None  # d <= 2m: the bound would cost as much as the product
    assert principal_basis(rows[:500]) is None  # few rows: the product is already cheap
    assert not CosineSearch.build(unit(rows[:, :200])).pruned


def test_the_bound_prunes_for_photos_like_the_rows_and_reads_everything_for_the_others(data):
    rows, near, far = data
    search = CosineSearch.build(rows)
    for q in near:
        search.top(q, 8)
    assert search.rows_compared < 0.05 * len(near) * len(rows)  # few rows read in full
    search.rows_compared = 0
    for q in far:
        search.top(q, 8)
    assert search.rows_compared == len(far) * len(rows)  # nothing to prune: the full product


def test_a_basis_the_bound_cannot_use_is_refused(data):
    rows, _, _ = data
    saved = CosineSearch.build(rows).arrays("refs")
    assert set(saved) == {"refs_basis"}  # the rest is recomputed from the rows: it always describes them
    assert CosineSearch.from_arrays(rows, saved, "refs").pruned
    with pytest.raises(ValueError, match="not orthonormal"):  # a bound too tight: wrong answers
        CosineSearch.from_arrays(rows, {"refs_basis": saved["refs_basis"] * 0.5}, "refs")
    for shape in ((600,), (500, 128), (600, 0)):
        with pytest.raises(ValueError, match="does not fit"):
            CosineSearch(rows, np.zeros(shape, np.float32))
    broken = rows.copy()
    broken[4001, 7] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        CosineSearch(broken, saved["refs_basis"])
    assert not CosineSearch.from_arrays(rows, {}, "refs").pruned  # saved before the bound: the full product


def model(rows, rng):
    d = rows.shape[1]
    return PortableModel(
        classes=["a", "b"],
        mean=np.zeros(d),
        std=np.ones(d),
        projection=None,
        layers=[(rng.standard_normal((2, d)), np.zeros(2))],
        threshold=0.5,
        refs=rows,
        novelty_threshold=0.3,
        meta={"kind": "lr_full"},
    )


def test_a_saved_model_keeps_its_bound_and_answers_like_the_full_product(data, tmp_path):
    rows, near, far = data
    rng = np.random.default_rng(1)
    trained = model(rows, rng)
    trained.save(str(tmp_path))
    loaded = PortableModel.load_folder(str(tmp_path))
    assert loaded.refs_search.pruned
    queries = np.concatenate([near, far]) * 3.0  # features are not unit: novelty normalises them
    full = 1.0 - (unit(queries) @ loaded.refs.T).max(axis=1)
    one_by_one = [loaded.predict(q[None])[0].novelty for q in queries]
    np.testing.assert_allclose(one_by_one, full, atol=1e-5)
    np.testing.assert_allclose(trained.novelty_of(queries), full, atol=1e-5)  # in memory = after a load

    # A model saved before the bound existed (no bound arrays) loads and answers the same.
    with np.load(tmp_path / "portable.npz") as z:
        old = {name: z[name] for name in z.files if not name.startswith("refs_") or name == "refs"}
    np.savez_compressed(tmp_path / "portable.npz", **old)
    legacy = PortableModel.load_folder(str(tmp_path))
    assert not legacy.refs_search.pruned
    np.testing.assert_allclose(legacy.novelty_of(queries), full, atol=1e-5)

    # A basis the bound cannot use, or a damaged file, is a damaged model, said in one line.
    for bad in (np.eye(600, 128, dtype=np.float32) * 0.5, np.zeros(600, np.float32)):
        np.savez_compressed(tmp_path / "portable.npz", **old, refs_basis=bad)
        with pytest.raises(FruitlensError, match="damaged model folder"):
            PortableModel.load_folder(str(tmp_path))
    (tmp_path / "portable.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(FruitlensError, match="damaged model folder"):
        PortableModel.load_folder(str(tmp_path))

    # The references cannot drift from their search: a replaced model gets its own.
    import dataclasses

    other = dataclasses.replace(loaded, refs=rows[::-1].copy())
    np.testing.assert_array_equal(other.refs, rows[::-1].astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(
        other.novelty_of(queries[:3]), 1.0 - (unit(queries[:3]) @ other.refs.T).max(axis=1), atol=1e-5
    )
    with pytest.raises(ValueError):
        loaded.refs[0, 0] = 1.0  # read-only: the bound describes these values


def test_the_service_index_takes_the_models_axes_when_it_loads(data, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fruitlens.serve.index import NeighbourIndex
    from fruitlens.storage.location import Location

    rows, near, _ = data
    (tmp_path / "embeddings").mkdir()
    pq.write_table(
        pa.table(
            {
                "path": [f"/img/{i}.jpg" for i in range(len(rows))],
                "label": ["a"] * len(rows),
                "split": ["train"] * len(rows),
                "embedding": list(rows),
            }
        ),
        tmp_path / "embeddings" / "part-0.parquet",
    )
    trained = model(rows[::5], np.random.default_rng(2))  # references: a sample of the same space
    index = NeighbourIndex.load(Location.of(str(tmp_path)), trained)
    assert index.exact.basis is trained.refs_search.basis  # no eigendecomposition at start
    for q in near[:10]:
        want_rows, want = brute(index.vectors, q, 8)
        np.testing.assert_allclose([n.similarity for n in index.search(q, k=8)], want, atol=1e-5)
    assert index.exact.rows_compared < 0.1 * 10 * len(rows)
