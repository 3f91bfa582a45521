"""`fruitlens serve`: the real CLI started as a subprocess on loopback, called over HTTP (httpx, raw
sockets), fuzzed from its own OpenAPI schema (schemathesis), and used through its page by a real
headless browser (Debian's chromium driven by Playwright). Real images, the real backbone, a small
real model trained on Spark as in test_engine.py."""

from __future__ import annotations

import concurrent.futures
import http.client
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import httpx
import pytest
from conftest import MODELS, SAMPLE, SHARED, needs_shared
from local_cluster import free_port
from PIL import Image

from fruitlens import FruitlensError
from fruitlens.config import FeaturizeConfig, SparkConfig, TrainConfig
from fruitlens.engine.model import PortableModel
from fruitlens.jobs import run_featurize, run_train
from fruitlens.serve.index import NeighbourIndex, image_id
from fruitlens.serve.metadata import Catalog, match_class, parse_dictionary, parse_info
from fruitlens.storage.location import Location

META = SHARED / "data" / "fruits-360-meta"
GROCERY = SHARED / "data" / "grocerystore"
CHROMIUM = "/usr/bin/chromium"
# 2019 names: exact ("Tomato 1"), "<name> 1" ("Apple Braeburn"), an alias ("Redcurrant" -> "Currant red 1");
# Lemon's metadata is removed from the test's copy of the metadata folder: a class without information.
CLASSES = ["Apple Braeburn", "Banana", "Kiwi", "Lemon", "Redcurrant", "Tomato 1"]
NO_META = "Lemon"
SPARK = SparkConfig()


# -- no server needed ------------------------------------------------------------------------------
def test_dictionary_and_info_decoded_to_the_dictionarys_words():
    d = parse_dictionary("// Version 1\nHARDNESS[3 values]=SOFT (0), MEDIUM (1) , HARD(2)\n"
                         "MATURITY[3 values]=UNRIPE (0), RIPEN (1) or OVERRIPE (2)\n"
                         "SIZE[5 values]=SMALL (0), SMALL-MEDIUM (1), MEDIUM (2), MEDIUM-HUGE (3), HUGE (4)")
    assert d == {"HARDNESS": {0: "SOFT", 1: "MEDIUM", 2: "HARD"}, "MATURITY": {0: "UNRIPE", 1: "RIPEN", 2: "OVERRIPE"},
                 "SIZE": {0: "SMALL", 1: "SMALL-MEDIUM", 2: "MEDIUM", 3: "MEDIUM-HUGE", 4: "HUGE"}}
    info = parse_info("VERSION=2021.09.10.0\nSIZE[5]=2\nHARDNESS[3]=2\nMATURITY[3]=7\n", d)
    assert info == [{"attribute": "SIZE", "value": "MEDIUM", "code": 2},
                    {"attribute": "HARDNESS", "value": "HARD", "code": 2},
                    {"attribute": "MATURITY", "value": "unknown code 7", "code": 7}]


def test_class_names_mapped_exact_then_normalised_then_numbered_then_aliases():
    available = ["Apple Braeburn 1", "apple golden 1", "Tomato 1", "Tomato 10", "Currant red 1", "Nut 2", "Nut  Forest 1"]
    assert match_class("Tomato 1", available) == "Tomato 1"
    assert match_class("Apple Golden 1", available) == "apple golden 1"
    assert match_class("Apple  Braeburn", available) == "Apple Braeburn 1"
    assert match_class("Nut", available) == "Nut 2"
    assert match_class("Nut Forest", available) == "Nut  Forest 1"
    assert match_class("Redcurrant", available) == "Currant red 1"
    assert match_class("Durian", available) is None


def test_every_class_of_the_sample_has_metadata():
    needs_shared()
    classes = sorted(p.name for p in (SAMPLE / "Training").iterdir())
    catalog = Catalog.load([Location.of(str(META))], classes)
    assert catalog.missing == []
    size = {a["attribute"]: a["value"] for a in catalog.get("Apple Braeburn").attributes}["SIZE"]
    assert catalog.get("Apple Braeburn").metadata_class == "Apple Braeburn 1" and size == "MEDIUM"


def test_the_builtin_catalogues_species_find_information_in_both_sources_and_speak_french():
    needs_shared()
    from fruitlens.catalogue import Catalogue, Names

    catalogue = Catalogue.load("builtin")
    families = catalogue.families()
    species = sorted(families)
    catalog = Catalog.load([Location.of(str(META)), Location.of(str(GROCERY))], species,
                           [families[s] for s in species], catalogue)
    golden = catalog.get("Apple Golden Delicious")  # Fruits-360's "Apple Golden 1" and GroceryStore's "Golden-Delicious"
    assert golden.metadata_class.startswith("Apple Golden") and "Golden Delicious" in golden.description
    assert {s["dataset"] for s in golden.sources} == {"Fruits-360", "GroceryStore"}
    fr = golden.to_json(Names.builtin(), "fr")
    assert fr["display_name"] == "Pomme Golden" and fr["family_name"] == "Pomme"
    assert {"Taille", "Type"} <= {a["attribute"] for a in fr["attributes"]} and fr["note"] == "description en anglais"
    assert {a["value"] for a in fr["attributes"] if a["attribute"] == "Type"} == {"Fruit"}
    leek = catalog.get("Leek")  # GroceryStore only
    assert leek.description and not leek.attributes and leek.sources[0]["license"] == "MIT"
    assert len(catalog.missing) < len(species) / 4


