"""The EMR commands: request builders (pure, validated against botocore's service models in the
tests) and `up` (checks, artifacts, roles, RunJobFlow, then waits until the cluster is ready or
says why it failed), `submit`, `status`, `logs`, `down`, and the inputs of `estimate`.

Policies and roles: emr.iam; what is uploaded: emr.artifacts; instance types and vCPU quotas:
emr.capacity; prices: emr.prices; the arithmetic of costs: emr.costs."""

from __future__ import annotations

import gzip
import re
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from .. import FruitlensError
from .artifacts import WHEEL_PLATFORMS, check_wheels, upload_artifacts
from .aws import Aws, account_id, aws_errors, code, message
from .capacity import InstanceType, architectures, check_quotas, instance_types
from .costs import Estimate, cost_so_far, estimate
from .iam import IamChanges, create_roles, judge, retry_propagation
from .prices import Prices, SpotDiscount, resolve, spot_discount
from .settings import MANAGED_TAG, MODELS_DIR, ROOT_VOLUME_GB, VENV, EmrSettings

JOB_COMMANDS = ("run", "featurize", "reduce", "train", "classify")
READY = ("WAITING", "RUNNING")
ENDED = ("TERMINATING", "TERMINATED", "TERMINATED_WITH_ERRORS")
WAIT_POLL_S = 30  # as boto3's cluster_running waiter
WAIT_TIMEOUT_S = 3600
RESTART_PAUSE_S = 30


def _quiet(*_args) -> None:
    pass


# ---------------------------------------------------------------------------------------------
# Requests (pure)
# ---------------------------------------------------------------------------------------------


def _group(name: str, role: str, market: str, instance_type: str, count: int, ebs_gb: int) -> dict:
    return {
        "Name": name,
        "InstanceRole": role,
        "Market": market,
        "InstanceType": instance_type,
        "InstanceCount": count,
        # one gp3 volume per node, set here (not EMR's per-type default) so the estimate counts it
        "EbsConfiguration": {
            "EbsBlockDeviceConfigs": [
                {"VolumeSpecification": {"VolumeType": "gp3", "SizeInGB": ebs_gb}, "VolumesPerInstance": 1}
            ]
        },
    }


def run_job_flow_request(settings: EmrSettings) -> dict:
    groups = [
        _group("primary", "MASTER", "ON_DEMAND", settings.primary_type, 1, settings.ebs_gb),
        _group("core", "CORE", "ON_DEMAND", settings.core_type, settings.core_count, settings.ebs_gb),
    ]
    if settings.task_count:
        groups.append(
            _group(
                "task",
                "TASK",
                "SPOT" if settings.task_spot else "ON_DEMAND",
                settings.task_type,
                settings.task_count,
                settings.ebs_gb,
            )
        )
    instances = {"InstanceGroups": groups, "KeepJobFlowAliveWhenNoSteps": True, "TerminationProtected": False}
    if settings.subnet_id:
        instances["Ec2SubnetId"] = settings.subnet_id
    env = {"PYSPARK_PYTHON": f"{VENV}/bin/python"}
    if settings.offline_nodes:
        env["FRUITLENS_MODEL_DIR"] = MODELS_DIR  # the bootstrap copied the model files there from S3
    args = [settings.artifacts] + (["--offline"] if settings.offline_nodes else [])
    return {
        "Name": settings.name,
        "ReleaseLabel": settings.release_label,
        "LogUri": settings.logs,
        "Applications": [{"Name": "Spark"}],
        "Instances": instances,
        "EbsRootVolumeSize": settings.root_volume_gb,
        "BootstrapActions": [
            {
                "Name": "fruitlens dependencies (pinned for EMR 7)" + (", offline" if settings.offline_nodes else ""),
                "ScriptBootstrapAction": {"Path": f"{settings.artifacts}/bootstrap.sh", "Args": args},
            }
        ],
        "Configurations": [
            {
                "Classification": "spark-env",
                "Configurations": [{"Classification": "export", "Properties": env}],
            }
        ],
        "AutoTerminationPolicy": {"IdleTimeout": settings.idle_timeout_s},
        "ServiceRole": settings.service_role,
        "JobFlowRole": settings.instance_profile,
        "VisibleToAllUsers": True,
        # AmazonEMRServicePolicy_v2 acts only on resources carrying this tag; EMR propagates it.
        "Tags": [{"Key": "app", "Value": "fruitlens"}, dict(MANAGED_TAG)],
    }


