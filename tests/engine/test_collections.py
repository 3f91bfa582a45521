"""One model from several collections: real shop photos (GroceryStore's layout: train/ val/ test/,
views) and turntable frames (Fruits-360's Training/ Test/), one species from every collection
that shows it through the catalogue, answers at species or family level."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest
from conftest import MODELS, SAMPLE, SHARED, shared

from fruitlens import FruitlensError
from fruitlens.catalogue import Catalogue, Names
from fruitlens.config import ClassifyConfig, FeaturizeConfig, SparkConfig, TrainConfig
from fruitlens.engine.predict import Identifier
from fruitlens.jobs import run_classify, run_featurize, run_train

pytestmark = shared
SPARK = SparkConfig()
GROCERY = SHARED / "data" / "grocerystore"
SHOP = {
    "Fruit/Apple/Granny-Smith": 9,
    "Fruit/Apple/Golden-Delicious": 9,
    "Fruit/Banana": 9,
    "Fruit/Lime": 9,
    "Packages/Milk/Arla-Standard-Milk": 9,
}  # cartons: no species, "(not produce)" in the catalogue
TURNTABLE = ("Apple Granny Smith", "Apple Golden 1", "Banana", "Limes")


def read(path) -> pd.DataFrame:
    return ds.dataset(str(path), format="parquet").to_table().to_pandas()


@pytest.fixture(scope="module")
def collections(spark, tmp_path_factory):
    if not (GROCERY / "train").is_dir():
        pytest.skip(f"needs GroceryStore's photos in {GROCERY}")
    root = tmp_path_factory.mktemp("collections")
    for folder, n in SHOP.items():  # shop photos: 5 train, 2 val, 2 test per class
        photos = sorted((GROCERY / "train" / folder).glob("*.jpg"))[:n]
        for split, chosen in (("train", photos[:-4]), ("val", photos[-4:-2]), ("test", photos[-2:])):
            (root / "shop" / split / folder).mkdir(parents=True, exist_ok=True)
            for p in chosen:
                shutil.copy(p, root / "shop" / split / folder / p.name)
    for name in TURNTABLE:
        for split, count in (("Training", 10), ("Test", 3)):
            (root / "turntable" / split / name).mkdir(parents=True)
            for p in sorted((SAMPLE / split / name).glob("*.jpg"))[:count]:
                shutil.copy(p, root / "turntable" / split / name / p.name)
    run_featurize(
        FeaturizeConfig(input=str(root / "shop"), output=str(root / "shop-emb"), views=4),
        SPARK,
        spark=spark,
        quiet=True,
    )
    run_featurize(
        FeaturizeConfig(input=str(root / "turntable"), output=str(root / "turntable-emb")),
        SPARK,
        spark=spark,
        quiet=True,
    )
    return root


@pytest.fixture(scope="module")
def trained(spark, collections):
    root = collections
    report = run_train(
        TrainConfig(
            input=(str(root / "shop-emb"), str(root / "turntable-emb")),
            output=str(root / "model"),
            catalogue="builtin",
            candidates=("lr_full:1e-3",),
            target_precision=0.9,
        ),
        SPARK,
        spark=spark,
        quiet=True,
    )
    return root / "model", report


def test_views_are_embedded_beside_the_whole_photo(collections):
    emb = read(collections / "shop-emb" / "embeddings")
    assert set(emb.split) == {"train", "validation", "test"}
    assert {len(v) for v in emb.views} == {3}  # whole photo in `embedding`, 3 more views
    params = json.loads((collections / "shop-emb" / "embeddings" / "_SUCCESS").read_text())["params"]
    assert params["views"] == 4 and params["crop"] == 0.7
    assert "views" not in read(collections / "turntable-emb" / "embeddings").columns


def test_one_species_from_every_collection_through_the_catalogue(trained):
    model, report = trained
    meta = json.loads((model / "model.json").read_text())
    assert meta["classes"] == ["(not produce)", "Apple Golden Delicious", "Apple Granny Smith", "Banana", "Lime"]
    assert meta["families"] == ["(not produce)", "Apple", "Apple", "Banana", "Lime"]
    shop, turntable = report["collections"]["shop-emb"], report["collections"]["turntable-emb"]
    assert shop["validation_split"] == "its own validation split" and shop["fit"] == 25 and shop["validation"] == 10
    assert turntable["validation_split"].startswith("the last 20%")
    assert report["left_out_labels"] == {}  # the cartons are learnt as "(not produce)"
    assert report["rows"]["fit_rows_with_views"] == 25 * 4 + turntable["fit"]  # every view a training row
    assert report["chosen"]["not_sure"]["not_produce"]["test"]["photos"] == 2
    kept = Catalogue.parse((model / "catalogue.csv").read_text(), "model")
    assert {r[0] for r in kept.rows} == {
        "Granny-Smith",
        "Golden-Delicious",
        "Banana",
        "Lime",
        "Apple Granny Smith",
        "Apple Golden 1",
        "Limes",
        "Arla-Standard-Milk",
    }
    by_collection = report["chosen"]["test_by_collection"]
    assert set(by_collection) == {"shop-emb", "turntable-emb"}
    for c in by_collection.values():
        assert c["family_accuracy"] >= c["species_accuracy"] >= 0.5
    assert report["chosen"]["predict_views"] in (1, 2, 4)
    assert report["chosen"]["not_sure"]["test"]["answered"] is not None


def test_the_spark_data_path_counts_every_photo_once_as_the_driver_does(spark, trained, collections, tmp_path):
    """The rows beyond the driver's memory stay in Spark (engine/data.SparkData): each photo is read,
    labelled and given its role once, whatever splits its label appears in."""
    _, driver = trained
    root = collections
    report = run_train(
        TrainConfig(
            input=(str(root / "shop-emb"), str(root / "turntable-emb")),
            output=str(tmp_path / "m"),
            catalogue="builtin",
            candidates=("lr_full:1e-3",),
            target_precision=0.9,
            solver="spark",
            max_iter=30,
        ),
        SPARK,
        spark=spark,
        quiet=True,
    )
    assert report["solver"] == "spark"
    assert report["rows"] == driver["rows"] and report["collections"] == driver["collections"]
    for role in ("validation_by_collection", "test_by_collection"):
        assert {c: v["photos"] for c, v in report["chosen"][role].items()} == {
            c: v["photos"] for c, v in driver["chosen"][role].items()
        }


def test_spark_and_driver_data_give_every_photo_the_same_role_and_pick_the_same_references(spark, collections):
    """SparkData ranks and picks on the light columns (the embeddings never shuffled): the same
    roles (a collection without val/ cut by path, one with val/ kept whole), training rows and
    novelty references as the driver's rule."""
    import numpy as np
    from pyspark.sql import functions as F

    from fruitlens.engine.data import FIT, TEST, VAL, DriverData, SparkData
    from fruitlens.engine.train import collection_of
    from fruitlens.storage.location import Location

    colls = [collection_of(Location.of(str(collections / n / "embeddings"))) for n in ("shop-emb", "turntable-emb")]
    catalogue = Catalogue.load("builtin", [])
    driver, spark_data = DriverData(colls, catalogue, 0.2), SparkData(spark, colls, catalogue, 0.2)
    assert spark_data.classes == driver.classes
    for role in (FIT, VAL, TEST):
        theirs = sorted(r["path"] for r in spark_data.data.filter(F.col("role") == role).select("path").collect())
        assert theirs == sorted(driver.photos[role].paths) and theirs, role
        assert spark_data.size(role) == driver.size(role)
    assert spark_data.training_rows((FIT,)).count() == len(driver.training_rows((FIT,))[0])
    for roles in ((FIT,), (FIT, VAL)):
        a, b = driver.references(roles, 2), spark_data.references(roles, 2)
        assert a.shape == b.shape and len(a) > 2 * 4
        np.testing.assert_array_equal(np.unique(a, axis=0), np.unique(b, axis=0))


