"""The EMR kit against moto's EMR, S3, IAM and EC2 on loopback: request shapes (each validated
against botocore's service model), artifacts from the installed package, roles with the managed
EMR policy (created, brought up to date when fruitlens made them, left alone otherwise), subnet
tags, steps with any job option, status, logs, termination. `up`'s waiting, failures and checks:
test_emr_up.py; prices and estimates: test_emr_costs.py; real policy evaluation:
test_emr_iam.py; the offline install: test_emr_offline.py."""

import gzip
import json
import os

import boto3
import pytest
from conftest import REPO
from emr_support import (  # noqa: F401
    ACCOUNT,
    BUCKET,
    MANAGED_ARN,
    REGION,
    aws,
    fruitlens,
    no_sleep,
    one_line_error,
    valid,
)

from fruitlens import FruitlensError
from fruitlens.emr import artifacts, iam, kit
from fruitlens.emr.settings import DEFAULT_RELEASE, MANAGED_TAG, EmrSettings

SETTINGS = EmrSettings(bucket=BUCKET, prefix="fruits360", region=REGION, core_count=3, task_count=4)


def test_every_request_the_kit_builds_is_valid_for_botocores_service_models():
    offline = EmrSettings(bucket=BUCKET, region=REGION, task_count=2, offline_nodes=True, subnet_id="subnet-0123abcd")
    for settings in (SETTINGS, offline):
        valid("emr", "RunJobFlow", kit.run_job_flow_request(settings))
        valid(
            "emr",
            "AddJobFlowSteps",
            {
                "JobFlowId": "j-1",
                "Steps": [kit.step_request(settings, "run", [f"s3://{BUCKET}/fruitlens/data/in", "--k", "100"])],
            },
        )
        for op, params in iam.iam_requests(settings, ACCOUNT):
            valid("iam", op, params)
    ops = [op for op, _ in iam.iam_requests(SETTINGS, ACCOUNT)]
    assert ops == [
        "CreateRole",
        "AttachRolePolicy",
        "PutRolePolicy",
        "CreateRole",
        "PutRolePolicy",
        "CreateInstanceProfile",
        "AddRoleToInstanceProfile",
        "CreateServiceLinkedRole",
    ]
    assert dict(iam.iam_requests(SETTINGS, ACCOUNT))["CreateServiceLinkedRole"] == {
        "AWSServiceName": "spot.amazonaws.com"
    }
    for no_spot in (EmrSettings(bucket=BUCKET, task_count=2, task_spot=False), EmrSettings(bucket=BUCKET)):
        assert "CreateServiceLinkedRole" not in dict(iam.iam_requests(no_spot, ACCOUNT))


def test_request_has_the_managed_policy_tag_auto_termination_spot_tasks_ebs_and_the_bootstrap():
    req = kit.run_job_flow_request(SETTINGS)
    assert MANAGED_TAG in req["Tags"]  # AmazonEMRServicePolicy_v2 acts only on tagged resources
    assert req["ReleaseLabel"] == DEFAULT_RELEASE == "emr-7.13.0"
    assert req["AutoTerminationPolicy"] == {"IdleTimeout": 3600}
    assert req["BootstrapActions"][0]["ScriptBootstrapAction"]["Args"] == [f"s3://{BUCKET}/fruits360/artifacts"]
    groups = req["Instances"]["InstanceGroups"]
    assert {g["InstanceRole"]: g["Market"] for g in groups} == {
        "MASTER": "ON_DEMAND",
        "CORE": "ON_DEMAND",
        "TASK": "SPOT",
    }
    # the storage the estimate counts is the storage requested: EMR's 15 GiB root + one gp3 volume a node
    assert req["EbsRootVolumeSize"] == 15
    for g in groups:
        assert g["EbsConfiguration"]["EbsBlockDeviceConfigs"] == [
            {"VolumeSpecification": {"VolumeType": "gp3", "SizeInGB": 32}, "VolumesPerInstance": 1}
        ]
    offline = kit.run_job_flow_request(EmrSettings(bucket=BUCKET, offline_nodes=True, ebs_gb=100))
    assert offline["BootstrapActions"][0]["ScriptBootstrapAction"]["Args"][1] == "--offline"
    assert (
        offline["Instances"]["InstanceGroups"][0]["EbsConfiguration"]["EbsBlockDeviceConfigs"][0][
            "VolumeSpecification"
        ]["SizeInGB"]
        == 100
    )
    env = offline["Configurations"][0]["Configurations"][0]["Properties"]
    assert env["FRUITLENS_MODEL_DIR"] == "/opt/fruitlens/models"  # the model comes from S3, not the internet
    for bad in (4, 2000):
        with pytest.raises(FruitlensError, match="--ebs-gb must be between 5 and 1024"):
            EmrSettings(bucket=BUCKET, ebs_gb=bad).validate()


