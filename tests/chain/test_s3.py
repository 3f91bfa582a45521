"""Object storage against a real S3 API server (moto) on loopback: S3->S3, mixed, pagination,
errors a user meets, objects vanishing mid-run, reruns, and no secret in any output."""

import json
import os
import subprocess
import sys
import time

import boto3
import numpy as np
import pyarrow.dataset as ds
import pytest
import s3fs
from conftest import MODELS, SAMPLE, SECRET, free_port, shared

from fruitlens.chain.featurize import featurize
from fruitlens.chain.listing import list_images as _list_images
from fruitlens.config import FeaturizeConfig, ReduceConfig, SparkConfig
from fruitlens.embedding.embedder import Embedder
from fruitlens.jobs import _Run, run_all, run_featurize, run_reduce
from fruitlens.storage.location import Location


def list_images(uri: str):
    return _list_images(Location.of(uri))


pytestmark = shared

SPARK = SparkConfig()
BUCKET = "fruits-data"


@pytest.fixture(scope="module")
def s3(s3_server):
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


def upload_sample(client, prefix: str, classes=3, train=8, test=4) -> set[str]:
    names = sorted(p.name for p in (SAMPLE / "Training").iterdir())[5::40][:classes]
    keys = set()
    for split, count in (("Training", train), ("Test", test)):
        for name in names:
            for f in sorted((SAMPLE / split / name).iterdir())[:count]:
                key = f"{prefix}/{split}/{name}/{f.name}"
                client.upload_file(str(f), BUCKET, key)
                keys.add(key)
    return keys


def s3_dataset(uri: str):
    return (
        ds.dataset(uri.removeprefix("s3://"), format="parquet", filesystem=s3fs.S3FileSystem(use_listings_cache=False))
        .to_table()
        .to_pandas()
    )


def all_objects(client, prefix: str) -> dict[str, bytes]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
    return out


def test_s3_to_s3_run_with_manifests_and_no_secret_anywhere(s3, spark):
    keys = upload_sample(s3, "s2s/in")
    s3.put_object(Bucket=BUCKET, Key="s2s/in/Training/Broken/bad.jpg", Body=b"not a jpeg")
    report = run_all(
        FeaturizeConfig(input=f"s3://{BUCKET}/s2s/in", output=f"s3://{BUCKET}/s2s/out", images_per_partition=10),
        ReduceConfig(input="", output=f"s3://{BUCKET}/s2s/out", k=5, variance=None),
        SPARK,
        spark=spark,
        quiet=True,
    )
    emb = s3_dataset(f"s3://{BUCKET}/s2s/out/embeddings")
    assert set(emb.path) == {f"s3://{BUCKET}/{k}" for k in keys}
    assert set(emb.split) == {"train", "test"} and emb.label.nunique() == 3
    err = s3_dataset(f"s3://{BUCKET}/s2s/out/errors")
    assert list(err.path) == [f"s3://{BUCKET}/s2s/in/Training/Broken/bad.jpg"]
    assert err.reason[0] == "not an image"
    feats = s3_dataset(f"s3://{BUCKET}/s2s/out/features")
    assert len(feats) == len(keys) and {len(v) for v in feats.pca} == {5}
    objects = all_objects(s3, "s2s/out/")
    for name in ("embeddings", "errors", "features", "pca"):
        manifest = json.loads(objects[f"s2s/out/{name}/_SUCCESS"])
        listed = {f"s2s/out/{name}/{f['path']}" for f in manifest["files"]}
        present = {k for k in objects if k.startswith(f"s2s/out/{name}/") and k != f"s2s/out/{name}/_SUCCESS"}
        assert listed == present, name  # exactly the manifest's files, nothing staged or left over
    assert json.loads(objects["s2s/out/embeddings/_SUCCESS"])["rows"] == len(keys)
    assert not any("/_staging/" in k for k in objects)
    assert "s2s/out/report.json" in objects and "s2s/out/scree.png" in objects
    assert report["featurize"]["errors_by_reason"] == {"not an image": 1}
    for key, body in objects.items():
        assert SECRET.encode() not in body, key
        assert b"fruitlens-test-key" not in body, key


