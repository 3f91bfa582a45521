"""EMR deployment with boto3: request builders (pure, testable) and the commands."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from string import Template

from .. import FruitlensError
from ..packaging import package_zip
from .costs import cost_so_far
from .settings import VENV, EmrSettings

REPO_SCRIPTS = Path(__file__).resolve().parents[3] / "scripts"


def policy(name: str, settings: EmrSettings) -> dict:
    """A least-privilege policy document from policies/NAME.json for this bucket and prefix."""
    text = resources.files("fruitlens.emr").joinpath("policies", f"{name}.json").read_text()
    return json.loads(Template(text).substitute(
        BUCKET=settings.bucket, PREFIX=settings.prefix.strip("/"), INSTANCE_ROLE=settings.instance_profile))


def bootstrap_script() -> str:
    return resources.files("fruitlens.emr").joinpath("bootstrap.sh").read_text()


def run_job_flow_request(settings: EmrSettings) -> dict:
    groups = [
        {"Name": "primary", "InstanceRole": "MASTER", "Market": "ON_DEMAND",
         "InstanceType": settings.primary_type, "InstanceCount": 1},
        {"Name": "core", "InstanceRole": "CORE", "Market": "ON_DEMAND",
         "InstanceType": settings.core_type, "InstanceCount": settings.core_count},
    ]
    if settings.task_count:
        groups.append({"Name": "task", "InstanceRole": "TASK", "Market": "SPOT" if settings.task_spot else "ON_DEMAND",
                       "InstanceType": settings.task_type, "InstanceCount": settings.task_count})
    instances = {"InstanceGroups": groups, "KeepJobFlowAliveWhenNoSteps": True, "TerminationProtected": False}
    if settings.subnet_id:
        instances["Ec2SubnetId"] = settings.subnet_id
    return {
        "Name": settings.name,
        "ReleaseLabel": settings.release_label,
        "LogUri": settings.logs,
        "Applications": [{"Name": "Spark"}],
        "Instances": instances,
        "BootstrapActions": [{
            "Name": "install fruitlens dependencies (uv.lock versions)",
            "ScriptBootstrapAction": {"Path": f"{settings.artifacts}/bootstrap.sh", "Args": [settings.artifacts]},
        }],
        "Configurations": [{
            "Classification": "spark-env",
            "Configurations": [{"Classification": "export", "Properties": {"PYSPARK_PYTHON": f"{VENV}/bin/python"}}],
        }],
        "AutoTerminationPolicy": {"IdleTimeout": settings.idle_timeout_s},
        "ServiceRole": settings.service_role,
        "JobFlowRole": settings.instance_profile,
        "VisibleToAllUsers": True,
        "Tags": [{"Key": "app", "Value": "fruitlens"}],
    }


def step_request(settings: EmrSettings, command: str, input_uri: str, output_uri: str, extra: list[str]) -> dict:
    args = [
        "spark-submit", "--deploy-mode", "client", "--master", "yarn",
        "--conf", f"spark.pyspark.python={VENV}/bin/python",
        "--conf", f"spark.pyspark.driver.python={VENV}/bin/python",
        "--py-files", f"{settings.artifacts}/fruitlens.zip",
        f"{settings.artifacts}/fruitlens_submit.py", command, input_uri, output_uri, *extra,
    ]
    return {"Name": f"fruitlens {command} {input_uri} -> {output_uri}", "ActionOnFailure": "CONTINUE",
            "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args}}


def locked_requirements() -> str:
    """uv.lock's versions of the dependencies, without PySpark (EMR brings Spark 3.5)."""
    import shutil
    import sys

    uv = shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))
    if not uv or not (REPO_SCRIPTS.parent / "uv.lock").exists():
        raise FruitlensError("`fruitlens emr up` runs from a fruitlens checkout with uv (it ships uv.lock's versions)")
    out = subprocess.run([uv, "export", "--frozen", "--no-hashes", "--no-dev", "--no-emit-project", "--quiet"],
                         cwd=REPO_SCRIPTS.parent, capture_output=True, text=True)
    if out.returncode != 0:
        raise FruitlensError(f"cannot export the locked requirements (uv export): {out.stderr.strip()[:200]}")
    keep = [l for l in out.stdout.splitlines() if l and not l.startswith(("pyspark==", "py4j==", "#", " "))]
    return "\n".join(keep) + "\n"