def test_bad_info_folder_is_one_line(tmp_path):
    with pytest.raises(FruitlensError, match="neither the Fruits-360 metadata folder"):
        Catalog.load([Location.of(str(tmp_path))], ["Banana"])


# -- a small real model and index --------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    """6 classes x (16 train + 4 test) real images, featurized and trained once (lr_pca)."""
    needs_shared()
    root = tmp_path_factory.mktemp("serve")
    for split, step, count in (("Training", 5, 16), ("Test", 7, 4)):
        for name in CLASSES:
            (root / "images" / split / name).mkdir(parents=True)
            for f in sorted((SAMPLE / split / name).iterdir())[::step][:count]:
                shutil.copy(f, root / "images" / split / name / f.name)
    run_featurize(FeaturizeConfig(input=str(root / "images"), output=str(root / "index")), SPARK, spark=spark, quiet=True)
    run_train(TrainConfig(input=str(root / "index"), output=str(root / "model"), models=("lr_pca",), max_iter=100),
              SPARK, spark=spark, quiet=True)
    shutil.copytree(META, root / "meta", ignore=shutil.ignore_patterns("*.pdf"))
    shutil.rmtree(root / "meta" / "Meta" / f"{NO_META} 1")
    return root


def serve_cmd(root: Path, port: int, *extra: str, model=None, index=None, info=None) -> list[str]:
    return [sys.executable, "-m", "fruitlens", "serve", "--model", model or str(root / "model"),
            "--index", index or str(root / "index"), "--info", info or str(root / "meta"),
            "--host", "127.0.0.1", "--port", str(port), *extra]


FEEDBACK_ARGS = ("--feedback", "{root}/feedback", "--rate-limit", "100000")  # the main server: no limit in the way


