"""Cost estimates: instance-hours x the price table (prices.json: per region, with its date and
source), and images/hour derived from the throughput per core measured in docs/benchmarks.md."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .. import FruitlensError
from .settings import EmrSettings

# Measured, not on EMR: `fruitlens featurize` with the defaults (the multiscale backbone) embedded
# 442 images/s on the 2-core development machine over 90,000 images, everything included (decode,
# Spark, Parquet; 0.79 of the model alone, which ran at 557 images/s there): 221 per core
# (docs/benchmarks.md, Performance II). EC2 vCPUs are hyperthreads, so the estimate counts half
# of that per vCPU. Override with --images-per-s-per-vcpu after measuring on EMR.
MEASURED_IMAGES_PER_S_PER_CORE = 221.0
DEFAULT_IMAGES_PER_S_PER_VCPU = MEASURED_IMAGES_PER_S_PER_CORE / 2


def price_table(path: str | Path | None = None) -> dict:
    if path:
        try:
            prices = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise FruitlensError(f"--prices {path}: {exc}") from None
        problem = layout_problem(prices)
        if problem:
            raise FruitlensError(f"--prices {path}: {problem} (the layout of fruitlens/emr/prices.json)")
        return prices
    return json.loads(resources.files("fruitlens.emr").joinpath("prices.json").read_text())


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def layout_problem(prices) -> str | None:
    """What a price table lacks (None if its layout is prices.json's)."""
    if not isinstance(prices, dict) or not isinstance(prices.get("regions"), dict) or not prices["regions"]:
        return 'no "regions" object'
    if not _number(prices.get("spot_discount_default")) or not prices["spot_discount_default"] < 1:
        return '"spot_discount_default" must be a number in [0, 1)'
    for name, region in prices["regions"].items():
        if not isinstance(region, dict) or not isinstance(region.get("instances"), dict):
            return f'region {name}: no "instances" object'
        for key in ("as_of", "source", "checked"):
            if not isinstance(region.get(key), str):
                return f'region {name}: no "{key}" text'
        for instance, node in region["instances"].items():
            if not isinstance(node, dict) or not all(_number(node.get(k)) for k in ("ec2", "emr", "vcpu")):
                return f'{name} {instance}: needs numbers "ec2", "emr" (USD/hour) and "vcpu"'
    return None


def default_spot_discount(prices: dict | None = None) -> float:
    return float((prices or price_table())["spot_discount_default"])


def _region(prices: dict, region: str) -> dict:
    try:
        return prices["regions"][region]
    except KeyError:
        raise FruitlensError(f"no prices for region {region} (known: {', '.join(prices['regions'])}); "
                             "pass --prices FILE with that region") from None


def _node(prices: dict, region: str, instance: str) -> dict:
    try:
        return _region(prices, region)["instances"][instance]
    except KeyError:
        raise FruitlensError(f"no price for {instance} in {region}; pass --prices FILE with it") from None


@dataclass
class Estimate:
    hourly_usd: float
    images_per_hour: float
    worker_vcpus: int
    hours: float
    total_usd: float
    usd_per_million_images: float
    region: str
    as_of: str
    source: str
    checked: str
    spot_discount: float | None
    images_per_s_per_vcpu: float

    def lines(self) -> list[str]:
        spot = f", spot task nodes at {self.spot_discount:.0%} below on demand (assumed)" if self.spot_discount else ""
        return [
            f"cluster: {self.hourly_usd:.2f} USD/hour in {self.region}{spot}",
            f"prices: as of {self.as_of}, {self.source}; {self.checked}",
            f"throughput (derived, not measured on EMR): {self.worker_vcpus} worker vCPUs x "
            f"{self.images_per_s_per_vcpu:g} images/s = about {self.images_per_hour:,.0f} images/hour "
            f"(from {MEASURED_IMAGES_PER_S_PER_CORE:g} images/s per core measured in docs/benchmarks.md)",
            f"{self.hours:.2f} h: about {self.total_usd:.2f} USD; "
            f"about {self.usd_per_million_images:.2f} USD per million images",
        ]


def estimate(settings: EmrSettings, images: int | None = None, hours: float | None = None,
             images_per_s_per_vcpu: float = DEFAULT_IMAGES_PER_S_PER_VCPU, spot_discount: float | None = None,
             prices_path: str | Path | None = None) -> Estimate:
    if images is not None and images < 0:
        raise FruitlensError(f"--images must be >= 0, got {images}")
    if hours is not None and hours <= 0:
        raise FruitlensError(f"--hours must be > 0, got {hours}")
    prices = price_table(prices_path)
    region = _region(prices, settings.region)
    if spot_discount is None:
        spot_discount = default_spot_discount(prices)
    if not 0 <= spot_discount < 1:
        raise FruitlensError(f"--spot-discount must be in [0, 1), got {spot_discount}")
    if images_per_s_per_vcpu <= 0:
        raise FruitlensError("--images-per-s-per-vcpu must be > 0")
    primary = _node(prices, settings.region, settings.primary_type)
    core = _node(prices, settings.region, settings.core_type)
    task = _node(prices, settings.region, settings.task_type) if settings.task_count else None
    spot = 1 - spot_discount if settings.task_spot else 1.0
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
                    total_usd=total, usd_per_million_images=hourly / per_hour * 1e6, region=settings.region,
                    as_of=region["as_of"], source=region["source"], checked=region["checked"],
                    spot_discount=spot_discount if task and settings.task_spot else None,
                    images_per_s_per_vcpu=images_per_s_per_vcpu)


def cost_so_far(region: str, groups: list[dict], hours: float, spot_discount: float | None = None) -> dict:
    """Instance-hours actually held by a cluster's instance groups x the price table."""
    prices = price_table()
    if spot_discount is None:
        spot_discount = default_spot_discount(prices)
    table = prices["regions"].get(region, {}).get("instances", {})
    usd = instance_hours = 0.0
    unknown = []
    for g in groups:
        count = g.get("RunningInstanceCount") or g.get("RequestedInstanceCount") or 0
        node = table.get(g["InstanceType"])
        if node is None:
            unknown.append(g["InstanceType"])
            continue
        ec2 = node["ec2"] * (1 - spot_discount if g.get("Market") == "SPOT" else 1.0)
        usd += count * hours * (ec2 + node["emr"])
        instance_hours += count * hours
    return {"hours": round(hours, 3), "instance_hours": round(instance_hours, 2), "usd": round(usd, 2),
            "spot_discount_assumed": spot_discount, "unpriced_instance_types": unknown}
