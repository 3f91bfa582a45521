"""What the EMR tests share: the moto server (tests/conftest.py's s3_server) reached for every
service through AWS_ENDPOINT_URL, the data bucket, botocore's request validation, and the CLI run
as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys

import boto3
import botocore.session
import pytest
from botocore.validate import validate_parameters

# moto's IAM knows AWS's managed policies (AmazonEMRServicePolicy_v2 among them) only when asked,
# before its IAM backend first starts (lazily, on the first IAM request).
os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"

BUCKET = "fruits-emr"
REGION = "eu-west-3"
ACCOUNT = "123456789012"  # moto's default account
MANAGED_ARN = "arn:aws:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"


@pytest.fixture
def aws(s3_server, monkeypatch):
    """The moto server for every service (EMR, IAM, EC2, STS, Service Quotas; S3 as before), and
    the data bucket in it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    s3 = boto3.client("s3", region_name=REGION)
    try:
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    return s3


def no_sleep(_seconds):
    pass


def fruitlens(*args, env=None):
    return subprocess.run([sys.executable, "-m", "fruitlens", *args], capture_output=True, text=True, env=env)


def one_line_error(res) -> str:
    """The error of a failed command: exit 2, no traceback, one error line (progress lines aside)."""
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("fruitlens: error: ")]
    assert len(errors) == 1, res.stderr
    return errors[0]


def valid(service: str, operation: str, params: dict) -> None:
    model = botocore.session.get_session().get_service_model(service)
    validate_parameters(params, model.operation_model(operation).input_shape)  # raises ParamValidationError
