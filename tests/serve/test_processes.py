"""More than one process: rate limits, photo ids and keys shared through a real Redis server
(Debian's redis-server; scripts/test.sh installs it), `--workers`, and a model loaded again on
SIGHUP without downtime."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time

import httpx
import pytest
from conftest import MODELS
from local_cluster import free_port

from .support import Server, photo_of, post_photo, serve_cmd

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    assert shutil.which("redis-server"), (
        "redis-server is missing: scripts/test.sh installs it (apt-get install redis-server)"
    )
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    import redis

    client = redis.Redis(port=port)
    deadline = time.time() + 30
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.time() > deadline or proc.poll() is not None:
                raise AssertionError("redis-server did not start") from None
            time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


def test_two_services_sharing_redis_count_one_limit_and_know_each_others_photos(built, redis_url, tmp_path):
    from fruitlens.serve.limits import add_key

    keys = tmp_path / "keys.txt"
    add_key(str(keys), "first")
    common = (
        "--limits-storage",
        redis_url,
        "--rate-limit",
        "3",
        "--api-keys",
        str(keys),
        "--feedback",
        str(tmp_path / "fb"),
    )
    a = Server(built, tmp_path / "a.log", *common)
    b = Server(built, tmp_path / "b.log", *common)
    try:
        jpeg = photo_of("Kiwi").read_bytes()
        with httpx.Client(base_url=a.url, timeout=60) as ca, httpx.Client(base_url=b.url, timeout=60) as cb:
            answers = [post_photo(c, jpeg) for c in (ca, cb, ca, cb)]
            assert [r.status_code for r in answers] == [200, 200, 200, 429]  # 3 a minute, counted once across both
            assert [r.headers["RateLimit-Remaining"] for r in answers[:3]] == ["2", "1", "0"]
            assert answers[3].json()["reason"] == "too many requests" and int(answers[3].headers["Retry-After"]) >= 1
            # a photo identified by one service is known by its id to the other (feedback on the page)
            late = ca.post("/api/v1/feedback", data={"said": "Kiwi", "consent": "true"})  # counted too: 429
            assert late.status_code == 429
            key = add_key(str(keys), "added-later")  # a key added while both run: taken by both, no restart
            deadline = time.time() + 10
            while post_photo(cb, jpeg, headers={"X-API-Key": key}).status_code != 200:
                assert time.time() < deadline, "service B never took the key added to the file"
                time.sleep(0.3)
            ident = post_photo(ca, jpeg, headers={"X-API-Key": key})
            assert ident.status_code == 200
            kept = cb.post(
                "/api/v1/feedback",
                data={"said": "Kiwi", "consent": "true", "photo_id": ident.json()["photos"][0]["id"]},
                headers={"X-API-Key": key},
            )
            assert kept.status_code == 200 and kept.json()["stored"] and kept.json()["photos"] == 1
    finally:
        a.stop()
        b.stop()


def test_a_lost_redis_is_a_json_503_never_a_500(built, tmp_path):
    import redis

    port = free_port()
    proc = subprocess.Popen(
        [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", ""], stdout=subprocess.DEVNULL
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.1)
    s = Server(built, tmp_path / "s.log", "--limits-storage", f"redis://127.0.0.1:{port}")
    try:
        proc.terminate()
        proc.wait(10)
        with httpx.Client(base_url=s.url, timeout=60) as c:
            r = post_photo(c, photo_of("Kiwi").read_bytes())
            assert r.status_code == 503 and r.json()["reason"] == "busy" and r.headers["Retry-After"] == "5"
            assert "unreachable" in r.json()["detail"] and c.get("/api/v1/health").status_code == 200
    finally:
        s.stop()
        if proc.poll() is None:
            proc.kill()


def _swap_model(live, built, note: str) -> None:
    """Write another model into the folder `serve --model` reads (the same weights, other metadata)."""
    staged = live.parent / f"staged-{note}"
    shutil.copytree(built / "model", staged)
    meta = json.loads((staged / "model.json").read_text())
    meta["note"] = note
    (staged / "model.json").write_text(json.dumps(meta))
    for name in ("portable.npz", "model.json"):  # what serve loads of a model folder
        shutil.copy(staged / name, live / name)


def _reload_while_answering(server: Server, live, built, keep_alive: bool = True) -> tuple[str, str, list]:
    """SIGHUP after writing a new model, with 3 clients identifying all along (on kept-alive
    connections, or a new connection each request): (old model, new model, every status answered
    meanwhile)."""
    jpeg = photo_of("Banana").read_bytes()
    statuses: list[int] = []
    stop = threading.Event()

    def client():
        limits = httpx.Limits(max_keepalive_connections=1 if keep_alive else 0)
        with httpx.Client(base_url=server.url, timeout=60, limits=limits) as c:
            while not stop.is_set():
                try:
                    statuses.append(post_photo(c, jpeg).status_code)
                except httpx.HTTPError as exc:
                    statuses.append(type(exc).__name__)

    with httpx.Client(base_url=server.url, timeout=10) as c:
        old = c.get("/api/v1/health").json()["model"]
        threads = [threading.Thread(target=client) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            _swap_model(live, built, "v2")
            server.proc.send_signal(signal.SIGHUP)
            deadline = time.time() + 120
            while (new := c.get("/api/v1/health").json()["model"]) == old:
                assert time.time() < deadline, server.log.read_text()
                time.sleep(0.2)
            time.sleep(1)  # a few more answers from the new model
        finally:
            stop.set()
            for t in threads:
                t.join()
    return old, new, statuses


def test_sighup_loads_a_new_model_without_downtime_and_a_broken_one_keeps_the_old(built, tmp_path):
    live = tmp_path / "model"
    shutil.copytree(built / "model", live)
    s = Server(built, tmp_path / "one.log", "--rate-limit", "100000", model=str(live))
    try:
        old, new, statuses = _reload_while_answering(s, live, built)
        assert new != old and statuses and set(statuses) == {200}, statuses  # nobody refused, nothing failed
        assert "reloaded: model" in s.log.read_text()
        # a broken model written there: the reload says why and the service keeps answering
        (live / "model.json").write_text("{ cut")
        s.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 60
        while "reload failed" not in s.log.read_text():
            assert time.time() < deadline and s.proc.poll() is None, s.log.read_text()
            time.sleep(0.2)
        with httpx.Client(base_url=s.url, timeout=60) as c:
            assert c.get("/api/v1/health").json()["model"] == new
            assert post_photo(c, photo_of("Kiwi").read_bytes()).status_code == 200
    finally:
        s.stop()


def test_workers_share_the_limits_and_reload_one_after_the_other(built, redis_url, tmp_path):
    live = tmp_path / "model"
    shutil.copytree(built / "model", live)
    s = Server(
        built,
        tmp_path / "w.log",
        "--workers",
        "2",
        "--limits-storage",
        redis_url.replace("/0", "/1"),
        "--rate-limit",
        "100000",
        model=str(live),
    )
    try:
        assert s.log.read_text().count("[serve] ready in") >= 1
        # a worker that stops closes its idle kept-alive connections: these clients connect per request
        old, new, statuses = _reload_while_answering(s, live, built, keep_alive=False)
        assert new != old and statuses and set(statuses) == {200}, statuses
        assert "reloaded" not in s.log.read_text()  # uvicorn's rolling restart: new workers, then the old stop
    finally:
        s.stop()


def test_workers_without_a_shared_storage_are_refused_in_one_line(built):
    res = subprocess.run(
        serve_cmd(built, free_port(), "--workers", "2"),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FRUITLENS_MODEL_DIR": str(MODELS)},
    )
    assert res.returncode == 2 and "--workers 2 needs --limits-storage redis://" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
