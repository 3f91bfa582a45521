"""`GET /api/v1/images/{image_id}`: images of the index only by their id, never a path."""

from __future__ import annotations

import http.client

import httpx

from fruitlens.serve.index import image_id


def test_images_only_by_id_path_traversal_gets_404_and_no_file_content(server, client, built):
    some_image = next((built / "images").rglob("*.jpg"))
    secret = built / "model" / "model.json"
    attempts = [
        "/api/v1/images/../../../../etc/passwd",
        "/api/v1/images/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/v1/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/api/v1/images/%252e%252e%252fetc%252fpasswd",
        "/api/v1/images//etc/passwd",
        "/api/v1/images/%2Fetc%2Fpasswd",
        "/api/v1/images/etc/passwd",
        "/api/v1/images/" + str(some_image),
        "/api/v1/images/" + httpx.URL(str(secret)).raw_path.decode().replace("/", "%2F"),
        "/api/v1/images/" + image_id(str(secret)),
        "/api/v1/images/0000000000000000",
        "/api/v1/images/..",
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/model.json",
        "/../../../../etc/passwd",
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
