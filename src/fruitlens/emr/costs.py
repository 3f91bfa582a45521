"""Cost estimates: instance-hours x the price table in prices.json, and images/hour from a
measured throughput per vCPU."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources

from .. import FruitlensError
from .settings import EmrSettings

# Measured on the 2-core development machine (docs/benchmarks.md): the pipeline embeds about
# 75 images/s per core (Spark standalone, 1 worker x 1 core). A planning figure: EC2 vCPUs are
# hyperthreads, so it is counted per 2 vCPUs; override with --images-per-s-per-vcpu.
DEFAULT_IMAGES_PER_S_PER_VCPU = 37.5


def price_table() -> dict:
    return json.loads(resources.files("fruitlens.emr").joinpath("prices.json").read_text())


@dataclass
class Estimate:
    hourly_usd: float
    images_per_hour: float
    worker_vcpus: int
    hours: float
    total_usd: float
    usd_per_million_images: float

    def lines(self) -> list[str]:
        return [
            f"cluster: {self.hourly_usd:.2f} USD/hour, {self.worker_vcpus} worker vCPUs, "
            f"about {self.images_per_hour:,.0f} images/hour",
            f"{self.hours:.2f} h: about {self.total_usd:.2f} USD; "
            f"about {self.usd_per_million_images:.2f} USD per million images",
        ]


def _node(prices: dict, region: str, instance: str) -> dict:
    try:
        return prices["regions"][region][instance]
    except KeyError:
        raise FruitlensError(f"no price for {instance} in {region} in fruitlens/emr/prices.json") from None


def estimate(settings: EmrSettings, images: int | None = None, hours: float | None = None,
             images_per_s_per_vcpu: float = DEFAULT_IMAGES_PER_S_PER_VCPU) -> Estimate:
    prices = price_table()
    primary = _node(prices, settings.region, settings.primary_type)
    core = _node(prices, settings.region, settings.core_type)
    task = _node(prices, settings.region, settings.task_type) if settings.task_count else None
    spot = 1 - prices["spot_discount"] if settings.task_spot else 1.0
    hourly = primary["ec2"] + primary["emr"] + settings.core_count * (core["ec2"] + core["emr"])
    if task:
        hourly += settings.task_count * (task["ec2"] * spot + task["emr"])
    vcpus = settings.core_count * core["vcpu"] + (settings.task_count * task["vcpu"] if task else 0)
    per_hour = vcpus * images_per_s_per_vcpu * 3600
    if hours is None:
        hours = max(images / per_hour, 0.25) if images else 1.0
        hours = math.ceil(hours * 4) / 4  # quarter hours, plus start-up
    total = hourly * hours
    return Estimate(hourly_usd=hourly, images_per_hour=per_hour, worker_vcpus=vcpus, hours=hours,
                    total_usd=total, usd_per_million_images=hourly / per_hour * 1e6)


def cost_so_far(region: str, groups: list[dict], hours: float) -> dict:
    """Instance-hours actually held by a cluster's instance groups x the price table."""
    prices = price_table()
    usd = instance_hours = 0.0
    unknown = []
    for g in groups:
        count = g.get("RunningInstanceCount") or g.get("RequestedInstanceCount") or 0
        try:
            node = prices["regions"][region][g["InstanceType"]]
        except KeyError:
            unknown.append(g["InstanceType"])
            continue
        ec2 = node["ec2"] * (1 - prices["spot_discount"] if g.get("Market") == "SPOT" else 1.0)
        usd += count * hours * (ec2 + node["emr"])
        instance_hours += count * hours
    return {"hours": round(hours, 3), "instance_hours": round(instance_hours, 2), "usd": round(usd, 2),
            "unpriced_instance_types": unknown}
