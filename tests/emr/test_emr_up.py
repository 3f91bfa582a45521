"""`fruitlens emr up` before and after RunJobFlow, against moto on loopback: it waits until the
cluster is ready (or --no-wait), a failed cluster is one line with EMR's state-change reason and
the bootstrap's log, an IAM propagation failure starts a new cluster while a permanent one does
not, RunJobFlow's own IAM errors are told apart the same way, the vCPU quotas are checked before
anything is created, and Graviton shapes get aarch64 wheels or a one-line refusal.

What moto cannot do by itself is done to its server's state, as AWS would: a cluster failing while
`up` waits (the cluster's state and reason in moto's EMR backend), and an account's EC2 vCPU quota
(moto's Service Quotas knows only VPC quotas)."""

import json
import re
import time

import boto3
import pytest
from botocore.exceptions import ClientError
from emr_support import (  # noqa: F401
    ACCOUNT,
    BUCKET,
    REGION,
    aws,
    fruitlens,
    no_sleep,
    one_line_error,
    valid,
)

from fruitlens import FruitlensError
from fruitlens.emr import artifacts, capacity, iam, kit
from fruitlens.emr.aws import Aws
from fruitlens.emr.settings import EmrSettings

SETTINGS = EmrSettings(bucket=BUCKET, prefix="up", region=REGION, core_count=2, task_count=2)


def moto_cluster(cluster_id: str):
    """The cluster in the moto server's EMR backend (on a loopback endpoint moto files it under its
    default region, whatever region the client signs for)."""
    from moto.emr.models import emr_backends

    return next(b.clusters[cluster_id] for b in emr_backends[ACCOUNT].values() if cluster_id in b.clusters)


def fail_cluster(cluster_id: str, message: str) -> None:
    """What EMR does to a cluster that cannot start: TERMINATED_WITH_ERRORS with a reason."""
    cluster = moto_cluster(cluster_id)
    cluster.state = "TERMINATED_WITH_ERRORS"
    cluster.last_state_change_reason = message


def clusters() -> list[str]:
    return [c["Id"] for c in boto3.client("emr", region_name=REGION).list_clusters()["Clusters"]]


def test_up_waits_prints_the_id_on_stdout_and_progress_on_stderr_or_does_not_wait(aws):
    base = ["emr", "up", "--bucket", BUCKET, "--prefix", "up", "--region", REGION, "--tag-network"]
    res = fruitlens(*base)
    assert res.returncode == 0, res.stderr
    cluster_id = res.stdout.strip()
    assert cluster_id.startswith("j-") and "\n" not in cluster_id
    assert f"cluster {cluster_id} created; waiting until it is ready" in res.stderr
    assert "cluster WAITING (0:0" in res.stderr  # the progress line (one per state when not a terminal)
    assert (
        boto3.client("emr", region_name=REGION).describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"]
        == "WAITING"
    )
    res = fruitlens(*base, "--no-wait")
    assert res.returncode == 0 and res.stdout.strip().startswith("j-"), res.stderr
    assert "not waiting" in res.stderr and "cluster WAITING (" not in res.stderr


def set_state(cluster_id: str, state: str) -> None:
    moto_cluster(cluster_id).state = state


def test_wait_polls_until_ready_and_gives_up_after_its_timeout(aws):
    cluster_id = kit.up(SETTINGS, tag_network=True, wait=False, sleep=no_sleep)
    set_state(cluster_id, "STARTING")  # EMR's states while the nodes start
    later = iter(["STARTING", "BOOTSTRAPPING", "WAITING"])
    seen, pauses, now = [], [], [0.0]

    def sleep(s):  # 30 s pass, and the cluster moves on
        pauses.append(s)
        now[0] += s
        set_state(cluster_id, next(later))

    emr = Aws(REGION).emr
    cluster = kit.wait_ready(
        emr, cluster_id, progress=lambda state, t: seen.append((state, t)), sleep=sleep, clock=lambda: now[0]
    )
    assert cluster["Status"]["State"] == "WAITING"
    assert seen == [("STARTING", 0.0), ("STARTING", 30.0), ("BOOTSTRAPPING", 60.0), ("WAITING", 90.0)]
    assert pauses == [30, 30, 30]

    def stuck(s):
        now[0] += s

    set_state(cluster_id, "STARTING")
    with pytest.raises(FruitlensError, match=f"still STARTING after 6. min.*fruitlens emr down {cluster_id}"):
        kit.wait_ready(emr, cluster_id, sleep=stuck, clock=lambda: now[0])


def test_a_bootstrap_failure_is_one_line_with_emrs_reason_and_the_bootstrap_log(aws):
    before = set(clusters())
    reason = "On the master instance (i-0123456789abcdef0), bootstrap action 1 returned a non-zero return code"

    def say(line):
        if line.startswith("cluster j-") and "created; waiting" in line:  # EMR fails it while `up` waits
            fail_cluster(line.split()[1], reason)

    with pytest.raises(FruitlensError) as err:
        kit.up(SETTINGS, tag_network=True, sleep=no_sleep, say=say)
    (cluster_id,) = set(clusters()) - before  # not started again: a bootstrap failure is not IAM's
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"cluster {cluster_id} failed (TERMINATED_WITH_ERRORS): ")
    assert reason in text
    assert (
        f"bootstrap log: s3://{BUCKET}/up/logs/{cluster_id}/node/i-0123456789abcdef0/bootstrap-actions/1/stderr.gz"
        in text
    )