def test_service_role_gets_the_managed_policy_and_only_passes_the_instance_role():
    service = iam.policy("service-role", SETTINGS)
    assert [s["Action"] for s in service["Statement"]] == ["iam:PassRole"]
    assert service["Statement"][0]["Resource"] == f"arn:aws:iam::*:role/{SETTINGS.instance_profile}"
    attach = dict(iam.iam_requests(SETTINGS, ACCOUNT))["AttachRolePolicy"]
    assert attach == {"RoleName": SETTINGS.service_role, "PolicyArn": MANAGED_ARN}
    cn = EmrSettings(bucket=BUCKET, region="cn-north-1")
    assert dict(iam.iam_requests(cn, ACCOUNT))["AttachRolePolicy"]["PolicyArn"].startswith(
        "arn:aws-cn:iam::aws:policy/"
    )
    # confused-deputy guard: EMR may assume the service role only on behalf of this account
    trust = iam.policy("service-trust", SETTINGS, ACCOUNT)["Statement"][0]
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}
    with pytest.raises(FruitlensError, match="account id"):
        iam.policy("service-trust", SETTINGS)


def test_instance_role_is_awss_emrfs_example_scoped_to_the_data_prefixes():
    doc = iam.policy("ec2-instance-role", EmrSettings(bucket=BUCKET, prefix="p", data_prefixes=("in", "runs/out/")))
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    bucket = f"arn:aws:s3:::{BUCKET}"
    # bucket-level actions of AWS's EMRFS example, on the bucket, with no s3:prefix condition: EMRFS
    # checks parent folders, which a prefix condition refused with 403
    level = by_sid["EMRFSBucketLevel"]
    assert level["Resource"] == bucket and "Condition" not in level
    assert {"s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:GetBucketLocation"} <= set(level["Action"])
    data = by_sid["EMRFSReadWriteDataPrefixes"]
    assert data["Resource"] == [f"{bucket}/in/*", f"{bucket}/runs/out/*"]
    assert {
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
        "s3:ListMultipartUploadParts",
    } <= set(data["Action"])
    # the status of each data prefix and its parents: exactly those keys, read-only
    marker = "_${$}folder${$}"  # EMRFS's legacy folder marker `NAME_$folder$`, $ written as IAM's ${$}
    assert set(by_sid["EMRFSStatusOfDataFolders"]["Resource"]) == {
        f"{bucket}/{k}"
        for k in (
            "in",
            "in/",
            f"in{marker}",
            "runs",
            "runs/",
            f"runs{marker}",
            "runs/out",
            "runs/out/",
            f"runs/out{marker}",
        )
    }
    assert by_sid["EMRFSStatusOfDataFolders"]["Action"] == "s3:GetObject"
    assert by_sid["ReadArtifactsNeverWrite"] == {
        "Sid": "ReadArtifactsNeverWrite",
        "Effect": "Allow",
        "Action": "s3:GetObject",
        "Resource": f"{bucket}/p/artifacts/*",
    }
    assert by_sid["WriteLogsOnly"]["Action"] == "s3:PutObject"
    assert by_sid["WriteLogsOnly"]["Resource"] == f"{bucket}/p/logs/*"
    text = json.dumps(doc)
    for never in (
        '"s3:*"',
        "FullAccess",
        '"Action": "*"',
        "s3:CreateBucket",
        "s3:PutBucketVersioning",
        "dynamodb",
        "sqs",
    ):
        assert never not in text, never
    # nothing writable outside the data prefixes and the logs
    for s in doc["Statement"]:
        actions = [s["Action"]] if isinstance(s["Action"], str) else s["Action"]
        if any(a in ("s3:PutObject", "s3:DeleteObject") for a in actions):
            assert s["Sid"] in ("EMRFSReadWriteDataPrefixes", "WriteLogsOnly"), s["Sid"]
    with pytest.raises(FruitlensError, match="overlaps"):
        EmrSettings(bucket=BUCKET, prefix="p", data_prefixes=("p",)).validate()
    with pytest.raises(FruitlensError, match="overlaps"):
        EmrSettings(bucket=BUCKET, prefix="p", data_prefixes=("p/artifacts/x",)).validate()
    other_logs = iam.policy("ec2-instance-role", EmrSettings(bucket=BUCKET, log_uri="s3://log-bucket/emr/"))
    assert {
        "Sid": "LogBucketLocation",
        "Effect": "Allow",
        "Action": "s3:GetBucketLocation",
        "Resource": "arn:aws:s3:::log-bucket",
    } in other_logs["Statement"]


