"""The EMR kit against moto's EMR, S3, IAM and EC2 on loopback: request shapes (each validated
against botocore's service model), artifacts from the installed package, roles with the managed
EMR policy, IAM propagation, subnet tags, steps with any job option, status, logs, termination,
cost estimate. Real policy evaluation and the offline install: test_emr_iam.py, test_emr_offline.py."""

import gzip
import json
import os
import subprocess
import sys

import boto3
import botocore.session
import pytest
from botocore.exceptions import ClientError
from botocore.validate import validate_parameters
from conftest import REPO

from fruitlens import FruitlensError
from fruitlens.emr import kit
from fruitlens.emr.costs import (
    DEFAULT_IMAGES_PER_S_PER_VCPU,
    MEASURED_IMAGES_PER_S_PER_CORE,
    estimate,
    price_table,
)
from fruitlens.emr.settings import DEFAULT_RELEASE, MANAGED_TAG, EmrSettings

# moto's IAM knows AWS's managed policies (AmazonEMRServicePolicy_v2 among them) only when asked,
# before its IAM backend first starts (lazily, on the first IAM request).
os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"

BUCKET = "fruits-emr"
REGION = "eu-west-3"
SETTINGS = EmrSettings(bucket=BUCKET, prefix="fruits360", region=REGION, core_count=3, task_count=4)
MANAGED_ARN = "arn:aws:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"
ACCOUNT = "123456789012"  # moto's default account


@pytest.fixture
def aws(s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)  # EMR, IAM and EC2 too, through the standard variable
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


def valid(service: str, operation: str, params: dict) -> None:
    model = botocore.session.get_session().get_service_model(service)
    validate_parameters(params, model.operation_model(operation).input_shape)  # raises ParamValidationError


def test_every_request_the_kit_builds_is_valid_for_botocores_service_models():
    offline = EmrSettings(bucket=BUCKET, region=REGION, task_count=2, offline_nodes=True, subnet_id="subnet-0123abcd")
    for settings in (SETTINGS, offline):
        valid("emr", "RunJobFlow", kit.run_job_flow_request(settings))
        valid("emr", "AddJobFlowSteps", {"JobFlowId": "j-1", "Steps": [
            kit.step_request(settings, "run", [f"s3://{BUCKET}/fruitlens/data/in", "--k", "100"])]})
        for op, params in kit.iam_requests(settings, ACCOUNT):
            valid("iam", op, params)
    ops = [op for op, _ in kit.iam_requests(SETTINGS, ACCOUNT)]
    assert ops == ["CreateRole", "AttachRolePolicy", "PutRolePolicy", "CreateRole", "PutRolePolicy",
                   "CreateInstanceProfile", "AddRoleToInstanceProfile", "CreateServiceLinkedRole"]
    assert dict(kit.iam_requests(SETTINGS, ACCOUNT))["CreateServiceLinkedRole"] == {"AWSServiceName": "spot.amazonaws.com"}
    for no_spot in (EmrSettings(bucket=BUCKET, task_count=2, task_spot=False), EmrSettings(bucket=BUCKET)):
        assert "CreateServiceLinkedRole" not in dict(kit.iam_requests(no_spot, ACCOUNT))


def test_request_has_the_managed_policy_tag_auto_termination_spot_tasks_and_the_bootstrap():
    req = kit.run_job_flow_request(SETTINGS)
    assert MANAGED_TAG in req["Tags"]  # AmazonEMRServicePolicy_v2 acts only on tagged resources
    assert req["ReleaseLabel"] == DEFAULT_RELEASE == "emr-7.13.0"
    assert req["AutoTerminationPolicy"] == {"IdleTimeout": 3600}
    assert req["BootstrapActions"][0]["ScriptBootstrapAction"]["Args"] == [f"s3://{BUCKET}/fruits360/artifacts"]
    assert {g["InstanceRole"]: g["Market"] for g in req["Instances"]["InstanceGroups"]} == \
        {"MASTER": "ON_DEMAND", "CORE": "ON_DEMAND", "TASK": "SPOT"}
    offline = kit.run_job_flow_request(EmrSettings(bucket=BUCKET, offline_nodes=True))
    assert offline["BootstrapActions"][0]["ScriptBootstrapAction"]["Args"][1] == "--offline"
    env = offline["Configurations"][0]["Configurations"][0]["Properties"]
    assert env["FRUITLENS_MODEL_DIR"] == "/opt/fruitlens/models"  # the model comes from S3, not the internet


