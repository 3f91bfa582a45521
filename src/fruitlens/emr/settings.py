"""Typed settings of an EMR deployment (no secrets: credentials come from the AWS chain)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .. import FruitlensError

DEFAULT_RELEASE = "emr-7.8.0"  # EMR 7.x: Spark 3.5, Amazon Linux 2023
VENV = "/opt/fruitlens/venv"  # where the bootstrap action installs the locked dependencies


@dataclass(frozen=True)
class EmrSettings:
    bucket: str
    prefix: str = "fruitlens"
    region: str = "us-east-1"
    name: str = "fruitlens"
    release_label: str = DEFAULT_RELEASE
    primary_type: str = "m5.xlarge"
    core_type: str = "m5.xlarge"
    core_count: int = 2
    task_type: str = "c5.2xlarge"
    task_count: int = 0
    task_spot: bool = True
    idle_timeout_s: int = 3600
    log_uri: str | None = None  # default s3://BUCKET/PREFIX/logs/
    service_role: str = "fruitlens-emr-service-role"
    instance_profile: str = "fruitlens-emr-ec2-profile"
    subnet_id: str | None = None

    def validate(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", self.bucket):
            raise FruitlensError(f"--bucket: not a valid S3 bucket name: {self.bucket!r}")
        if not re.fullmatch(r"emr-7\.\d+\.\d+", self.release_label):
            raise FruitlensError(f"--release-label must be an EMR 7.x label (Spark 3.5), got {self.release_label!r}")
        if self.core_count < 1 or self.task_count < 0:
            raise FruitlensError("--core-count must be >= 1 and --task-count >= 0")
        if not 60 <= self.idle_timeout_s <= 604_800:
            raise FruitlensError("--idle-timeout must be between 60 s and 7 days")

    @property
    def base(self) -> str:
        return f"s3://{self.bucket}/{self.prefix.strip('/')}"

    @property
    def artifacts(self) -> str:
        return f"{self.base}/artifacts"

    @property
    def logs(self) -> str:
        return self.log_uri or f"{self.base}/logs/"