def test_user_policy_names_only_the_kits_roles_bucket_and_managed_policy():
    doc = iam.policy("user-policy", SETTINGS)
    actions = {a for s in doc["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert {
        "elasticmapreduce:RunJobFlow",
        "elasticmapreduce:AddJobFlowSteps",
        "iam:PassRole",
        "s3:PutObject",
        "iam:CreateRole",
        "iam:AttachRolePolicy",
        "ec2:CreateTags",
    } <= actions
    # what `up` reads before creating anything, and `estimate`'s prices
    assert {
        "ec2:DescribeInstanceTypes",
        "ec2:DescribeInstances",
        "ec2:DescribeSpotPriceHistory",
        "servicequotas:GetServiceQuota",
        "pricing:GetProducts",
        "iam:GetRolePolicy",
        "iam:ListAttachedRolePolicies",
    } <= actions
    resources = [
        r for s in doc["Statement"] for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
    ]
    for r in resources:
        if r.startswith("arn:aws:iam::*:role/") and "aws-service-role" not in r:
            assert r.rsplit("/", 1)[1] in (SETTINGS.service_role, SETTINGS.instance_profile)
        if r.startswith("arn:aws:s3:::"):
            assert r.split(":::")[1].startswith(BUCKET)
    assert {
        "elasticmapreduce:PutAutoTerminationPolicy",
        "iam:TagRole",
        "iam:TagInstanceProfile",
        "iam:CreateServiceLinkedRole",
    } <= actions  # RunJobFlow's AutoTerminationPolicy, Tags on create
    attach = next(s for s in doc["Statement"] if s["Action"] == "iam:AttachRolePolicy")
    assert attach["Condition"] == {"ArnEquals": {"iam:PolicyARN": MANAGED_ARN}}
    spot = next(s for s in doc["Statement"] if "spot.amazonaws.com" in json.dumps(s))
    assert spot["Action"] == "iam:CreateServiceLinkedRole"
    assert spot["Condition"] == {"StringEquals": {"iam:AWSServiceName": "spot.amazonaws.com"}}
    # AddRoleToInstanceProfile checks iam:PassRole without an iam:PassedToService key
    instance_arn = f"arn:aws:iam::*:role/{SETTINGS.instance_profile}"
    assert any(
        s["Action"] == "iam:PassRole" and s["Resource"] == instance_arn and "Condition" not in s
        for s in doc["Statement"]
    )
    tag_role = next(s for s in doc["Statement"] if "iam:TagRole" in s["Action"])
    assert "*" not in tag_role["Resource"][0].rsplit("/", 1)[1]
    res = fruitlens("emr", "policy", "user", "--bucket", BUCKET, "--prefix", "fruits360")
    assert res.returncode == 0 and json.loads(res.stdout) == doc


def test_user_policy_fits_a_managed_policy():
    """IAM counts a policy's characters without whitespace: a user's inline policies may total
    2,048, a managed policy 6,144 (the README attaches it as a managed policy)."""
    longest = EmrSettings(
        bucket="b" * 63,
        prefix="p" * 100,
        service_role="s" * 64,
        instance_profile="i" * 64,
        log_uri=f"s3://{'l' * 63}/{'k' * 100}/",
    )
    for settings in (SETTINGS, longest):
        size = len(json.dumps(iam.policy("user-policy", settings), separators=(",", ":")))
        assert 2048 < size < 6144, size


def test_up_from_scratch_tags_the_network_creates_roles_and_the_cluster(aws):
    lines = []
    cluster_id = kit.up(SETTINGS, create_iam_roles=True, tag_network=True, sleep=no_sleep, say=lines.append)
    emr = boto3.client("emr", region_name=REGION)
    cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert cluster["Status"]["State"] in ("WAITING", "RUNNING")  # `up` returned once it was ready
    assert cluster["ReleaseLabel"] == "emr-7.13.0"
    assert MANAGED_TAG in cluster["Tags"]
    assert cluster["LogUri"] == f"s3://{BUCKET}/fruits360/logs/"
    assert cluster["EbsRootVolumeSize"] == 15
    subnet_id = cluster["Ec2InstanceAttributes"]["Ec2SubnetId"]
    ec2 = boto3.client("ec2", region_name=REGION)
    subnet = ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]
    vpc = ec2.describe_vpcs(VpcIds=[subnet["VpcId"]])["Vpcs"][0]
    assert MANAGED_TAG in subnet["Tags"] and MANAGED_TAG in vpc["Tags"] and vpc["IsDefault"]
    groups = {g["InstanceGroupType"]: g for g in emr.list_instance_groups(ClusterId=cluster_id)["InstanceGroups"]}
    assert groups["CORE"]["RequestedInstanceCount"] == 3 and groups["TASK"]["Market"] == "SPOT"
    keys = {o["Key"] for o in aws.list_objects_v2(Bucket=BUCKET, Prefix="fruits360/artifacts/")["Contents"]}
    assert keys == {
        f"fruits360/artifacts/{n}" for n in ("bootstrap.sh", "requirements.txt", "fruitlens.zip", "fruitlens_submit.py")
    }
    reqs = aws.get_object(Bucket=BUCKET, Key="fruits360/artifacts/requirements.txt")["Body"].read().decode()
    assert "numpy==1." in reqs and "pyspark" not in reqs
    client = boto3.client("iam")
    attached = client.list_attached_role_policies(RoleName=SETTINGS.service_role)["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [MANAGED_ARN]
    profile = client.get_instance_profile(InstanceProfileName=SETTINGS.instance_profile)["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [SETTINGS.instance_profile]
    trust = client.get_role(RoleName=SETTINGS.service_role)["Role"]["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert trust["Statement"][0]["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}
    # spot task nodes: EC2's spot service-linked role, made once (a second `up` finds it taken)
    spot_roles = client.list_roles(PathPrefix="/aws-service-role/spot.amazonaws.com/")["Roles"]
    assert len(spot_roles) == 1
    iam.create_roles(SETTINGS, client, ACCOUNT, sleep=no_sleep)
    assert len(client.list_roles(PathPrefix="/aws-service-role/spot.amazonaws.com/")["Roles"]) == 1
    # what the user saw on stderr: the estimate (EBS and public IPv4 counted), the roles, the wait
    assert any(line.startswith("estimate: cluster:") and "EBS" in line and "public IPv4" in line for line in lines)
    assert any(line.startswith("iam: created role") for line in lines)
    assert any(line.startswith(f"cluster {cluster_id} created; waiting") for line in lines)


def test_create_roles_updates_its_own_roles_and_leaves_anyone_elses_alone(aws):
    client = boto3.client("iam")
    settings = EmrSettings(bucket=BUCKET, region=REGION, service_role="fl-svc-2", instance_profile="fl-ec2-2")
    client.create_instance_profile(InstanceProfileName="fl-ec2-2")  # left empty by an earlier, interrupted run
    first = iam.create_roles(settings, client, ACCOUNT, sleep=no_sleep)
    assert first.changed_at and "created role fl-ec2-2" in first.done
    again = iam.create_roles(settings, client, ACCOUNT, sleep=no_sleep)
    assert again.done == [] and again.changed_at is None  # idempotent: nothing rewritten
    profile = client.get_instance_profile(InstanceProfileName="fl-ec2-2")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["fl-ec2-2"]
    assert client.list_role_policies(RoleName="fl-ec2-2")["PolicyNames"] == ["fruitlens-s3"]
    # an older fruitlens's narrower policy on its own role: brought to this version's
    client.put_role_policy(
        RoleName="fl-ec2-2",
        PolicyName="fruitlens-s3",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}
        ),
    )
    updated = iam.create_roles(settings, client, ACCOUNT, sleep=no_sleep)
    assert updated.done == ["updated inline policy fruitlens-s3 of role fl-ec2-2"]
    doc = client.get_role_policy(RoleName="fl-ec2-2", PolicyName="fruitlens-s3")["PolicyDocument"]
    assert doc == iam.policy("ec2-instance-role", settings)
    # a role of that name that fruitlens did not create (no app=fruitlens tag) is kept exactly as it is
    own = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:ListAllMyBuckets", "Resource": "*"}],
    }
    trust = json.dumps(iam.policy("ec2-trust", settings))
    client.create_role(RoleName="theirs-ec2", AssumeRolePolicyDocument=trust)
    client.put_role_policy(RoleName="theirs-ec2", PolicyName="fruitlens-s3", PolicyDocument=json.dumps(own))
    client.create_instance_profile(InstanceProfileName="theirs-ec2")
    client.add_role_to_instance_profile(InstanceProfileName="theirs-ec2", RoleName="theirs-ec2")
    theirs = EmrSettings(bucket=BUCKET, region=REGION, service_role="fl-svc-2", instance_profile="theirs-ec2")
    kept = iam.create_roles(theirs, client, ACCOUNT, sleep=no_sleep)
    assert kept.kept == [
        "role theirs-ec2 exists and was not created by fruitlens (no tag app=fruitlens): left as it is"
    ]
    assert client.get_role_policy(RoleName="theirs-ec2", PolicyName="fruitlens-s3")["PolicyDocument"] == own
    assert client.list_role_policies(RoleName="theirs-ec2")["PolicyNames"] == ["fruitlens-s3"]