def test_local_to_s3_then_s3_to_local(s3, spark, sample_dir, tmp_path):
    run_featurize(
        FeaturizeConfig(input=str(sample_dir / "Test"), output=f"s3://{BUCKET}/mixed/emb"),
        SPARK,
        spark=spark,
        quiet=True,
    )
    assert len(s3_dataset(f"s3://{BUCKET}/mixed/emb/embeddings")) == 60
    report = run_reduce(
        ReduceConfig(input=f"s3://{BUCKET}/mixed/emb", output=str(tmp_path), variance=0.8),
        SPARK,
        spark=spark,
        quiet=True,
    )
    feats = ds.dataset(str(tmp_path / "features")).to_table().to_pandas()
    assert len(feats) == 60 and {len(v) for v in feats.pca} == {report["reduce"]["k"]}
    manifest = json.loads((tmp_path / "features" / "_SUCCESS").read_text())
    assert manifest["rows"] == 60
    from pyspark.ml import PipelineModel

    assert len(PipelineModel.load(f"file://{tmp_path}/pca").stages) == 2


def test_listing_pages_through_more_than_1000_keys(s3, spark, tmp_path):
    body = sorted((SAMPLE / "Test").glob("*/*.jpg"))[0].read_bytes()
    n = 1_050
    for i in range(n):
        s3.put_object(Bucket=BUCKET, Key=f"many/Test/Kiwi/{i:05d}.jpg", Body=body)
    assert len(list_images(f"s3://{BUCKET}/many").images) == n
    report = run_featurize(
        FeaturizeConfig(input=f"s3://{BUCKET}/many", output=str(tmp_path), io_threads=8, images_per_partition=300),
        SPARK,
        spark=spark,
        quiet=True,
    )
    assert report["featurize"]["ok"] == n
    assert ds.dataset(str(tmp_path / "embeddings")).count_rows() == n


def test_object_deleted_between_listing_and_reading_is_an_error_row(s3, spark, tmp_path):
    upload_sample(s3, "vanish", classes=1, train=3, test=0)
    listing = list_images(f"s3://{BUCKET}/vanish")
    gone = listing.images[1].path
    s3.delete_object(Bucket=BUCKET, Key=gone.removeprefix(f"s3://{BUCKET}/"))
    cfg = FeaturizeConfig(input=f"s3://{BUCKET}/vanish", output=str(tmp_path))
    with _Run(Location.of(str(tmp_path))) as run:
        result = featurize(
            spark,
            cfg,
            Embedder.resolve(),
            Location.of(cfg.input),
            run.target("embeddings"),
            run.target("errors"),
            listing=listing,
        )
    assert result.ok == 2 and result.errors_by_reason == {"missing": 1}
    err = ds.dataset(str(tmp_path / "errors")).to_table().to_pandas()
    assert list(err.path) == [gone]


