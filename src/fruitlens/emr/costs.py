"""Cost estimates: what a cluster shape costs per hour (EC2 + the EMR fee per instance-hour, the
EBS volumes every node carries, a public IPv4 address per node in a public subnet; spot task nodes
at their discount), and images/hour derived from the throughput per core measured in
docs/benchmarks.md. The prices themselves come from emr.prices."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import FruitlensError
from .prices import HOURS_PER_MONTH, Prices, SpotDiscount
from .settings import EmrSettings

# Measured, not on EMR: `fruitlens featurize` with the defaults (the multiscale backbone) embedded
# 442 images/s on the 2-core development machine over 90,000 images, everything included (decode,
# Spark, Parquet; 0.79 of the model alone, which ran at 557 images/s there): 221 per core
# (docs/benchmarks.md, Performance II). EC2 vCPUs are hyperthreads, so the estimate counts half
# of that per vCPU. Override with --images-per-s-per-vcpu after measuring on EMR.
MEASURED_IMAGES_PER_S_PER_CORE = 221.0
DEFAULT_IMAGES_PER_S_PER_VCPU = MEASURED_IMAGES_PER_S_PER_CORE / 2


@dataclass
class Estimate:
    hourly_usd: float
    ec2_usd: float
    emr_usd: float
    ebs_usd: float
    ipv4_usd: float
    nodes: int
    ebs_gb_per_node: int
    public_ips: int
    images_per_hour: float
    worker_vcpus: int
    hours: float
    total_usd: float
    usd_per_million_images: float
    region: str
    prices_source: str
    spot: SpotDiscount | None
    spot_nodes: str
    images_per_s_per_vcpu: float
    public_ip_note: str

    def lines(self) -> list[str]:
        lines = [
            f"cluster: {self.hourly_usd:.2f} USD/hour in {self.region} = EC2 {self.ec2_usd:.2f} + EMR fee "
            f"{self.emr_usd:.2f} + EBS {self.ebs_usd:.3f} ({self.nodes} nodes x {self.ebs_gb_per_node} GiB gp3) "
            f"+ public IPv4 {self.ipv4_usd:.3f} ({self.public_ips} addresses: {self.public_ip_note})",
            f"prices: {self.prices_source}",
        ]
        if self.spot:
            lines.append(f"spot: {self.spot_nodes} at {self.spot.value:.0%} below on demand ({self.spot.note})")
        lines += [
            f"throughput (derived, not measured on EMR): {self.worker_vcpus} worker vCPUs x "
            f"{self.images_per_s_per_vcpu:g} images/s = about {self.images_per_hour:,.0f} images/hour "
            f"(from {MEASURED_IMAGES_PER_S_PER_CORE:g} images/s per core measured in docs/benchmarks.md)",
            f"{self.hours:.2f} h: about {self.total_usd:.2f} USD; "
            f"about {self.usd_per_million_images:.2f} USD per million images",
        ]
        return lines


def hourly(settings: EmrSettings, prices: Prices, spot: SpotDiscount | None, public_ip: bool = True) -> dict:
    """USD/hour of the shape, by item."""
    primary, core = prices.node(settings.primary_type), prices.node(settings.core_type)
    task = prices.node(settings.task_type) if settings.task_count else None
    discount = spot.value if (task and settings.task_spot and spot) else 0.0
    ec2 = (
        primary.ec2 + settings.core_count * core.ec2 + (settings.task_count * task.ec2 * (1 - discount) if task else 0)
    )
    emr = primary.emr + settings.core_count * core.emr + (settings.task_count * task.emr if task else 0)
    nodes = 1 + settings.core_count + settings.task_count
    gb = settings.root_volume_gb + settings.ebs_gb
    return {
        "ec2": ec2,
        "emr": emr,
        "ebs": nodes * gb * prices.gp3_gb_month / HOURS_PER_MONTH,
        "ipv4": nodes * prices.public_ipv4_hour if public_ip else 0.0,
        "nodes": nodes,
        "gb": gb,
    }


def estimate(
    settings: EmrSettings,
    prices: Prices,
    spot: SpotDiscount | None = None,
    images: int | None = None,
    hours: float | None = None,
    images_per_s_per_vcpu: float = DEFAULT_IMAGES_PER_S_PER_VCPU,
    public_ip: bool = True,
    public_ip_note: str = "",
) -> Estimate:
    if images is not None and images < 0:
        raise FruitlensError(f"--images must be >= 0, got {images}")
    if hours is not None and hours <= 0:
        raise FruitlensError(f"--hours must be > 0, got {hours}")
    if images_per_s_per_vcpu <= 0:
        raise FruitlensError("--images-per-s-per-vcpu must be > 0")
    cost = hourly(settings, prices, spot, public_ip)
    total_hourly = cost["ec2"] + cost["emr"] + cost["ebs"] + cost["ipv4"]
    core = prices.node(settings.core_type)
    task = prices.node(settings.task_type) if settings.task_count else None
    vcpus = settings.core_count * core.vcpu + (settings.task_count * task.vcpu if task else 0)
    per_hour = vcpus * images_per_s_per_vcpu * 3600
    if not per_hour:
        raise FruitlensError(f"no vCPU count for {settings.core_type} in the price source; pass --prices FILE")
    if hours is None:
        hours = max(images / per_hour, 0.25) if images else 1.0
        hours = math.ceil(hours * 4) / 4  # quarter hours, plus start-up
    spot_used = spot if task and settings.task_spot else None
    return Estimate(
        hourly_usd=total_hourly,
        ec2_usd=cost["ec2"],
        emr_usd=cost["emr"],
        ebs_usd=cost["ebs"],
        ipv4_usd=cost["ipv4"],
        nodes=cost["nodes"],
        ebs_gb_per_node=cost["gb"],
        public_ips=cost["nodes"] if public_ip else 0,
        images_per_hour=per_hour,
        worker_vcpus=vcpus,
        hours=hours,
        total_usd=total_hourly * hours,
        usd_per_million_images=total_hourly / per_hour * 1e6,
        region=settings.region,
        prices_source=prices.source,
        spot=spot_used,
        spot_nodes=f"{settings.task_count} x {settings.task_type} task nodes",
        images_per_s_per_vcpu=images_per_s_per_vcpu,
        public_ip_note=public_ip_note or ("a public subnet" if public_ip else "a private subnet"),
    )


def cost_so_far(
    groups: list[dict], hours: float, prices: Prices, spot: SpotDiscount | None, root_gb: int, public_ip: bool = True
) -> dict:
    """Instance-hours actually held by a cluster's instance groups x the prices, with each group's
    EBS volumes (as ListInstanceGroups reports them) and a public IPv4 address per node."""
    usd = instance_hours = 0.0
    unknown = []
    for g in groups:
        count = g.get("RunningInstanceCount") or g.get("RequestedInstanceCount") or 0
        node = prices.nodes.get(g["InstanceType"])
        if node is None:
            unknown.append(g["InstanceType"])
            continue
        discount = spot.value if spot and g.get("Market") == "SPOT" else 0.0
        gb = root_gb + sum(
            int(v.get("VolumeSpecification", {}).get("SizeInGB", 0)) for v in g.get("EbsBlockDevices", [])
        )
        per_node = (
            node.ec2 * (1 - discount)
            + node.emr
            + gb * prices.gp3_gb_month / HOURS_PER_MONTH
            + (prices.public_ipv4_hour if public_ip else 0.0)
        )
        usd += count * hours * per_node
        instance_hours += count * hours
    return {
        "hours": round(hours, 3),
        "instance_hours": round(instance_hours, 2),
        "usd": round(usd, 2),
        "prices": prices.source,
        "spot_discount": spot.value if spot else None,
        "spot_discount_from": spot.note if spot else None,
        "unpriced_instance_types": unknown,
    }
