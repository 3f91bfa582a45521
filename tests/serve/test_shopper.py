"""The shopper's answer (issue 28): a model of the product's kind (the builtin catalogue, shop photos
and turntable frames, cartons as "not produce"), both collections indexed and served as one, and
the page on a phone in French and English through a real headless chromium."""

from __future__ import annotations

import io
import json
import re
import shutil

import httpx
import pytest
from conftest import SAMPLE, needs_shared

from fruitlens.catalogue import Names
from fruitlens.config import FeaturizeConfig, TrainConfig
from fruitlens.engine.model import Prediction
from fruitlens.jobs import run_featurize, run_train
from fruitlens.serve.phrases import closeness
from fruitlens.serve.routers.identify import why
from fruitlens.serve.species_info import facts_of
from fruitlens.storage.location import Location

from .support import GROCERY, META, SPARK, Server

# GroceryStore folders (train and val) -> their labels; Fruits-360 classes
SHOP = ["Fruit/Banana", "Fruit/Kiwi", "Vegetables/Asparagus", "Packages/Juice/Bravo-Apple-Juice"]
TURNTABLE = ["Banana", "Kiwi", "Lemon"]
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 1}
# Words that are English and not French (so not "photo", "source", "licence"): none may show on the
# French page (proper names aside)
ENGLISH = {  # English words French does not share (photo, source, licence are French too)
    "the",
    "and",
    "of",
    "is",
    "not",
    "sure",
    "similar",
    "about",
    "confidence",
    "best",
    "guess",
    "take",
    "choose",
    "add",
    "another",
    "wrong",
    "answer",
    "what",
    "send",
    "kept",
    "your",
    "from",
    "with",
    "license",
    "family",
    "eaten",
    "stored",
    "fruit,",
    "vegetable",
    "looks",
    "packaged",
    "product",
    "unsure",
    "between",
    "kind",
    "most",
    "very",
    "somewhat",
    "shop",
    "one",
    "white",
    "only",
    "never",
    "clear",
    "last",
    "answers",
    "banana",
    "asparagus",
    "lemon",
    "juice",
    "apple",
}
PROPER = {"fruitlens", "grocerystore", "fruits-360", "openapi", "mit", "cc", "by-sa", "api"}


@pytest.fixture(scope="module")
def shop_built(spark, tmp_path_factory):
    """Shop photos (4 GroceryStore folders, 16 train + their val photos) and turntable frames (3
    Fruits-360 classes, 16 + 4), each featurized, one model over both with the builtin catalogue,
    each collection's saved index (`fruitlens index`)."""
    needs_shared()
    if not (GROCERY / "train").is_dir():
        pytest.skip(f"needs GroceryStore's photos in {GROCERY}")
    root = tmp_path_factory.mktemp("shop")
    shop = root / "grocerystore"
    for folder in SHOP:
        for split, count in (("train", 16), ("val", 4)):
            (shop / split / folder).mkdir(parents=True)
            for f in sorted((GROCERY / split / folder).iterdir())[:count]:
                shutil.copy(f, shop / split / folder / f.name)
    for name in ("LICENSE", "classes.csv"):
        shutil.copy(GROCERY / name, shop / name)
    (shop / "iconic-images-and-descriptions").symlink_to(GROCERY / "iconic-images-and-descriptions")
    turntable = root / "fruits-360"
    for split, step, count in (("Training", 5, 16), ("Test", 7, 4)):
        for name in TURNTABLE:
            (turntable / split / name).mkdir(parents=True)
            for f in sorted((SAMPLE / split / name).iterdir())[::step][:count]:
                shutil.copy(f, turntable / split / name / f.name)
    shutil.copy(SAMPLE / "LICENSE", turntable / "LICENSE")
    for src, out in ((shop, "shop"), (turntable, "turntable")):
        run_featurize(FeaturizeConfig(input=str(src), output=str(root / out)), SPARK, spark=spark, quiet=True)
    run_train(
        TrainConfig(
            input=(str(root / "shop"), str(root / "turntable")),
            output=str(root / "model"),
            catalogue="builtin",
            candidates=("lr_full:1e-3",),
            target_precision=0.9,
        ),
        SPARK,
        spark=spark,
        quiet=True,
    )
    from fruitlens.engine.model import PortableModel
    from fruitlens.serve.saved_index import build

    model = PortableModel.load(Location.of(str(root / "model")))
    for out in ("shop", "turntable"):
        build(Location.of(str(root / out)), model, say=lambda *_: None)
    shutil.copytree(META, root / "meta", ignore=shutil.ignore_patterns("*.pdf"))
    return root


def shop_server(root, log, *extra):
    return Server(
        root,
        log,
        "--ann",
        "--index",
        str(root / "turntable"),
        "--info",
        str(root / "meta"),
        "--rate-limit",
        "100000",
        *extra,
        index=str(root / "shop"),
        info=str(GROCERY),
    )