def test_untagged_subnet_is_refused_with_the_command_that_fixes_it(aws):
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    settings = EmrSettings(bucket=BUCKET, region=REGION, subnet_id=subnet)
    with pytest.raises(
        FruitlensError,
        match=f"aws ec2 create-tags --resources {subnet} {vpc} --tags "
        "Key=for-use-with-amazon-emr-managed-policies,Value=true",
    ):
        kit.up(settings, sleep=no_sleep)
    assert kit.network(settings, ec2, tag=True).id == subnet
    found = kit.network(settings, ec2)  # tagged now
    assert found.id == subnet and found.public_ip is False  # a new subnet maps no public addresses


def test_submit_passes_every_job_option_through_and_refuses_what_cannot_work(aws):
    cluster_id = kit.up(SETTINGS, tag_network=True, sleep=no_sleep)
    data = f"s3://{BUCKET}/fruits360/data"
    emr = boto3.client("emr", region_name=REGION)
    base = ["emr", "submit", "--bucket", BUCKET, "--prefix", "fruits360", "--region", REGION, cluster_id]
    res = fruitlens(*base, "run", f"{data}/in", f"{data}/out", "--k", "100", "--variance", "0.9", "--full")
    assert res.returncode == 0, res.stderr
    step_id = res.stdout.strip()
    args = emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]["Config"]["Args"]
    assert args[:5] == ["spark-submit", "--deploy-mode", "client", "--master", "yarn"]
    assert args[-9:] == [
        f"s3://{BUCKET}/fruits360/artifacts/fruitlens_submit.py",
        "run",
        f"{data}/in",
        f"{data}/out",
        "--k",
        "100",
        "--variance",
        "0.9",
        "--full",
    ]
    res = fruitlens(
        *base, "classify", "--model", f"{data}/model", f"{data}/new", f"{data}/classified", "--", "--top", "3"
    )
    assert res.returncode == 0, res.stderr
    args = emr.describe_step(ClusterId=cluster_id, StepId=res.stdout.strip())["Step"]["Config"]["Args"]
    assert args[-7:] == ["classify", "--model", f"{data}/model", f"{data}/new", f"{data}/classified", "--top", "3"]
    for bad, message in (
        (["train", f"{data}/out", "/home/me/model"], "local path"),
        (["run", f"s3://{BUCKET}/elsewhere/in", f"{data}/out"], "outside the data prefixes"),
        (["run", f"{data}/in", f"s3://{BUCKET}/fruits360/artifacts/x"], "outside the data prefixes"),
        (["predict", f"{data}/in"], "COMMAND must be one of"),
        (["classify", "--model=s3://other-bucket/model", f"{data}/new", f"{data}/out"], "outside the data prefixes"),
        (
            ["classify", f"--model=s3://{BUCKET}/fruits360/artifacts/m", f"{data}/new", f"{data}/out"],
            "outside the data prefixes",
        ),
        (["train", f"{data}/out", "--output=/home/me/model"], "local path"),
    ):
        assert message in one_line_error(fruitlens(*base, *bad)), bad