class Server:
    def __init__(self, root: Path, log: Path, *extra: str, **where):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**os.environ, "FRUITLENS_MODEL_DIR": str(MODELS)}
        self.proc = subprocess.Popen(serve_cmd(root, self.port, *extra, **where), stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                     env=env)
        deadline = time.time() + 120
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"fruitlens serve exited {self.proc.returncode}: {log.read_text()}")
            try:
                if httpx.get(self.url + "/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise AssertionError(f"fruitlens serve did not start: {log.read_text()}")
            time.sleep(0.2)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def server(built, tmp_path_factory):
    s = Server(built, tmp_path_factory.mktemp("serve-log") / "serve.log",
               *(a.format(root=built) for a in FEEDBACK_ARGS))
    yield s
    alive = s.proc.poll() is None
    s.stop()
    assert alive, "the service died during the tests"


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def photo_of(name: str, i: int = 0) -> Path:
    """A Test photo of a class that is not among the copies indexed (those are 0, 7, 14, 21)."""
    assert 0 <= i <= 2
    return sorted((SAMPLE / "Test" / name).iterdir())[1 + 2 * i]


def post_photo(client, data: bytes, filename="photo.jpg", ctype="image/jpeg", **kw):
    return client.post("/api/v1/identify", files={"photo": (filename, data, ctype)}, **kw)


# -- the API -------------------------------------------------------------------------------------------
def test_startup_says_which_classes_have_no_metadata(server):
    log = server.log.read_text()
    assert f"none for: {NO_META}" in log and "5 of 6 species" in log
    assert "index: 120 images" in log and "exact search" in log
    assert "feedback: kept with consent in" in log


def test_identify_a_real_photo_species_information_and_similar_images(client, built):
    r = post_photo(client, photo_of("Apple Braeburn").read_bytes())
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["ok"] is True and len(a["top5"]) == 5 and a["predicted"] == a["top5"][0]["label"]
    assert a["predicted"] == "Apple Braeburn"
    assert isinstance(a["not_sure"], bool) and a["why_not_sure"] in (None, "low confidence", "unlike the training images")
    assert a["species"]["name"] == "Apple Braeburn" and a["species"]["metadata_class"] == "Apple Braeburn 1"
    attrs = {x["attribute"]: x["value"] for x in a["species"]["attributes"]}
    assert attrs["SIZE"] == "MEDIUM" and attrs["TYPE"] == "FRUIT"
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


def test_a_class_without_metadata_says_so(client):
    r = client.get(f"/api/v1/species/{NO_META}")
    assert r.status_code == 200
    s = r.json()["species"]
    assert s["has_information"] is False and s["attributes"] == [] and "no information" in s["note"]
    assert r.json()["attribution"]["license"] == "CC BY-SA 4.0"


def test_species_list_one_species_health_and_schema(client):
    r = client.get("/api/v1/species").json()
    assert r["count"] == 6 and {s["name"] for s in r["species"]} == set(CLASSES)
    by_name = {s["name"]: s for s in r["species"]}
    assert by_name["Redcurrant"]["metadata_class"] == "Currant red 1" and not by_name[NO_META]["has_information"]
    one = client.get(by_name["Tomato 1"]["url"]).json()["species"]
    assert one["metadata_class"] == "Tomato 1" and one["attributes"]
    missing = client.get("/api/v1/species/Durian")
    assert missing.status_code == 404 and missing.json() == {"ok": False, "reason": "not found",
                                                             "detail": "no such species (see /api/v1/species)"}
    h = client.get("/api/v1/health").json()
    assert h["status"] == "ok" and h["classes"] == 6 and h["indexed_images"] == 120
    schema = client.get("/api/v1/openapi.json").json()
    assert {"/api/v1/identify", "/api/v1/species", "/api/v1/species/{name}", "/api/v1/images/{image_id}",
            "/api/v1/health"} <= set(schema["paths"])


def test_serve_and_predict_agree_on_the_same_images(client, built):
    photos = [photo_of(c) for c in ("Banana", "Kiwi", "Redcurrant")]
    env = {**os.environ, "FRUITLENS_MODEL_DIR": str(MODELS)}
    res = subprocess.run([sys.executable, "-m", "fruitlens", "predict", "--model", str(built / "model"),
                          *map(str, photos), "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    for p, expected in zip(photos, json.loads(res.stdout)):
        got = post_photo(client, p.read_bytes()).json()
        assert got["predicted"] == expected["predicted"] and got["not_sure"] == expected["not_sure"]
        assert got["why_not_sure"] == expected["why_not_sure"]
        assert [t["label"] for t in got["top5"]] == [t["label"] for t in expected["top5"]]
        for g, e in zip(got["top5"], expected["top5"]):
            assert g["probability"] == pytest.approx(e["probability"], abs=1e-6)
        assert got["novelty"] == pytest.approx(expected["novelty"], abs=1e-6)


def png_header_only(width: int, height: int) -> bytes:
    """A complete, tiny PNG that declares width x height pixels: a decompression bomb."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_hostile_uploads_get_a_4xx_with_one_line_and_the_service_keeps_serving(client, server):
    jpeg = photo_of("Banana").read_bytes()
    cases = {
        "empty": (post_photo(client, b""), 422, "empty"),
        "truncated": (post_photo(client, jpeg[: len(jpeg) // 2]), 422, "truncated"),
        "not an image": (post_photo(client, b"hello, I am text" * 10, "a.jpg"), 422, "not an image"),
        "unknown format (TIFF)": (post_photo(client, _tiff()), 422, "not an image"),
        "decompression bomb": (post_photo(client, png_header_only(20_000, 20_000), "bomb.png", "image/png"), 422,
                               "decompression bomb"),
        "too large": (post_photo(client, jpeg + b"\0" * (11 * 1024 * 1024)), 413, "too large"),
        "too large, chunked": (client.post("/api/v1/identify", content=iter([b"x" * 1024 * 1024] * 52),  # > 5 photos
                                           headers={"content-type": "multipart/form-data; boundary=zz"}), 413, "too large"),
        "missing field": (client.post("/api/v1/identify", files={"image": ("a.jpg", jpeg, "image/jpeg")}), 422,
                          "invalid request"),
        "no file at all": (client.post("/api/v1/identify", data={"photo": "not a file"}), 415, "unsupported media type"),
        "wrong content type": (client.post("/api/v1/identify", content=jpeg, headers={"content-type": "image/jpeg"}),
                               415, "unsupported media type"),
        "json body": (client.post("/api/v1/identify", json={"photo": "x"}), 415, "unsupported media type"),
        "text part": (post_photo(client, jpeg, "a.txt", "text/plain"), 415, "unsupported media type"),
        "broken multipart": (client.post("/api/v1/identify", content=b"--zz\r\nbroken",
                                         headers={"content-type": "multipart/form-data; boundary=zz"}), (400, 422), None),
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


def _tiff() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="TIFF")
    return buf.getvalue()


def test_images_only_by_id_path_traversal_gets_404_and_no_file_content(server, client, built):
    some_image = next((built / "images").rglob("*.jpg"))
    secret = built / "model" / "model.json"
    attempts = [
        "/api/v1/images/../../../../etc/passwd", "/api/v1/images/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/v1/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/api/v1/images/%252e%252e%252fetc%252fpasswd",
        "/api/v1/images//etc/passwd", "/api/v1/images/%2Fetc%2Fpasswd", "/api/v1/images/etc/passwd",
        "/api/v1/images/" + str(some_image), "/api/v1/images/" + httpx.URL(str(secret)).raw_path.decode().replace("/", "%2F"),
        "/api/v1/images/" + image_id(str(secret)), "/api/v1/images/0000000000000000", "/api/v1/images/..",
        "/static/../../../../etc/passwd", "/static/%2e%2e/%2e%2e/model.json", "/../../../../etc/passwd",
    ]
    forbidden = [b"root:", secret.read_bytes()[:40], some_image.read_bytes()[:64]]
    for path in attempts:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.putrequest("GET", path, skip_accept_encoding=True)  # sent exactly as written, not normalised
        conn.endheaders()
        res = conn.getresponse()
        body = res.read()
        conn.close()
        assert res.status == 404, (path, res.status, body[:200])
        assert not any(f in body for f in forbidden), path
    assert client.get("/api/v1/health").status_code == 200


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


def test_ann_option_finds_the_exact_neighbours_on_a_small_index(built):
    model = PortableModel.load_folder(str(built / "model"))
    exact = NeighbourIndex.load(Location.of(str(built / "index")), model)
    approx = NeighbourIndex.load(Location.of(str(built / "index")), model, ann=True)
    assert approx.kind.startswith("approximate") and exact.kind == "exact"
    hits = total = 0
    for i in range(0, len(exact), 10):
        q = exact.vectors[i]
        e = exact.search(q, 8)
        a = approx.search(q, 8)
        assert e[0].entry.id == exact.entries[i].id and e[0].similarity == pytest.approx(1.0, abs=1e-5)
        hits += len({n.entry.id for n in e} & {n.entry.id for n in a})
        total += 8
        assert [n.similarity for n in a] == sorted((n.similarity for n in a), reverse=True)
    assert hits / total >= 0.95


def test_index_made_with_other_embeddings_is_refused(built, tmp_path):
    model = PortableModel.load_folder(str(built / "model"))
    shutil.copytree(built / "index" / "embeddings", tmp_path / "idx" / "embeddings")
    manifest = json.loads((tmp_path / "idx" / "embeddings" / "_SUCCESS").read_text())
    manifest["params"]["model_sha256"] = "0" * 64
    (tmp_path / "idx" / "embeddings" / "_SUCCESS").write_text(json.dumps(manifest))
    with pytest.raises(FruitlensError, match="index's embeddings were made with"):
        NeighbourIndex.load(Location.of(str(tmp_path / "idx")), model)
    with pytest.raises(FruitlensError, match="no embeddings dataset"):
        NeighbourIndex.load(Location.of(str(tmp_path / "nothing")), model)


def test_model_index_info_and_images_on_s3_with_the_approximate_index(s3_server, built, tmp_path):
    """--model, --index and --info as s3:// (a real S3 API server on loopback, the standard AWS
    environment), the indexed images on S3 too (proxied by the service), and --ann."""
    import boto3
    import pyarrow as pa
    import pyarrow.parquet as pq

    client = boto3.client("s3")
    client.create_bucket(Bucket="serve-test")
    files = [built / "model" / n for n in ("model.json", "portable.npz")]
    files += [built / "meta" / "dictionary.txt", *(built / "meta" / "Meta").glob("*/info.txt")]
    for f in files:
        client.upload_file(str(f), "serve-test", f"app/{f.relative_to(built).as_posix()}")
    local_of = {}
    for f in (built / "index" / "embeddings").iterdir():  # the same index, its images on S3
        key = f"app/index/embeddings/{f.name}"
        if f.suffix != ".parquet":
            client.upload_file(str(f), "serve-test", key)
            continue
        table = pq.read_table(f)
        uris = []
        for p in table.column("path").to_pylist():
            rel = Path(p).relative_to(built / "images").as_posix()
            client.upload_file(p, "serve-test", f"app/images/{rel}")
            uris.append(f"s3://serve-test/app/images/{rel}")
            local_of[image_id(uris[-1])] = Path(p)
        table = table.set_column(table.schema.get_field_index("path"), "path", pa.array(uris, pa.string()))
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        client.put_object(Bucket="serve-test", Key=key, Body=sink.getvalue().to_pybytes())
    s = Server(built, tmp_path / "s3.log", "--ann", model="s3://serve-test/app/model",
               index="s3://serve-test/app/index", info="s3://serve-test/app/meta")
    try:
        log = s.log.read_text()
        assert "5 of 6 species" in log and "index: 120 images" in log and "approximate (usearch HNSW) search" in log
        with httpx.Client(base_url=s.url, timeout=60) as c:
            a = post_photo(c, photo_of("Tomato 1").read_bytes()).json()
            assert a["ok"] and a["species"]["metadata_class"] == "Tomato 1" and len(a["similar"]) == 8
            assert a["search"].startswith("approximate") and a["similar"][0]["label"] == "Tomato 1"
            for n in a["similar"][:2]:
                img = c.get(n["url"])
                assert img.status_code == 200 and img.content == local_of[n["id"]].read_bytes()
                assert img.headers["content-type"] == "image/jpeg"
            assert c.get("/api/v1/images/" + image_id("s3://serve-test/app/model/model.json")).status_code == 404
    finally:
        s.stop()


def test_a_taken_port_is_one_line_exit_2(built, server):
    cmd = serve_cmd(built, server.port)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "FRUITLENS_MODEL_DIR": str(MODELS)})
    assert res.returncode == 2 and f"cannot listen on 127.0.0.1:{server.port}" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("flag, value, message", [
    ("--model", "nowhere", "--model: no model folder at"),
    ("--info", "nowhere", "--info: no folder at"),
    ("--index", "nowhere", "--index: no folder at"),
])
def test_cli_mistakes_are_one_line_exit_2(built, flag, value, message, tmp_path):
    cmd = serve_cmd(built, free_port())
    cmd[cmd.index(flag) + 1] = str(tmp_path / value)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "FRUITLENS_MODEL_DIR": str(MODELS)})
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


# -- several photos, languages -------------------------------------------------------------------------
def post_photos(client, datas: list[bytes], **kw):
    return client.post("/api/v1/identify", files=[("photo", (f"p{i}.jpg", d, "image/jpeg")) for i, d in enumerate(datas)],
                       **kw)


def test_several_photos_of_one_fruit_get_one_answer(client):
    one = post_photo(client, photo_of("Kiwi").read_bytes()).json()
    two = post_photos(client, [photo_of("Kiwi").read_bytes(), photo_of("Kiwi", 1).read_bytes()]).json()
    assert two["ok"] and len(two["photos"]) == 2 and two["combined"].startswith("the photos' probabilities averaged")
    assert len(one["photos"]) == 1 and one["combined"] == "one photo"
    alone = [p["probability"] for p in two["photos"]]
    assert two["predicted"] == "Kiwi" and min(alone) - 1e-6 <= two["probability"] <= max(alone) + 1e-6
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


# -- feedback ------------------------------------------------------------------------------------------
def jpeg_with_gps() -> bytes:
    """A real photo carrying EXIF with a GPS position and a camera, as phones write them."""
    img = Image.open(photo_of("Banana"))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0110] = "Phone 12"  # Model
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)}  # GPS: Paris
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif, comment=b"secret note")
    return buf.getvalue()


def test_feedback_is_kept_only_with_consent_without_metadata_and_can_be_deleted(client, built):
    store = built / "feedback"
    photo = jpeg_with_gps()
    assert Image.open(io.BytesIO(photo)).getexif().get_ifd(0x8825)  # the upload has a GPS position
    no = client.post("/api/v1/feedback", data={"said": "Kiwi", "consent": "false"},
                     files={"photo": ("p.jpg", photo, "image/jpeg")})
    assert no.status_code == 200 and no.json()["stored"] is False and no.json()["receipt"] is None
    assert not list(store.rglob("*.jpg"))  # without consent nothing is stored
    yes = client.post("/api/v1/feedback", data={"said": "Kiwi", "consent": "true", "answered": "Banana"},
                      files={"photo": ("p.jpg", photo, "image/jpeg")}).json()
    assert yes["stored"] and yes["confirmed"] is True and yes["delete_url"] == f"/api/v1/feedback/{yes['receipt']}"
    kept = store / "train" / "Kiwi" / f"{yes['receipt']}.jpg"  # the layout featurize reads: label Kiwi, split train
    assert kept.is_file()
    clean = Image.open(kept)
    assert not clean.getexif() and "comment" not in clean.info and "icc_profile" not in clean.info
    assert b"PhoneMaker" not in kept.read_bytes() and b"secret note" not in kept.read_bytes()
    receipt = json.loads((store / "receipts" / f"{yes['receipt']}.json").read_text())
    assert receipt["said"] == "Kiwi" and receipt["answered"] == "Banana" and receipt["keep_until"] == yes["keep_until"]
    # free text, and a photo named by the id identify gave it
    ident = post_photo(client, photo_of("Lemon").read_bytes()).json()
    quince = client.post("/api/v1/feedback", data={"said": "a quince!", "consent": "yes",
                                                   "photo_id": ident["photos"][0]["id"]}).json()
    assert quince["stored"] and quince["confirmed"] is False
    assert (store / "unconfirmed" / "a quince" / f"{quince['receipt']}.jpg").is_file()
    # deletion by the receipt, once
    assert client.delete(yes["delete_url"]).json() == {"ok": True, "deleted": True}
    assert not kept.exists() and not (store / "receipts" / f"{yes['receipt']}.json").exists()
    assert client.delete(yes["delete_url"]).status_code == 404
    # hostile fields
    cases = [
        (dict(data={"said": "x" * 201, "consent": "true"}, files={"photo": ("p.jpg", photo, "image/jpeg")}), 422),
        (dict(data={"said": "\x00\x01", "consent": "true"}, files={"photo": ("p.jpg", photo, "image/jpeg")}), 422),
        (dict(data={"said": "Kiwi", "consent": "true", "photo_id": "../../etc/passwd"}), 422),
        (dict(data={"said": "Kiwi", "consent": "true", "photo_id": "0" * 32}), 404),
        (dict(data={"said": "Kiwi", "consent": "true"}), 422),
        (dict(data={"said": "Kiwi", "consent": "true"}, files={"photo": ("p.jpg", b"GIF89a-not really", "image/gif")}), 422),
        (dict(data={"said": "Kiwi", "consent": "maybe"}, files={"photo": ("p.jpg", photo, "image/jpeg")}), 422),
        (dict(data={"said": "../../../tmp/x", "consent": "true"}, files={"photo": ("p.jpg", photo, "image/jpeg")}), 200),
    ]
    for kwargs, status in cases:
        r = client.post("/api/v1/feedback", **kwargs)
        assert r.status_code == status, (kwargs.get("data"), r.status_code, r.text)
    assert not list((built.parent).glob("tmp/x*")) and not Path("/tmp/x").exists()
    assert {p.parent.name for p in (store / "unconfirmed").iterdir()} <= {"unconfirmed"}  # names stay inside
    for bad in ("0" * 31, "../../etc/passwd", "g" * 32, "0" * 32):
        assert client.delete(f"/api/v1/feedback/{bad}").status_code == 404


def test_feedback_past_its_retention_period_is_deleted(tmp_path):
    from datetime import datetime, timedelta, timezone

    from fruitlens.serve.feedback import FeedbackStore

    store = FeedbackStore(Location.of(str(tmp_path)), retention_days=30, species=["Kiwi"])
    old = store.store(photo_of("Kiwi").read_bytes(), "Kiwi", None)
    assert store.expire(datetime.now(timezone.utc) + timedelta(days=29)) == 0
    assert store.expire(datetime.now(timezone.utc) + timedelta(days=31)) == 1
    assert not list(tmp_path.rglob("*.jpg")) and not list(tmp_path.rglob("*.json"))
    assert old.keep_until.startswith((datetime.now(timezone.utc) + timedelta(days=30)).date().isoformat())


# -- keys, rate limits, capacity --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def limited_server(built, tmp_path_factory):
    from fruitlens.serve.limits import add_key

    folder = tmp_path_factory.mktemp("limits")
    keys = folder / "keys.txt"
    key = add_key(str(keys), "partner")
    assert key not in keys.read_text()  # only its hash is kept
    s = Server(built, folder / "serve.log", "--api-keys", str(keys), "--rate-limit", "3", "--key-rate-limit", "50",
               "--max-connections", "2")
    yield s, key
    s.stop()


def test_rate_limit_per_address_and_per_key_with_ratelimit_headers_and_429s(limited_server):
    server, key = limited_server
    jpeg = photo_of("Kiwi").read_bytes()
    with httpx.Client(base_url=server.url, timeout=60) as c:
        answers = [post_photo(c, jpeg) for _ in range(4)]
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
        assert [r.headers["RateLimit-Remaining"] for r in answers[:3]] == ["2", "1", "0"]
        assert answers[0].headers["RateLimit-Limit"] == "3" and int(answers[3].headers["Retry-After"]) >= 1
        assert answers[3].json()["reason"] == "too many requests"
        keyed = post_photo(c, jpeg, headers={"Authorization": f"Bearer {key}"})
        assert keyed.status_code == 200 and keyed.headers["RateLimit-Limit"] == "50"
        assert post_photo(c, jpeg, headers={"X-API-Key": key}).headers["RateLimit-Remaining"] == "48"
        wrong = post_photo(c, jpeg, headers={"X-API-Key": "fl_not-a-key"})
        assert wrong.status_code == 401 and wrong.json()["reason"] == "unauthorized"
        assert c.get("/api/v1/health").status_code == 200  # reading is not rate limited


def test_beyond_capacity_a_json_503_that_says_to_retry(limited_server):
    server, key = limited_server
    photos = [photo_of(c).read_bytes() for c in CLASSES[:5]]

    def one(_):
        with httpx.Client(base_url=server.url, timeout=120) as c:
            return post_photos(c, photos, headers={"X-API-Key": key})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(8)))
    busy = [r for r in answers if r.status_code == 503]
    assert busy and all(r.status_code in (200, 503) for r in answers)
    assert all(r.json()["reason"] == "busy" and r.headers["Retry-After"] == "1" for r in busy)
    assert server.proc.poll() is None


def test_keys_can_be_required(built, tmp_path):
    from fruitlens.serve.limits import add_key

    key = add_key(str(tmp_path / "keys.txt"), "app")
    s = Server(built, tmp_path / "serve.log", "--api-keys", str(tmp_path / "keys.txt"), "--require-key")
    try:
        with httpx.Client(base_url=s.url, timeout=60) as c:
            anonymous = post_photo(c, photo_of("Kiwi").read_bytes())
            assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"] == "Bearer"
            assert post_photo(c, photo_of("Kiwi").read_bytes(), headers={"X-API-Key": key}).status_code == 200
    finally:
        s.stop()
    bad = tmp_path / "bad.txt"
    bad.write_text("fl_a-key-written-in-clear partner\n")
    res = subprocess.run(serve_cmd(built, free_port(), "--api-keys", str(bad)), capture_output=True, text=True,
                         timeout=120, env={**os.environ, "FRUITLENS_MODEL_DIR": str(MODELS)})
    assert res.returncode == 2 and "holds keys' hashes, never keys" in res.stderr


# -- the saved index --------------------------------------------------------------------------------------
def test_a_saved_index_is_built_once_updated_incrementally_and_memory_mapped_by_serve(built, tmp_path):
    from fruitlens.serve.saved_index import SavedIndex, build

    out = tmp_path / "out"
    shutil.copytree(built / "index", out)
    model = PortableModel.load_folder(str(built / "model"))
    first = build(Location.of(str(out)), model)
    assert first["added"] == 120 and not first["incremental"]
    again = build(Location.of(str(out)), model)
    assert again["incremental"] and again["added"] == 0 and again["kept"] == 120
    exact = NeighbourIndex.load(Location.of(str(out)), model)
    saved = SavedIndex.open(Location.of(str(out)), model)
    hits = total = 0
    for i in range(0, len(exact), 7):
        want = {n.entry.id for n in exact.search(exact.vectors[i], 8)}
        got = saved.search(exact.vectors[i], 8)
        hits += len(want & {n.entry.id for n in got})
        total += 8
        assert got[0].entry.path == exact.entries[i].path and got[0].similarity == pytest.approx(1.0, abs=2e-3)
    assert hits / total >= 0.95
    assert saved.entry(exact.entries[3].id).path == exact.entries[3].path and saved.entry("0" * 16) is None
    s = Server(built, tmp_path / "serve.log", "--ann", index=str(out))
    try:
        assert "saved index memory-mapped" in s.log.read_text()
        with httpx.Client(base_url=s.url, timeout=60) as c:
            a = post_photo(c, photo_of("Tomato 1").read_bytes()).json()
            assert a["similar"][0]["label"] == "Tomato 1" and c.get(a["similar"][0]["url"]).status_code == 200
    finally:
        s.stop()


# -- property-based: the OpenAPI schema against the running service --------------------------------
def test_api_conforms_to_its_openapi_schema(server, built):
    """schemathesis draws requests from the service's own schema (positive, and negative where a
    parameter can be made invalid), a bounded number each; every answer must be declared and match."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    schema = schemathesis.openapi.from_url(server.url + "/api/v1/openapi.json")
    seen: dict[str, set] = {}
    for result in schema.get_all_operations():
        op = result.ok()
        name = f"{op.method.upper()} {op.path}"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=op.as_strategy(mode))
            @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                      derandomize=True)
            def run(case):
                seen.setdefault(name, set()).add(case.call_and_validate(checks=checks, timeout=60).status_code)

            try:
                run()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing to make invalid (no parameters, any string)
    # ... and the success answers, from real values
    jpeg = photo_of("Kiwi").read_bytes()
    ident = schema["/api/v1/identify"]["POST"].Case(body={"photo": [jpeg, jpeg]}, media_type="multipart/form-data",
                                                     query={"k": 3, "lang": "fr"}).call_and_validate(checks=checks)
    assert ident.status_code == 200 and len(ident.json()["similar"]) == 3
    image = ident.json()["similar"][0]["id"]
    assert schema["/api/v1/images/{image_id}"]["GET"].Case(path_parameters={"image_id": image}) \
        .call_and_validate(checks=checks).status_code == 200
    assert schema["/api/v1/species/{name}"]["GET"].Case(path_parameters={"name": "Apple Braeburn"}) \
        .call_and_validate(checks=checks).status_code == 200
    kept = schema["/api/v1/feedback"]["POST"].Case(
        body={"said": "Kiwi", "consent": True, "photo_id": ident.json()["photos"][0]["id"]},
        media_type="multipart/form-data").call_and_validate(checks=checks)
    assert kept.status_code == 200 and kept.json()["stored"]
    assert schema["/api/v1/feedback/{receipt}"]["DELETE"].Case(path_parameters={"receipt": kept.json()["receipt"]}) \
        .call_and_validate(checks=checks).status_code == 200
    assert set(seen) == {"POST /api/v1/identify", "GET /api/v1/species", "GET /api/v1/species/{name}",
                         "GET /api/v1/images/{image_id}", "GET /api/v1/health", "POST /api/v1/feedback",
                         "DELETE /api/v1/feedback/{receipt}"}
    assert server.proc.poll() is None