def check_job_args(settings: EmrSettings, command: str, args: list[str]) -> None:
    """Refuse what cannot work on the cluster, before a step is added: an unknown command, a local
    path, an s3:// location outside the data prefixes the nodes may use."""
    if command not in JOB_COMMANDS:
        raise FruitlensError(f"submit: COMMAND must be one of {', '.join(JOB_COMMANDS)}, got {command!r}")
    # `--model=s3://…` is `--model s3://…`: check the value after the `=` too
    values = [a.split("=", 1)[1] if a.startswith("-") and "=" in a else a for a in args]
    uris = [a for a in values if a.startswith(("s3://", "s3a://", "s3n://"))]
    if not uris:
        raise FruitlensError(
            f"submit {command}: give its s3:// locations, e.g. "
            f"submit CLUSTER {command} {settings.data_uris[0]}in {settings.data_uris[0]}out"
        )
    for a in values:
        if a.startswith(("/", "./", "../", "~", "file:")):
            raise FruitlensError(f"submit: {a!r} is a local path; on EMR every location is s3://")
    for uri in uris:
        bucket, _, key = uri.split("://", 1)[1].partition("/")
        key = key.strip("/")
        if bucket != settings.bucket or not any(key == d or key.startswith(d + "/") for d in settings.data_keys):
            raise FruitlensError(
                f"submit: {uri} is outside the data prefixes the cluster's role may use "
                f"({', '.join(settings.data_uris)}); see --data-prefix"
            )


def step_request(settings: EmrSettings, command: str, args: list[str]) -> dict:
    spark = [
        "spark-submit",
        "--deploy-mode",
        "client",
        "--master",
        "yarn",
        "--conf",
        f"spark.pyspark.python={VENV}/bin/python",
        "--conf",
        f"spark.pyspark.driver.python={VENV}/bin/python",
        "--py-files",
        f"{settings.artifacts}/fruitlens.zip",
        f"{settings.artifacts}/fruitlens_submit.py",
        command,
        *args,
    ]
    name = " ".join(["fruitlens", command, *args])
    return {
        "Name": name[:256],
        "ActionOnFailure": "CONTINUE",
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": spark},
    }


# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subnet:
    id: str
    zone: str
    public_ip: bool  # EC2 gives instances launched there a public IPv4 address (billed per hour)
    untagged: tuple[str, ...]  # of the subnet and its VPC, those lacking the managed-policy tag


def find_subnet(settings: EmrSettings, ec2) -> Subnet:
    """The subnet `up` uses (read-only): --subnet-id, or the default VPC's first default subnet."""
    key, value = MANAGED_TAG["Key"], MANAGED_TAG["Value"]
    if settings.subnet_id:
        subnets = ec2.describe_subnets(SubnetIds=[settings.subnet_id])["Subnets"]
    else:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise FruitlensError("no default VPC in this region: pass --subnet-id")
        subnets = ec2.describe_subnets(
            Filters=[{"Name": "vpc-id", "Values": [vpcs[0]["VpcId"]]}, {"Name": "default-for-az", "Values": ["true"]}]
        )["Subnets"]
        if not subnets:
            raise FruitlensError("the default VPC has no default subnet: pass --subnet-id")
        subnets = sorted(subnets, key=lambda s: s["AvailabilityZone"])[:1]
    subnet = subnets[0]
    vpc = ec2.describe_vpcs(VpcIds=[subnet["VpcId"]])["Vpcs"][0]
    untagged = tuple(
        r[f"{kind}Id"]
        for r, kind in ((subnet, "Subnet"), (vpc, "Vpc"))
        if {"Key": key, "Value": value} not in r.get("Tags", [])
    )
    return Subnet(subnet["SubnetId"], subnet["AvailabilityZone"], bool(subnet.get("MapPublicIpOnLaunch")), untagged)


def network(settings: EmrSettings, ec2, tag: bool = False) -> Subnet:
    """The subnet to use, checked (or, with tag=True, made) to carry the managed-policy tag on it
    and on its VPC, as AmazonEMRServicePolicy_v2 requires."""
    key, value = MANAGED_TAG["Key"], MANAGED_TAG["Value"]
    subnet = find_subnet(settings, ec2)
    if subnet.untagged and tag:
        ec2.create_tags(Resources=list(subnet.untagged), Tags=[dict(MANAGED_TAG)])
    elif subnet.untagged:
        raise FruitlensError(
            f"{' and '.join(subnet.untagged)} lack the tag {key}={value} that AmazonEMRServicePolicy_v2 requires "
            f"(EMR could not launch nodes there): pass --tag-network, or run "
            f"aws ec2 create-tags --resources {' '.join(subnet.untagged)} --tags Key={key},Value={value}"
        )
    return replace(subnet, untagged=())


