"""The identification engine: train on Spark ML, the portable export, predict without Spark,
classify on Spark, and photos that are not fruit. Real Spark, real images, the real model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
from conftest import MODELS, SAMPLE, copy_sample, shared
from photos import non_fruit_photos

from fruitlens import FruitlensError
from fruitlens.config import (
    DEFAULT_BACKBONE,
    ClassifyConfig,
    FeaturizeConfig,
    SparkConfig,
    TrainConfig,
)
from fruitlens.engine.model import PortableModel
from fruitlens.engine.predict import Identifier
from fruitlens.jobs import run_classify, run_featurize, run_train

pytestmark = shared
SPARK = SparkConfig()


def read(path) -> pd.DataFrame:
    return ds.dataset(str(path), format="parquet").to_table().to_pandas()


@pytest.fixture(scope="module")
def data(spark, tmp_path_factory):
    """12 classes x (20 train + 8 test) real images, featurized once."""
    root = tmp_path_factory.mktemp("engine")
    images = copy_sample(root / "images", classes=12, train=20, test=8, start=1)
    run_featurize(FeaturizeConfig(input=str(images), output=str(root / "emb")), SPARK, spark=spark, quiet=True)
    return root, images


@pytest.fixture(scope="module")
def trained(spark, data):
    root, _ = data
    report = run_train(
        TrainConfig(
            input=str(root / "emb"),
            output=str(root / "model"),
            candidates=("lr_pca:1e-3", "lr_full:1e-4", "lr_full:1e-3"),
            max_iter=100,
        ),
        SPARK,
        spark=spark,
        quiet=True,
    )
    return root / "model", report


def test_train_compares_candidates_chosen_on_validation_and_reports_what_a_person_reads(trained):
    model, report = trained
    assert report["rows"] == {
        "fit": 192,
        "fit_rows_with_views": 192,
        "validation": 48,
        "train": 240,
        "test": 96,
        "test_unknown_label": 0,
    }
    assert report["solver"] == "driver" and "numpy" in report["blas"]  # 192 rows fit in the driver's memory
    assert {c["candidate"] for c in report["candidates"]} == {"lr_pca:0.001", "lr_full:0.0001", "lr_full:0.001"}
    for c in report["candidates"]:  # each one's validation figure and its seconds, for the person choosing
        assert 0 < c["validation_accuracy"] <= 1 and c["seconds"] >= 0 and c["iterations"] >= 1
    chosen = report["chosen"]
    best_val = max(report["candidates"], key=lambda c: (c["validation_accuracy"], c["validation_macro_f1"]))
    assert chosen["candidate"] == best_val["candidate"] and chosen["params"] == best_val["params"]
    test = chosen["test"]
    assert test["accuracy"] >= 0.9 and test["top5_accuracy"] >= test["accuracy"] and 0 < test["macro_f1"] <= 1
    assert len(test["per_class"]) == 12 and all(v["support"] == 8 for v in test["per_class"].values())
    assert all(set(p) == {"true", "predicted", "count"} for p in test["most_confused"])
    ns = chosen["not_sure"]
    assert 0 < ns["threshold"] <= 1 and ns["validation_precision"] >= 0.995
    assert ns["novelty_threshold"] > 0
    files = set(os.listdir(model))
    assert {
        "spark",
        "portable.npz",
        "model.json",
        "report.json",
        "confusion.png",
        "per_class.csv",
        "catalogue.csv",
        "_SUCCESS",
    } <= files
    assert (model / "confusion.png").stat().st_size > 2000
    meta = json.loads((model / "model.json").read_text())
    assert meta["embedding_params"]["backbone"] == DEFAULT_BACKBONE and len(meta["classes"]) == 12


@pytest.mark.parametrize(
    "candidate,solver", [("lr_full:1e-3", "driver"), ("lr_pca:1e-3", "spark"), ("mlp:64", "spark")]
)
def test_portable_export_gives_the_spark_models_probabilities(spark, data, tmp_path, candidate, solver):
    root, _ = data
    report = run_train(
        TrainConfig(
            input=str(root / "emb"), output=str(tmp_path / "m"), candidates=(candidate,), max_iter=60, solver=solver
        ),
        SPARK,
        spark=spark,
        quiet=True,
    )
    assert report["solver"] == solver
    from pyspark.ml import PipelineModel
    from pyspark.ml.functions import vector_to_array

    spark_model = PipelineModel.load(f"file://{tmp_path}/m/spark")  # takes the embedding column as it is
    emb = spark.read.parquet(f"file://{root}/emb/embeddings")
    rows = spark_model.transform(emb).select("path", "embedding", vector_to_array("probability").alias("p")).collect()
    portable = PortableModel.load_folder(str(tmp_path / "m"))
    got = portable.probabilities_of(portable.inputs(np.array([r["embedding"] for r in rows], np.float32)))
    np.testing.assert_allclose(got, np.array([r["p"] for r in rows]), atol=1e-6)


def test_predict_command_same_embedding_as_featurize_and_bad_files_one_line_each(trained, data, tmp_path):
    model, _ = trained
    root, images = data
    photos = sorted((images / "Test").rglob("*.jpg"))[::13][:6]
    identifier = Identifier.load(str(model), threads=1)
    emb = read(root / "emb" / "embeddings").set_index("path")
    for p in photos:  # featurize and predict share decode + backbone: the same embedding
        np.testing.assert_array_equal(identifier.embedder.embed_bytes(p.read_bytes()), emb.loc[str(p), "embedding"])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    args = [str(p) for p in photos[:3]] + [
        str(tmp_path / "empty.jpg"),
        str(tmp_path / "gone.jpg"),
        str(tmp_path / "text.jpg"),
    ]
    env = {**os.environ, "FRUITLENS_MODEL_DIR": str(MODELS)}
    res = subprocess.run(
        [sys.executable, "-m", "fruitlens", "predict", "--model", str(model), *args, "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 1
    answers = json.loads(res.stdout)
    assert [a["ok"] for a in answers] == [True] * 3 + [False] * 3
    for a, p in zip(answers[:3], photos[:3]):
        assert len(a["top5"]) == 5 and a["predicted"] == a["top5"][0]["label"]
        assert a["top5"][0]["probability"] >= a["top5"][1]["probability"]
        assert a["predicted"] == p.parent.name or a["not_sure"]
    assert [(a["reason"]) for a in answers[3:]] == ["empty", "missing", "not an image"]
    errors = res.stderr.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("fruitlens: ") for line in errors) and "Traceback" not in res.stderr
    table = subprocess.run(
        [sys.executable, "-m", "fruitlens", "predict", "--model", str(model), str(photos[0])],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert table.returncode == 0 and photos[0].parent.name in table.stdout and "%" in table.stdout


def test_predict_refuses_a_model_trained_on_other_embeddings(trained, tmp_path):
    model, _ = trained
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    meta = json.loads((copy / "model.json").read_text())
    meta["embedding_params"]["model_sha256"] = "0" * 64
    (copy / "model.json").write_text(json.dumps(meta))
    with pytest.raises(FruitlensError, match=r"another mobilenet_v2\w* backbone file"):
        Identifier.load(str(copy))
    with pytest.raises(FruitlensError, match="not a fruitlens model folder"):
        Identifier.load(str(tmp_path))


def test_classify_on_spark_matches_predict(spark, trained, data, tmp_path):
    model, _ = trained
    _, images = data
    out = tmp_path / "out"
    (images / "Test" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut")
    try:
        report = run_classify(
            ClassifyConfig(model=str(model), input=str(images / "Test"), output=str(out)),
            SPARK,
            spark=spark,
            quiet=True,
        )
    finally:
        (images / "Test" / "broken.jpg").unlink()
    pred = read(out / "predictions")
    assert list(pred.columns[:6]) == ["path", "label", "predicted", "probability", "not_sure", "why_not_sure"]
    assert len(pred) == 96 and pred.path.is_unique
    assert read(out / "errors").reason.tolist() == ["truncated"]
    c = report["classify"]
    assert c["rows"] == 96 and c["labelled_with_a_known_class"] == 96
    assert c["accuracy"] == pytest.approx((pred.predicted == pred.label).mean())
    assert report["featurize"]["errors"] == 1
    identifier = Identifier.load(str(model), threads=1)
    for row in pred.iloc[::17].itertuples():
        p = identifier.identify(Path(row.path).read_bytes())
        assert p.predicted == row.predicted and p.not_sure == row.not_sure
        assert p.top[0][1] == pytest.approx(row.probability, abs=1e-9)
        assert [t["label"] for t in row.top5] == [c for c, _ in p.top]


def test_photos_that_are_not_fruit_get_no_confident_species(trained):
    model, _ = trained
    identifier = Identifier.load(str(model), threads=1)
    verdicts = {name: identifier.identify(data) for name, data in non_fruit_photos().items()}
    confident = {
        n: (p.predicted, round(p.top[0][1], 3), round(p.novelty, 3)) for n, p in verdicts.items() if not p.not_sure
    }
    assert not confident, f"non-fruit photos answered with a species: {confident}"
    # ... while most unseen fruit photos of known classes are still answered, and rightly
    answers = []
    for cls in identifier.model.classes:
        for p in sorted((SAMPLE / "Test" / cls).glob("*.jpg"))[10:13]:  # not among the 8 copied per class
            answers.append((cls, identifier.identify(p.read_bytes())))
    answered = [(cls, a) for cls, a in answers if not a.not_sure]
    why = {a.why for _, a in answers if a.not_sure}
    assert len(answered) >= 0.66 * len(answers), why  # a 12-class model fit on 192 images: thresholds are strict
    assert sum(a.predicted == cls for cls, a in answered) >= 0.97 * len(answered)


def test_image_size_is_recorded_and_predict_and_classify_use_the_trained_one(spark, trained, data, tmp_path):
    from fruitlens.embedding import backbones
    from fruitlens.embedding.decode import decode_image

    _, images = data
    out = tmp_path / "small"
    run_featurize(FeaturizeConfig(input=str(images), output=str(out), image_size=128), SPARK, spark=spark, quiet=True)
    params = json.loads((out / "embeddings" / "_SUCCESS").read_text())["params"]
    assert params["input_size"] == [128, 128]
    rows = read(out / "embeddings").sort_values("path").head(2)
    spec = backbones.at_size(backbones.get_spec(DEFAULT_BACKBONE), 128)
    model = backbones.load(spec, str(MODELS / spec.file.filename), threads=1)
    for path, emb in zip(rows["path"], rows["embedding"]):
        expected = model.embed(decode_image(Path(path).read_bytes(), (128, 128), 10**8, upscale=False)[None])[0]
        np.testing.assert_allclose(np.asarray(emb, np.float32), expected, rtol=1e-6, atol=1e-6)

    # A model trained on 224 embeddings refuses 128 ones; one whose meta says 128 predicts at 128.
    model_dir, _ = trained
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["embedding_params"]["input_size"] == [224, 224]
    with pytest.raises(FruitlensError, match="image size 128"):
        Identifier.load(str(model_dir), threads=1).model.check_embeddings(params, "these embeddings")
    copy = tmp_path / "model128"
    shutil.copytree(model_dir, copy)
    meta["embedding_params"]["input_size"] = [128, 128]
    (copy / "model.json").write_text(json.dumps(meta))
    identifier = Identifier.load(str(copy), threads=1)
    assert identifier.embedder.spec.input_size == (128, 128)
    photo = Path(rows["path"].iloc[0]).read_bytes()
    np.testing.assert_allclose(
        identifier.embedder.embed_bytes(photo), np.asarray(rows["embedding"].iloc[0], np.float32), rtol=1e-6, atol=1e-6
    )