def test_an_iam_propagation_failure_starts_a_new_cluster_a_permanent_one_does_not(aws):
    settings = EmrSettings(
        bucket=BUCKET, prefix="up", region=REGION, service_role="fl-prop-svc", instance_profile="fl-prop-ec2"
    )
    before = set(clusters())
    failed, lines = [], []

    def say(line):
        lines.append(line)
        if "created; waiting" in line and not failed:  # the first cluster: EMR cannot use the new role yet
            failed.append(line.split()[1])
            fail_cluster(failed[0], f"EMR service role arn:aws:iam::{ACCOUNT}:role/fl-prop-svc is invalid")

    pauses = []
    cluster_id = kit.up(settings, create_iam_roles=True, tag_network=True, sleep=pauses.append, say=say)
    assert set(clusters()) - before == {failed[0], cluster_id} and cluster_id != failed[0]
    assert any(
        line.startswith(f"cluster {failed[0]} failed (TERMINATED_WITH_ERRORS): ")
        and line.endswith("may not have reached EMR and EC2 yet); starting a new cluster in 30 s (attempt 2 of 3)")
        for line in lines
    )
    assert 30 in pauses
    # the same reason about roles made long ago is permanent: said once, no new cluster
    client = boto3.client("iam")
    verdict = iam.judge(
        settings,
        client,
        "",
        f"EMR service role arn:aws:iam::{ACCOUNT}:role/fl-prop-svc is invalid",
        now=time.time() + 3600,
    )
    assert verdict.propagation is False and "not IAM propagation" in verdict.why
    verdict = iam.judge(
        EmrSettings(bucket=BUCKET, instance_profile="no-such-profile"),
        client,
        "ValidationException",
        "Invalid InstanceProfile: no-such-profile.",
    )
    assert (
        verdict.propagation is False
        and "instance profile no-such-profile does not exist (pass --create-roles" in verdict.why
    )
    assert iam.judge(settings, client, "", "Instance type too small") is None  # not about IAM


def test_run_job_flow_retries_only_an_iam_propagation_error(aws):
    settings = EmrSettings(bucket=BUCKET, region=REGION, service_role="fl-rjf-svc", instance_profile="fl-rjf-ec2")
    client = boto3.client("iam")
    changes = iam.create_roles(settings, client, ACCOUNT, sleep=no_sleep)

    def error(code, message):
        return ClientError({"Error": {"Code": code, "Message": message}}, "RunJobFlow")

    def verdict(exc):
        return iam.judge(settings, client, exc.response["Error"]["Code"], exc.response["Error"]["Message"], changes)

    answers = [
        error("ValidationException", "Invalid InstanceProfile: fl-rjf-ec2."),
        error("ValidationException", "Invalid InstanceProfile: fl-rjf-ec2."),
        {"JobFlowId": "j-OK"},
    ]
    pauses = []

    def call():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert iam.retry_propagation(call, verdict, sleep=pauses.append)["JobFlowId"] == "j-OK"
    assert pauses == [5.0, 10.0]
    pauses.clear()
    with pytest.raises(ClientError, match="InstanceProfile"):  # bounded
        iam.retry_propagation(
            lambda: (_ for _ in ()).throw(error("ValidationException", "Invalid InstanceProfile: x")),
            verdict,
            sleep=pauses.append,
        )
    assert len(pauses) == 7 and sum(pauses) <= 120
    # the caller's own missing permission: at once, never retried (it matched "not authorized" before)
    pauses.clear()
    denied = error(
        "AccessDeniedException",
        f"User: arn:aws:iam::{ACCOUNT}:user/me is not authorized to perform: iam:PassRole on resource: role fl-rjf-ec2",
    )
    with pytest.raises(FruitlensError, match="iam:PassRole.*your credentials lack a permission"):
        iam.retry_propagation(lambda: (_ for _ in ()).throw(denied), verdict, sleep=pauses.append)
    assert pauses == []
    with pytest.raises(ClientError, match="too small"):  # not about IAM: no retry
        iam.retry_propagation(
            lambda: (_ for _ in ()).throw(error("ValidationException", "Instance type too small")),
            verdict,
            sleep=pauses.append,
        )
    assert pauses == []