# ---------------------------------------------------------------------------------------------
# Estimate inputs
# ---------------------------------------------------------------------------------------------


def plan_costs(
    settings: EmrSettings,
    aws: Aws | None,
    subnet: Subnet | None = None,
    prices_path=None,
    given_spot_discount: float | None = None,
    images: int | None = None,
    hours: float | None = None,
    images_per_s_per_vcpu: float | None = None,
    why_offline: str = "not asked (--offline-prices or --dry-run)",
) -> Estimate:
    """The estimate of a shape: prices from the Price List API when `aws` has credentials (else the
    table, with the reason), the spot discount from the spot price history of the subnet's zone,
    a public IPv4 address per node when the subnet gives one (assumed when the subnet is unknown)."""
    types = [settings.primary_type, settings.core_type] + ([settings.task_type] if settings.task_count else [])
    offline = why_offline if aws is None else None if aws.has_credentials() else "no AWS credentials"
    ec2 = aws.client("ec2", quick=True) if offline is None else None  # optional look-ups: short timeouts
    prices = resolve(settings.region, types, aws, prices_path, why_offline)
    if subnet is None and ec2 is not None:
        try:
            subnet = find_subnet(settings, ec2)
        except Exception:  # noqa: BLE001 - no permission, no default VPC: the defaults below
            subnet = None
    spot = None
    if settings.task_count and settings.task_spot:
        spot = spot_discount(
            prices, settings.task_type, ec2, subnet.zone if subnet else None, given_spot_discount, offline or ""
        )
    elif given_spot_discount is not None and not 0 <= given_spot_discount < 1:
        raise FruitlensError(f"--spot-discount must be in [0, 1), got {given_spot_discount}")
    public = subnet.public_ip if subnet else True
    note = (
        (f"{subnet.id} gives public addresses" if public else f"{subnet.id} is private")
        if subnet
        else "assumed: the default VPC's subnets are public"
    )
    kw = {"images_per_s_per_vcpu": images_per_s_per_vcpu} if images_per_s_per_vcpu else {}
    return estimate(settings, prices, spot, images=images, hours=hours, public_ip=public, public_ip_note=note, **kw)


# ---------------------------------------------------------------------------------------------
# up
# ---------------------------------------------------------------------------------------------


def wait_ready(
    emr,
    cluster_id: str,
    progress=_quiet,
    sleep=time.sleep,
    clock=time.monotonic,
    poll_s: float = WAIT_POLL_S,
    timeout_s: float = WAIT_TIMEOUT_S,
) -> dict:
    """DescribeCluster every `poll_s` until the cluster is WAITING/RUNNING or has ended; calls
    progress(state, elapsed_s) after each look. Returns the cluster."""
    start = clock()
    while True:
        cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
        state, elapsed = cluster["Status"]["State"], clock() - start
        progress(state, elapsed)
        if state in READY or state in ENDED:
            return cluster
        if elapsed > timeout_s:
            raise FruitlensError(
                f"cluster {cluster_id} is still {state} after {elapsed / 60:.0f} min: see "
                f"`fruitlens emr status {cluster_id}`; `fruitlens emr down {cluster_id}` stops it"
            )
        sleep(poll_s)


def log_uri(cluster: dict) -> str:
    """The cluster's log URI as s3:// (EMR reports s3n://)."""
    uri = cluster.get("LogUri") or ""
    return re.sub(r"^s3[na]://", "s3://", uri.rstrip("/") + "/") if uri else ""


def failure(cluster: dict, cluster_id: str, why: str | None = None) -> str:
    """One line: the state, EMR's state-change reason, and where the bootstrap's log is."""
    status = cluster["Status"]
    reason = status.get("StateChangeReason") or {}
    text = " ".join(str(reason.get("Message") or "no reason given").split())[:400]
    line = f"cluster {cluster_id} failed ({status['State']}): {reason.get('Code') or 'no code'}: {text}"
    if why:
        line += f" ({why})"
    logs = log_uri(cluster)
    if logs and not why:  # an IAM verdict says what to do; otherwise the node logs tell the rest
        instance = (re.search(r"\bi-[0-9a-f]{8,17}\b", text) or [None])[0] or "INSTANCE-ID"
        line += (
            f"; bootstrap log: {logs}{cluster_id}/node/{instance}/bootstrap-actions/1/stderr.gz "
            f"(EMR copies node logs there within about 5 minutes)"
        )
    return line