@pytest.fixture(scope="module")
def shop(shop_built, tmp_path_factory):
    s = shop_server(shop_built, tmp_path_factory.mktemp("shop-log") / "serve.log")
    yield s
    s.stop()


def val_photo(folder: str, i: int = 0):
    return sorted((GROCERY / "val" / folder).iterdir())[i]


def identify(url: str, path, lang: str) -> dict:
    with open(path, "rb") as f:
        r = httpx.post(f"{url}/api/v1/identify?lang={lang}", files={"photo": (path.name, f, "image/jpeg")}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


# -- the API ---------------------------------------------------------------------------------------


def test_a_shop_photos_similar_photos_come_from_the_shop_collection_named_in_french_with_their_licence(shop):
    a = identify(shop.url, val_photo("Fruit/Banana", 1), "fr")
    assert len(a["similar"]) == 8
    titles = {n["collection"]["title"] for n in a["similar"]}
    assert "GroceryStore (photos en magasin)" in titles
    assert all(n["collection"]["license"] == "MIT" for n in a["similar"])  # both collections' LICENSE files
    bananas = [n for n in a["similar"] if n["species"] == "Banana"]
    assert bananas and all(n["name"] == "Banane" for n in bananas)
    assert {n["closeness_text"] for n in a["similar"]} <= {"très proche", "proche", "assez proche", "peu ressemblant"}
    shown = {n["collection"]["dataset"] for n in a["similar"]}
    assert {x["dataset"] for x in a["attributions"]} <= shown | {s["dataset"] for s in a["species"]["sources"]}
    assert "GroceryStore" in {x["dataset"] for x in a["attributions"]}
    assert all("Photos proches" in x["text"] or "Informations" in x["text"] or "Descriptions" in x["text"]
               for x in a["attributions"])  # fmt: skip


def test_a_carton_is_a_packaged_product_with_no_species_description_in_both_languages(shop):
    en = identify(shop.url, val_photo("Packages/Juice/Bravo-Apple-Juice", 0), "en")
    assert en["not_sure"] and en["predicted"] == "(not produce)"
    assert en["why"]["reason"] == "not a fruit or vegetable"
    assert "packaged product" in en["why"]["text"] and en["why"]["next_step"]
    assert en["species"]["description"] is None and en["species"]["facts"] == [] and en["species"]["sources"] == []
    assert "GroceryStore" not in {s["dataset"] for s in en["attributions"] if "description" in s["text"].lower()}
    fr = identify(shop.url, val_photo("Packages/Juice/Bravo-Apple-Juice", 0), "fr")
    assert "produit emballé" in fr["why"]["text"] and "emballage" in fr["why"]["next_step"]


def test_the_species_information_says_how_it_is_eaten_and_kept_from_its_source_not_the_photo_session(shop):
    r = httpx.get(f"{shop.url}/api/v1/species/Asparagus?lang=fr", timeout=30).json()["species"]
    facts = {f["fact"]: f["value"] for f in r["facts"]}
    assert "cru" in facts["eaten"] and "cuit" in facts["eaten"] and "au réfrigérateur" in facts["stored"]
    assert {f["label"] for f in r["facts"]} == {"Se mange", "Se conserve"}
    assert r["sources"][0]["dataset"] == "GroceryStore" and "licence MIT" in r["sources"][0]["text"]
    banana = httpx.get(f"{shop.url}/api/v1/species/Banana?lang=en", timeout=30).json()["species"]
    keys = {x["key"] for x in banana["attributes"]}
    assert "TYPE" in keys and not keys & {"PURCHASED", "PROCESSED", "SKIN ROUGHNESS", "SIZE"}


def test_errors_say_what_went_wrong_in_the_request_language(shop):
    r = httpx.post(
        f"{shop.url}/api/v1/identify",
        files={"photo": ("notes.jpg", b"not a photo", "image/jpeg")},
        headers={"Accept-Language": "fr-FR,fr;q=0.9"},
        timeout=30,
    )
    assert r.status_code == 422 and r.json()["reason"] == "not an image"
    assert r.json()["message"].startswith("Ce fichier n'est pas une image")


def test_every_not_sure_says_which_of_three_reasons_with_a_next_step():
    names = Names.builtin()
    carton = Prediction([("(not produce)", 0.99), ("Apple", 0.01)], True, "not a fruit or vegetable", 0.1, None, "x")
    novel = Prediction([("Banana", 0.5), ("Kiwi", 0.5)], True, "unlike the training images", 0.9, None, "Banana")
    low = Prediction([("Apple Braeburn", 0.5), ("Apple Pink Lady", 0.4), ("Kiwi", 0.1)], True, "low confidence", 0.1)
    family = Prediction([("Apple Braeburn", 0.5), ("Apple Pink Lady", 0.45), ("Kiwi", 0.05)], False, None, 0.1,
                        "family", "Apple", 0.95)  # fmt: skip
    sure = Prediction([("Kiwi", 0.99)], False, None, 0.1, "species", "Kiwi", 0.99)
    assert why(sure, names, "en") is None
    assert "packaged product" in why(carton, names, "en")["text"]
    assert why(novel, names, "fr")["next_step"] == "Photographiez un seul fruit, de près, bien éclairé."
    w = why(low, names, "fr")
    assert w["reason"] == "low confidence" and w["candidates"] == ["Pomme Braeburn", "Pomme Pink Lady"]
    assert w["text"] == "Hésite entre Pomme Braeburn et Pomme Pink Lady."
    f = why(family, names, "en")
    assert f["reason"] == "family" and f["family"] == "Apple" and "Sure it is Apple" in f["text"]
    assert closeness(0.9) == "very similar" and closeness(0.0) == "not much alike"
    assert closeness(0.75, reduced=True) == "similar" and closeness(0.75) == "very similar"  # the scales differ


def test_facts_are_read_only_where_the_description_says_so():
    never = "Store in room temperature or cool, never in a refrigerator."
    assert dict(facts_of(never))["stored"] == [
        {"en": "never in the fridge", "fr": "jamais au réfrigérateur"},
        {"en": "somewhere cool", "fr": "au frais"},
        {"en": "at room temperature", "fr": "à température ambiante"},
    ]
    assert facts_of("Garlic has unique flavor and smell.") == []


# -- the page --------------------------------------------------------------------------------------


def visible_words(page) -> list[str]:
    text = page.evaluate("document.body.innerText")
    return re.findall(r"[A-Za-zÀ-ÿ'’-]+", text)


def test_the_whole_page_in_french_on_a_phone_answer_first_no_english_and_french_numbers(browser, shop):
    context = browser.new_context(**PHONE, locale="fr-FR")
    page = context.new_page()
    page.goto(shop.url + "/")
    page.set_input_files("#choose", str(val_photo("Fruit/Banana", 1)))
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    page.wait_for_function("() => document.querySelectorAll('#similar li').length === 8", timeout=30_000)
    box = page.locator("#confidence").bounding_box()
    assert box["y"] + box["height"] <= 844, box  # the answer in the first screen
    english = [w for w in visible_words(page) if w.lower() in ENGLISH and w.lower() not in PROPER]
    assert not english, english
    text = page.inner_text("body")
    assert not re.search(r"\d\.\d\s?%", text) and re.search(
        r"\d(,\d)?[\u202f\xa0]%", text
    )  # "0,4 %", never "0.4%" (ICU: a narrow or plain no-break space)
    assert "Banane" in page.inner_text("#similar") or "Banane" in page.inner_text("#top5")
    assert "GroceryStore" in page.inner_text("#similar") and "licence MIT" in page.inner_text("#similar")
    options = page.eval_on_selector_all("#species-names option", "os => os.map(o => o.value)")
    assert "Banane" in options and "Banana" not in options  # the feedback's names too
    # switching language re-renders what is on screen
    page.click("#lang-en")
    page.wait_for_function("() => document.querySelector('#top5').innerText.includes('Banana')", timeout=30_000)
    assert "Banane" not in page.inner_text("#result") and "shop photos" in page.inner_text("#similar")
    page.click("#lang-fr")
    page.wait_for_function("() => document.querySelector('#top5').innerText.includes('Banane')", timeout=30_000)
    assert not [w for w in visible_words(page) if w.lower() in ENGLISH and w.lower() not in PROPER]
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    context.close()


def test_a_carton_on_the_page_says_why_and_what_to_do_and_shows_no_description(browser, shop):
    page = browser.new_page(**PHONE)
    page.goto(shop.url + "/?lang=en")
    page.evaluate("localStorage.setItem('fruitlens-lang', 'en')")
    page.reload()
    page.set_input_files("#choose", str(val_photo("Packages/Juice/Bravo-Apple-Juice", 1)))
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    assert page.inner_text("#verdict") == "Not sure"
    assert page.is_visible("#why") and "packaged product" in page.inner_text("#why-text")
    assert page.inner_text("#why-next").startswith("Photograph the fruit or vegetable itself")
    assert not page.is_visible("#about")
    assert "Not a fruit or vegetable" in page.inner_text("#confidence")
    page.close()


def test_more_than_five_photos_says_so_and_answers_are_kept_in_this_browser_only(browser, shop, tmp_path):
    page = browser.new_page(**PHONE)
    page.goto(shop.url + "/")
    page.evaluate("localStorage.setItem('fruitlens-lang', 'en')")
    page.reload()
    sent = []
    page.on("request", lambda r: sent.append((r.url, r.post_data_buffer or b"")))
    files = [str(val_photo("Fruit/Kiwi", i)) for i in range(4)] + [str(val_photo("Fruit/Banana", i)) for i in range(3)]
    page.set_input_files("#choose", files)
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    assert page.locator("#thumbs li").count() == 5
    assert "first 5 are used, 2 left out" in page.inner_text("#status")
    assert "5 photos" in page.inner_text("#combined")
    page.wait_for_function("() => JSON.parse(localStorage.getItem('fruitlens-history') || '[]').length === 1")
    page.reload()
    page.wait_for_selector("#history-box:not([hidden])", timeout=10_000)
    assert page.locator("#history li").count() == 1 and "Kiwi" in page.inner_text("#history")
    page.click("#history-clear")
    assert not page.is_visible("#history-box")
    assert page.evaluate("localStorage.getItem('fruitlens-history')") is None
    assert not any(b"fruitlens-history" in body or b"data:image" in body for _, body in sent)
    page.close()


def test_the_page_is_installable_with_a_manifest_icons_a_favicon_and_no_missing_file(browser, shop):
    from PIL import Image

    page = browser.new_page(**PHONE)
    failed = []
    page.on("response", lambda r: failed.append((r.status, r.url)) if r.status >= 400 else None)
    page.goto(shop.url + "/")
    page.wait_for_load_state("networkidle")
    assert not failed, failed
    manifest = page.request.get(shop.url + page.get_attribute("link[rel=manifest]", "href"))
    assert manifest.ok and manifest.headers["content-type"].startswith("application/manifest+json")
    m = json.loads(manifest.body())
    assert m["display"] == "standalone" and m["start_url"] == "/"
    for icon in m["icons"]:
        r = page.request.get(shop.url + icon["src"])
        assert r.ok, icon
        if icon["type"] == "image/png":
            assert Image.open(io.BytesIO(r.body())).size == tuple(int(x) for x in icon["sizes"].split("x"))
    fav = page.request.get(shop.url + "/favicon.ico")
    assert fav.ok and Image.open(io.BytesIO(fav.body())).format == "ICO"
    # percentages as the language writes them, and never 100% short of certainty
    assert page.evaluate("lang = 'en', pct(0.996)") == "99.6%"
    assert page.evaluate("lang = 'fr', pct(0.996)") in ("99,6\u202f%", "99,6\xa0%")  # the space by ICU's version
    assert page.evaluate("lang = 'en', pct(0.9996)") == ">99.9%"
    page.close()


def test_with_require_key_the_page_asks_for_the_key_and_sends_it(browser, shop_built, tmp_path):
    from fruitlens.serve.limits import add_key

    keys = tmp_path / "keys.txt"
    key = add_key(str(keys), "shop")
    s = shop_server(shop_built, tmp_path / "serve.log", "--api-keys", str(keys), "--require-key")
    try:
        page = browser.new_page(**PHONE)
        page.goto(s.url + "/")
        page.evaluate("localStorage.setItem('fruitlens-lang', 'en')")
        page.reload()
        page.wait_for_selector("#key-box:not([hidden])", timeout=10_000)
        page.set_input_files("#choose", str(val_photo("Fruit/Kiwi", 0)))
        page.wait_for_selector(".status.error", timeout=30_000)
        assert "access key" in page.inner_text("#status")
        page.fill("#key", key)
        page.dispatch_event("#key", "change")
        page.wait_for_selector("#result:not([hidden])", timeout=60_000)
        assert page.evaluate("localStorage.getItem('fruitlens-key')") == key
        page.close()
    finally:
        s.stop()


def test_index_takes_several_collections_and_saves_a_reduced_projection(shop_built):
    import subprocess
    import sys

    from fruitlens.engine.model import PortableModel
    from fruitlens.serve.saved_index import SavedIndex
    from fruitlens.storage.dataset import Dataset

    root = shop_built
    r = subprocess.run(
        [sys.executable, "-m", "fruitlens", "index", str(root / "shop"), str(root / "turntable"), "--model",
         str(root / "model")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    reports = json.loads(r.stdout)
    assert [x["dim"] for x in reports] == [256, 256]  # the model takes 1,992 values
    model = PortableModel.load(Location.of(str(root / "model")))
    saved = SavedIndex.open(Location.of(str(root / "shop")), model)
    row = Dataset.at(Location.of(str(root / "shop" / "embeddings"))).table(["path", "embedding"]).slice(0, 1)
    x = model.inputs(row.column("embedding").to_pylist()[0])
    found = saved.search(x, 3)
    assert found[0].entry.path == row.column("path")[0].as_py() and found[0].similarity > 0.99
