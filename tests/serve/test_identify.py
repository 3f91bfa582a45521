"""`POST /api/v1/identify` on the real service: real photos, one or several, the answer and its
languages, the same answers as `fruitlens predict`, hostile uploads, concurrent requests."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys

import httpx
import pytest
from conftest import MODELS

from fruitlens.serve.index import image_id

from .support import CLASSES, photo_of, png_header_only, post_photo, post_photos, tiff


def test_identify_a_real_photo_species_information_and_similar_images(client, built):
    r = post_photo(client, photo_of("Apple Braeburn").read_bytes())
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["ok"] is True and len(a["top5"]) == 5 and a["predicted"] == a["top5"][0]["label"]
    assert a["predicted"] == "Apple Braeburn"
    assert isinstance(a["not_sure"], bool) and a["why_not_sure"] in (
        None,
        "low confidence",
        "unlike the training images",
    )
    assert a["species"]["name"] == "Apple Braeburn" and a["species"]["metadata_class"] == "Apple Braeburn 1"
    attrs = {x["key"]: x["value"] for x in a["species"]["attributes"]}
    assert attrs["TYPE"] == "Fruit" and "SIZE" not in attrs  # the species', not the photographed specimen's
    assert a["attribution"]["author"] == "Mihai Oltean"
    assert a["attribution"]["license_url"] == "https://creativecommons.org/licenses/by-sa/4.0/"
    sims = a["similar"]
    assert len(sims) == 8 and [s["similarity"] for s in sims] == sorted((s["similarity"] for s in sims), reverse=True)
    assert sims[0]["label"] == "Apple Braeburn" and 0.5 < sims[0]["similarity"] <= 1.0 + 1e-6
    indexed = {image_id(str(p)): p for p in (built / "images").rglob("*.jpg")}
    for s in sims[:3]:
        img = client.get(s["url"])
        assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
        assert img.content == indexed[s["id"]].read_bytes()


def test_serve_and_predict_agree_on_the_same_images(client, built):
    photos = [photo_of(c) for c in ("Banana", "Kiwi", "Redcurrant")]
    env = {**os.environ, "FRUITLENS_MODEL_DIR": str(MODELS)}
    res = subprocess.run(
        [sys.executable, "-m", "fruitlens", "predict", "--model", str(built / "model"), *map(str, photos), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    for p, expected in zip(photos, json.loads(res.stdout)):
        got = post_photo(client, p.read_bytes()).json()
        assert got["predicted"] == expected["predicted"] and got["not_sure"] == expected["not_sure"]
        assert got["why_not_sure"] == expected["why_not_sure"]
        assert [t["label"] for t in got["top5"]] == [t["label"] for t in expected["top5"]]
        for g, e in zip(got["top5"], expected["top5"]):
            assert g["probability"] == pytest.approx(e["probability"], abs=1e-6)
        assert got["novelty"] == pytest.approx(expected["novelty"], abs=1e-6)


def test_hostile_uploads_get_a_4xx_with_one_line_and_the_service_keeps_serving(client, server):
    jpeg = photo_of("Banana").read_bytes()
    cases = {
        "empty": (post_photo(client, b""), 422, "empty"),
        "truncated": (post_photo(client, jpeg[: len(jpeg) // 2]), 422, "truncated"),
        "not an image": (post_photo(client, b"hello, I am text" * 10, "a.jpg"), 422, "not an image"),
        "unknown format (TIFF)": (post_photo(client, tiff()), 422, "not an image"),
        "decompression bomb": (
            post_photo(client, png_header_only(20_000, 20_000), "bomb.png", "image/png"),
            422,
            "decompression bomb",
        ),
        "too large": (post_photo(client, jpeg + b"\0" * (11 * 1024 * 1024)), 413, "too large"),
        "too large, chunked": (
            client.post(
                "/api/v1/identify",
                content=iter([b"x" * 1024 * 1024] * 52),  # > 5 photos
                headers={"content-type": "multipart/form-data; boundary=zz"},
            ),
            413,
            "too large",
        ),
        "missing field": (
            client.post("/api/v1/identify", files={"image": ("a.jpg", jpeg, "image/jpeg")}),
            422,
            "invalid request",
        ),
        "no file at all": (
            client.post("/api/v1/identify", data={"photo": "not a file"}),
            415,
            "unsupported media type",
        ),
        "wrong content type": (
            client.post("/api/v1/identify", content=jpeg, headers={"content-type": "image/jpeg"}),
            415,
            "unsupported media type",
        ),
        "json body": (client.post("/api/v1/identify", json={"photo": "x"}), 415, "unsupported media type"),
        "text part": (post_photo(client, jpeg, "a.txt", "text/plain"), 415, "unsupported media type"),
        "broken multipart": (
            client.post(
                "/api/v1/identify",
                content=b"--zz\r\nbroken",
                headers={"content-type": "multipart/form-data; boundary=zz"},
            ),
            (400, 422),
            None,
        ),
        "bad k": (post_photo(client, jpeg, params={"k": "-3"}), 422, "invalid request"),
    }
    for name, (r, status, reason) in cases.items():
        assert r.status_code in (status if isinstance(status, tuple) else (status,)), (name, r.status_code, r.text)
        body = r.json()
        assert body["ok"] is False and isinstance(body["detail"], str) and "\n" not in r.text.strip(), (name, r.text)
        if reason:
            assert body["reason"] == reason, (name, body)
    assert server.proc.poll() is None
    assert client.get("/api/v1/health").status_code == 200
    assert post_photo(client, jpeg).json()["ok"] is True


def test_concurrent_requests_share_one_model_and_get_the_same_answers(client, server):
    photos = [photo_of(c).read_bytes() for c in CLASSES]
    expected = {i: post_photo(client, p).json()["top5"] for i, p in enumerate(photos)}

    def one(i):
        with httpx.Client(base_url=server.url, timeout=60) as c:
            return i % len(photos), post_photo(c, photos[i % len(photos)]).json()

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(one, range(18)))
    for i, a in answers:
        assert a["ok"] and a["top5"] == expected[i]


def test_several_photos_of_one_fruit_get_one_answer(client):
    one = post_photo(client, photo_of("Kiwi").read_bytes()).json()
    two = post_photos(client, [photo_of("Kiwi").read_bytes(), photo_of("Kiwi", 1).read_bytes()]).json()
    assert two["ok"] and len(two["photos"]) == 2 and two["combined"].startswith("the photos' probabilities multiplied")
    assert len(one["photos"]) == 1 and one["combined"] == "one photo"
    alone = [p["probability"] for p in two["photos"]]
    assert two["predicted"] == "Kiwi"
    if [p["predicted"] for p in two["photos"]] == ["Kiwi", "Kiwi"]:  # two photos agreeing: surer than either
        assert two["probability"] >= max(alone) - 1e-6
    too_many = post_photos(client, [photo_of("Kiwi").read_bytes()] * 6)
    assert too_many.status_code == 422 and "1 to 5 photos" in too_many.json()["detail"]
    bad = post_photos(client, [photo_of("Kiwi").read_bytes(), b"not an image at all"])
    assert bad.status_code == 422 and bad.json()["reason"] == "not an image" and "photo 2" in bad.json()["detail"]


def test_names_and_information_in_french_or_english(client):
    jpeg = photo_of("Banana").read_bytes()
    fr = post_photo(client, jpeg, params={"lang": "fr"}).json()
    assert fr["lang"] == "fr" and fr["species"]["display_name"] == "Banane" and fr["species"]["family_name"] == "Banane"
    assert {"Type": "Fruit"}.items() <= {a["attribute"]: a["value"] for a in fr["species"]["attributes"]}.items()
    assert any(t["name"] == "Banane" for t in fr["top5"])
    by_header = post_photo(client, jpeg, headers={"Accept-Language": "de-DE, fr;q=0.8, en;q=0.5"}).json()
    assert by_header["lang"] == "fr"
    en = post_photo(client, jpeg, params={"lang": "xx"}, headers={"Accept-Language": "es"}).json()
    assert en["lang"] == "en" and en["species"]["display_name"] == "Banana"
    listed = client.get("/api/v1/species", params={"lang": "fr"}).json()
    assert listed["lang"] == "fr" and {s["display_name"] for s in listed["species"]} >= {"Banane", "Kiwi", "Citron"}