def up(
    settings: EmrSettings,
    create_iam_roles: bool = False,
    tag_network: bool = False,
    wheels: Path | None = None,
    wait: bool = True,
    sleep=time.sleep,
    say=_quiet,
    progress=_quiet,
    prices_path=None,
    spot_discount_given: float | None = None,
    images: int | None = None,
    attempts: int = 3,
) -> str:
    """Create a cluster and (unless wait=False) wait until it is ready. Before anything is created:
    the instance types (EC2), the CPU architectures (--offline-nodes stages wheels for each; a
    --wheels folder lacking one is refused), the vCPU quotas, the subnet's tags. A cluster that
    fails for IAM propagation (roles created or changed minutes ago) is started again, at most
    `attempts` in all; any other failure is one line with EMR's reason and the bootstrap's log.
    `say(line)`: progress lines for stderr; `progress(state, elapsed_s)`: while waiting."""
    settings.validate()
    if settings.offline_nodes and wheels is not None:  # wheels for no EMR node at all: before any AWS call
        check_wheels(wheels, tuple(WHEEL_PLATFORMS), complete=False)
    aws = Aws(settings.region)
    with aws_errors("ec2:DescribeInstanceTypes"):
        types: dict[str, InstanceType] = instance_types(settings, aws.ec2)
    archs = architectures(settings, types)
    if settings.offline_nodes and wheels is not None:
        check_wheels(wheels, archs)  # before anything is tagged or uploaded
    for note in check_quotas(settings, aws, types):
        say(f"quota: {note}")
    with aws_errors("network"):
        subnet = network(settings, aws.ec2, tag=tag_network)
    settings = replace(settings, subnet_id=subnet.id)
    try:  # advisory: prices that cannot be found never block the cluster
        lines = plan_costs(settings, aws, subnet, prices_path, spot_discount_given, images).lines()
    except FruitlensError as exc:
        lines = [f"unavailable ({exc})"]
    for line in lines:
        say(f"estimate: {line}")
    if settings.offline_nodes and "aarch64" in archs:
        say(f"offline nodes: staging wheels for {' and '.join(archs)} (Graviton nodes in the shape)")
    with aws_errors("upload artifacts"):
        upload_artifacts(settings, aws.s3, wheels, archs)
    changes: IamChanges | None = None
    if create_iam_roles:
        account = account_id(aws)
        with aws_errors("create roles"):
            changes = create_roles(settings, aws.iam, account, sleep=sleep)
        for line in changes.kept + changes.done:
            say(f"iam: {line}")
    request = run_job_flow_request(settings)

    def verdict(exc):
        return judge(settings, aws.iam, code(exc), message(exc), changes)

    for attempt in range(1, attempts + 1):
        with aws_errors("RunJobFlow"):
            cluster_id = retry_propagation(lambda: aws.emr.run_job_flow(**request), verdict, sleep=sleep)["JobFlowId"]
        if not wait:
            say(f"cluster {cluster_id} created (not waiting: `fruitlens emr status {cluster_id}` shows its state)")
            return cluster_id
        say(
            f"cluster {cluster_id} created; waiting until it is ready (Ctrl-C stops the wait, not the cluster; "
            f"`fruitlens emr down {cluster_id}` stops it)"
        )
        with aws_errors(f"DescribeCluster {cluster_id}"):
            cluster = wait_ready(aws.emr, cluster_id, progress, sleep)
        if cluster["Status"]["State"] in READY:
            return cluster_id
        reason = cluster["Status"].get("StateChangeReason") or {}
        found = judge(settings, aws.iam, str(reason.get("Code") or ""), str(reason.get("Message") or ""), changes)
        if found and found.propagation and attempt < attempts:
            say(
                f"{failure(cluster, cluster_id, found.why)}; starting a new cluster in {RESTART_PAUSE_S} s "
                f"(attempt {attempt + 1} of {attempts})"
            )
            sleep(RESTART_PAUSE_S)
            continue
        raise FruitlensError(failure(cluster, cluster_id, found.why if found else None))
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------
# submit, status, logs, down
# ---------------------------------------------------------------------------------------------