def test_incremental_rerun_on_s3_keeps_unchanged_files_and_matches_a_full_run(s3, spark):
    upload_sample(s3, "rerun/in", classes=2, train=4, test=2)
    cfg = FeaturizeConfig(input=f"s3://{BUCKET}/rerun/in", output=f"s3://{BUCKET}/rerun/out", images_per_partition=3)
    first = run_featurize(cfg, SPARK, spark=spark, quiet=True)
    before = {k: v for k, v in all_objects(s3, "rerun/out/embeddings/").items() if not k.endswith("_SUCCESS")}
    inputs = sorted(all_objects(s3, "rerun/in/"))
    s3.delete_object(Bucket=BUCKET, Key=inputs[0])  # removed
    body = s3.get_object(Bucket=BUCKET, Key=inputs[1])["Body"].read()
    s3.put_object(Bucket=BUCKET, Key=inputs[1].replace(".jpg", "-new.jpg"), Body=body)  # new
    second = run_featurize(cfg, SPARK, spark=spark, quiet=True)
    after = all_objects(s3, "rerun/out/embeddings/")
    inc = second["featurize"]["incremental"]
    assert first["featurize"]["ok"] == 12 and second["featurize"]["ok"] == 12
    assert (inc["new"], inc["removed"], inc["changed"], inc["unchanged"], inc["embedded"]) == (1, 1, 0, 11, 1)
    kept = set(before) & set(after)
    assert kept and all(before[k] == after[k] for k in kept)  # kept files are the same objects, not rewritten
    manifest = json.loads(after["rerun/out/embeddings/_SUCCESS"])
    assert {f"rerun/out/embeddings/{f['path']}" for f in manifest["files"]} == set(after) - {
        "rerun/out/embeddings/_SUCCESS"
    }
    incremental = s3_dataset(f"s3://{BUCKET}/rerun/out/embeddings").set_index("path").sort_index()
    run_featurize(
        FeaturizeConfig(input=cfg.input, output=f"s3://{BUCKET}/rerun/full", incremental=False),
        SPARK,
        spark=spark,
        quiet=True,
    )
    full = s3_dataset(f"s3://{BUCKET}/rerun/full/embeddings").set_index("path").sort_index()
    assert list(incremental.index) == list(full.index) and len(full) == 12
    for path in full.index:
        np.testing.assert_array_equal(incremental.loc[path, "embedding"], full.loc[path, "embedding"])
        assert incremental.loc[path, "etag"] == full.loc[path, "etag"] is not None
    assert not any("/_staging/" in k for k in all_objects(s3, "rerun/out/"))


def fruitlens_cli(*args, env=None):
    full = {**os.environ, "FRUITLENS_MODEL_DIR": str(MODELS), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "fruitlens", *args], capture_output=True, text=True, env=full, timeout=300
    )


def one_line(res, pattern):
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and pattern in lines[0], res.stderr
    assert SECRET not in res.stderr + res.stdout


def test_missing_bucket_empty_prefix_and_unreachable_endpoint(s3, tmp_path):
    one_line(
        fruitlens_cli("featurize", "s3://no-such-bucket-here/x", str(tmp_path)),
        "bucket not found: s3://no-such-bucket-here",
    )
    one_line(fruitlens_cli("featurize", f"s3://{BUCKET}/nothing/here", str(tmp_path)), "INPUT not found")
    one_line(
        fruitlens_cli(
            "featurize",
            f"s3://{BUCKET}/s2s/in",
            str(tmp_path),
            "--s3-endpoint-url",
            f"http://127.0.0.1:{free_port()}",
            "--s3-max-attempts",
            "2",
        ),
        "cannot reach the S3 endpoint",
    )
    one_line(fruitlens_cli("featurize", str(tmp_path), "s3://no-such-bucket-here/out"), "bucket not found")


