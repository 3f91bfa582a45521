"""What the account can run: the requested instance types as EC2 describes them (vCPUs, CPU
architecture), and the account's vCPU quotas (Service Quotas) against what the cluster asks for
plus what already runs, checked before `up` creates anything."""

from __future__ import annotations

from dataclasses import dataclass

from .. import FruitlensError
from .aws import Aws, aws_errors, code, short
from .settings import EmrSettings

# Service Quotas codes of EC2's vCPU quotas for the Standard instance families (A, C, D, H, I, M,
# R, T, Z), the ones fruitlens's CPU-only work runs on. Other families (F, G, Inf, P, X, Trn, DL,
# high memory, HPC) have quotas of their own, not checked here.
QUOTAS = {
    "on-demand": ("L-1216C47A", "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"),
    "spot": ("L-34B43A08", "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests"),
}
_NOT_STANDARD = ("inf", "dl", "trn", "hpc", "u-", "u7", "mac", "vt")


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    archs: tuple[str, ...]  # EC2's names: x86_64, arm64, i386

    @property
    def arch(self) -> str:
        """The architecture wheels are built for: x86_64 or aarch64 (Graviton)."""
        return "x86_64" if "x86_64" in self.archs else "aarch64" if "arm64" in self.archs else self.archs[0]


def instance_types(settings: EmrSettings, ec2) -> dict[str, InstanceType]:
    """The cluster's instance types as EC2 describes them in the region (ec2:DescribeInstanceTypes);
    a type EC2 does not know there is one line."""
    names = sorted(
        {settings.primary_type, settings.core_type} | ({settings.task_type} if settings.task_count else set())
    )
    try:
        with aws_errors("ec2:DescribeInstanceTypes"):
            found = ec2.describe_instance_types(InstanceTypes=names)["InstanceTypes"]
    except FruitlensError as exc:
        if "InvalidInstanceType" in str(exc):
            raise FruitlensError(
                f"instance type not offered in {settings.region}: {str(exc).split(': ', 2)[-1]}"
            ) from None
        raise
    types = {
        t["InstanceType"]: InstanceType(
            t["InstanceType"], int(t["VCpuInfo"]["DefaultVCpus"]), tuple(t["ProcessorInfo"]["SupportedArchitectures"])
        )
        for t in found
    }
    missing = [n for n in names if n not in types]
    if missing:
        raise FruitlensError(f"instance type not offered in {settings.region}: {', '.join(missing)}")
    return types


def architectures(settings: EmrSettings, types: dict[str, InstanceType]) -> tuple[str, ...]:
    """Every CPU architecture among the cluster's nodes (each runs the bootstrap), x86_64 first."""
    used = {types[settings.primary_type].arch, types[settings.core_type].arch}
    if settings.task_count:
        used.add(types[settings.task_type].arch)
    return tuple(sorted(used, key=lambda a: (a != "x86_64", a)))


def standard(instance_type: str) -> bool:
    family = instance_type.split(".")[0]
    return family[:1] in "acdhimrtz" and not family.startswith(_NOT_STANDARD)


def requested(settings: EmrSettings, types: dict[str, InstanceType]) -> dict[str, int]:
    """vCPUs of Standard families the cluster asks for, per market (on-demand, spot)."""
    need = {"on-demand": 0, "spot": 0}
    groups = [(settings.primary_type, 1, False), (settings.core_type, settings.core_count, False)]
    if settings.task_count:
        groups.append((settings.task_type, settings.task_count, settings.task_spot))
    for name, count, spot in groups:
        if standard(name):
            need["spot" if spot else "on-demand"] += count * types[name].vcpus
    return need


def running(ec2, types: dict[str, InstanceType]) -> dict[str, int]:
    """vCPUs of Standard-family instances pending or running in the region, per market."""
    used = {"on-demand": 0, "spot": 0}
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    )
    unknown: dict[str, list[str]] = {}
    for page in pages:
        for reservation in page["Reservations"]:
            for inst in reservation["Instances"]:
                name = inst["InstanceType"]
                if not standard(name):
                    continue
                market = "spot" if inst.get("InstanceLifecycle") == "spot" else "on-demand"
                cpu = inst.get("CpuOptions") or {}
                if cpu.get("CoreCount") and cpu.get("ThreadsPerCore"):
                    used[market] += cpu["CoreCount"] * cpu["ThreadsPerCore"]
                elif name in types:
                    used[market] += types[name].vcpus
                else:
                    unknown.setdefault(name, []).append(market)
    if unknown:
        for t in ec2.describe_instance_types(InstanceTypes=sorted(unknown))["InstanceTypes"]:
            for market in unknown[t["InstanceType"]]:
                used[market] += int(t["VCpuInfo"]["DefaultVCpus"])
    return used


def quota(quotas, market: str) -> float:
    """The account's applied quota, or AWS's default where none was ever applied."""
    quota_code = QUOTAS[market][0]
    try:
        return float(quotas.get_service_quota(ServiceCode="ec2", QuotaCode=quota_code)["Quota"]["Value"])
    except Exception as exc:
        if code(exc) != "NoSuchResourceException":
            raise
    return float(quotas.get_aws_default_service_quota(ServiceCode="ec2", QuotaCode=quota_code)["Quota"]["Value"])


def check_quotas(settings: EmrSettings, aws: Aws, types: dict[str, InstanceType]) -> list[str]:
    """Refuse, in one line saying what to request, a cluster whose vCPUs plus those already running
    exceed the account's On-Demand or Spot vCPU quota. Returns notes for stderr (quotas that could
    not be read are not a reason to refuse: the cluster is still created)."""
    need = requested(settings, types)
    notes = []
    try:
        used = running(aws.ec2, types)
    except Exception as exc:  # noqa: BLE001 - any failure: the check is skipped, with the reason
        return [f"vCPU quotas not checked (ec2:DescribeInstances: {short(exc)})"]
    quotas = aws.client("service-quotas", quick=True)
    for market, vcpus in need.items():
        if not vcpus:
            continue
        quota_code, name = QUOTAS[market]
        try:
            limit = quota(quotas, market)
        except Exception as exc:  # noqa: BLE001 - any failure: this quota is skipped, with the reason
            notes.append(f"{market} vCPU quota not checked ({quota_code}: {short(exc)})")
            continue
        total = vcpus + used[market]
        if total > limit:
            raise FruitlensError(
                f"vCPU quota too small: this cluster needs {vcpus} {market} vCPUs of Standard instances in "
                f'{settings.region} and {used[market]} are in use, the account\'s quota "{name}" ({quota_code}) '
                f"is {limit:g}; request at least {total}: aws service-quotas request-service-quota-increase "
                f"--service-code ec2 --quota-code {quota_code} --desired-value {total} --region {settings.region} "
                f"(or choose a smaller shape)"
            )
        notes.append(f"{market} vCPUs: {vcpus} requested + {used[market]} in use <= quota {limit:g} ({quota_code})")
    return notes
