"""API keys, rate limits and capacity on a real service started with them."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess

import httpx
import pytest
from conftest import MODELS
from local_cluster import free_port

from .support import CLASSES, Server, photo_of, post_photo, post_photos, serve_cmd


@pytest.fixture(scope="module")
def limited_server(built, tmp_path_factory):
    from fruitlens.serve.limits import add_key

    folder = tmp_path_factory.mktemp("limits")
    keys = folder / "keys.txt"
    key = add_key(str(keys), "partner")
    assert key not in keys.read_text()  # only its hash is kept
    s = Server(
        built,
        folder / "serve.log",
        "--api-keys",
        str(keys),
        "--rate-limit",
        "3",
        "--key-rate-limit",
        "50",
        "--max-connections",
        "2",
    )
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
    res = subprocess.run(
        serve_cmd(built, free_port(), "--api-keys", str(bad)),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FRUITLENS_MODEL_DIR": str(MODELS)},
    )
    assert res.returncode == 2 and "holds keys' hashes, never keys" in res.stderr