def test_status_logs_down_and_every_log_error_in_one_line(aws):
    cluster_id = kit.up(SETTINGS, tag_network=True, sleep=no_sleep)
    step_id = kit.submit(
        SETTINGS, cluster_id, "featurize", [f"s3://{BUCKET}/fruits360/data/in", f"s3://{BUCKET}/fruits360/data/emb"]
    )
    state = kit.status(REGION, cluster_id)
    assert state["steps"][0]["id"] == step_id and state["release"] == "emr-7.13.0"
    cost = state["cost_so_far"]
    assert cost["unpriced_instance_types"] == [] and cost["hours"] >= 0
    assert cost["instance_hours"] == pytest.approx(cost["hours"] * (1 + 3 + 4), abs=0.01)
    assert "not the Price List API" in cost["prices"]  # moto has no Price List API: the table, saying why
    res = fruitlens("emr", "logs", cluster_id, step_id, "--region", REGION)
    assert res.returncode == 0 and "no logs yet" in res.stdout  # missing keys: not an error
    aws.put_object(
        Bucket=BUCKET,
        Key=f"fruits360/logs/{cluster_id}/steps/{step_id}/stderr.gz",
        Body=gzip.compress(b"fruitlens featurize -> s3://fruits-emr/fruits360/data/emb"),
    )
    res = fruitlens("emr", "logs", cluster_id, step_id, "--region", REGION)
    assert res.returncode == 0 and "==> stderr <==" in res.stdout and "fruitlens featurize" in res.stdout
    # a cluster whose log bucket does not exist, and a cluster that does not exist: one line each
    lost = kit.up(
        EmrSettings(bucket=BUCKET, region=REGION, log_uri="s3://no-such-log-bucket/x/"),
        tag_network=True,
        sleep=no_sleep,
    )
    for args, message in (([lost, step_id], "NoSuchBucket"), (["j-NOSUCHCLUSTER", step_id], "logs of j-NOSUCHCLUSTER")):
        assert message in one_line_error(fruitlens("emr", "logs", *args, "--region", REGION))
    kit.down(REGION, cluster_id)
    ended = kit.status(REGION, cluster_id)
    assert ended["state"] in ("TERMINATING", "TERMINATED") and "state_change_reason" in ended