# -- the page in a real browser ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: scripts/test.sh installs it (apt-get install chromium)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        yield b
        b.close()


def test_page_on_a_phone_identifies_a_photo_shows_information_and_similar_images(browser, server, tmp_path):
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=1, is_mobile=True, has_touch=True)
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(server.url + "/")
    assert page.locator("#camera").get_attribute("capture") == "environment"
    assert page.locator("#camera").get_attribute("accept") == "image/*"
    photo = photo_of("Banana", 1)
    page.set_input_files("#choose", str(photo))
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)
    verdict = page.inner_text("#verdict")
    assert verdict in ("Banana", "Not sure")
    if verdict == "Not sure":
        assert "Banana" in page.inner_text("#confidence")
    else:
        assert "Confidence" in page.inner_text("#confidence")
    assert page.locator("#top5 li").count() == 5
    info = page.inner_text("#info")
    assert "Type" in info and "Fruit" in info
    page.wait_for_function("[...document.querySelectorAll('#similar img')].length === 8 && "
                           "[...document.querySelectorAll('#similar img')].every(i => i.complete && i.naturalWidth > 0)",
                           timeout=30_000)
    assert "Banana" in page.inner_text("#similar")
    assert "Mihai Oltean" in page.inner_text("footer") and "CC BY-SA 4.0" in page.inner_text("footer")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling on a phone
    shot = tmp_path / "phone.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("FRUITLENS_SCREENSHOT"):  # docs/serve-phone.png is made this way
        shutil.copy(shot, os.environ["FRUITLENS_SCREENSHOT"])
    assert all(u.startswith(server.url) or u.startswith("blob:") for u in requests), requests  # nothing from the internet

    # a photo that is no fruit: "not sure", said plainly; then a file that is no image: the reason
    coffee = tmp_path / "coffee.png"
    from importlib import resources

    coffee.write_bytes((resources.files("skimage") / "data" / "coffee.png").read_bytes())
    page.set_input_files("#choose", str(coffee))
    page.wait_for_function("document.querySelector('#verdict').textContent === 'Not sure'", timeout=30_000)
    assert page.is_visible("#why")
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    page.set_input_files("#choose", str(text))
    page.wait_for_selector(".status.error", timeout=30_000)
    assert "not an image" in page.inner_text("#status")
    page.close()


