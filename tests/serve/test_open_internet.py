"""The service on the open internet, probed with real sockets on loopback as an attacker would:
slow and idle clients, keys and rate limits checked before the body, the decode gate, proxies'
headers, security headers and ids with a trailing newline. Each attack is bounded in count and time."""

from __future__ import annotations

import concurrent.futures
import io
import json
import socket
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from .support import Server, photo_of, post_photo

BOUNDARY = "fruitlensboundary"


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def upload_head(path: str, length: int, *headers: str) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
        f"Content-Length: {length}",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer_of(s: socket.socket) -> tuple[int, dict[str, str], dict]:
    """The status, headers and JSON body of the answer on `s` (read until the connection closes
    or the declared length is in)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, json.loads(body[:length] or b"null")


def png16(side: int) -> bytes:
    """A 16-bit greyscale PNG of side x side: a few hundred KB that decode to side² x 2 bytes."""
    grad = (np.arange(side, dtype=np.uint32) * 65535 // max(1, side - 1)).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(np.broadcast_to(grad, (side, side)).copy()).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# -- slow and idle clients ----------------------------------------------------------------------


def test_trickling_and_idle_connections_do_not_starve_a_normal_client(built, tmp_path):
    """32 clients that send an upload's headers then a byte every 3 s (as many as --max-connections)
    and 256 connections that never send a byte: a normal client's identify still answers, within
    2 s; the tricklers are cut off with a JSON 408, the silent ones closed."""
    s = Server(built, tmp_path / "serve.log", "--max-connections", "32", "--header-timeout", "4", "--body-timeout", "4")
    jpeg = photo_of("Kiwi").read_bytes()
    stop = threading.Event()
    answers: list[int] = []
    sockets: list[socket.socket] = []
    try:
        with httpx.Client(base_url=s.url, timeout=30) as c:
            assert post_photo(c, jpeg).status_code == 200  # warm

        def trickle(sock):
            try:
                sock.sendall(upload_head("/api/v1/identify", 100_000))
                while not stop.is_set():
                    sock.sendall(b"-")
                    if stop.wait(3):
                        break
                    sock.setblocking(False)
                    try:
                        if sock.recv(1, socket.MSG_PEEK):
                            break  # an answer came
                    except BlockingIOError:
                        pass
                    finally:
                        sock.setblocking(True)
                sock.settimeout(10)
                answers.append(answer_of(sock)[0])
            except OSError:
                answers.append(0)  # closed

        tricklers = [connect(s.port) for _ in range(32)]
        sockets += tricklers
        threads = [threading.Thread(target=trickle, args=(t,), daemon=True) for t in tricklers]
        for t in threads:
            t.start()
        sockets += [connect(s.port) for _ in range(256)]  # idle: never a byte
        time.sleep(1)
        with httpx.Client(base_url=s.url, timeout=30) as c:
            t0 = time.perf_counter()
            r = post_photo(c, jpeg)
            took = time.perf_counter() - t0
        assert r.status_code == 200, r.text
        assert r.json()["predicted"] == "Kiwi" or r.json()["top5"]
        assert took < 2.0, f"identify took {took:.1f} s with 32 trickling and 256 idle connections"
        for t in threads:
            t.join(15)
        stop.set()
        assert len(answers) == 32 and set(answers) <= {408, 0} and 408 in answers, answers
        idle = sockets[32]
        idle.settimeout(10)
        assert idle.recv(1) == b""  # closed by the server (header deadline or the idle cap)
        assert s.proc.poll() is None
    finally:
        stop.set()
        for sock in sockets:
            sock.close()
        s.stop()


def test_half_sent_headers_get_a_json_408_and_what_is_not_http_a_json_400(built, tmp_path):
    s = Server(built, tmp_path / "serve.log", "--header-timeout", "1")
    try:
        with connect(s.port) as sock:
            sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            status, headers, body = answer_of(sock)
            assert status == 408 and body["ok"] is False and body["reason"] == "too slow"
            assert headers["connection"] == "close" and sock.recv(1) == b""
        with connect(s.port) as sock:  # not HTTP at all: uvicorn's refusal, in JSON too
            sock.sendall(b"\x16\x03\x01 not http\r\n\r\n")
            status, headers, body = answer_of(sock)
            assert status == 400 and body["reason"] == "bad request"
        with httpx.Client(base_url=s.url, timeout=30) as c:
            assert c.get("/api/v1/health").status_code == 200
    finally:
        s.stop()


# -- keys and limits from the headers -----------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_server(built, tmp_path_factory):
    from fruitlens.serve.limits import add_key

    folder = tmp_path_factory.mktemp("keyed")
    key = add_key(str(folder / "keys.txt"), "app")
    s = Server(
        built,
        folder / "serve.log",
        "--api-keys",
        str(folder / "keys.txt"),
        "--require-key",
        "--rate-limit",
        "100",
        "--feedback",
        str(folder / "feedback"),
    )
    yield s, key
    s.stop()


def test_a_request_without_a_key_is_refused_from_its_headers_not_after_its_50_mb(keyed_server):
    server, key = keyed_server
    with connect(server.port) as sock:
        sock.sendall(upload_head("/api/v1/identify", 50 * 2**20) + b"x" * 65536)  # then nothing more
        status, headers, body = answer_of(sock)
    assert status == 401 and body["reason"] == "unauthorized" and "API key" in body["detail"]
    assert headers["www-authenticate"] == "Bearer" and headers["connection"] == "close"
    with connect(server.port) as sock:  # a client that waits for "100 Continue" is refused before it sends
        sock.sendall(upload_head("/api/v1/identify", 50 * 2**20, "Expect: 100-continue"))
        status, headers, body = answer_of(sock)
    assert status == 401 and body["reason"] == "unauthorized"


def test_require_key_covers_the_model_and_the_photos_kept_the_rest_stays_open(keyed_server):
    """--require-key: identify, feedback and its DELETE need a key; the species, the indexed images
    (the page's <img> cannot send one), health, the schema and the page do not (README)."""
    server, key = keyed_server
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for method, path in (("DELETE", "/api/v1/feedback/" + "0" * 32), ("POST", "/api/v1/identify")):
            r = c.request(method, path)
            assert r.status_code == 401 and r.json()["reason"] == "unauthorized", (method, path, r.text)
        with_key = c.request("DELETE", "/api/v1/feedback/" + "0" * 32, headers={"X-API-Key": key})
        assert with_key.status_code in (200, 404), with_key.text
        for path in ("/api/v1/species", "/api/v1/species/Kiwi", "/api/v1/images/0123456789abcdef"):
            assert c.get(path).status_code in (200, 404), path
        assert c.get("/api/v1/health").status_code == 200
        assert c.get("/api/v1/openapi.json").status_code == 200
        assert c.get("/").status_code == 200 and c.get("/static/app.js").status_code == 200


def test_refused_requests_count_against_the_rate_limit(built, tmp_path):
    """Requests refused for what their body holds (415, 422) and wrong keys (401) each take one
    from the client's bucket: the next is a 429, answered from the headers."""
    from fruitlens.serve.limits import add_key

    add_key(str(tmp_path / "keys.txt"), "app")
    s = Server(built, tmp_path / "serve.log", "--api-keys", str(tmp_path / "keys.txt"), "--rate-limit", "3")
    try:
        with httpx.Client(base_url=s.url, timeout=30) as c:
            refused = [
                c.post("/api/v1/identify", json={"photo": "x"}).status_code,  # 415
                post_photo(c, b"not an image").status_code,  # 422
                post_photo(c, b"x", headers={"X-API-Key": "fl_guessed"}).status_code,  # 401
            ]
            assert refused == [415, 422, 401]
            r = post_photo(c, photo_of("Kiwi").read_bytes())
            assert r.status_code == 429 and r.json()["reason"] == "too many requests"
            assert int(r.headers["Retry-After"]) >= 1
    finally:
        s.stop()


# -- the decode gate ----------------------------------------------------------------------------


def test_decodes_beyond_the_gate_and_its_queue_get_a_json_503_never_a_500(built, tmp_path):
    s = Server(built, tmp_path / "serve.log", "--max-decodes", "1", "--decode-queue", "1", "--rate-limit", "1000")
    heavy = png16(6000)  # 36 Mpx of 16-bit grey, under the pixel limit
    try:

        def one(_):
            with httpx.Client(base_url=s.url, timeout=120) as c:
                return post_photo(c, heavy, "big.png", "image/png")

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(one, range(6)))
        codes = sorted(r.status_code for r in answers)
        assert set(codes) <= {200, 503} and 200 in codes and 503 in codes, codes
        for r in answers:
            if r.status_code == 503:
                assert r.json()["reason"] == "busy" and int(r.headers["Retry-After"]) >= 1
            else:
                assert r.json()["ok"] is True
        assert s.proc.poll() is None
    finally:
        s.stop()