def test_log_uri_may_not_reach_the_artifacts_and_keys_may_not_hold_iam_wildcards():
    for log_uri in (
        f"s3://{BUCKET}/p/artifacts/",
        f"s3://{BUCKET}/p/",
        f"s3://{BUCKET}/",
        f"s3://{BUCKET}/p/artifacts/logs/",
        f"s3://{BUCKET}/p/artifacts",
    ):
        with pytest.raises(FruitlensError, match="overlaps .*artifacts.*bootstrap.sh as root"):
            EmrSettings(bucket=BUCKET, prefix="p", log_uri=log_uri).validate()
    EmrSettings(bucket=BUCKET, prefix="p", log_uri=f"s3://{BUCKET}/p/logs-2/").validate()  # beside: fine
    EmrSettings(bucket=BUCKET, prefix="p", log_uri="s3://another-bucket/p/artifacts/").validate()  # other bucket
    for kw, option in (
        ({"data_prefixes": ("fruitlens/a*",)}, "--data-prefix"),
        ({"prefix": "p?"}, "--prefix"),
        ({"prefix": 'p"x'}, "--prefix"),
        ({"data_prefixes": ("d/${aws:username}",)}, "--data-prefix"),
        ({"log_uri": f"s3://{BUCKET}/l*/"}, "--log-uri"),
        ({"prefix": "a b"}, "--prefix"),
    ):
        with pytest.raises(FruitlensError, match=f"^{option} .*only letters, digits") as err:
            EmrSettings(bucket=BUCKET, **kw).validate()
        assert "\n" not in str(err.value)
    EmrSettings(bucket=BUCKET, prefix="team-1/fruits_360.v2", data_prefixes=("in(1)/x!'y",)).validate()
    assert "only letters" in one_line_error(
        fruitlens("emr", "policy", "user", "--bucket", BUCKET, "--data-prefix", 'x"y')
    )