def test_predict_and_classify_answer_at_species_or_family_level(spark, trained, collections, tmp_path):
    model, report = trained
    identifier = Identifier.load(str(model), threads=1)
    assert identifier.embedder.views.count == report["chosen"]["predict_views"]
    photos = sorted((collections / "shop" / "test").rglob("*.jpg"))
    env = {**os.environ, "FRUITLENS_MODEL_DIR": str(MODELS)}
    res = subprocess.run(
        [sys.executable, "-m", "fruitlens", "predict", "--model", str(model), "--json", *map(str, photos)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    answers = json.loads(res.stdout)
    assert len(answers) == len(photos)
    for a in answers:
        assert a["level"] in ("species", "family", None) and (a["answer"] is None) == a["not_sure"]
        if a["level"] == "family":
            assert a["answer"] == a["family"]
    out = tmp_path / "classified"
    result = run_classify(
        ClassifyConfig(model=str(model), input=str(collections / "shop" / "test"), output=str(out)),
        SPARK,
        spark=spark,
        quiet=True,
    )
    pred = read(out / "predictions")
    assert {"level", "species", "family", "family_probability"} <= set(pred.columns)
    assert ((pred.level == "species") == pred.species.notna()).all()
    c = result["classify"]
    assert c["labelled_with_a_known_class"] == 10  # 8 fruit photos and 2 cartons, "(not produce)"
    cartons = pred[pred.label == "Arla-Standard-Milk"]
    assert (cartons.not_sure | (cartons.predicted != "(not produce)")).all()  # never answered "(not produce)"
    assert set(c["by_collection"]) == {"test"} and c["family_accuracy"] >= c["accuracy"]
    assert c["views_averaged"] == report["chosen"]["predict_views"]


def test_classify_on_each_collections_test_split_gives_the_reports_figures(spark, trained, collections, tmp_path):
    """One truth: the shop photos were embedded with 4 views, the turntable frames with the whole
    photo alone, so predict may average only the whole photo (train says which collection limits it
    and how to lift it); `classify` on each collection's test photos (featurized again, with the
    model's views) gives the figures report.json gives for that collection."""
    model, report = trained
    chosen = report["chosen"]
    assert chosen["predict_views_among"] == [1] and chosen["predict_views"] == 1
    note = chosen["predict_views_note"]
    assert "turntable-emb (embedded with 1)" in note and "--views 4" in note and "shop-emb" not in note
    for name, folder in (
        ("shop-emb", collections / "shop" / "test"),
        ("turntable-emb", collections / "turntable" / "Test"),
    ):
        result = run_classify(
            ClassifyConfig(model=str(model), input=str(folder), output=str(tmp_path / name)),
            SPARK,
            spark=spark,
            quiet=True,
        )["classify"]
        (got,) = result["by_collection"].values()
        want = chosen["test_by_collection"][name]
        assert got["photos_of_a_known_species"] == want["photos_of_a_known_species"] > 0, name
        for key, theirs in (
            ("species_accuracy", want["species_accuracy"]),
            ("family_accuracy", want["family_accuracy"]),
            ("answered", want["answers"]["answered"]),
            ("answers_right", want["answers"]["answers_right"]),
        ):
            if theirs is None:
                assert got[key] is None, (name, key)
            else:
                assert got[key] == pytest.approx(theirs, abs=0.002), (name, key)
    assert result["views_averaged"] == chosen["predict_views"]


def test_a_catalogue_that_is_not_one_is_a_one_line_error(tmp_path):
    bad = {
        "header.csv": "name,kind\nA,B\n",
        "fields.csv": "label,species,family\nA,,Apple\n",
        "twice.csv": "label,species,family\nA,Apple Red,Apple\na,Apple Green,Apple\n",
        "families.csv": "label,species,family\nA,Kiwi,Kiwi\nB,Kiwi,Fruit\n",
    }
    messages = {
        "header.csv": "first line",
        "fields.csv": "line 2",
        "twice.csv": "given twice",
        "families.csv": "two families",
    }
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(FruitlensError, match=messages[name]):
            Catalogue.load(str(tmp_path / name))
    with pytest.raises(FruitlensError, match="no file"):
        Catalogue.load(str(tmp_path / "none.csv"))
    (tmp_path / "latin1.csv").write_bytes("label,species,family\nPêche,Peach,Peach\n".encode("latin-1"))
    with pytest.raises(FruitlensError, match="UTF-8"):
        Catalogue.load(str(tmp_path / "latin1.csv"))


def test_the_builtin_catalogue_names_every_sample_folder_in_english_and_french():
    catalogue, names = Catalogue.load("builtin"), Names.builtin()
    for label in os.listdir(SAMPLE / "Training"):
        species = catalogue.species_of(label)
        assert species, label
        assert names.name(species, "fr") and names.name(catalogue.family_of(species), "fr")
    for folder in Path(GROCERY / "train").glob("[FV]*/**/"):
        if any(folder.glob("*.jpg")):
            assert catalogue.species_of(folder.name), folder
    assert (
        catalogue.species_of("Golden-Delicious") == catalogue.species_of("Apple Golden 2") == "Apple Golden Delicious"
    )
    assert (
        names.name("Apple Golden Delicious", "fr") == "Pomme Golden"
        and names.name("Pepper Red", "fr") == "Poivron rouge"
    )


def test_the_exported_litert_file_answers_as_predict_does(trained, collections, tmp_path):
    import numpy as np

    from fruitlens.embedding.decode import decode_image
    from fruitlens.engine.export import Exported, export

    model, _ = trained
    photos = (
        sorted((collections / "shop" / "test").rglob("*.jpg"))
        + sorted((GROCERY / "val" / "Fruit" / "Banana").glob("*.jpg"))[:4]
    )
    env_report = export(str(model), str(tmp_path / "fruit.tflite"), [str(p) for p in photos])
    assert env_report["bytes"] == (tmp_path / "fruit.tflite").stat().st_size > 1_000_000
    check = env_report["check"]
    assert check["photos"] == len(photos) and check["same_top1_as_predict_on_the_whole_photo"] == 1.0
    exported = Exported((tmp_path / "fruit.tflite").read_bytes())
    info = exported.info
    identifier = Identifier.load(str(model), threads=1)
    assert info["classes"] == identifier.model.classes and info["input"]["shape"] == [1, 224, 224, 3]
    for p in photos[:4]:  # the same numbers as the portable model on the same pixels
        pixels = decode_image(p.read_bytes(), (224, 224), 10**8)
        probs, families, novelty = exported.run(pixels)
        embedding = identifier.embedder.embed([pixels])
        want = identifier.model.probabilities_of(identifier.model.inputs(embedding))[0]
        np.testing.assert_allclose(probs, want, atol=1e-4)
        np.testing.assert_allclose(families, identifier.model.family_probabilities(want[None])[0], atol=1e-4)
        assert novelty == pytest.approx(identifier.model.novelty_of(identifier.model.inputs(embedding))[0], abs=1e-3)


def test_two_photos_of_a_fruit_beat_one_where_one_is_ambiguous(trained, collections):
    model, _ = trained
    identifier = Identifier.load(str(model), threads=1)
    catalogue = Catalogue.load("builtin")
    photos = [p for split in ("val", "test") for p in sorted((collections / "shop" / split / "Fruit").rglob("*.jpg"))]
    species = {p: catalogue.species_of(p.parent.name) for p in photos}
    alone = {p: identifier.identify(p.read_bytes()) for p in photos}
    right = {p: a.answer == species[p] for p, a in alone.items()}
    ambiguous = [p for p in photos if not right[p]]  # wrong, only the family, or not sure on its own
    assert ambiguous, "the small model answers every real photo right alone: nothing to show"
    helped = 0
    for a in ambiguous:
        partners = [b for b in photos if b != a and species[b] == species[a] and right[b]]
        if not partners:
            continue
        pair = identifier.identify_photos([a.read_bytes(), partners[0].read_bytes()]).prediction
        assert pair.predicted == species[a]  # the pair names it, where the photo alone did not
        helped += 1
    assert helped >= 1
    # and over every pair of photos of a species, two photos are right at least as often as one
    pairs = [(a, b) for a in photos for b in photos if a < b and species[a] == species[b]]
    pair_right = sum(
        identifier.identify_photos([a.read_bytes(), b.read_bytes()]).prediction.predicted == species[a]
        for a, b in pairs
    ) / len(pairs)
    single_right = sum(alone[p].predicted == species[p] for p in photos) / len(photos)
    assert pair_right >= single_right


def _shop_fruit(collections):
    catalogue = Catalogue.load("builtin")
    photos = [p for split in ("val", "test") for p in sorted((collections / "shop" / split / "Fruit").rglob("*.jpg"))]
    return photos, {p: catalogue.species_of(p.parent.name) for p in photos}


def test_two_photos_of_a_product_do_at_least_as_well_as_the_better_one_alone(trained, collections):
    """Every pair of real shop photos of one product (close-ups and shelf shots mixed): when one
    photo alone gets the right answer, the pair gets it too; and pairs are answered at least as
    often, and rightly at least as often, as the better photo alone (engine/model.combine_photos)."""
    model, _ = trained
    identifier = Identifier.load(str(model), threads=1)
    photos, species = _shop_fruit(collections)
    alone = {p: identifier.identify(p.read_bytes()) for p in photos}
    pairs = [(a, b) for a in photos for b in photos if a < b and species[a] == species[b]]
    assert len(pairs) >= 20
    hurt, answered, right, better_answered, better_right = [], 0, 0, 0, 0
    for a, b in pairs:
        pair = identifier.identify_photos([a.read_bytes(), b.read_bytes()]).prediction
        truth = species[a]
        alone_right = [alone[p].answer == truth for p in (a, b)]
        if any(alone_right) and pair.answer != truth:
            hurt.append((a.name, b.name, pair.answer, pair.top[0]))
        answered += pair.answer is not None
        right += pair.answer == truth
        better_answered += any(alone[p].answer is not None for p in (a, b))
        better_right += any(alone_right)
    assert not hurt, hurt
    assert answered >= better_answered and right >= better_right


def test_a_photo_of_another_species_mixed_in_lowers_the_confidence(trained, collections):
    """Two real photos of different species, each named rightly alone: the question is not
    answered with the confidence of the surer photo (not sure, or a lower probability), rather than
    confidently naming one of them."""
    model, _ = trained
    identifier = Identifier.load(str(model), threads=1)
    photos, species = _shop_fruit(collections)
    alone = {p: identifier.identify(p.read_bytes()) for p in photos}
    sure = [p for p in photos if alone[p].level == "species" and alone[p].answer == species[p]]
    mixed = [(a, b) for a in sure for b in sure if a < b and species[a] != species[b]]
    assert len(mixed) >= 10
    for a, b in mixed:
        pair = identifier.identify_photos([a.read_bytes(), b.read_bytes()]).prediction
        surer = max(alone[a].top[0][1], alone[b].top[0][1])
        assert pair.not_sure or pair.top[0][1] < surer, (a.name, b.name, pair.top[0], surer)


def test_predict_together_answers_several_photos_as_one_question(trained, collections, tmp_path):
    model, _ = trained
    photos, species = _shop_fruit(collections)
    bananas = [p for p in photos if species[p] == "Banana"][:2]
    env = {**os.environ, "FRUITLENS_MODEL_DIR": str(MODELS)}
    cmd = [sys.executable, "-m", "fruitlens", "predict", "--model", str(model), "--together"]
    res = subprocess.run([*cmd, "--json", *map(str, bananas)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    (answer,) = json.loads(res.stdout)
    assert answer["ok"] and answer["path"] == f"{bananas[0]} + {bananas[1]}"
    assert [p["path"] for p in answer["photos"]] == list(map(str, bananas))
    assert answer["predicted"] == "Banana" and answer["answer"] in ("Banana", None)
    if all(p["predicted"] == "Banana" for p in answer["photos"]):  # two photos agreeing: surer than either
        assert answer["probability"] >= max(p["probability"] for p in answer["photos"]) - 1e-6
    table = subprocess.run([*cmd, *map(str, bananas)], capture_output=True, text=True, env=env, timeout=300)
    assert table.returncode == 0 and "Banana" in table.stdout and table.stdout.count(" alone: ") == 2
    gone = subprocess.run(
        [*cmd, str(bananas[0]), str(tmp_path / "gone.jpg")], capture_output=True, text=True, env=env, timeout=300
    )
    assert gone.returncode == 1 and gone.stderr.strip() == f"fruitlens: {tmp_path / 'gone.jpg'}: missing: no such file"
