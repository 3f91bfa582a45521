"""EMR deployment with boto3: request builders (pure, validated against botocore's service models
in the tests) and the commands. Everything uploaded to the cluster ships inside the package."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from string import Template

from .. import FruitlensError
from ..spark.packaging import package_zip
from .costs import cost_so_far
from .settings import MANAGED_TAG, MODELS_DIR, VENV, EmrSettings

JOB_COMMANDS = ("run", "featurize", "reduce", "train", "classify")
MANAGED_SERVICE_POLICY = "iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"
REQUIREMENTS = "requirements-emr7.txt"  # pinned for EMR 7.x: Python 3.11, Spark 3.5, NumPy < 2
# Wheel tags of EMR 7.x nodes: Amazon Linux 2023 (glibc 2.34), x86_64, CPython 3.11. pip does not
# expand an explicit --platform to older glibc versions, so every one is listed.
WHEEL_PLATFORMS = tuple(f"manylinux_2_{minor}_x86_64" for minor in range(34, 4, -1)) + (
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64")

_package = resources.files("fruitlens.emr")


def _data(name: str) -> str:
    return _package.joinpath(name).read_text()


# ---------------------------------------------------------------------------------------------
# Policies
# ---------------------------------------------------------------------------------------------

def _render(name: str, settings: EmrSettings, account: str | None = None) -> dict:
    log_bucket, log_prefix = settings.log_location
    text = _data(f"policies/{name}.json")
    if "${ACCOUNT}" in text and not re.fullmatch(r"\d{12}", account or ""):
        raise FruitlensError(f"the {name} policy needs the 12-digit AWS account id, got {account!r}")
    return json.loads(Template(text).substitute(
        PARTITION=settings.partition, BUCKET=settings.bucket, PREFIX=settings.key_prefix,
        LOG_BUCKET=log_bucket, LOG_PREFIX=log_prefix, ACCOUNT=account or "",
        SERVICE_ROLE=settings.service_role, INSTANCE_ROLE=settings.instance_profile))


def instance_role_policy(settings: EmrSettings) -> dict:
    """What the cluster's nodes may do: read artifacts/, write (only put) logs/, read and write the
    data prefixes; nothing else in the bucket, nothing in any other bucket."""
    arn = f"arn:{settings.partition}:s3:::"
    bucket, prefix = settings.bucket, settings.key_prefix
    log_bucket, log_prefix = settings.log_location
    listable = [f"{prefix}/artifacts/*"]
    for key in settings.data_keys:
        listable += [key, f"{key}/*"]
    statements = [
        {"Sid": "BucketLocation", "Effect": "Allow", "Action": "s3:GetBucketLocation",
         "Resource": sorted({f"{arn}{bucket}", f"{arn}{log_bucket}"})},
        {"Sid": "ListOnlyDataAndArtifacts", "Effect": "Allow", "Action": "s3:ListBucket",
         "Resource": f"{arn}{bucket}", "Condition": {"StringLike": {"s3:prefix": listable}}},
        {"Sid": "ReadArtifactsNeverWrite", "Effect": "Allow", "Action": "s3:GetObject",
         "Resource": f"{arn}{bucket}/{prefix}/artifacts/*"},
        {"Sid": "WriteLogsOnly", "Effect": "Allow", "Action": "s3:PutObject",
         "Resource": f"{arn}{log_bucket}/{log_prefix}*"},
        {"Sid": "ReadWriteData", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
         "Resource": [f"{arn}{bucket}/{key}/*" for key in settings.data_keys]},
    ]
    return {"Version": "2012-10-17", "Statement": statements}


def policy(name: str, settings: EmrSettings, account: str | None = None) -> dict:
    """A policy document for this deployment: ec2-instance-role, service-role (the inline part; the
    role also gets AmazonEMRServicePolicy_v2), ec2-trust, service-trust (needs `account`: EMR may
    assume the role only on behalf of this account, the confused-deputy guard), user-policy."""
    if name == "ec2-instance-role":
        return instance_role_policy(settings)
    return _render(name, settings, account)


def managed_service_policy_arn(settings: EmrSettings) -> str:
    return f"arn:{settings.partition}:{MANAGED_SERVICE_POLICY}"


# ---------------------------------------------------------------------------------------------
# Requests (pure)
# ---------------------------------------------------------------------------------------------

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
        "BootstrapActions": [{
            "Name": "fruitlens dependencies (pinned for EMR 7)" + (", offline" if settings.offline_nodes else ""),
            "ScriptBootstrapAction": {"Path": f"{settings.artifacts}/bootstrap.sh", "Args": args},
        }],
        "Configurations": [{
            "Classification": "spark-env",
            "Configurations": [{"Classification": "export", "Properties": env}],
        }],
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
        raise FruitlensError(f"submit {command}: give its s3:// locations, e.g. "
                             f"submit CLUSTER {command} {settings.data_uris[0]}in {settings.data_uris[0]}out")
    for a in values:
        if a.startswith(("/", "./", "../", "~", "file:")):
            raise FruitlensError(f"submit: {a!r} is a local path; on EMR every location is s3://")
    for uri in uris:
        bucket, _, key = uri.split("://", 1)[1].partition("/")
        key = key.strip("/")
        if bucket != settings.bucket or not any(key == d or key.startswith(d + "/") for d in settings.data_keys):
            raise FruitlensError(f"submit: {uri} is outside the data prefixes the cluster's role may use "
                                 f"({', '.join(settings.data_uris)}); see --data-prefix")


def step_request(settings: EmrSettings, command: str, args: list[str]) -> dict:
    spark = [
        "spark-submit", "--deploy-mode", "client", "--master", "yarn",
        "--conf", f"spark.pyspark.python={VENV}/bin/python",
        "--conf", f"spark.pyspark.driver.python={VENV}/bin/python",
        "--py-files", f"{settings.artifacts}/fruitlens.zip",
        f"{settings.artifacts}/fruitlens_submit.py", command, *args,
    ]
    name = " ".join(["fruitlens", command, *args])
    return {"Name": name[:256], "ActionOnFailure": "CONTINUE",
            "HadoopJarStep": {"Jar": "command-runner.jar", "Args": spark}}


def iam_requests(settings: EmrSettings, account: str) -> list[tuple[str, dict]]:
    """Every IAM request `--create-roles` makes, in order (operation name, parameters). `account`:
    the caller's account id (sts:GetCallerIdentity), for the service role's trust policy."""
    tags = [{"Key": "app", "Value": "fruitlens"}]
    service, instance = settings.service_role, settings.instance_profile
    trust = json.dumps(policy("service-trust", settings, account))
    # EC2 launches spot instances only with its service-linked role, which a fresh account lacks and
    # AmazonEMRServicePolicy_v2 does not create
    spot = [("CreateServiceLinkedRole", {"AWSServiceName": "spot.amazonaws.com"})] \
        if settings.task_count and settings.task_spot else []
    return [
        ("CreateRole", {"RoleName": service, "AssumeRolePolicyDocument": trust,
                        "Description": "fruitlens: EMR service role (AmazonEMRServicePolicy_v2)", "Tags": tags}),
        ("AttachRolePolicy", {"RoleName": service, "PolicyArn": managed_service_policy_arn(settings)}),
        ("PutRolePolicy", {"RoleName": service, "PolicyName": "fruitlens-pass-instance-role",
                           "PolicyDocument": json.dumps(policy("service-role", settings))}),
        ("CreateRole", {"RoleName": instance, "AssumeRolePolicyDocument": json.dumps(policy("ec2-trust", settings)),
                        "Description": "fruitlens: EMR nodes (read artifacts, write logs, data prefixes)", "Tags": tags}),
        ("PutRolePolicy", {"RoleName": instance, "PolicyName": "fruitlens-s3",
                           "PolicyDocument": json.dumps(policy("ec2-instance-role", settings))}),
        ("CreateInstanceProfile", {"InstanceProfileName": instance, "Tags": tags}),
        ("AddRoleToInstanceProfile", {"InstanceProfileName": instance, "RoleName": instance}),
        *spot,
    ]


# ---------------------------------------------------------------------------------------------
# Artifacts
# ---------------------------------------------------------------------------------------------

def bootstrap_script() -> str:
    return _data("bootstrap.sh")


def pinned_requirements() -> str:
    """The pinned dependency set for EMR 7.x nodes (package data, made with `uv pip compile`)."""
    return _data(REQUIREMENTS)


def artifact_files() -> dict[str, bytes]:
    """What every cluster needs under ARTIFACTS, all from the installed package."""
    return {
        "bootstrap.sh": bootstrap_script().encode(),
        "requirements.txt": pinned_requirements().encode(),
        "fruitlens.zip": Path(package_zip()).read_bytes(),
        "fruitlens_submit.py": _package.joinpath("fruitlens_submit.py").read_bytes(),
    }


def model_files() -> list[Path]:
    """Verified local copies of every backbone's model file (cache, $FRUITLENS_MODEL_DIR or download)."""
    from ..embedding.backbone_file import resolve
    from ..embedding.backbones import SPECS

    return [resolve(spec.file) for spec in SPECS.values()]


