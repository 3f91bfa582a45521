"""IAM for the EMR kit: the policy documents, the roles `--create-roles` makes (and keeps up to
date when fruitlens made them), and telling an IAM propagation delay from a permanent IAM error.

Two roles: the EMR service role (AWS's managed AmazonEMRServicePolicy_v2 + PassRole of the
instance role) and the nodes' instance role/profile (S3 only: what EMRFS needs on the data
prefixes, read-only artifacts, write-only logs)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from string import Template

from .. import FruitlensError
from .aws import code, message
from .settings import EmrSettings

MANAGED_SERVICE_POLICY = "iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"
TAG = {"Key": "app", "Value": "fruitlens"}  # what --create-roles puts on what it creates; only those are updated
INSTANCE_POLICY_NAME = "fruitlens-s3"
SERVICE_POLICY_NAME = "fruitlens-pass-instance-role"
# IAM changes usually reach EMR and EC2 within seconds, sometimes minutes: an IAM error about a role
# or profile created or changed within this window is treated as propagation, never later.
PROPAGATION_WINDOW_S = 600

_package = resources.files("fruitlens.emr")


def _render(name: str, settings: EmrSettings, account: str | None = None) -> dict:
    log_bucket, log_prefix = settings.log_location
    text = _package.joinpath(f"policies/{name}.json").read_text()
    if "${ACCOUNT}" in text and not re.fullmatch(r"\d{12}", account or ""):
        raise FruitlensError(f"the {name} policy needs the 12-digit AWS account id, got {account!r}")
    return json.loads(
        Template(text).substitute(
            PARTITION=settings.partition,
            BUCKET=settings.bucket,
            PREFIX=settings.key_prefix,
            LOG_BUCKET=log_bucket,
            LOG_PREFIX=log_prefix,
            ACCOUNT=account or "",
            SERVICE_ROLE=settings.service_role,
            INSTANCE_ROLE=settings.instance_profile,
        )
    )


def ancestor_keys(key: str) -> list[str]:
    """The keys a Hadoop-style status check of `key` and of each of its parent folders asks S3
    for (HEAD of the key, of its folder marker `key/` and of EMRFS's legacy `key_$folder$`), as
    policy resources: a literal $ is written ${$} (IAM's escape, since `${` starts a variable)."""
    parts = key.strip("/").split("/")
    keys = []
    for depth in range(len(parts), 0, -1):
        folder = "/".join(parts[:depth])
        keys += [folder, f"{folder}/", f"{folder}_${{$}}folder${{$}}"]
    return keys


def instance_role_policy(settings: EmrSettings) -> dict:
    """What the cluster's nodes may do in S3. AWS's EMRFS example policy (EMR Management Guide,
    "Service role for cluster EC2 instances", least-privilege, "Reading and writing data to Amazon
    S3 using EMRFS"), scoped to the data prefixes wherever S3 allows a key in the resource:

    - bucket-level actions (they take no key): ListBucket, ListBucketMultipartUploads,
      ListBucketVersions, GetBucketVersioning, GetBucketLocation on the data bucket. EMRFS lists
      and checks the status of every folder on a path, parents of the data prefixes included, so
      ListBucket is not narrowed by s3:prefix (that is what made parent checks fail with 403);
      a listing shows key names and sizes, never contents;
    - status checks of the data prefixes and their parent folders: GetObject on exactly those keys
      (a HEAD of `fruits360/data`, `fruits360/data/`, `fruits360/data_$folder$`, ...), nothing
      below them;
    - everything EMRFS does to objects, on the data prefixes only: Get/Put/DeleteObject,
      GetObjectVersion, Get/PutObjectTagging, multipart (AbortMultipartUpload,
      ListMultipartUploadParts; uploads themselves are PutObject);
    - artifacts: GetObject only (a node never rewrites the bootstrap.sh the next cluster runs as
      root); logs: PutObject only (AWS's log-archiving example).

    Left out of AWS's example: s3:CreateBucket and s3:PutBucketVersioning (the bucket exists
    before `up`; no node may change it), s3:HeadBucket (not an IAM action: ListBucket allows it),
    and the DynamoDB, SQS and CloudWatch statements of EMRFS consistent view, which fruitlens does
    not enable (S3 is strongly consistent)."""
    arn = f"arn:{settings.partition}:s3:::"
    bucket, prefix = settings.bucket, settings.key_prefix
    log_bucket, log_prefix = settings.log_location
    parents = sorted({k for d in settings.data_keys for k in ancestor_keys(d)})
    statements = [
        {
            "Sid": "EMRFSBucketLevel",
            "Effect": "Allow",
            "Action": [
                "s3:ListBucket",
                "s3:ListBucketMultipartUploads",
                "s3:ListBucketVersions",
                "s3:GetBucketVersioning",
                "s3:GetBucketLocation",
            ],
            "Resource": f"{arn}{bucket}",
        },
        {
            "Sid": "EMRFSStatusOfDataFolders",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": [f"{arn}{bucket}/{k}" for k in parents],
        },
        {
            "Sid": "EMRFSReadWriteDataPrefixes",
            "Effect": "Allow",
            "Action": [
                "s3:GetObject",
                "s3:GetObjectVersion",
                "s3:GetObjectTagging",
                "s3:PutObject",
                "s3:PutObjectTagging",
                "s3:DeleteObject",
                "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts",
            ],
            "Resource": [f"{arn}{bucket}/{key}/*" for key in settings.data_keys],
        },
        {
            "Sid": "ReadArtifactsNeverWrite",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": f"{arn}{bucket}/{prefix}/artifacts/*",
        },
        {
            "Sid": "WriteLogsOnly",
            "Effect": "Allow",
            "Action": "s3:PutObject",
            "Resource": f"{arn}{log_bucket}/{log_prefix}*",
        },
    ]
    if log_bucket != bucket:  # the log pusher locates the bucket it writes to
        statements.append(
            {
                "Sid": "LogBucketLocation",
                "Effect": "Allow",
                "Action": "s3:GetBucketLocation",
                "Resource": f"{arn}{log_bucket}",
            }
        )
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


def iam_requests(settings: EmrSettings, account: str) -> list[tuple[str, dict]]:
    """Every IAM request `--create-roles` may make, in order (operation name, parameters).
    `account`: the caller's account id (sts:GetCallerIdentity), for the service role's trust policy."""
    tags = [dict(TAG)]
    service, instance = settings.service_role, settings.instance_profile
    trust = json.dumps(policy("service-trust", settings, account))
    # EC2 launches spot instances only with its service-linked role, which a fresh account lacks and
    # AmazonEMRServicePolicy_v2 does not create
    spot = (
        [("CreateServiceLinkedRole", {"AWSServiceName": "spot.amazonaws.com"})]
        if settings.task_count and settings.task_spot
        else []
    )
    return [
        (
            "CreateRole",
            {
                "RoleName": service,
                "AssumeRolePolicyDocument": trust,
                "Description": "fruitlens: EMR service role (AmazonEMRServicePolicy_v2)",
                "Tags": tags,
            },
        ),
        ("AttachRolePolicy", {"RoleName": service, "PolicyArn": managed_service_policy_arn(settings)}),
        (
            "PutRolePolicy",
            {
                "RoleName": service,
                "PolicyName": SERVICE_POLICY_NAME,
                "PolicyDocument": json.dumps(policy("service-role", settings)),
            },
        ),
        (
            "CreateRole",
            {
                "RoleName": instance,
                "AssumeRolePolicyDocument": json.dumps(policy("ec2-trust", settings)),
                "Description": "fruitlens: EMR nodes (EMRFS on the data prefixes, read artifacts, write logs)",
                "Tags": tags,
            },
        ),
        (
            "PutRolePolicy",
            {
                "RoleName": instance,
                "PolicyName": INSTANCE_POLICY_NAME,
                "PolicyDocument": json.dumps(policy("ec2-instance-role", settings)),
            },
        ),
        ("CreateInstanceProfile", {"InstanceProfileName": instance, "Tags": tags}),
        ("AddRoleToInstanceProfile", {"InstanceProfileName": instance, "RoleName": instance}),
        *spot,
    ]


@dataclass
class IamChanges:
    """What `create_roles` did: `done` (one line each), `kept` (roles it found and left as they
    are: not made by fruitlens), and when it last changed anything (time.time(), None if nothing)."""

    done: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    changed_at: float | None = None

    def change(self, line: str) -> None:
        self.done.append(line)
        self.changed_at = time.time()


def _ours(tags: list[dict] | None) -> bool:
    return any(t.get("Key") == TAG["Key"] and t.get("Value") == TAG["Value"] for t in tags or [])


def _document(value) -> dict:
    """A policy document as IAM returns it (botocore decodes the URL-encoded JSON) or as text."""
    return json.loads(value) if isinstance(value, str) else value


def create_roles(settings: EmrSettings, iam, account: str, sleep=time.sleep) -> IamChanges:
    """The two roles and the instance profile, idempotent. A role or profile fruitlens created
    (tagged app=fruitlens) is brought to this version's documents: an inline policy is rewritten
    only when it differs, the managed policy attached only when missing. One that exists without
    that tag is someone else's: it is left exactly as it is (reported in `kept`). IAM is eventually
    consistent: each new role and profile is waited for (IAM waiters), and EMR refuses a profile it
    cannot see yet, so a change is followed by a short pause. With spot task nodes, also EC2's
    spot service-linked role if the account lacks it."""
    changes = IamChanges()
    ours: dict[str, bool] = {}
    profile_roles = None
    for op, params in iam_requests(settings, account):
        role = params.get("RoleName")
        if op == "CreateServiceLinkedRole":
            try:
                iam.create_service_linked_role(**params)
                changes.change("created EC2's spot service-linked role AWSServiceRoleForEC2Spot")
            except Exception as exc:  # ClientError: the role exists already ("has been taken")
                text = str(exc).lower()
                if code(exc) not in ("InvalidInput", "EntityAlreadyExists") or not (
                    "has been taken" in text or "already exists" in text
                ):
                    raise
        elif op == "CreateRole":
            try:
                found = iam.get_role(RoleName=role)["Role"]
                ours[role] = _ours(found.get("Tags"))
                if not ours[role]:
                    changes.kept.append(
                        f"role {role} exists and was not created by fruitlens (no tag app=fruitlens): left as it is"
                    )
                continue
            except iam.exceptions.NoSuchEntityException:
                iam.create_role(**params)
                ours[role] = True
                changes.change(f"created role {role}")
            iam.get_waiter("role_exists").wait(RoleName=role, WaiterConfig={"Delay": 2, "MaxAttempts": 30})
        elif op == "AttachRolePolicy":
            if not ours[role]:
                continue
            attached = [p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]]
            if params["PolicyArn"] not in attached:
                iam.attach_role_policy(**params)
                changes.change(f"attached {params['PolicyArn'].rsplit('/', 1)[1]} to role {role}")
        elif op == "PutRolePolicy":
            if not ours[role]:
                continue
            try:
                current = _document(
                    iam.get_role_policy(RoleName=role, PolicyName=params["PolicyName"])["PolicyDocument"]
                )
            except iam.exceptions.NoSuchEntityException:
                current = None
            if current != json.loads(params["PolicyDocument"]):
                iam.put_role_policy(**params)
                changes.change(f"{'updated' if current else 'put'} inline policy {params['PolicyName']} of role {role}")
        elif op == "CreateInstanceProfile":
            name = params["InstanceProfileName"]
            try:
                profile = iam.get_instance_profile(InstanceProfileName=name)
            except iam.exceptions.NoSuchEntityException:
                iam.create_instance_profile(**params)
                changes.change(f"created instance profile {name}")
                iam.get_waiter("instance_profile_exists").wait(
                    InstanceProfileName=name, WaiterConfig={"Delay": 2, "MaxAttempts": 30}
                )
                profile = iam.get_instance_profile(InstanceProfileName=name)
            profile_roles = [r["RoleName"] for r in profile["InstanceProfile"]["Roles"]]
        elif op == "AddRoleToInstanceProfile":
            if role in profile_roles:
                continue
            if profile_roles:
                raise FruitlensError(
                    f"instance profile {params['InstanceProfileName']} holds the role "
                    f"{profile_roles[0]}, not {role}: remove it or choose another profile name"
                )
            iam.add_role_to_instance_profile(**params)
            changes.change(f"put role {role} into instance profile {params['InstanceProfileName']}")
    if changes.changed_at:
        sleep(10)  # a new role or profile reaches EC2 and EMR seconds after IAM shows it
    return changes


# ---------------------------------------------------------------------------------------------
# IAM propagation or a permanent IAM error
# ---------------------------------------------------------------------------------------------

# What EMR says when a role or profile is not (yet) usable: "Invalid InstanceProfile: NAME.",
# "EMR service role arn:… is invalid", "… cannot be assumed", "… has insufficient … permissions".
IAM_PROBLEM = re.compile(
    r"instance ?profile|service role|\brole\b.{0,200}\b(invalid|cannot be assumed|"
    r"insufficient|does not exist|not authorized)",
    re.I,
)
# The caller's own permissions: never a propagation delay of the roles fruitlens manages.
CALLER_DENIED = re.compile(r"\b(user|assumed-role)\b[:/ ].{0,300}is not authorized to perform", re.I)


@dataclass(frozen=True)
class IamVerdict:
    propagation: bool
    why: str


def judge(
    settings: EmrSettings, iam, error_code: str, text: str, changes: IamChanges | None = None, now: float | None = None
) -> IamVerdict | None:
    """Whether an error EMR reported (RunJobFlow's, or a cluster's state-change reason) is an IAM
    propagation delay, worth retrying, or a permanent IAM problem; None when it is not about IAM.
    Propagation only when the error names a role or instance profile AND those were created or
    changed within PROPAGATION_WINDOW_S (by this run, or by IAM's CreateDate); a missing role or
    profile, a denied caller, or roles older than that are permanent."""
    now = time.time() if now is None else now
    if error_code in ("AccessDenied", "AccessDeniedException") or CALLER_DENIED.search(text):
        return IamVerdict(False, "your credentials lack a permission (see `fruitlens emr policy user`)")
    if not IAM_PROBLEM.search(text):
        return None
    ages, missing = [], []
    if changes and changes.changed_at:
        ages.append(now - changes.changed_at)
    for kind, name in (
        ("role", settings.service_role),
        ("role", settings.instance_profile),
        ("instance profile", settings.instance_profile),
    ):
        try:
            if kind == "role":
                created = iam.get_role(RoleName=name)["Role"]["CreateDate"]
            else:
                found = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
                created = found["CreateDate"]
                if not found.get("Roles"):
                    missing.append(f"instance profile {name} holds no role")
            ages.append(now - _timestamp(created))
        except Exception as exc:  # noqa: BLE001 - NoSuchEntity, or no permission to look
            if code(exc) == "NoSuchEntity":
                missing.append(f"{kind} {name} does not exist")
    if missing:
        return IamVerdict(False, f"{'; '.join(missing)} (pass --create-roles to create it)")
    recent = [a for a in ages if a < PROPAGATION_WINDOW_S]
    if recent:
        return IamVerdict(True, f"IAM changes of {min(recent):.0f} s ago may not have reached EMR and EC2 yet")
    why = "the roles were not changed in the last 10 minutes, so this is not IAM propagation"
    if not ages:
        why = "IAM could not be read to tell propagation from a permanent error"
    return IamVerdict(False, why)


def _timestamp(value) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def retry_propagation(call, verdict, sleep=time.sleep, attempts: int = 8, first_delay: float = 5.0):
    """`call()`, again after a pause while it fails with an IAM propagation error (`verdict(exc)`
    says so: judge() on the error): bounded, 5 s then 10, 15, ... 20 s, about 2 minutes. Any other
    error, a permanent IAM one included, is raised at once."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:  # botocore ClientError
            if attempt == attempts or not code(exc):
                raise
            found = verdict(exc)
            if found is None or not found.propagation:
                if found is not None:
                    raise FruitlensError(f"RunJobFlow: {code(exc)}: {message(exc)} ({found.why})") from None
                raise
            sleep(min(first_delay * attempt, 20.0))