def test_page_in_french_with_several_photos_and_feedback_with_and_without_consent(browser, server, built, tmp_path):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                                  locale="fr-FR")
    page = context.new_page()
    page.goto(server.url + "/")
    assert page.get_attribute("html", "lang") == "fr" and page.inner_text("label[for=camera]") == "Prendre une photo"
    page.set_input_files("#choose", str(photo_of("Kiwi", 0)))
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)
    assert page.inner_text("#verdict") in ("Kiwi", "Pas sûr")
    assert "Taille" in page.inner_text("#info") or "Type" in page.inner_text("#info")
    assert "Mihai Oltean" in page.inner_text("footer")
    # a second photo of the same fruit: one answer from both
    page.set_input_files("#more", str(photo_of("Kiwi", 1)))
    page.wait_for_function("document.querySelector('#combined') && !document.querySelector('#combined').hidden",
                           timeout=30_000)
    assert page.locator("#thumbs li").count() == 2 and "2 photos" in page.inner_text("#combined")
    # the same answer in English, with the switch
    page.click("#lang-en")
    page.wait_for_function("document.documentElement.lang === 'en'", timeout=10_000)
    assert page.inner_text("label[for=camera]") == "Take a photo" and page.inner_text("#verdict") in ("Kiwi", "Not sure")
    store = built / "feedback"
    before = set(store.rglob("*.jpg")) if store.exists() else set()
    # feedback without consent: nothing kept
    page.fill("#said", "Kiwi")
    page.click("#feedback button[type=submit]")
    page.wait_for_function("document.querySelector('#feedback-status').textContent.includes('Nothing was kept')",
                           timeout=30_000)
    assert (set(store.rglob("*.jpg")) if store.exists() else set()) == before
    # with consent: kept, a receipt, and deleted from the page
    page.check("#consent")
    page.click("#feedback button[type=submit]")
    page.wait_for_selector("#delete", timeout=30_000)
    kept = set(store.rglob("*.jpg")) - before
    assert len(kept) == 1 and next(iter(kept)).parent.name == "Kiwi"
    page.click("#delete")
    page.wait_for_function("document.querySelector('#feedback-status').textContent === 'Deleted.'", timeout=30_000)
    assert not next(iter(kept)).exists()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    context.close()