def test_aws_configuration_and_upload_failures_are_one_line_exit_2(aws, tmp_path):
    env = {**os.environ, "AWS_PROFILE": "nope-no-such-profile"}
    for args in (["status", "j-1"], ["up", "--bucket", BUCKET, "--region", REGION], ["down", "j-1"]):
        assert "nope-no-such-profile" in one_line_error(fruitlens("emr", *args, env=env))
    wheel = tmp_path / "x.whl"
    wheel.write_bytes(b"x")
    with (
        pytest.raises(FruitlensError, match="^upload artifacts: NoSuchBucket") as err,
        kit.aws_errors("upload artifacts"),
    ):  # what `up` wraps the upload in
        artifacts.put_all(EmrSettings(bucket="no-such-bucket-here", region=REGION), aws, {"wheels/x.whl": wheel})
    assert "\n" not in str(err.value)


def test_bootstrap_script_is_valid_bash():
    # that the built wheel ships this same file: test_emr_wheel.py
    import subprocess

    path = REPO / "src" / "fruitlens" / "emr" / "bootstrap.sh"
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


def test_the_emr_kit_does_not_import_the_command_line_module():
    """emr is a package of its own: `fruitlens emr` is registered by cli.py, never the reverse, and
    the steps' entry point runs `python -m fruitlens` instead of importing fruitlens.cli."""
    import ast

    for path in (REPO / "src/fruitlens/emr").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [f"{'.' * node.level}{node.module or ''}"]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                assert name not in ("fruitlens.cli", "..cli") and not name.startswith(("fruitlens.cli.", "..cli.")), (
                    path.name,
                    name,
                )
