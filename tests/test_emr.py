"""The EMR kit against moto's EMR, S3 and IAM on loopback: request shapes, artifacts, roles,
policies, bootstrap script, steps, status, logs, termination, cost estimate."""

import gzip
import json
import re
import subprocess
import sys

import boto3
import pytest

from conftest import REPO
from fruitlens import FruitlensError
from fruitlens.emr import kit
from fruitlens.emr.costs import estimate, price_table
from fruitlens.emr.settings import EmrSettings

BUCKET = "fruits-emr"


@pytest.fixture
def aws(s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)  # EMR and IAM too, through the standard variable
    s3 = boto3.client("s3", region_name="eu-west-3")
    try:
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    return s3


SETTINGS = EmrSettings(bucket=BUCKET, prefix="fruits360", region="eu-west-3", core_count=3, task_count=4)


def test_up_creates_the_cluster_with_the_requested_shape(aws):
    cluster_id = kit.up(SETTINGS, create_iam_roles=True)
    emr = boto3.client("emr", region_name="eu-west-3")
    cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert cluster["ReleaseLabel"] == "emr-7.8.0"
    assert [a["Name"] for a in cluster["Applications"]] == ["Spark"]
    assert cluster["LogUri"] == f"s3://{BUCKET}/fruits360/logs/"
    groups = {g["InstanceGroupType"]: g for g in emr.list_instance_groups(ClusterId=cluster_id)["InstanceGroups"]}
    assert groups["MASTER"]["RequestedInstanceCount"] == 1
    assert groups["CORE"]["RequestedInstanceCount"] == 3 and groups["CORE"]["Market"] == "ON_DEMAND"
    assert groups["TASK"]["RequestedInstanceCount"] == 4 and groups["TASK"]["Market"] == "SPOT"
    actions = emr.list_bootstrap_actions(ClusterId=cluster_id)["BootstrapActions"]
    assert actions[0]["ScriptPath"] == f"s3://{BUCKET}/fruits360/artifacts/bootstrap.sh"
    # the artifacts the bootstrap action and the steps need are in the bucket
    keys = {o["Key"] for o in aws.list_objects_v2(Bucket=BUCKET, Prefix="fruits360/artifacts/")["Contents"]}
    assert keys == {f"fruits360/artifacts/{n}" for n in ("bootstrap.sh", "requirements.txt", "fruitlens.zip", "fruitlens_submit.py")}
    # roles exist with the repo's policies
    iam = boto3.client("iam")
    doc = iam.get_role_policy(RoleName=SETTINGS.instance_profile, PolicyName=f"{SETTINGS.instance_profile}-policy")
    assert "fruits360/*" in json.dumps(doc["PolicyDocument"])


def test_request_has_auto_termination_spot_tasks_and_the_bootstrap():
    req = kit.run_job_flow_request(SETTINGS)
    assert req["AutoTerminationPolicy"] == {"IdleTimeout": 3600}
    assert req["BootstrapActions"][0]["ScriptBootstrapAction"]["Args"] == [f"s3://{BUCKET}/fruits360/artifacts"]
    assert {g["InstanceRole"]: g["Market"] for g in req["Instances"]["InstanceGroups"]} == \
        {"MASTER": "ON_DEMAND", "CORE": "ON_DEMAND", "TASK": "SPOT"}
    no_tasks = kit.run_job_flow_request(EmrSettings(bucket=BUCKET))
    assert [g["InstanceRole"] for g in no_tasks["Instances"]["InstanceGroups"]] == ["MASTER", "CORE"]


def test_requirements_pin_the_lockfile_versions_without_pyspark():
    reqs = kit.locked_requirements()
    pinned = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", reqs, re.M))
    lock = (REPO / "uv.lock").read_text()
    for name in ("ai-edge-litert", "pillow", "pyarrow", "s3fs"):
        assert f'name = "{name}"\nversion = "{pinned[name]}"' in lock, name
    assert "pyspark" not in pinned and "py4j" not in pinned  # EMR brings Spark 3.5


def test_bootstrap_script_is_valid_bash():
    path = REPO / "src" / "fruitlens" / "emr" / "bootstrap.sh"
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


