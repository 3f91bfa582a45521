"""The chain with the second backbone: `featurize --backbone lite2` on Spark, a model trained on
its embeddings, predict, classify and export with it, and a model that refuses the other backbone's
embeddings. Real Spark, real photos, the real EfficientNet-Lite2 int8 file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
from conftest import MODELS, copy_sample, shared

from fruitlens import FruitlensError
from fruitlens.config import ClassifyConfig, FeaturizeConfig, SparkConfig, TrainConfig
from fruitlens.embedding.decode import decode_image
from fruitlens.embedding.embedder import Embedder
from fruitlens.engine.predict import Identifier
from fruitlens.jobs import run_classify, run_featurize, run_train

pytestmark = shared
SPARK = SparkConfig()


def read(path) -> pd.DataFrame:
    return ds.dataset(str(path), format="parquet").to_table().to_pandas()


def params_of(folder: Path) -> dict:
    return json.loads((folder / "embeddings" / "_SUCCESS").read_text())["params"]


@pytest.fixture(scope="module")
def lite2(spark, tmp_path_factory):
    """5 classes x (12 train + 4 test) real photos featurized with --backbone lite2 and with the
    default backbone; a small model trained on the Lite2 embeddings."""
    root = tmp_path_factory.mktemp("lite2")
    images = copy_sample(root / "images", classes=5, train=12, test=4, start=3)
    run_featurize(
        FeaturizeConfig(input=str(images), output=str(root / "emb"), backbone="lite2"), SPARK, spark=spark, quiet=True
    )
    run_featurize(FeaturizeConfig(input=str(images), output=str(root / "emb_mnv2")), SPARK, spark=spark, quiet=True)
    run_train(
        TrainConfig(
            input=str(root / "emb"),
            output=str(root / "model"),
            candidates=("lr_full:1e-3",),
            max_iter=60,
            solver="driver",
        ),
        SPARK,
        spark=spark,
        quiet=True,
    )
    return root, images


def test_featurize_with_lite2_records_it_and_gives_the_embedders_embeddings(lite2):
    root, _ = lite2
    params = params_of(root / "emb")
    assert params["backbone"] == "efficientnet_lite2" and params["input_size"] == [260, 260]
    assert params["model_sha256"] == "16b7eb738515e6b711a18a4646ba395db09e7c77f5c8c540dfde831e56fcd4fb"
    rows = read(root / "emb" / "embeddings").sort_values("path")
    assert len(rows) == 80 and {len(e) for e in rows["embedding"]} == {2136}
    embedder = Embedder.for_params(params)
    for path, emb in list(zip(rows["path"], rows["embedding"]))[::27]:
        np.testing.assert_allclose(embedder.embed_bytes(Path(path).read_bytes()), emb, rtol=1e-6, atol=1e-6)
    assert params_of(root / "emb_mnv2")["backbone"] == "mobilenet_v2_multiscale"


def test_a_lite2_model_predicts_with_lite2_and_refuses_the_other_backbones_embeddings(lite2):
    root, images = lite2
    identifier = Identifier.load(str(root / "model"), threads=1)
    assert identifier.embedder.spec.name == "efficientnet_lite2" and identifier.model.embedding_params["backbone"] == (
        "efficientnet_lite2"
    )
    photos = sorted((images / "Test").rglob("*.jpg"))
    right = sum(identifier.identify(p.read_bytes()).predicted == p.parent.name for p in photos)
    assert right >= 18  # of 20 photos of 5 fruits
    model = identifier.model
    model.check_embeddings(params_of(root / "emb"), "these embeddings")  # its own: accepted
    with pytest.raises(FruitlensError, match="made with mobilenet_v2_multiscale .* trained on efficientnet_lite2"):
        model.check_embeddings(params_of(root / "emb_mnv2"), "these embeddings")
    pooled = Embedder.resolve("efficientnet_lite2_pooled").params  # the same file, another embedding
    with pytest.raises(FruitlensError, match="made with efficientnet_lite2_pooled"):
        model.check_embeddings(pooled, "these embeddings")
    # a model of one backbone never embeds with the other: the 1992 MobileNet values do not fit it
    assert len(model.mean) == 2136


def test_classify_with_a_lite2_model_embeds_with_lite2(spark, lite2, tmp_path):
    root, images = lite2
    report = run_classify(
        ClassifyConfig(model=str(root / "model"), input=str(images / "Test"), output=str(tmp_path / "out")),
        SPARK,
        spark=spark,
        quiet=True,
    )
    assert params_of(tmp_path / "out")["backbone"] == "efficientnet_lite2"
    pred = read(tmp_path / "out" / "predictions")
    assert len(pred) == 20 and report["classify"]["rows"] == 20
    identifier = Identifier.load(str(root / "model"), threads=1)
    for row in pred.iloc[::6].itertuples():
        assert identifier.identify(Path(row.path).read_bytes()).predicted == row.predicted


def test_export_builds_one_litert_file_from_lite2_and_the_classifier(lite2, tmp_path):
    from fruitlens.engine.export import Exported, export

    root, images = lite2
    photos = sorted((images / "Test").rglob("*.jpg"))[::2]
    report = export(str(root / "model"), str(tmp_path / "fruit.tflite"), [str(p) for p in photos])
    assert report["input"] == [1, 260, 260, 3] and report["check"]["photos"] == len(photos)
    assert report["check"]["same_top1_as_predict_on_the_whole_photo"] == 1.0
    exported = Exported((tmp_path / "fruit.tflite").read_bytes())
    assert exported.info["input"]["dtype"] == "uint8" and exported.info["embedding_params"]["backbone"] == (
        "efficientnet_lite2"
    )
    identifier = Identifier.load(str(root / "model"), threads=1)
    for p in photos[:3]:  # the same numbers as the portable model on the same pixels
        pixels = decode_image(p.read_bytes(), (260, 260), 10**8)
        probs, _, _ = exported.run(pixels)
        want = identifier.model.probabilities_of(identifier.model.inputs(identifier.embedder.embed([pixels])))[0]
        np.testing.assert_allclose(probs, want, atol=1e-4)
    assert (tmp_path / "fruit.tflite").stat().st_size > (MODELS / "efficientnet_lite2_ms_int8.tflite").stat().st_size
