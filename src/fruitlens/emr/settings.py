"""Typed settings of an EMR deployment (no secrets: credentials come from the AWS chain)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .. import FruitlensError
from ..embedding.backbones import get_spec

# The newest EMR 7.x release confirmed in AWS's release notes (ReleaseGuide/emr-7130-release,
# Spark-release-history): emr-7.13.0, released 2026-04-21, Spark 3.5.6-amzn-2, Python 3.9 and 3.11.
DEFAULT_RELEASE = "emr-7.13.0"
EMR_SPARK_VERSION = "3.5.6"  # the Apache Spark release EMR's 3.5.6-amzn-2 is built from (CI tests PySpark 3.5.6)
VENV = "/opt/fruitlens/venv"  # where the bootstrap action installs the pinned dependencies
MODELS_DIR = "/opt/fruitlens/models"  # where --offline-nodes puts the model files (FRUITLENS_MODEL_DIR)
SAFE_KEY = re.compile(r"[A-Za-z0-9!_.'()/-]*")  # S3's safe key characters, none special in IAM policies
MANAGED_TAG = {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}  # AmazonEMRServicePolicy_v2
# EMR's default root volume since 6.10 (gp3 since 6.15), set explicitly so the estimate counts what is created
ROOT_VOLUME_GB = 15


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
    data_prefixes: tuple[str, ...] = field(default_factory=tuple)  # default: (PREFIX/data,)
    offline_nodes: bool = False
    # With offline_nodes: the backbones whose files are staged (names or aliases); empty: every one
    offline_backbones: tuple[str, ...] = ()
    ebs_gb: int = 32  # one gp3 data volume per node (YARN's local dirs: shuffle, spill, container logs)
    root_volume_gb: int = ROOT_VOLUME_GB

    def validate(self) -> None:
        for name in self.offline_backbones:
            get_spec(name)  # an unknown name: one line listing the known ones
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", self.bucket):
            raise FruitlensError(f"--bucket: not a valid S3 bucket name: {self.bucket!r}")
        if not re.fullmatch(r"emr-7\.\d+\.\d+", self.release_label):
            raise FruitlensError(f"--release-label must be an EMR 7.x label (Spark 3.5), got {self.release_label!r}")
        if self.core_count < 1 or self.task_count < 0:
            raise FruitlensError("--core-count must be >= 1 and --task-count >= 0")
        if not 5 <= self.ebs_gb <= 1024:
            raise FruitlensError(
                f"--ebs-gb must be between 5 and 1024 (EMR's limits for a node's EBS volume), got {self.ebs_gb}"
            )
        if not 60 <= self.idle_timeout_s <= 604_800:
            raise FruitlensError("--idle-timeout must be between 60 s and 7 days")
        if not self.key_prefix:
            raise FruitlensError("--prefix must not be empty (the roles are scoped to it)")
        if self.subnet_id and not re.fullmatch(r"subnet-[0-9a-f]{8,17}", self.subnet_id):
            raise FruitlensError(f"--subnet-id: not a subnet id: {self.subnet_id!r}")
        if not self.logs.startswith("s3://"):
            raise FruitlensError(f"--log-uri must be an s3:// URI, got {self.logs!r}")
        log_bucket, log_key = self.log_location
        # keys end up in IAM policies: no wildcards (* ?), policy variables (${…}), quotes or spaces
        for option, key in [("--prefix", self.prefix), ("--log-uri", log_key)] + [
            ("--data-prefix", d) for d in self.data_prefixes
        ]:
            if not SAFE_KEY.fullmatch(key):
                raise FruitlensError(
                    f"{option} {key!r}: only letters, digits and !_.'()/- are allowed in S3 keys "
                    "here (they go into IAM policies, where * ? $ are wildcards or variables)"
                )
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", log_bucket):
            raise FruitlensError(f"--log-uri: not a valid S3 bucket name: {log_bucket!r}")
        artifacts, logs = f"{self.key_prefix}/artifacts", log_key.rstrip("/")
        if log_bucket == self.bucket and (
            not logs or logs == artifacts or logs.startswith(artifacts + "/") or artifacts.startswith(logs + "/")
        ):
            raise FruitlensError(
                f"--log-uri {self.logs} overlaps s3://{self.bucket}/{artifacts}/: the nodes may write "
                "logs, and must never write the artifacts (the next cluster runs bootstrap.sh as root)"
            )
        protected = [(self.bucket, artifacts), (log_bucket, logs)]
        for data in self.data_keys:
            if not data:
                raise FruitlensError("--data-prefix must not be empty or the bucket root")
            for bucket, other in protected:
                if bucket == self.bucket and (
                    not other or data == other or data.startswith(other + "/") or other.startswith(data + "/")
                ):
                    raise FruitlensError(
                        f"--data-prefix {data!r} overlaps s3://{bucket}/{other}: the nodes may "
                        "only read artifacts and only write logs, so data must live elsewhere"
                    )

    @property
    def key_prefix(self) -> str:
        return self.prefix.strip("/")

    @property
    def data_keys(self) -> tuple[str, ...]:
        """Key prefixes (no bucket, no slashes at the ends) the nodes may read and write."""
        return tuple(p.strip("/") for p in self.data_prefixes) or (f"{self.key_prefix}/data",)

    @property
    def data_uris(self) -> list[str]:
        return [f"s3://{self.bucket}/{k}/" for k in self.data_keys]

    @property
    def partition(self) -> str:
        if self.region.startswith("cn-"):
            return "aws-cn"
        if self.region.startswith("us-gov-"):
            return "aws-us-gov"
        return "aws"

    @property
    def base(self) -> str:
        return f"s3://{self.bucket}/{self.key_prefix}"

    @property
    def artifacts(self) -> str:
        return f"{self.base}/artifacts"

    @property
    def logs(self) -> str:
        return self.log_uri or f"{self.base}/logs/"

    @property
    def log_location(self) -> tuple[str, str]:
        """(bucket, key prefix ending in '/') of the log URI."""
        bucket, _, key = self.logs.removeprefix("s3://").partition("/")
        key = key.strip("/")
        return bucket, f"{key}/" if key else ""