@pytest.fixture
def locked_server(s3_server, tmp_path):
    """A second S3 server, in its own process, that enforces authentication (its clients take the
    credentials s3_server puts in the environment)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    import urllib.request

    client = boto3.client("s3", endpoint_url=endpoint)
    for _ in range(100):
        try:
            client.list_buckets()
            break
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.1)
    client.create_bucket(Bucket="locked-bucket")
    client.put_object(Bucket="locked-bucket", Key="in/Kiwi/a.jpg", Body=b"x")
    urllib.request.urlopen(
        urllib.request.Request(  # from now on, only known access keys get in
            f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
        )
    )
    yield endpoint
    proc.terminate()
    proc.wait(10)


def test_access_denied_is_one_clear_line(locked_server, tmp_path):
    res = fruitlens_cli("featurize", "s3://locked-bucket/in", str(tmp_path), env={"AWS_ENDPOINT_URL_S3": locked_server})
    one_line(res, "access denied to s3://locked-bucket/in")


class ThrottlingProxy:
    """An HTTP proxy in front of the S3 server answering 503 SlowDown: to the first GET of every
    object, and to every GET of keys containing `always-throttled`."""

    def __init__(self, upstream: str):
        import http.client
        import http.server
        import threading
        from urllib.parse import urlparse

        up = urlparse(upstream)
        self.throttled = 0
        seen: set[str] = set()
        lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                is_object_get = self.command == "GET" and "?" not in self.path and self.path.count("/") >= 2
                with lock:
                    throttle = is_object_get and ("always-throttled" in self.path or self.path not in seen)
                    seen.add(self.path)
                    if throttle:
                        proxy.throttled += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if throttle:
                    payload = (
                        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                        b"<Message>Please reduce your request rate.</Message></Error>"
                    )
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
                conn.request(self.command, self.path, body=body, headers=dict(self.headers))
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()


def test_throttling_is_retried_with_backoff_and_bounded(s3, s3_server, spark, tmp_path):
    from fruitlens.storage.location import S3Options

    keys = upload_sample(s3, "slow", classes=2, train=5, test=0)
    s3.put_object(
        Bucket=BUCKET,
        Key="slow/Training/Kiwi/always-throttled.jpg",
        Body=(SAMPLE / "Test" / "Kiwi").iterdir().__next__().read_bytes(),
    )
    proxy = ThrottlingProxy(s3_server)
    try:
        report = run_featurize(
            FeaturizeConfig(input=f"s3://{BUCKET}/slow", output=str(tmp_path)),
            SPARK,
            spark=spark,
            quiet=True,
            s3=S3Options(endpoint_url=proxy.endpoint, max_attempts=3),
        )
    finally:
        proxy.close()
    feat = report["featurize"]
    assert feat["ok"] == len(keys)  # every throttled first read was retried and succeeded
    err = ds.dataset(str(tmp_path / "errors")).to_table().to_pandas()
    assert list(err.path) == [f"s3://{BUCKET}/slow/Training/Kiwi/always-throttled.jpg"]
    assert err.reason[0] == "unreadable", err.detail[0]
    assert "SlowDown" in err.detail[0] or "reduce your request rate" in err.detail[0], err.detail[0]
    assert proxy.throttled >= len(keys) + 3  # first GETs of every object + 3 bounded attempts
    # Bounded: botocore's 3 attempts x s3fs's 5 retries = 15 requests for the always-throttled key
    # (s3fs may add a request or two around a failing read), not an endless loop.
    assert proxy.throttled <= len(keys) + 3 * 5 + 5


def test_no_credentials_is_one_clear_line(s3, tmp_path):
    env = {k: "" for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE")}
    env.update(
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
    )  # no instance-metadata lookups from a test
    full = {k: v for k, v in {**os.environ, "FRUITLENS_MODEL_DIR": str(MODELS), **env}.items() if v != ""}
    res = subprocess.run(
        [sys.executable, "-m", "fruitlens", "featurize", f"s3://{BUCKET}/s2s/in", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=full,
        timeout=300,
    )
    one_line(res, "no AWS credentials found")


def test_keys_are_listed_inside_tasks_and_match_a_driver_listing(s3, spark, tmp_path):
    """Files at every depth: above the per-class prefixes (driver), and below them (tasks)."""
    body = sorted((SAMPLE / "Test").glob("*/*.jpg"))[0].read_bytes()
    layout = [
        "top.jpg",
        "Training/loose.png",
        "Training/Kiwi/a.jpg",
        "Training/Kiwi/deep/b.jpg",
        "Test/Kiwi/c.JPG",
        "Test/Banana/d.jpg",
        "Test/Banana/notes.txt",
        "README",
    ]
    for key in layout:
        s3.put_object(Bucket=BUCKET, Key=f"depth/{key}", Body=body)
    report = run_featurize(
        FeaturizeConfig(input=f"s3://{BUCKET}/depth", output=str(tmp_path)), SPARK, spark=spark, quiet=True
    )
    inputs = report["featurize"]["inputs"]
    assert inputs["listed"] == "in tasks, 3 prefixes"  # Training/Kiwi, Test/Kiwi, Test/Banana
    assert inputs["images_found"] == 6 and inputs["other_files_skipped"] == {".txt": 1, "(none)": 1}
    emb = ds.dataset(str(tmp_path / "embeddings")).to_table().to_pandas().set_index("path")
    driver = {r.path: (r.label, r.split) for r in list_images(f"s3://{BUCKET}/depth").images}
    assert {p: (row.label, row.split) for p, row in emb.iterrows()} == driver
    assert driver[f"s3://{BUCKET}/depth/Training/Kiwi/deep/b.jpg"] == ("deep", "train")