def pip_download_command(requirements: Path, dest: Path) -> list[str]:
    """`pip download` of the pinned set as EMR 7.x nodes install it (manylinux x86_64, CPython 3.11)."""
    import importlib.util

    if importlib.util.find_spec("pip"):
        pip = [sys.executable, "-m", "pip"]
    else:
        uv = shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))
        if not uv:
            raise FruitlensError("--offline-nodes downloads wheels with pip: install pip or uv, or pass --wheels DIR")
        pip = [uv, "tool", "run", "--from", "pip", "pip"]
    platforms = [x for p in WHEEL_PLATFORMS for x in ("--platform", p)]
    return [*pip, "download", "--quiet", "--disable-pip-version-check", "--no-deps", "--only-binary=:all:",
            *platforms, "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
            "-r", str(requirements), "-d", str(dest)]


def download_wheels(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    reqs = dest / "requirements.txt"
    reqs.write_text(pinned_requirements())
    out = subprocess.run(pip_download_command(reqs, dest), capture_output=True, text=True)
    reqs.unlink()
    if out.returncode != 0:
        raise FruitlensError(f"pip download of the pinned wheels failed: {_last_line(out.stderr)}")
    return dest


def wheel_fits_emr7(filename: str) -> bool:
    """Whether a wheel installs on EMR 7.x nodes (CPython 3.11, manylinux x86_64 with glibc <= 2.34),
    from its file name's tags (name-version[-build]-python-abi-platform.whl, each tag set '.'-joined)."""
    parts = filename.removesuffix(".whl").split("-")
    if not filename.endswith(".whl") or len(parts) not in (5, 6):
        return False
    pythons, abis, platforms = (set(t.split(".")) for t in parts[-3:])
    linux = any(p == "any" or p in WHEEL_PLATFORMS for p in platforms)
    if "cp311" in abis:
        return linux and "cp311" in pythons
    if "abi3" in abis:
        return linux and any(re.fullmatch(r"cp3(\d+)", p) and int(p[3:]) <= 11 for p in pythons)
    return linux and "none" in abis and bool(pythons & {"py3", "py311", "cp311"})


def check_wheels(wheels: Path) -> None:
    """Every wheel in the folder fits EMR 7's nodes, and every pinned name==version has one (what
    `pip --no-index` will need)."""
    wrong = sorted(w.name for w in wheels.glob("*.whl") if not wheel_fits_emr7(w.name))
    if wrong:
        raise FruitlensError(f"--wheels {wheels}: not for EMR 7's nodes (CPython 3.11, manylinux x86_64): "
                             f"{', '.join(wrong[:3])}" + (f" and {len(wrong) - 3} more" if len(wrong) > 3 else ""))
    have = {_canonical(w.name.split("-")[0]) + "==" + w.name.split("-")[1] for w in wheels.glob("*.whl")}
    missing = [f"{n}=={v}" for n, v in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", pinned_requirements(), re.M)
               if f"{_canonical(n)}=={v}" not in have]
    if missing:
        raise FruitlensError(f"--wheels {wheels}: no wheel for {', '.join(missing[:5])}"
                             + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def upload_artifacts(settings: EmrSettings, s3, wheels: Path | None = None) -> list[str]:
    """bootstrap.sh, the pinned requirements, fruitlens itself and the step entry point; with
    --offline-nodes also every wheel of the pinned set and the model files."""
    files: dict[str, bytes | Path] = dict(artifact_files())
    if settings.offline_nodes:
        with contextlib.ExitStack() as stack:
            if wheels is None:
                wheels = download_wheels(Path(stack.enter_context(tempfile.TemporaryDirectory())))
            check_wheels(wheels)
            files.update({f"wheels/{w.name}": w for w in sorted(wheels.glob("*.whl"))})
            files.update({f"models/{m.name}": m for m in model_files()})
            return _put_all(settings, s3, files)
    return _put_all(settings, s3, files)


def _put_all(settings: EmrSettings, s3, files: dict[str, bytes | Path]) -> list[str]:
    prefix = f"{settings.key_prefix}/artifacts"
    for name, body in files.items():
        if isinstance(body, Path):
            s3.upload_file(str(body), settings.bucket, f"{prefix}/{name}")
        else:
            s3.put_object(Bucket=settings.bucket, Key=f"{prefix}/{name}", Body=body)
    return [f"{settings.artifacts}/{name}" for name in files]


# ---------------------------------------------------------------------------------------------
# AWS calls
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def aws_errors(what: str):
    """botocore's and boto3's errors (a failed upload, an unknown profile) as one line
    (FruitlensError), never a traceback."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
    )

    try:
        yield
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code, message = str(err.get("Code", "error")), str(err.get("Message", ""))
        if "<Message>" in message:  # an XML error body botocore could not parse (e.g. from a proxy)
            found = dict(re.findall(r"<(Code|Message)>([^<]*)</", message))
            code, message = found.get("Code", code), found.get("Message", "")
        message = " ".join(message.split())[:300]
        raise FruitlensError(f"{what}: {code}: {message}".rstrip(": ")) from None
    except NoCredentialsError:
        raise FruitlensError(f"{what}: no AWS credentials found (environment, ~/.aws profile or role)") from None
    except EndpointConnectionError as exc:
        raise FruitlensError(f"{what}: cannot reach {exc.kwargs.get('endpoint_url', 'the AWS endpoint')}") from None
    except (BotoCoreError, Boto3Error) as exc:
        message = " ".join(str(exc).split())[:300]
        raise FruitlensError(f"{what}: {message}") from None


def clients(region: str):
    try:
        import boto3
    except ImportError:
        raise FruitlensError("`fruitlens emr` needs boto3: pip install boto3 (or fruitlens with its [emr] extra)") from None
    with aws_errors("AWS configuration"):  # e.g. AWS_PROFILE naming no profile
        session = boto3.session.Session(region_name=region)
        return {name: session.client(name) for name in ("emr", "s3", "iam", "ec2", "sts")}


def account_id(sts) -> str:
    with aws_errors("sts:GetCallerIdentity"):
        return sts.get_caller_identity()["Account"]


def _code(exc) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


def create_roles(settings: EmrSettings, iam, account: str, sleep=time.sleep) -> None:
    """The two roles and the instance profile (idempotent), waiting for IAM to show each one:
    IAM is eventually consistent, and EMR refuses a profile it cannot see yet. With spot task
    nodes, also EC2's spot service-linked role if the account lacks it."""
    existing_profile_roles, created = None, False
    for op, params in iam_requests(settings, account):
        if op == "CreateServiceLinkedRole":
            try:
                iam.create_service_linked_role(**params)
                created = True
            except Exception as exc:  # botocore ClientError: the role exists already ("has been taken")
                message = str(exc).lower()
                if _code(exc) not in ("InvalidInput", "EntityAlreadyExists") or \
                        not ("has been taken" in message or "already exists" in message):
                    raise
        elif op == "CreateRole":
            try:
                iam.get_role(RoleName=params["RoleName"])
                continue  # keep the role; its policies are (re)written below
            except iam.exceptions.NoSuchEntityException:
                iam.create_role(**params)
                created = True
            iam.get_waiter("role_exists").wait(RoleName=params["RoleName"], WaiterConfig={"Delay": 2, "MaxAttempts": 30})
        elif op == "CreateInstanceProfile":
            try:
                profile = iam.get_instance_profile(InstanceProfileName=params["InstanceProfileName"])
            except iam.exceptions.NoSuchEntityException:
                iam.create_instance_profile(**params)
                created = True
                iam.get_waiter("instance_profile_exists").wait(
                    InstanceProfileName=params["InstanceProfileName"], WaiterConfig={"Delay": 2, "MaxAttempts": 30})
                profile = iam.get_instance_profile(InstanceProfileName=params["InstanceProfileName"])
            existing_profile_roles = [r["RoleName"] for r in profile["InstanceProfile"]["Roles"]]
        elif op == "AddRoleToInstanceProfile":
            if params["RoleName"] in existing_profile_roles:
                continue
            if existing_profile_roles:
                raise FruitlensError(f"instance profile {params['InstanceProfileName']} holds the role "
                                     f"{existing_profile_roles[0]}, not {params['RoleName']}: remove it or "
                                     "choose another profile name")
            iam.add_role_to_instance_profile(**params)
            created = True
        else:
            getattr(iam, _snake(op))(**params)
    if created:
        sleep(10)  # a new role or profile reaches EC2 and EMR seconds after IAM shows it


def _snake(op: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", op).lower()


PROPAGATION = re.compile(r"instance ?profile|role|not authorized to perform|cannot be assumed", re.I)


def retry_propagation(call, sleep=time.sleep, attempts: int = 8, first_delay: float = 5.0):
    """`call()`, again after a pause while EMR answers with an IAM propagation error (a role or
    instance profile created seconds ago): bounded, 5 s then 10, 15, ... 20 s, about 2 minutes."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:  # botocore ClientError
            code, message = _code(exc), str(exc)
            if attempt == attempts or code not in ("ValidationException", "AccessDeniedException") \
                    or not PROPAGATION.search(message):
                raise
            sleep(min(first_delay * attempt, 20.0))


def network(settings: EmrSettings, ec2, tag: bool = False) -> str:
    """The subnet to use, checked (or, with tag=True, made) to carry the managed-policy tag on it
    and on its VPC, as AmazonEMRServicePolicy_v2 requires. Without --subnet-id: the default VPC's
    first default subnet."""
    key, value = MANAGED_TAG["Key"], MANAGED_TAG["Value"]
    if settings.subnet_id:
        subnets = ec2.describe_subnets(SubnetIds=[settings.subnet_id])["Subnets"]
    else:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise FruitlensError("no default VPC in this region: pass --subnet-id")
        subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpcs[0]["VpcId"]]},
                                                {"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
        if not subnets:
            raise FruitlensError("the default VPC has no default subnet: pass --subnet-id")
        subnets = sorted(subnets, key=lambda s: s["AvailabilityZone"])[:1]
    subnet = subnets[0]
    vpc = ec2.describe_vpcs(VpcIds=[subnet["VpcId"]])["Vpcs"][0]
    untagged = [r[f"{kind}Id"] for r, kind in ((subnet, "Subnet"), (vpc, "Vpc"))
                if {"Key": key, "Value": value} not in r.get("Tags", [])]
    if untagged and tag:
        ec2.create_tags(Resources=untagged, Tags=[dict(MANAGED_TAG)])
    elif untagged:
        raise FruitlensError(
            f"{' and '.join(untagged)} lack the tag {key}={value} that AmazonEMRServicePolicy_v2 requires "
            f"(EMR could not launch nodes there): pass --tag-network, or run "
            f"aws ec2 create-tags --resources {' '.join(untagged)} --tags Key={key},Value={value}")
    return subnet["SubnetId"]


def up(settings: EmrSettings, create_iam_roles: bool = False, tag_network: bool = False,
       wheels: Path | None = None, sleep=time.sleep) -> str:
    from dataclasses import replace

    settings.validate()
    aws = clients(settings.region)
    if settings.offline_nodes and wheels is not None:
        check_wheels(wheels)  # before anything is tagged or uploaded
    with aws_errors("network"):
        settings = replace(settings, subnet_id=network(settings, aws["ec2"], tag=tag_network))
    with aws_errors("upload artifacts"):
        upload_artifacts(settings, aws["s3"], wheels)
    if create_iam_roles:
        account = account_id(aws["sts"])
        with aws_errors("create roles"):
            create_roles(settings, aws["iam"], account, sleep=sleep)
    with aws_errors("RunJobFlow"):
        request = run_job_flow_request(settings)
        return retry_propagation(lambda: aws["emr"].run_job_flow(**request), sleep=sleep)["JobFlowId"]


def submit(settings: EmrSettings, cluster_id: str, command: str, args: list[str]) -> str:
    check_job_args(settings, command, args)
    emr = clients(settings.region)["emr"]
    with aws_errors("AddJobFlowSteps"):
        return emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=[step_request(settings, command, args)])["StepIds"][0]


def status(region: str, cluster_id: str, spot_discount: float | None = None) -> dict:
    emr = clients(region)["emr"]
    with aws_errors("status"):
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
        "cost_so_far": cost_so_far(region, groups, hours, spot_discount=spot_discount),
    }


def logs(region: str, cluster_id: str, step_id: str) -> dict[str, str]:
    """The step's stdout/stderr from the cluster's log URI (EMR copies them there every few
    minutes). Files not there yet are skipped; any other S3 error is one line."""
    import gzip

    aws = clients(region)
    with aws_errors(f"logs of {cluster_id}"):
        log_uri = aws["emr"].describe_cluster(ClusterId=cluster_id)["Cluster"].get("LogUri") or ""
    if not log_uri:
        raise FruitlensError(f"cluster {cluster_id} has no log URI")
    bucket, _, prefix = log_uri.split("://", 1)[-1].partition("/")
    out = {}
    for name in ("stdout.gz", "stderr.gz", "controller.gz"):
        key = f"{prefix.rstrip('/')}/{cluster_id}/steps/{step_id}/{name}".lstrip("/")
        try:
            with aws_errors(f"s3://{bucket}/{key}"):
                try:
                    body = aws["s3"].get_object(Bucket=bucket, Key=key)["Body"].read()
                except aws["s3"].exceptions.NoSuchKey:
                    continue
        except FruitlensError as exc:
            if "AccessDenied" in str(exc):
                raise FruitlensError(f"{exc} (reading logs needs s3:GetObject and s3:ListBucket on the log URI; "
                                     "see `fruitlens emr policy user`)") from None
            raise
        try:
            out[name.removesuffix(".gz")] = gzip.decompress(body).decode(errors="replace")
        except OSError:
            out[name.removesuffix(".gz")] = body.decode(errors="replace")
    return out


def down(region: str, cluster_id: str) -> None:
    emr = clients(region)["emr"]
    with aws_errors("TerminateJobFlows"):
        emr.terminate_job_flows(JobFlowIds=[cluster_id])
