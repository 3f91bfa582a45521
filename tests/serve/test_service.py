"""`fruitlens serve` as a process: what it says when it starts, its command-line mistakes, and
everything (model, index, information, images) on S3."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest
from conftest import MODELS
from local_cluster import free_port

from fruitlens.serve.index import image_id

from .support import NO_META, Server, photo_of, post_photo, serve_cmd


def test_startup_says_which_classes_have_no_metadata(server):
    log = server.log.read_text()
    assert f"none for: {NO_META}" in log and "5 of 6 species" in log
    assert "index: 120 images" in log and "exact search" in log
    assert "feedback: kept with consent in" in log


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
    s = Server(
        built,
        tmp_path / "s3.log",
        "--ann",
        model="s3://serve-test/app/model",
        index="s3://serve-test/app/index",
        info="s3://serve-test/app/meta",
    )
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
    res = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "FRUITLENS_MODEL_DIR": str(MODELS)}
    )
    assert res.returncode == 2 and f"cannot listen on 127.0.0.1:{server.port}" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--model", "nowhere", "--model: no model folder at"),
        ("--info", "nowhere", "--info: no folder at"),
        ("--index", "nowhere", "--index: no folder at"),
    ],
)
def test_cli_mistakes_are_one_line_exit_2(built, flag, value, message, tmp_path):
    cmd = serve_cmd(built, free_port())
    cmd[cmd.index(flag) + 1] = str(tmp_path / value)
    res = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "FRUITLENS_MODEL_DIR": str(MODELS)}
    )
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