def upload_artifacts(settings: EmrSettings, s3) -> list[str]:
    files = {
        "bootstrap.sh": bootstrap_script().encode(),
        "requirements.txt": locked_requirements().encode(),
        "fruitlens.zip": Path(package_zip()).read_bytes(),
        "fruitlens_submit.py": (REPO_SCRIPTS / "fruitlens_submit.py").read_bytes(),
    }
    prefix = f"{settings.prefix.strip('/')}/artifacts"
    for name, body in files.items():
        s3.put_object(Bucket=settings.bucket, Key=f"{prefix}/{name}", Body=body)
    return [f"{settings.artifacts}/{name}" for name in files]


def create_roles(settings: EmrSettings, iam) -> None:
    """The two EMR roles with the repo's least-privilege policies (idempotent)."""
    roles = (
        (settings.service_role, "service-trust", "service-role"),
        (settings.instance_profile, "ec2-trust", "ec2-instance-role"),
    )
    for role, trust, permissions in roles:
        try:
            iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(policy(trust, settings)))
        except iam.exceptions.EntityAlreadyExistsException:
            pass
        iam.put_role_policy(RoleName=role, PolicyName=f"{role}-policy",
                            PolicyDocument=json.dumps(policy(permissions, settings)))
    try:
        iam.create_instance_profile(InstanceProfileName=settings.instance_profile)
        iam.add_role_to_instance_profile(InstanceProfileName=settings.instance_profile, RoleName=settings.instance_profile)
    except iam.exceptions.EntityAlreadyExistsException:
        pass


def clients(region: str):
    import boto3

    session = boto3.session.Session(region_name=region)
    return session.client("emr"), session.client("s3"), session.client("iam")


def up(settings: EmrSettings, create_iam_roles: bool = False) -> str:
    settings.validate()
    emr, s3, iam = clients(settings.region)
    upload_artifacts(settings, s3)
    if create_iam_roles:
        create_roles(settings, iam)
    return emr.run_job_flow(**run_job_flow_request(settings))["JobFlowId"]


def submit(settings: EmrSettings, cluster_id: str, command: str, input_uri: str, output_uri: str, extra: list[str]) -> str:
    for uri, what in ((input_uri, "INPUT"), (output_uri, "OUTPUT")):
        if not uri.startswith("s3://"):
            raise FruitlensError(f"{what} must be an s3:// URI on EMR, got {uri!r}")
    emr, _, _ = clients(settings.region)
    step = step_request(settings, command, input_uri, output_uri, extra)
    return emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=[step])["StepIds"][0]


def status(region: str, cluster_id: str) -> dict:
    emr, _, _ = clients(region)
    cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    steps = emr.list_steps(ClusterId=cluster_id)["Steps"]
    groups = emr.list_instance_groups(ClusterId=cluster_id)["InstanceGroups"]
    timeline = cluster["Status"].get("Timeline", {})
    start = timeline.get("CreationDateTime")
    end = timeline.get("EndDateTime") or datetime.now(timezone.utc)
    hours = max((end - start).total_seconds() / 3600, 0.0) if start else 0.0
    return {
        "cluster": cluster_id, "name": cluster["Name"], "state": cluster["Status"]["State"],
        "release": cluster.get("ReleaseLabel"), "log_uri": cluster.get("LogUri"),
        "steps": [{"id": s["Id"], "name": s["Name"], "state": s["Status"]["State"]} for s in steps],
        "cost_so_far": cost_so_far(region, groups, hours),
    }


def logs(region: str, cluster_id: str, step_id: str) -> dict[str, str]:
    """The step's stdout/stderr from the cluster's log URI (EMR copies them there every few minutes)."""
    import gzip

    emr, s3, _ = clients(region)
    log_uri = emr.describe_cluster(ClusterId=cluster_id)["Cluster"].get("LogUri") or ""
    bucket, _, prefix = log_uri.removeprefix("s3://").removeprefix("s3n://").partition("/")
    out = {}
    for name in ("stdout.gz", "stderr.gz", "controller.gz"):
        key = f"{prefix.rstrip('/')}/{cluster_id}/steps/{step_id}/{name}".lstrip("/")
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            out[name.removesuffix(".gz")] = gzip.decompress(body).decode(errors="replace")
        except s3.exceptions.NoSuchKey:
            continue
    return out


def down(region: str, cluster_id: str) -> None:
    emr, _, _ = clients(region)
    emr.terminate_job_flows(JobFlowIds=[cluster_id])