def test_service_role_gets_the_managed_policy_and_only_passes_the_instance_role():
    service = kit.policy("service-role", SETTINGS)
    assert [s["Action"] for s in service["Statement"]] == ["iam:PassRole"]
    assert service["Statement"][0]["Resource"] == f"arn:aws:iam::*:role/{SETTINGS.instance_profile}"
    attach = dict(kit.iam_requests(SETTINGS, ACCOUNT))["AttachRolePolicy"]
    assert attach == {"RoleName": SETTINGS.service_role, "PolicyArn": MANAGED_ARN}
    cn = EmrSettings(bucket=BUCKET, region="cn-north-1")
    assert dict(kit.iam_requests(cn, ACCOUNT))["AttachRolePolicy"]["PolicyArn"].startswith("arn:aws-cn:iam::aws:policy/")
    # confused-deputy guard: EMR may assume the service role only on behalf of this account
    trust = kit.policy("service-trust", SETTINGS, ACCOUNT)["Statement"][0]
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}
    with pytest.raises(FruitlensError, match="account id"):
        kit.policy("service-trust", SETTINGS)


def test_instance_role_reads_artifacts_writes_only_logs_and_data_prefixes():
    doc = kit.policy("ec2-instance-role", EmrSettings(bucket=BUCKET, prefix="p", data_prefixes=("in", "runs/out/")))
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    assert by_sid["ReadArtifactsNeverWrite"] == {"Sid": "ReadArtifactsNeverWrite", "Effect": "Allow",
                                                 "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/p/artifacts/*"}
    assert by_sid["WriteLogsOnly"]["Action"] == "s3:PutObject"
    assert by_sid["WriteLogsOnly"]["Resource"] == f"arn:aws:s3:::{BUCKET}/p/logs/*"
    assert by_sid["ReadWriteData"]["Resource"] == [f"arn:aws:s3:::{BUCKET}/in/*", f"arn:aws:s3:::{BUCKET}/runs/out/*"]
    assert "Condition" not in by_sid["BucketLocation"]  # s3:prefix never applies to GetBucketLocation
    text = json.dumps(doc)
    assert '"s3:*"' not in text and "FullAccess" not in text and '"Action": "*"' not in text
    with pytest.raises(FruitlensError, match="overlaps"):
        EmrSettings(bucket=BUCKET, prefix="p", data_prefixes=("p",)).validate()
    with pytest.raises(FruitlensError, match="overlaps"):
        EmrSettings(bucket=BUCKET, prefix="p", data_prefixes=("p/artifacts/x",)).validate()


def test_user_policy_names_only_the_kits_roles_bucket_and_managed_policy():
    doc = kit.policy("user-policy", SETTINGS)
    actions = {a for s in doc["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert {"elasticmapreduce:RunJobFlow", "elasticmapreduce:AddJobFlowSteps", "iam:PassRole", "s3:PutObject",
            "iam:CreateRole", "iam:AttachRolePolicy", "ec2:CreateTags"} <= actions
    resources = [r for s in doc["Statement"] for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])]
    for r in resources:
        if r.startswith("arn:aws:iam::*:role/") and "aws-service-role" not in r:
            assert r.rsplit("/", 1)[1] in (SETTINGS.service_role, SETTINGS.instance_profile)
        if r.startswith("arn:aws:s3:::"):
            assert r.split(":::")[1].startswith(BUCKET)
    assert {"elasticmapreduce:PutAutoTerminationPolicy", "iam:TagRole", "iam:TagInstanceProfile",
            "iam:CreateServiceLinkedRole"} <= actions  # RunJobFlow's AutoTerminationPolicy, Tags on create
    attach = next(s for s in doc["Statement"] if s["Action"] == "iam:AttachRolePolicy")
    assert attach["Condition"] == {"ArnEquals": {"iam:PolicyARN": MANAGED_ARN}}
    spot = next(s for s in doc["Statement"] if "spot.amazonaws.com" in json.dumps(s))
    assert spot["Action"] == "iam:CreateServiceLinkedRole"
    assert spot["Condition"] == {"StringEquals": {"iam:AWSServiceName": "spot.amazonaws.com"}}
    # AddRoleToInstanceProfile checks iam:PassRole without an iam:PassedToService key
    instance_arn = f"arn:aws:iam::*:role/{SETTINGS.instance_profile}"
    assert any(s["Action"] == "iam:PassRole" and s["Resource"] == instance_arn and "Condition" not in s
               for s in doc["Statement"])
    tag_role = next(s for s in doc["Statement"] if "iam:TagRole" in s["Action"])
    assert "*" not in tag_role["Resource"][0].rsplit("/", 1)[1]
    res = fruitlens("emr", "policy", "user", "--bucket", BUCKET, "--prefix", "fruits360")
    assert res.returncode == 0 and json.loads(res.stdout) == doc