def test_policies_are_least_privilege_and_name_only_the_bucket():
    for name in ("ec2-instance-role", "service-role"):
        doc = kit.policy(name, SETTINGS)
        text = json.dumps(doc)
        assert "FullAccess" not in text and '"s3:*"' not in text and '"Action": "*"' not in text
        for statement in doc["Statement"]:
            for resource in [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]:
                if resource.startswith("arn:aws:s3"):
                    assert resource in (f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/fruits360/*"), resource


def test_submit_status_logs_down(aws):
    cluster_id = kit.up(SETTINGS)
    step_id = kit.submit(SETTINGS, cluster_id, "run", f"s3://{BUCKET}/fruits360/in", f"s3://{BUCKET}/fruits360/out", ["--k", "100"])
    emr = boto3.client("emr", region_name="eu-west-3")
    args = emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]["Config"]["Args"]
    assert args[:5] == ["spark-submit", "--deploy-mode", "client", "--master", "yarn"]
    assert args[-6:] == [f"s3://{BUCKET}/fruits360/artifacts/fruitlens_submit.py", "run",
                         f"s3://{BUCKET}/fruits360/in", f"s3://{BUCKET}/fruits360/out", "--k", "100"]
    state = kit.status("eu-west-3", cluster_id)
    assert state["steps"][0]["id"] == step_id and state["release"] == "emr-7.8.0"
    cost = state["cost_so_far"]  # after a run: instance-hours held so far x the price table
    assert cost["unpriced_instance_types"] == [] and cost["hours"] >= 0
    assert cost["instance_hours"] == pytest.approx(cost["hours"] * (1 + 3 + 4), abs=0.01)
    aws.put_object(Bucket=BUCKET, Key=f"fruits360/logs/{cluster_id}/steps/{step_id}/stderr.gz",
                   Body=gzip.compress(b"fruitlens run -> s3://fruits-emr/fruits360/out"))
    assert "fruitlens run" in kit.logs("eu-west-3", cluster_id, step_id)["stderr"]
    kit.down("eu-west-3", cluster_id)
    assert kit.status("eu-west-3", cluster_id)["state"] in ("TERMINATING", "TERMINATED")
    with pytest.raises(FruitlensError, match="s3://"):
        kit.submit(SETTINGS, cluster_id, "run", "/local/in", f"s3://{BUCKET}/out", [])


def test_cost_estimate_is_instance_hours_times_the_price_table():
    prices = price_table()["regions"]["eu-west-3"]
    est = estimate(SETTINGS, hours=2)
    node = lambda t: prices[t]["ec2"] + prices[t]["emr"]  # noqa: E731
    spot = lambda t: prices[t]["ec2"] * (1 - price_table()["spot_discount"]) + prices[t]["emr"]  # noqa: E731
    expected = node("m5.xlarge") + 3 * node("m5.xlarge") + 4 * spot("c5.2xlarge")
    assert est.hourly_usd == pytest.approx(expected)
    assert est.total_usd == pytest.approx(2 * expected)
    assert est.worker_vcpus == 3 * 4 + 4 * 8
    bigger = estimate(EmrSettings(bucket=BUCKET, region="eu-west-3", core_count=3, task_count=8), images=10_000_000)
    assert bigger.hours < estimate(SETTINGS, images=10_000_000).hours  # more nodes, fewer hours


def test_emr_cli_estimate_and_bad_options():
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "fruitlens", "emr", *args], capture_output=True, text=True)

    res = cli("estimate", "--bucket", BUCKET, "--region", "eu-west-1", "--images", "1000000")
    assert res.returncode == 0 and "USD per million images" in res.stdout
    res = cli("up", "--bucket", "Not_A_Bucket", "--dry-run")
    assert res.returncode == 2 and "not a valid S3 bucket name" in res.stderr and "Traceback" not in res.stderr
    res = cli("up", "--bucket", BUCKET, "--release-label", "emr-6.15.0", "--dry-run")
    assert res.returncode == 2 and "EMR 7.x" in res.stderr
    res = cli("up", "--bucket", BUCKET, "--dry-run", "--task-count", "2")
    assert res.returncode == 0 and '"Market": "SPOT"' in res.stdout
