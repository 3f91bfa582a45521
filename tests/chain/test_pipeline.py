"""The chain on real Spark (local mode) and real images: what a user of the outputs would check."""

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
from conftest import SAMPLE, shared
from PIL import Image

from fruitlens.config import (
    DEFAULT_BACKBONE,
    FeaturizeConfig,
    ReduceConfig,
    SparkConfig,
)
from fruitlens.embedding.backbones import get_spec
from fruitlens.jobs import run_all, run_featurize, run_reduce

pytestmark = shared

SPARK = SparkConfig()


def read(path) -> pd.DataFrame:
    return ds.dataset(str(path), format="parquet").to_table().to_pandas()


@pytest.fixture(scope="module")
def chain(spark, sample_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    report = run_all(
        FeaturizeConfig(input=str(sample_dir), output=str(out), images_per_partition=40),
        ReduceConfig(input=str(out), output=str(out), variance=0.9),
        SPARK,
        spark=spark,
        quiet=True,
    )
    return out, report


def test_every_image_embedded_with_label_and_split(chain, sample_dir):
    out, report = chain
    emb = read(out / "embeddings")
    assert list(emb.columns) == [
        "path",
        "label",
        "split",
        "size_bytes",
        "embedding",
        "path_bytes",
        "modified_ns",
        "etag",
    ]
    expected = {str(p) for p in sample_dir.rglob("*.jpg")}
    assert len(emb) == len(expected) == 220
    assert set(emb.path) == expected
    for row in emb.itertuples():
        p = Path(row.path)
        assert row.label == p.parent.name
        assert row.split == {"Training": "train", "Test": "test"}[p.parent.parent.name]
        assert row.size_bytes == p.stat().st_size
        assert row.modified_ns == p.stat().st_mtime_ns and row.etag is None and row.path_bytes is None
        assert len(row.embedding) == get_spec(DEFAULT_BACKBONE).embedding_dim == 1992
    assert emb.split.value_counts().to_dict() == {"train": 160, "test": 60}
    assert emb.label.nunique() == 10
    assert len(read(out / "errors")) == 0
    assert report["featurize"]["ok"] == 220 and report["featurize"]["errors"] == 0


def test_embeddings_are_float32_and_readable_by_spark_pandas_pyarrow(chain, spark):
    out, _ = chain
    table = ds.dataset(str(out / "embeddings"), format="parquet").to_table()
    assert str(table.schema.field("embedding").type) == "list<element: float>"
    df = spark.read.parquet(f"file://{out}/embeddings")
    assert df.count() == 220
    assert dict(df.dtypes)["embedding"] == "array<float>"
    assert len(pd.read_parquet(out / "features")) == 220


def test_model_loaded_once_per_python_worker_not_per_partition(chain):
    _, report = chain
    feat = report["featurize"]
    assert feat["partitions"] >= 5  # 220 images / 40 per partition
    # local[2]: at most two Python workers, each loading once (none if earlier tests warmed them)
    assert feat["backbone"]["loads"] <= 2 < feat["partitions"]


def test_pca_k_reaches_variance_target_fit_on_train(chain):
    out, report = chain
    red = report["reduce"]
    cumulative = np.array(red["cumulative_explained_variance"])
    k = red["k"]
    assert cumulative[k - 1] >= 0.9 > cumulative[k - 2]  # the smallest k reaching 90%
    assert red["fit_on"] == "train" and red["fit_rows"] == 160 and red["rows"] == 220
    feats = read(out / "features")
    assert list(feats.columns) == ["path", "label", "split", "pca"]
    assert {len(v) for v in feats.pca} == {k}
    csv = pd.read_csv(out / "explained_variance.csv")
    assert csv.cumulative.iloc[k - 1] == pytest.approx(red["explained_variance_at_k"], abs=1e-6)


def test_saved_pipeline_model_reproduces_written_projections(chain, spark):
    from pyspark.ml import PipelineModel
    from pyspark.ml.functions import array_to_vector, vector_to_array

    out, _ = chain
    model = PipelineModel.load(f"file://{out}/pca")
    emb = spark.read.parquet(f"file://{out}/embeddings")
    again = (
        model.transform(emb.withColumn("features", array_to_vector("embedding")))
        .select("path", vector_to_array("pca").alias("pca"))
        .toPandas()
        .set_index("path")
    )
    written = read(out / "features").set_index("path")
    assert len(again) == len(written) == 220
    for path, row in written.iterrows():
        np.testing.assert_allclose(row.pca, again.loc[path, "pca"], rtol=1e-9, atol=1e-9)


def test_pca_features_separate_the_fruit_classes(chain, spark):
    """A linear classifier on the features, fit on Training, scores well on Test."""
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import StringIndexer
    from pyspark.ml.functions import array_to_vector

    out, _ = chain
    df = spark.read.parquet(f"file://{out}/features").withColumn("x", array_to_vector("pca"))
    df = StringIndexer(inputCol="label", outputCol="y").fit(df).transform(df)
    model = LogisticRegression(featuresCol="x", labelCol="y", maxIter=100, regParam=0.01).fit(
        df.filter("split = 'train'")
    )
    test = model.transform(df.filter("split = 'test'")).toPandas()
    assert (test.prediction == test.y).mean() >= 0.9


def test_report_and_scree_plot(chain):
    out, report = chain
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["command"] == "run"
    assert on_disk["featurize"]["inputs"]["images_found"] == 220
    for key in ("spark", "pyspark", "python", "ai-edge-litert"):
        assert on_disk["versions"][key]
    assert on_disk["featurize"]["backbone"]["sha256"].startswith("5d3137")
    stages = on_disk["featurize"]["stages"]
    assert stages["embed"]["images_per_s"] > 0
    assert set(stages["embed"]["task_seconds"]) == {
        "read",
        "decode_resize",
        "infer",
        "write",
        "model_load",
        "read_decode_cpu",
        "infer_cpu",
    }
    assert 0 < stages["embed"]["task_seconds"]["infer_cpu"] <= stages["embed"]["task_seconds"]["infer"] * 1.05 + 0.05
    assert on_disk["parameters"]["reduce"]["variance"] == 0.9
    img = Image.open(out / "scree.png")
    assert img.format == "PNG" and img.width > 400


def test_same_embeddings_across_runs_batch_sizes_and_partitioning(chain, spark, sample_dir, tmp_path):
    out, _ = chain
    first = read(out / "embeddings").set_index("path").sort_index()
    run_featurize(
        FeaturizeConfig(
            input=str(sample_dir / "Test"), output=str(tmp_path), batch_size=5, images_per_partition=7, io_threads=1
        ),
        SPARK,
        spark=spark,
        quiet=True,
    )
    second = read(tmp_path / "embeddings").set_index("path").sort_index()
    assert len(second) == 60 and set(second.split) == {"test"}
    for path, row in second.iterrows():
        np.testing.assert_array_equal(row.embedding, first.loc[path, "embedding"])


def _broken_and_odd_files(root: Path) -> dict[str, str | None]:
    """Files made here; value = the error reason expected, None = must be embedded."""
    good = sorted((SAMPLE / "Test").glob("*/*.jpg"))[:4]
    cls = root / "Training" / "Mixed"
    cls.mkdir(parents=True)
    for f in good:
        shutil.copy(f, cls / f.name)
    photo = Image.open(good[0])

    def save(name, img, fmt, **kw):
        buf = io.BytesIO()
        img.save(buf, format=fmt, **kw)
        (cls / name).write_bytes(buf.getvalue())

    save("cmyk.jpg", photo.convert("CMYK"), "JPEG")
    save("grey16.png", Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257), "PNG")
    save("palette.png", photo.convert("P"), "PNG")
    save("alpha.webp", photo.convert("RGBA"), "WEBP")
    save("grey.bmp", photo.convert("L"), "BMP")
    save("UPPER.JPEG", photo, "JPEG")
    (cls / "empty.jpg").write_bytes(b"")
    (cls / "text.jpg").write_text("not a picture")
    whole = good[1].read_bytes()
    (cls / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    save("bomb.png", Image.new("1", (12_000, 12_000)), "PNG")
    os.symlink(root / "does-not-exist.jpg", cls / "dangling.jpg")
    (cls / "README.txt").write_text("not an input")
    expected = {f.name: None for f in good}
    expected.update(
        {n: None for n in ("cmyk.jpg", "grey16.png", "palette.png", "alpha.webp", "grey.bmp", "UPPER.JPEG")}
    )
    expected.update(
        {
            "empty.jpg": "empty",
            "text.jpg": "not an image",
            "truncated.jpg": "truncated",
            "bomb.png": "decompression bomb",
            "dangling.jpg": "broken link",
        }
    )
    return expected


def test_broken_files_land_in_errors_with_reasons_and_good_ones_are_embedded(spark, tmp_path):
    expected = _broken_and_odd_files(tmp_path / "in")
    out = tmp_path / "out"
    report = run_featurize(FeaturizeConfig(input=str(tmp_path / "in"), output=str(out)), SPARK, spark=spark, quiet=True)
    emb, err = read(out / "embeddings"), read(out / "errors")
    assert list(err.columns[:3]) == ["path", "reason", "detail"]
    names_ok = {Path(p).name for p in emb.path}
    names_err = {Path(p).name: r for p, r in zip(err.path, err.reason)}
    assert names_ok == {n for n, r in expected.items() if r is None}
    assert set(names_err) == {n for n, r in expected.items() if r is not None}
    assert not names_ok & set(names_err)  # every input exactly once across the two outputs
    for name, reason in names_err.items():
        assert reason == expected[name], name
    assert all(d and "\n" not in d and not d.startswith(r) for d, r in zip(err.detail, err.reason))
    assert (err[err.reason == "broken link"].detail.str.contains("does-not-exist.jpg, which does not exist")).all()
    feat = report["featurize"]
    assert feat["inputs"]["images_found"] + feat["inputs"]["unreadable_in_listing"] == len(expected)
    assert feat["inputs"]["other_files_skipped"] == {".txt": 1}
    assert feat["errors_by_reason"] == {
        "empty": 1,
        "not an image": 1,
        "truncated": 1,
        "decompression bomb": 1,
        "broken link": 1,
    }


def test_reduce_with_fixed_k_on_an_embeddings_dataset_without_train_split(chain, spark, tmp_path):
    out, _ = chain
    emb = read(out / "embeddings")
    emb[emb.split == "test"].assign(split=None).to_parquet(tmp_path / "emb.parquet")
    report = run_reduce(
        ReduceConfig(input=str(tmp_path / "emb.parquet"), output=str(tmp_path / "r"), k=12, variance=None),
        SPARK,
        spark=spark,
        quiet=True,
    )
    red = report["reduce"]
    assert red["k"] == 12 and red["fit_on"] == "all" and red["fit_rows"] == 60
    assert {len(v) for v in read(tmp_path / "r" / "features").pca} == {12}


def test_rerun_into_the_same_output_replaces_it(chain, spark, sample_dir, tmp_path):
    for incremental in (True, False):
        report = run_featurize(
            FeaturizeConfig(input=str(sample_dir / "Test"), output=str(tmp_path), incremental=incremental),
            SPARK,
            spark=spark,
            quiet=True,
        )
    assert len(read(tmp_path / "embeddings")) == 60
    assert report["featurize"]["incremental"]["embedded"] == 60  # --full embeds everything again
    assert not (tmp_path / "_staging").exists()