# -- proxies ------------------------------------------------------------------------------------


def test_x_forwarded_for_is_trusted_only_from_the_proxies_named(built, tmp_path):
    jpeg = photo_of("Kiwi").read_bytes()
    plain = Server(built, tmp_path / "plain.log", "--rate-limit", "2")
    try:  # default: no proxy trusted, a forged X-Forwarded-For gets no fresh bucket
        with httpx.Client(base_url=plain.url, timeout=30) as c:
            codes = [post_photo(c, jpeg, headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code for i in range(3)]
        assert codes == [200, 200, 429]
    finally:
        plain.stop()
    proxied = Server(built, tmp_path / "proxied.log", "--rate-limit", "2", "--forwarded-allow-ips", "127.0.0.1")
    try:  # behind a proxy on 127.0.0.1: each client its own bucket, by the address the proxy saw
        with httpx.Client(base_url=proxied.url, timeout=30) as c:
            first = [post_photo(c, jpeg, headers={"X-Forwarded-For": "203.0.113.1"}).status_code for _ in range(3)]
            other = post_photo(c, jpeg, headers={"X-Forwarded-For": "203.0.113.2"})
        assert first == [200, 200, 429] and other.status_code == 200
    finally:
        proxied.stop()


# -- headers and ids ----------------------------------------------------------------------------


def test_security_headers_on_the_page_its_files_and_the_api(client):
    page = client.get("/")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    for r in (page, client.get("/static/app.js"), client.get("/api/v1/health"), client.get("/api/v1/nothing")):
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["X-Frame-Options"] == "DENY" and r.headers["Referrer-Policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    assert client.get("/api/v1/health").headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_ids_with_a_trailing_newline_are_not_ids(client):
    stored = client.post(
        "/api/v1/feedback",
        data={"said": "Kiwi", "consent": "true"},
        files={"photo": ("k.jpg", photo_of("Kiwi").read_bytes(), "image/jpeg")},
    )
    assert stored.status_code == 200, stored.text
    receipt = stored.json()["receipt"]
    assert client.delete(f"/api/v1/feedback/{receipt}%0A").status_code == 404
    assert client.delete(f"/api/v1/feedback/{receipt}").json()["deleted"] is True  # it was still there
    assert client.get("/api/v1/images/" + "a" * 16 + "%0A").status_code == 404
    r = client.post("/api/v1/feedback", data={"said": "Kiwi", "consent": "true", "photo_id": "a" * 32 + "\n"})
    assert r.status_code == 422 and "photo_id" in r.json()["detail"]
