"""Where the estimate's prices come from: AWS's Price List API (pricing:GetProducts) when the
credentials allow it, else the table shipped in the package (prices.json, dated, entered by hand)
or your own (--prices FILE); spot prices from EC2's spot price history (ec2:DescribeSpotPriceHistory)
when available, else the table's planning discount."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path

from .. import FruitlensError
from .aws import short

HOURS_PER_MONTH = 730  # AWS's convention for a monthly price (EBS GB-month) per hour
# AWS charges every public IPv4 address, in use or not, 0.005 USD per hour since 2024-02-01 (all
# commercial regions); EMR nodes in a public subnet get one each.
PUBLIC_IPV4_USD_HOUR = 0.005
PUBLIC_IPV4_SOURCE = "0.005 USD/hour per public IPv4 address (AWS, since 2024-02-01)"


@dataclass(frozen=True)
class NodePrice:
    ec2: float  # USD/hour, on demand, Linux
    emr: float  # USD/hour, the EMR fee added per instance-hour
    vcpu: int


@dataclass
class Prices:
    region: str
    nodes: dict[str, NodePrice]
    gp3_gb_month: float
    public_ipv4_hour: float
    source: str  # one line: where these figures come from (and why not the Price List API)
    default_spot_discount: float
    spot_discount_note: str
    api: bool = False

    def node(self, instance_type: str) -> NodePrice:
        try:
            return self.nodes[instance_type]
        except KeyError:
            raise FruitlensError(f"no price for {instance_type} in {self.region}; pass --prices FILE with it") from None


@dataclass(frozen=True)
class SpotPrice:
    usd_hour: float
    zone: str
    samples: int


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


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
        if not _number(region.get("ebs_gp3_gb_month")):
            return f'region {name}: needs the number "ebs_gp3_gb_month" (USD per GB-month)'
        for instance, node in region["instances"].items():
            if not isinstance(node, dict) or not all(_number(node.get(k)) for k in ("ec2", "emr", "vcpu")):
                return f'{name} {instance}: needs numbers "ec2", "emr" (USD/hour) and "vcpu"'
    return None


def from_table(region: str, path: str | Path | None = None, why_not_api: str | None = None) -> Prices:
    table = price_table(path)
    try:
        entry = table["regions"][region]
    except KeyError:
        raise FruitlensError(
            f"no prices for region {region} (known: {', '.join(table['regions'])}); pass --prices FILE with that region"
        ) from None
    name = f"--prices {path}" if path else "the table in fruitlens/emr/prices.json"
    source = f"{name}, as of {entry['as_of']} ({entry['source']}; {entry['checked']})"
    if why_not_api:
        source += f"; not the Price List API: {why_not_api}"
    return Prices(
        region=region,
        nodes={t: NodePrice(float(n["ec2"]), float(n["emr"]), int(n["vcpu"])) for t, n in entry["instances"].items()},
        gp3_gb_month=float(entry["ebs_gp3_gb_month"]),
        public_ipv4_hour=PUBLIC_IPV4_USD_HOUR,
        source=source,
        default_spot_discount=float(table["spot_discount_default"]),
        spot_discount_note=table.get("_spot_discount", "planning assumption"),
    )


# ---------------------------------------------------------------------------------------------
# AWS Price List API
# ---------------------------------------------------------------------------------------------


def _products(pricing, service: str, **attributes) -> list[dict]:
    filters = [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in attributes.items()]
    pages = pricing.get_paginator("get_products").paginate(ServiceCode=service, Filters=filters, FormatVersion="aws_v1")
    return [json.loads(p) if isinstance(p, str) else p for page in pages for p in page.get("PriceList", [])]


def _on_demand(products: list[dict], unit: str, what: str) -> tuple[float, dict]:
    """The one on-demand price per `unit` of the products found (and its product's attributes)."""
    found = {}
    for product in products:
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dim in term.get("priceDimensions", {}).values():
                if dim.get("unit") == unit and "USD" in dim.get("pricePerUnit", {}):
                    found[float(dim["pricePerUnit"]["USD"])] = product.get("product", {}).get("attributes", {})
    if len(found) != 1:
        raise LookupError(f"{len(found)} on-demand prices for {what}")
    return next(iter(found.items()))


def from_price_list(pricing, region: str, instance_types: list[str]) -> Prices:
    """On-demand EC2 (Linux, shared tenancy), the EMR fee and gp3 storage for `region`, from the
    Price List API. Raises LookupError (or a botocore error) when it cannot answer all of them."""
    nodes = {}
    for name in sorted(set(instance_types)):
        ec2, attrs = _on_demand(
            _products(
                pricing,
                "AmazonEC2",
                instanceType=name,
                regionCode=region,
                operatingSystem="Linux",
                tenancy="Shared",
                preInstalledSw="NA",
                capacitystatus="Used",
                licenseModel="No License required",
                marketoption="OnDemand",
            ),
            "Hrs",
            f"EC2 {name}",
        )
        emr, _ = _on_demand(
            _products(
                pricing,
                "ElasticMapReduce",
                instanceType=name,
                regionCode=region,
                productFamily="Elastic Map Reduce Instance",
                softwareType="EMR",
            ),
            "Hrs",
            f"the EMR fee of {name}",
        )
        nodes[name] = NodePrice(ec2, emr, int(attrs.get("vcpu") or 0))
    gp3, _ = _on_demand(
        _products(pricing, "AmazonEC2", productFamily="Storage", volumeApiName="gp3", regionCode=region),
        "GB-Mo",
        "gp3 storage",
    )
    today = datetime.now(timezone.utc).date().isoformat()
    fallback = price_table()
    return Prices(
        region=region,
        nodes=nodes,
        gp3_gb_month=gp3,
        public_ipv4_hour=PUBLIC_IPV4_USD_HOUR,
        source=f"AWS Price List API (pricing:GetProducts), {today}",
        api=True,
        default_spot_discount=float(fallback["spot_discount_default"]),
        spot_discount_note=fallback.get("_spot_discount", "planning assumption"),
    )


def resolve(
    region: str,
    instance_types: list[str],
    aws=None,
    prices_path: str | Path | None = None,
    why_offline: str = "not asked (--offline-prices or --dry-run)",
) -> Prices:
    """The Price List API when `aws` is given and has credentials; else, or when it fails, the
    table (with the reason in `source`). `--prices FILE` is used as it is."""
    if prices_path:
        return from_table(region, prices_path)
    if aws is None:
        return from_table(region, why_not_api=why_offline)
    if not aws.has_credentials():
        return from_table(region, why_not_api="no AWS credentials")
    try:
        return from_price_list(aws.pricing(), region, instance_types)
    except Exception as exc:  # noqa: BLE001 - no permission or endpoint, no product: the table, with why
        return from_table(region, why_not_api=short(exc))


# ---------------------------------------------------------------------------------------------
# Spot prices
# ---------------------------------------------------------------------------------------------


def spot_price(
    ec2, instance_type: str, zone: str | None = None, hours: int = 24, now: datetime | None = None
) -> SpotPrice:
    """The mean Linux spot price of `instance_type` over the last `hours` in `zone` (the cluster's
    subnet's availability zone), or over all zones when it is not known."""
    now = now or datetime.now(timezone.utc)
    params = {
        "InstanceTypes": [instance_type],
        "ProductDescriptions": ["Linux/UNIX"],
        "StartTime": now - timedelta(hours=hours),
        "EndTime": now,
    }
    if zone:
        params["AvailabilityZone"] = zone
    by_zone: dict[str, list[float]] = {}
    for page in ec2.get_paginator("describe_spot_price_history").paginate(**params):
        for row in page["SpotPriceHistory"]:
            by_zone.setdefault(row["AvailabilityZone"], []).append(float(row["SpotPrice"]))
    if zone and zone in by_zone:
        samples = by_zone[zone]
    else:
        samples = [p for prices in by_zone.values() for p in prices]
        zone = f"{len(by_zone)} zones" if len(by_zone) != 1 else next(iter(by_zone), "")
    if not samples:
        raise LookupError(f"no spot price history for {instance_type}")
    return SpotPrice(usd_hour=statistics.fmean(samples), zone=zone, samples=len(samples))


@dataclass
class SpotDiscount:
    value: float
    note: str  # where the value comes from, one line
    measured: bool = field(default=False)


def spot_discount(
    prices: Prices,
    instance_type: str,
    ec2=None,
    zone: str | None = None,
    given: float | None = None,
    why_not_asked: str = "not asked",
) -> SpotDiscount:
    """--spot-discount if given; else 1 - spot / on demand from the spot price history (`ec2`);
    else the table's planning value, saying why."""
    if given is not None:
        if not 0 <= given < 1:
            raise FruitlensError(f"--spot-discount must be in [0, 1), got {given}")
        return SpotDiscount(given, "--spot-discount")
    why = why_not_asked
    if ec2 is not None:
        try:
            spot = spot_price(ec2, instance_type, zone)
            on_demand = prices.node(instance_type).ec2
            value = max(1 - spot.usd_hour / on_demand, 0.0)  # a spot price above on demand: no discount
            return SpotDiscount(
                value,
                f"EC2 spot price history, {spot.zone}: mean of {spot.samples} prices over "
                f"24 h, {spot.usd_hour:.4f} USD/hour vs {on_demand:.4f} on demand",
                True,
            )
        except Exception as exc:  # noqa: BLE001 - any failure: the table's value, with the reason
            why = short(exc)
    return SpotDiscount(
        prices.default_spot_discount,
        f"assumed, not measured: the price table's planning value; spot price history: {why}",
    )