def test_user_policy_fits_a_managed_policy():
    """IAM counts a policy's characters without whitespace: a user's inline policies may total
    2,048, a managed policy 6,144 (the README attaches it as a managed policy)."""
    longest = EmrSettings(bucket="b" * 63, prefix="p" * 100, service_role="s" * 64, instance_profile="i" * 64,
                          log_uri=f"s3://{'l' * 63}/{'k' * 100}/")
    for settings in (SETTINGS, longest):
        size = len(json.dumps(kit.policy("user-policy", settings), separators=(",", ":")))
        assert 2048 < size < 6144, size


def test_up_from_scratch_tags_the_network_creates_roles_and_the_cluster(aws):
    cluster_id = kit.up(SETTINGS, create_iam_roles=True, tag_network=True, sleep=no_sleep)
    emr = boto3.client("emr", region_name=REGION)
    cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert cluster["ReleaseLabel"] == "emr-7.13.0"
    assert MANAGED_TAG in cluster["Tags"]
    assert cluster["LogUri"] == f"s3://{BUCKET}/fruits360/logs/"
    subnet_id = cluster["Ec2InstanceAttributes"]["Ec2SubnetId"]
    ec2 = boto3.client("ec2", region_name=REGION)
    subnet = ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]
    vpc = ec2.describe_vpcs(VpcIds=[subnet["VpcId"]])["Vpcs"][0]
    assert MANAGED_TAG in subnet["Tags"] and MANAGED_TAG in vpc["Tags"] and vpc["IsDefault"]
    groups = {g["InstanceGroupType"]: g for g in emr.list_instance_groups(ClusterId=cluster_id)["InstanceGroups"]}
    assert groups["CORE"]["RequestedInstanceCount"] == 3 and groups["TASK"]["Market"] == "SPOT"
    keys = {o["Key"] for o in aws.list_objects_v2(Bucket=BUCKET, Prefix="fruits360/artifacts/")["Contents"]}
    assert keys == {f"fruits360/artifacts/{n}" for n in ("bootstrap.sh", "requirements.txt", "fruitlens.zip", "fruitlens_submit.py")}
    reqs = aws.get_object(Bucket=BUCKET, Key="fruits360/artifacts/requirements.txt")["Body"].read().decode()
    assert "numpy==1." in reqs and "pyspark" not in reqs
    iam = boto3.client("iam")
    attached = iam.list_attached_role_policies(RoleName=SETTINGS.service_role)["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [MANAGED_ARN]
    profile = iam.get_instance_profile(InstanceProfileName=SETTINGS.instance_profile)["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [SETTINGS.instance_profile]
    trust = iam.get_role(RoleName=SETTINGS.service_role)["Role"]["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert trust["Statement"][0]["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}
    # spot task nodes: EC2's spot service-linked role, made once (a second `up` finds it taken)
    spot_roles = iam.list_roles(PathPrefix="/aws-service-role/spot.amazonaws.com/")["Roles"]
    assert len(spot_roles) == 1
    kit.create_roles(SETTINGS, iam, ACCOUNT, sleep=no_sleep)
    assert len(iam.list_roles(PathPrefix="/aws-service-role/spot.amazonaws.com/")["Roles"]) == 1


def test_create_roles_is_idempotent_and_fills_an_empty_instance_profile(aws):
    settings = EmrSettings(bucket=BUCKET, region=REGION, service_role="fl-svc-2", instance_profile="fl-ec2-2")
    iam = boto3.client("iam")
    iam.create_instance_profile(InstanceProfileName="fl-ec2-2")  # left empty by an earlier, interrupted run
    kit.create_roles(settings, iam, ACCOUNT, sleep=no_sleep)
    kit.create_roles(settings, iam, ACCOUNT, sleep=no_sleep)
    profile = iam.get_instance_profile(InstanceProfileName="fl-ec2-2")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["fl-ec2-2"]
    assert iam.list_role_policies(RoleName="fl-ec2-2")["PolicyNames"] == ["fruitlens-s3"]


def test_run_job_flow_is_retried_while_iam_propagates_then_gives_up():
    def error(message):
        return ClientError({"Error": {"Code": "ValidationException", "Message": message}}, "RunJobFlow")

    answers = [error("Invalid InstanceProfile: fruitlens-emr-ec2-profile."), error("Invalid InstanceProfile: x."),
               {"JobFlowId": "j-OK"}]
    pauses = []

    def call():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert kit.retry_propagation(call, sleep=pauses.append)["JobFlowId"] == "j-OK"
    assert pauses == [5.0, 10.0]
    pauses.clear()
    with pytest.raises(ClientError, match="InstanceProfile"):
        kit.retry_propagation(lambda: (_ for _ in ()).throw(error("Invalid InstanceProfile: x.")), sleep=pauses.append)
    assert len(pauses) == 7 and sum(pauses) <= 120  # bounded
    with pytest.raises(ClientError, match="too small"):  # not a propagation error: no retry
        kit.retry_propagation(lambda: (_ for _ in ()).throw(error("Instance type too small")), sleep=pauses.append)


def test_untagged_subnet_is_refused_with_the_command_that_fixes_it(aws):
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    settings = EmrSettings(bucket=BUCKET, region=REGION, subnet_id=subnet)
    with pytest.raises(FruitlensError, match=f"aws ec2 create-tags --resources {subnet} {vpc} --tags "
                                             "Key=for-use-with-amazon-emr-managed-policies,Value=true"):
        kit.up(settings, sleep=no_sleep)
    assert kit.network(settings, ec2, tag=True) == subnet
    assert kit.network(settings, ec2) == subnet  # tagged now


def test_submit_passes_every_job_option_through_and_refuses_what_cannot_work(aws, monkeypatch):
    cluster_id = kit.up(SETTINGS, tag_network=True, sleep=no_sleep)
    data = f"s3://{BUCKET}/fruits360/data"
    emr = boto3.client("emr", region_name=REGION)
    base = ["emr", "submit", "--bucket", BUCKET, "--prefix", "fruits360", "--region", REGION, cluster_id]
    res = fruitlens(*base, "run", f"{data}/in", f"{data}/out", "--k", "100", "--variance", "0.9", "--full")
    assert res.returncode == 0, res.stderr
    step_id = res.stdout.strip()
    args = emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]["Config"]["Args"]
    assert args[:5] == ["spark-submit", "--deploy-mode", "client", "--master", "yarn"]
    assert args[-9:] == [f"s3://{BUCKET}/fruits360/artifacts/fruitlens_submit.py", "run", f"{data}/in", f"{data}/out",
                         "--k", "100", "--variance", "0.9", "--full"]
    res = fruitlens(*base, "classify", "--model", f"{data}/model", f"{data}/new", f"{data}/classified", "--", "--top", "3")
    assert res.returncode == 0, res.stderr
    args = emr.describe_step(ClusterId=cluster_id, StepId=res.stdout.strip())["Step"]["Config"]["Args"]
    assert args[-7:] == ["classify", "--model", f"{data}/model", f"{data}/new", f"{data}/classified", "--top", "3"]
    for bad, message in (
        (["train", f"{data}/out", "/home/me/model"], "local path"),
        (["run", f"s3://{BUCKET}/elsewhere/in", f"{data}/out"], "outside the data prefixes"),
        (["run", f"{data}/in", f"s3://{BUCKET}/fruits360/artifacts/x"], "outside the data prefixes"),
        (["predict", f"{data}/in"], "COMMAND must be one of"),
        (["classify", "--model=s3://other-bucket/model", f"{data}/new", f"{data}/out"], "outside the data prefixes"),
        (["classify", f"--model=s3://{BUCKET}/fruits360/artifacts/m", f"{data}/new", f"{data}/out"],
         "outside the data prefixes"),
        (["train", f"{data}/out", "--output=/home/me/model"], "local path"),
    ):
        res = fruitlens(*base, *bad)
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, (bad, res.stderr)


def test_status_logs_down_and_every_log_error_in_one_line(aws):
    cluster_id = kit.up(SETTINGS, tag_network=True, sleep=no_sleep)
    step_id = kit.submit(SETTINGS, cluster_id, "featurize", [f"s3://{BUCKET}/fruits360/data/in", f"s3://{BUCKET}/fruits360/data/emb"])
    state = kit.status(REGION, cluster_id)
    assert state["steps"][0]["id"] == step_id and state["release"] == "emr-7.13.0"
    cost = state["cost_so_far"]
    assert cost["unpriced_instance_types"] == [] and cost["hours"] >= 0
    assert cost["instance_hours"] == pytest.approx(cost["hours"] * (1 + 3 + 4), abs=0.01)
    res = fruitlens("emr", "logs", cluster_id, step_id, "--region", REGION)
    assert res.returncode == 0 and "no logs yet" in res.stdout  # missing keys: not an error
    aws.put_object(Bucket=BUCKET, Key=f"fruits360/logs/{cluster_id}/steps/{step_id}/stderr.gz",
                   Body=gzip.compress(b"fruitlens featurize -> s3://fruits-emr/fruits360/data/emb"))
    res = fruitlens("emr", "logs", cluster_id, step_id, "--region", REGION)
    assert res.returncode == 0 and "==> stderr <==" in res.stdout and "fruitlens featurize" in res.stdout
    # a cluster whose log bucket does not exist, and a cluster that does not exist: one line each
    lost = kit.up(EmrSettings(bucket=BUCKET, region=REGION, log_uri="s3://no-such-log-bucket/x/"), tag_network=True,
                  sleep=no_sleep)
    for args, message in (([lost, step_id], "NoSuchBucket"), (["j-NOSUCHCLUSTER", step_id], "logs of j-NOSUCHCLUSTER")):
        res = fruitlens("emr", "logs", *args, "--region", REGION)
        assert res.returncode == 2 and message in res.stderr, res.stderr
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    kit.down(REGION, cluster_id)
    assert kit.status(REGION, cluster_id)["state"] in ("TERMINATING", "TERMINATED")


def test_cost_estimate_is_instance_hours_times_the_regions_prices():
    table = price_table()
    prices = table["regions"][REGION]["instances"]
    est = estimate(SETTINGS, hours=2)
    node = lambda t: prices[t]["ec2"] + prices[t]["emr"]  # noqa: E731
    spot = lambda t, d: prices[t]["ec2"] * (1 - d) + prices[t]["emr"]  # noqa: E731
    default = table["spot_discount_default"]
    assert est.hourly_usd == pytest.approx(node("m5.xlarge") + 3 * node("m5.xlarge") + 4 * spot("c5.2xlarge", default))
    assert est.total_usd == pytest.approx(2 * est.hourly_usd)
    assert est.worker_vcpus == 3 * 4 + 4 * 8
    no_discount = estimate(SETTINGS, hours=2, spot_discount=0.0)
    assert no_discount.hourly_usd == pytest.approx(node("m5.xlarge") * 4 + 4 * node("c5.2xlarge"))
    assert DEFAULT_IMAGES_PER_S_PER_VCPU == MEASURED_IMAGES_PER_S_PER_CORE / 2  # a vCPU is a hyperthread
    assert est.images_per_hour == pytest.approx(44 * DEFAULT_IMAGES_PER_S_PER_VCPU * 3600)
    assert est.usd_per_million_images == pytest.approx(est.hourly_usd / est.images_per_hour * 1e6)
    for region in table["regions"].values():
        assert region["as_of"] and region["source"].startswith("https://") and region["checked"]
    bigger = estimate(EmrSettings(bucket=BUCKET, region=REGION, core_count=3, task_count=8), images=10_000_000)
    assert bigger.hours < estimate(SETTINGS, images=10_000_000).hours  # more nodes, fewer hours


def test_emr_cli_estimate_and_bad_options():
    res = fruitlens("emr", "estimate", "--bucket", BUCKET, "--region", "eu-west-1", "--images", "1000000",
                    "--spot-discount", "0.5", "--task-count", "2")
    assert res.returncode == 0, res.stderr
    assert "USD per million images" in res.stdout and "images/hour" in res.stdout
    assert "derived, not measured on EMR" in res.stdout and "as of" in res.stdout and "50% below" in res.stdout
    res = fruitlens("emr", "up", "--bucket", "Not_A_Bucket", "--dry-run")
    assert res.returncode == 2 and "not a valid S3 bucket name" in res.stderr and "Traceback" not in res.stderr
    res = fruitlens("emr", "up", "--bucket", BUCKET, "--release-label", "emr-6.15.0", "--dry-run")
    assert res.returncode == 2 and "EMR 7.x" in res.stderr
    res = fruitlens("emr", "up", "--bucket", BUCKET, "--dry-run", "--task-count", "2")
    assert res.returncode == 0 and json.loads(res.stdout)["Instances"]["InstanceGroups"][2]["Market"] == "SPOT"
    res = fruitlens("emr", "estimate", "--bucket", BUCKET, "--region", "ap-south-2")
    assert res.returncode == 2 and "--prices" in res.stderr
    # `up`: the estimate is advisory, a region missing from the price table does not block the cluster
    res = fruitlens("emr", "up", "--bucket", BUCKET, "--region", "us-west-2", "--dry-run")
    assert res.returncode == 0 and json.loads(res.stdout)["Name"] == "fruitlens", res.stderr
    assert "estimate: unavailable (no prices for region us-west-2" in res.stderr


def test_price_table_layout_and_planned_amounts_are_checked(tmp_path):
    table = price_table()
    broken = json.loads(json.dumps(table))
    del broken["regions"][REGION]["instances"]["m5.xlarge"]["emr"]
    no_regions = {"spot_discount_default": 0.6}
    for bad, message in ((broken, f"{REGION} m5.xlarge: needs numbers"), (no_regions, 'no "regions" object'),
                         ([], 'no "regions" object')):
        path = tmp_path / "prices.json"
        path.write_text(json.dumps(bad))
        res = fruitlens("emr", "estimate", "--bucket", BUCKET, "--region", REGION, "--prices", str(path))
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    for option, value, message in (("--hours", "-1", "--hours must be > 0"), ("--images", "-5", "--images must be >= 0")):
        res = fruitlens("emr", "estimate", "--bucket", BUCKET, option, value)
        assert res.returncode == 2 and message in res.stderr, res.stderr


def test_log_uri_may_not_reach_the_artifacts_and_keys_may_not_hold_iam_wildcards():
    for log_uri in (f"s3://{BUCKET}/p/artifacts/", f"s3://{BUCKET}/p/", f"s3://{BUCKET}/", f"s3://{BUCKET}/p/artifacts/logs/",
                    f"s3://{BUCKET}/p/artifacts"):
        with pytest.raises(FruitlensError, match="overlaps .*artifacts.*bootstrap.sh as root"):
            EmrSettings(bucket=BUCKET, prefix="p", log_uri=log_uri).validate()
    EmrSettings(bucket=BUCKET, prefix="p", log_uri=f"s3://{BUCKET}/p/logs-2/").validate()  # beside: fine
    EmrSettings(bucket=BUCKET, prefix="p", log_uri="s3://another-bucket/p/artifacts/").validate()  # other bucket
    for kw, option in (({"data_prefixes": ("fruitlens/a*",)}, "--data-prefix"), ({"prefix": "p?"}, "--prefix"),
                       ({"prefix": 'p"x'}, "--prefix"), ({"data_prefixes": ("d/${aws:username}",)}, "--data-prefix"),
                       ({"log_uri": f"s3://{BUCKET}/l*/"}, "--log-uri"), ({"prefix": "a b"}, "--prefix")):
        with pytest.raises(FruitlensError, match=f"^{option} .*only letters, digits") as err:
            EmrSettings(bucket=BUCKET, **kw).validate()
        assert "\n" not in str(err.value)
    EmrSettings(bucket=BUCKET, prefix="team-1/fruits_360.v2", data_prefixes=("in(1)/x!'y",)).validate()
    res = fruitlens("emr", "policy", "user", "--bucket", BUCKET, "--data-prefix", 'x"y')
    assert res.returncode == 2 and "only letters" in res.stderr and "Traceback" not in res.stderr


def test_aws_configuration_and_upload_failures_are_one_line_exit_2(aws, tmp_path):
    env = {**os.environ, "AWS_PROFILE": "nope-no-such-profile"}
    for args in (["status", "j-1"], ["up", "--bucket", BUCKET, "--region", REGION], ["down", "j-1"]):
        res = fruitlens("emr", *args, env=env)
        assert res.returncode == 2 and "nope-no-such-profile" in res.stderr, res.stderr
        errors = [line for line in res.stderr.strip().splitlines() if not line.startswith("estimate: ")]
        assert "Traceback" not in res.stderr and len(errors) == 1, res.stderr
    wheel = tmp_path / "x.whl"
    wheel.write_bytes(b"x")
    with pytest.raises(FruitlensError, match="^upload artifacts: Failed to upload") as err:
        with kit.aws_errors("upload artifacts"):  # what `up` wraps the upload in
            kit._put_all(EmrSettings(bucket="no-such-bucket-here", region=REGION), aws, {"wheels/x.whl": wheel})
    assert "\n" not in str(err.value)

def test_bootstrap_script_is_valid_bash():
    # that the built wheel ships this same file: test_emr_wheel.py
    path = REPO / "src" / "fruitlens" / "emr" / "bootstrap.sh"
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