@pytest.fixture
def ec2_quotas(monkeypatch):
    """The account's EC2 vCPU quotas, as Service Quotas would answer (moto knows only VPC's)."""
    from moto.servicequotas.exceptions import NoSuchResource
    from moto.servicequotas.models import ServiceQuotasBackend

    quotas = {}
    original = ServiceQuotasBackend.get_service_quota

    def get_service_quota(self, service_code, quota_code):
        if service_code == "ec2" and quota_code in quotas:
            return {
                "ServiceCode": "ec2",
                "QuotaCode": quota_code,
                "QuotaName": quota_code,
                "Value": float(quotas[quota_code]),
                "Unit": "None",
                "Adjustable": True,
                "GlobalQuota": False,
            }
        if service_code == "ec2":
            raise NoSuchResource
        return original(self, service_code, quota_code)

    monkeypatch.setattr(ServiceQuotasBackend, "get_service_quota", get_service_quota)
    return quotas


def test_up_refuses_a_shape_beyond_the_vcpu_quota_before_creating_anything(aws, ec2_quotas):
    ec2_quotas.update({"L-1216C47A": 32, "L-34B43A08": 1000})
    types = capacity.instance_types(SETTINGS, boto3.client("ec2", region_name=REGION))
    used = capacity.running(boto3.client("ec2", region_name=REGION), types)["on-demand"]  # other tests' clusters
    before = set(clusters())
    args = [
        "emr",
        "up",
        "--bucket",
        BUCKET,
        "--prefix",
        "quota",
        "--region",
        REGION,
        "--tag-network",
        "--core-type",
        "c5.4xlarge",
        "--core-count",
        "4",
    ]  # 4 + 64 on-demand vCPUs
    error = one_line_error(fruitlens(*args))
    assert f"needs 68 on-demand vCPUs of Standard instances in {REGION} and {used} are in use" in error
    assert '"Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances" (L-1216C47A) is 32' in error
    assert (
        f"request at least {68 + used}: aws service-quotas request-service-quota-increase --service-code ec2 "
        f"--quota-code L-1216C47A --desired-value {68 + used} --region {REGION}"
    ) in error
    assert set(clusters()) == before
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="quota/")  # nothing uploaded
    # with the quota raised: created, and the check is said on stderr
    ec2_quotas["L-1216C47A"] = 68 + used + 100
    res = fruitlens(*args, "--no-wait")
    assert res.returncode == 0, res.stderr
    assert f"quota: on-demand vCPUs: 68 requested + {used} in use <= quota {68 + used + 100}" in res.stderr
    # spot task nodes count against the spot quota
    ec2_quotas["L-34B43A08"] = 8
    error = one_line_error(fruitlens(*args, "--task-count", "2", "--task-type", "c5.2xlarge"))
    assert "needs 16 spot vCPUs" in error and "L-34B43A08" in error


def test_quotas_that_cannot_be_read_do_not_block(aws):
    notes = capacity.check_quotas(
        SETTINGS, Aws(REGION), capacity.instance_types(SETTINGS, boto3.client("ec2", region_name=REGION))
    )
    assert notes and all("quota not checked (L-" in n for n in notes)  # moto: no EC2 quotas
    valid("service-quotas", "GetServiceQuota", {"ServiceCode": "ec2", "QuotaCode": "L-1216C47A"})
    valid("ec2", "DescribeInstances", {"Filters": [{"Name": "instance-state-name", "Values": ["pending", "running"]}]})


def test_graviton_shapes_need_aarch64_wheels_offline_and_unknown_types_are_one_line(aws, tmp_path):
    ec2 = boto3.client("ec2", region_name=REGION)
    graviton = EmrSettings(bucket=BUCKET, region=REGION, core_type="m6g.xlarge", offline_nodes=True)
    types = capacity.instance_types(graviton, ec2)
    assert types["m6g.xlarge"].arch == "aarch64" and types["m5.xlarge"].arch == "x86_64"
    assert capacity.architectures(graviton, types) == ("x86_64", "aarch64")  # the primary stays x86_64
    # a complete x86_64 set and nothing for aarch64: refused before anything is created
    for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", artifacts.pinned_requirements(), re.M):
        (tmp_path / f"{name.replace('-', '_')}-{version}-cp311-cp311-manylinux_2_17_x86_64.whl").write_bytes(b"")
    before = set(clusters())
    error = one_line_error(
        fruitlens(
            "emr",
            "up",
            "--bucket",
            BUCKET,
            "--prefix",
            "arm",
            "--region",
            REGION,
            "--core-type",
            "m6g.xlarge",
            "--offline-nodes",
            "--wheels",
            str(tmp_path),
        )
    )
    assert "no aarch64 wheel for ai-edge-litert==" in error
    assert set(clusters()) == before
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="arm/")
    error = one_line_error(fruitlens("emr", "up", "--bucket", BUCKET, "--region", REGION, "--core-type", "m5.nope"))
    assert f"instance type not offered in {REGION}" in error and "m5.nope" in error


def test_the_dry_run_calls_no_aws_api(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }  # nothing listens there: any call would fail
    res = fruitlens("emr", "up", "--bucket", BUCKET, "--dry-run", "--task-count", "2", env=env)
    assert res.returncode == 0, res.stderr
    request = json.loads(res.stdout)
    assert request["Instances"]["InstanceGroups"][2]["Market"] == "SPOT"
    valid("emr", "RunJobFlow", request)
    assert "not the Price List API: not asked" in res.stderr