def submit(settings: EmrSettings, cluster_id: str, command: str, args: list[str]) -> str:
    check_job_args(settings, command, args)
    emr = Aws(settings.region).emr
    with aws_errors("AddJobFlowSteps"):
        return emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=[step_request(settings, command, args)])["StepIds"][0]


def status(region: str, cluster_id: str, spot_discount_given: float | None = None) -> dict:
    aws = Aws(region)
    with aws_errors("status"):
        cluster = aws.emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
        steps = aws.emr.list_steps(ClusterId=cluster_id)["Steps"]
        groups = aws.emr.list_instance_groups(ClusterId=cluster_id)["InstanceGroups"]
    timeline = cluster["Status"].get("Timeline", {})
    start = timeline.get("CreationDateTime")
    end = timeline.get("EndDateTime") or datetime.now(timezone.utc)
    hours = max((end - start).total_seconds() / 3600, 0.0) if start else 0.0
    out = {
        "cluster": cluster_id,
        "name": cluster["Name"],
        "state": cluster["Status"]["State"],
        "release": cluster.get("ReleaseLabel"),
        "log_uri": cluster.get("LogUri"),
        "steps": [{"id": s["Id"], "name": s["Name"], "state": s["Status"]["State"]} for s in steps],
    }
    if cluster["Status"]["State"] in ENDED:
        out["state_change_reason"] = cluster["Status"].get("StateChangeReason") or {}
    attrs = cluster.get("Ec2InstanceAttributes") or {}
    try:
        prices: Prices = resolve(region, [g["InstanceType"] for g in groups], aws)
        spot: SpotDiscount | None = None
        spot_groups = [g for g in groups if g.get("Market") == "SPOT"]
        if spot_groups:
            spot = spot_discount(
                prices, spot_groups[0]["InstanceType"], aws.ec2, attrs.get("Ec2AvailabilityZone"), spot_discount_given
            )
        public = True
        if attrs.get("Ec2SubnetId"):
            try:
                found = aws.ec2.describe_subnets(SubnetIds=[attrs["Ec2SubnetId"]])["Subnets"]
                public = bool(found and found[0].get("MapPublicIpOnLaunch"))
            except Exception:  # noqa: BLE001 - the subnet unreadable: priced with a public IP
                pass
        out["cost_so_far"] = cost_so_far(
            groups, hours, prices, spot, cluster.get("EbsRootVolumeSize") or ROOT_VOLUME_GB, public_ip=public
        )
    except FruitlensError as exc:
        out["cost_so_far"] = {"unavailable": str(exc)}
    return out


def logs(region: str, cluster_id: str, step_id: str) -> dict[str, str]:
    """The step's stdout/stderr from the cluster's log URI (EMR copies them there every few
    minutes). Files not there yet are skipped; any other S3 error is one line."""
    aws = Aws(region)
    with aws_errors(f"logs of {cluster_id}"):
        uri = log_uri(aws.emr.describe_cluster(ClusterId=cluster_id)["Cluster"])
    if not uri:
        raise FruitlensError(f"cluster {cluster_id} has no log URI")
    bucket, _, prefix = uri.split("://", 1)[-1].partition("/")
    out = {}
    for name in ("stdout.gz", "stderr.gz", "controller.gz"):
        key = f"{prefix.rstrip('/')}/{cluster_id}/steps/{step_id}/{name}".lstrip("/")
        try:
            with aws_errors(f"s3://{bucket}/{key}"):
                try:
                    body = aws.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                except aws.s3.exceptions.NoSuchKey:
                    continue
        except FruitlensError as exc:
            if "AccessDenied" in str(exc):
                raise FruitlensError(
                    f"{exc} (reading logs needs s3:GetObject and s3:ListBucket on the log URI; "
                    "see `fruitlens emr policy user`)"
                ) from None
            raise
        try:
            out[name.removesuffix(".gz")] = gzip.decompress(body).decode(errors="replace")
        except OSError:
            out[name.removesuffix(".gz")] = body.decode(errors="replace")
    return out


def down(region: str, cluster_id: str) -> None:
    emr = Aws(region).emr
    with aws_errors("TerminateJobFlows"):
        emr.terminate_job_flows(JobFlowIds=[cluster_id])
