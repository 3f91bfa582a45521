"""What a cluster costs: EC2 + the EMR fee + the EBS volumes every node carries + a public IPv4
address per node (spot task nodes at their discount), from AWS's Price List API when the
credentials allow (else the dated table, saying why), the spot discount from EC2's spot price
history (moto's) when available.

moto has no Price List API: its answers here come from botocore's Stubber, which checks every
request and every response against the service model; the responses are shaped as AWS documents
them (PriceList: one JSON text per product, terms.OnDemand…priceDimensions…pricePerUnit.USD)."""

import json
from datetime import datetime, timezone

import boto3
import botocore.session
import pytest
from botocore.stub import ANY, Stubber
from emr_support import BUCKET, REGION, aws, fruitlens, one_line_error, valid  # noqa: F401

from fruitlens import FruitlensError
from fruitlens.emr import kit
from fruitlens.emr.aws import Aws
from fruitlens.emr.costs import (
    DEFAULT_IMAGES_PER_S_PER_VCPU,
    MEASURED_IMAGES_PER_S_PER_CORE,
    estimate,
)
from fruitlens.emr.prices import (
    HOURS_PER_MONTH,
    PUBLIC_IPV4_USD_HOUR,
    SpotDiscount,
    from_price_list,
    from_table,
    price_table,
    spot_discount,
)
from fruitlens.emr.settings import EmrSettings

SETTINGS = EmrSettings(bucket=BUCKET, prefix="costs", region=REGION, core_count=3, task_count=4)


def test_the_estimate_counts_ec2_the_emr_fee_ebs_and_public_ipv4():
    prices = from_table(REGION)
    table = price_table()["regions"][REGION]
    node = lambda t: table["instances"][t]  # noqa: E731
    spot = SpotDiscount(0.5, "test")
    est = estimate(SETTINGS, prices, spot, hours=2)
    nodes = 1 + 3 + 4
    ec2 = node("m5.xlarge")["ec2"] * 4 + 4 * node("c5.2xlarge")["ec2"] * 0.5
    emr = node("m5.xlarge")["emr"] * 4 + 4 * node("c5.2xlarge")["emr"]
    ebs = nodes * (15 + 32) * table["ebs_gp3_gb_month"] / 730  # the root volume and the data volume
    ipv4 = nodes * 0.005
    assert (est.ec2_usd, est.emr_usd) == (pytest.approx(ec2), pytest.approx(emr))
    assert est.ebs_usd == pytest.approx(ebs) and est.ipv4_usd == pytest.approx(ipv4)
    assert est.hourly_usd == pytest.approx(ec2 + emr + ebs + ipv4)
    assert est.total_usd == pytest.approx(2 * est.hourly_usd)
    assert est.worker_vcpus == 3 * 4 + 4 * 8
    private = estimate(SETTINGS, prices, spot, hours=2, public_ip=False)
    assert private.ipv4_usd == 0 and private.hourly_usd == pytest.approx(est.hourly_usd - ipv4)
    bigger_disks = estimate(
        EmrSettings(bucket=BUCKET, region=REGION, core_count=3, task_count=4, ebs_gb=132), prices, spot, hours=2
    )
    assert bigger_disks.ebs_usd == pytest.approx(nodes * (15 + 132) * table["ebs_gp3_gb_month"] / 730)
    assert DEFAULT_IMAGES_PER_S_PER_VCPU == MEASURED_IMAGES_PER_S_PER_CORE / 2  # a vCPU is a hyperthread
    assert est.images_per_hour == pytest.approx(44 * DEFAULT_IMAGES_PER_S_PER_VCPU * 3600)
    assert est.usd_per_million_images == pytest.approx(est.hourly_usd / est.images_per_hour * 1e6)
    for region in price_table()["regions"].values():
        assert region["as_of"] and region["source"].startswith("https://") and region["checked"]
    more = estimate(
        EmrSettings(bucket=BUCKET, region=REGION, core_count=3, task_count=8), prices, spot, images=10_000_000
    )
    assert more.hours < estimate(SETTINGS, prices, spot, images=10_000_000).hours  # more nodes, fewer hours
    assert HOURS_PER_MONTH == 730 and PUBLIC_IPV4_USD_HOUR == 0.005


def test_the_default_spot_discount_is_awss_example_not_a_hopeful_one():
    assert price_table()["spot_discount_default"] == 0.5
    offline = spot_discount(from_table(REGION), "c5.2xlarge")
    assert offline.value == 0.5 and offline.note.startswith("assumed, not measured")


def test_estimate_from_the_table_says_so_and_its_date(aws):
    args = ["emr", "estimate", "--bucket", BUCKET, "--region", "eu-west-1", "--images", "1000000", "--task-count", "2"]
    res = fruitlens(*args, "--offline-prices")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "USD per million images" in out and "images/hour" in out and "derived, not measured on EMR" in out
    assert "EBS" in out and "5 nodes x 47 GiB gp3" in out and "public IPv4 0.025 (5 addresses" in out
    assert "as of 2025-06" in out and "not the Price List API: not asked (--offline-prices" in out
    assert "50% below on demand (assumed, not measured" in out
    res = fruitlens(*args, "--spot-discount", "0.7")
    assert res.returncode == 0 and "70% below on demand (--spot-discount)" in res.stdout
    # with credentials (moto's): the Price List API is asked (moto has none: the table, with the reason),
    # the spot price history is read (moto's), the default subnet says the nodes get public addresses
    res = fruitlens(*args[:4], "--region", REGION, "--task-count", "2")
    assert res.returncode == 0, res.stderr
    assert "not the Price List API: 500: 500 Internal Server Error" in res.stdout
    assert "below on demand (EC2 spot price history, eu-west-3a: mean of" in res.stdout
    assert "gives public addresses" in res.stdout


def test_a_region_or_type_missing_from_the_table_and_bad_amounts():
    assert "--prices" in one_line_error(
        fruitlens("emr", "estimate", "--bucket", BUCKET, "--region", "ap-south-2", "--offline-prices")
    )
    for option, value, message in (
        ("--hours", "-1", "--hours must be > 0"),
        ("--images", "-5", "--images must be >= 0"),
        ("--spot-discount", "1.5", "--spot-discount must be in [0, 1)"),
    ):
        assert message in one_line_error(
            fruitlens("emr", "estimate", "--bucket", BUCKET, "--task-count", "1", "--offline-prices", option, value)
        )
    res = fruitlens("emr", "up", "--bucket", "Not_A_Bucket", "--dry-run")
    assert "not a valid S3 bucket name" in one_line_error(res)
    assert "EMR 7.x" in one_line_error(
        fruitlens("emr", "up", "--bucket", BUCKET, "--release-label", "emr-6.15.0", "--dry-run")
    )
    # `up`: the estimate is advisory, a region missing from the price table does not block the cluster
    res = fruitlens("emr", "up", "--bucket", BUCKET, "--region", "us-west-2", "--dry-run")
    assert res.returncode == 0 and json.loads(res.stdout)["Name"] == "fruitlens", res.stderr
    assert "estimate: unavailable (no prices for region us-west-2" in res.stderr


def test_price_table_layout_is_checked(tmp_path):
    table = price_table()
    broken = json.loads(json.dumps(table))
    del broken["regions"][REGION]["instances"]["m5.xlarge"]["emr"]
    no_ebs = json.loads(json.dumps(table))
    del no_ebs["regions"][REGION]["ebs_gp3_gb_month"]
    for bad, message in (
        (broken, f"{REGION} m5.xlarge: needs numbers"),
        ({"spot_discount_default": 0.6}, 'no "regions" object'),
        ([], 'no "regions" object'),
        (no_ebs, '"ebs_gp3_gb_month"'),
    ):
        path = tmp_path / "prices.json"
        path.write_text(json.dumps(bad))
        assert message in one_line_error(
            fruitlens("emr", "estimate", "--bucket", BUCKET, "--region", REGION, "--prices", str(path))
        )


def product(usd: str, unit: str, **attributes) -> str:
    """One Price List product as GetProducts returns it (a JSON text), with one on-demand price."""
    return json.dumps(
        {
            "product": {"productFamily": "x", "attributes": attributes, "sku": "SKU1"},
            "serviceCode": "x",
            "terms": {
                "OnDemand": {
                    "SKU1.JRTCKXETXF": {
                        "priceDimensions": {
                            "SKU1.JRTCKXETXF.6YS6EN2CT7": {
                                "unit": unit,
                                "pricePerUnit": {"USD": usd},
                                "description": "…",
                                "beginRange": "0",
                                "endRange": "Inf",
                                "rateCode": "SKU1.JRTCKXETXF.6YS6EN2CT7",
                                "appliesTo": [],
                            }
                        },
                        "sku": "SKU1",
                        "effectiveDate": "2026-11-01T00:00:00Z",
                        "offerTermCode": "JRTCKXETXF",
                        "termAttributes": {},
                    }
                }
            },
            "version": "20261101000000",
            "publicationDate": "2026-11-01T00:00:00Z",
        }
    )


def stubbed_pricing(answers: list[tuple[dict, list[str]]]):
    client = botocore.session.get_session().create_client(
        "pricing", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    stub = Stubber(client)
    for expected, price_list in answers:
        stub.add_response(
            "get_products",
            {"FormatVersion": "aws_v1", "PriceList": price_list},
            {"ServiceCode": expected["ServiceCode"], "Filters": ANY, "FormatVersion": "aws_v1"},
        )
    stub.activate()
    return client, stub


def test_prices_from_the_price_list_api():
    answers = [
        ({"ServiceCode": "AmazonEC2"}, [product("0.2240000000", "Hrs", instanceType="m5.xlarge", vcpu="4")]),
        ({"ServiceCode": "ElasticMapReduce"}, [product("0.0480000000", "Hrs", instanceType="m5.xlarge")]),
        ({"ServiceCode": "AmazonEC2"}, [product("0.0928000000", "GB-Mo", volumeApiName="gp3")]),
    ]
    client, stub = stubbed_pricing(answers)
    prices = from_price_list(client, REGION, ["m5.xlarge"])
    stub.assert_no_pending_responses()
    assert prices.api and prices.source.startswith("AWS Price List API (pricing:GetProducts), 20")
    assert prices.node("m5.xlarge").ec2 == 0.224 and prices.node("m5.xlarge").emr == 0.048
    assert prices.node("m5.xlarge").vcpu == 4 and prices.gp3_gb_month == 0.0928
    # the filters AWS documents for one Linux, shared-tenancy, on-demand price
    valid(
        "pricing",
        "GetProducts",
        {
            "ServiceCode": "AmazonEC2",
            "FormatVersion": "aws_v1",
            "Filters": [
                {"Type": "TERM_MATCH", "Field": "instanceType", "Value": "m5.xlarge"},
                {"Type": "TERM_MATCH", "Field": "regionCode", "Value": REGION},
            ],
        },
    )
    # two different prices for one instance type: not guessed, the table instead
    client, _ = stubbed_pricing(
        [({"ServiceCode": "AmazonEC2"}, [product("0.2", "Hrs", vcpu="4"), product("0.3", "Hrs", vcpu="4")])]
    )
    with pytest.raises(LookupError, match="2 on-demand prices for EC2 m5.xlarge"):
        from_price_list(client, REGION, ["m5.xlarge"])


def test_the_spot_discount_comes_from_the_spot_price_history(aws):
    prices = from_table(REGION)
    ec2 = Aws(REGION).ec2
    found = spot_discount(prices, "c5.2xlarge", ec2, "eu-west-3a")
    history = boto3.client("ec2", region_name=REGION).describe_spot_price_history(
        InstanceTypes=["c5.2xlarge"], AvailabilityZone="eu-west-3a", ProductDescriptions=["Linux/UNIX"]
    )["SpotPriceHistory"]
    spot = sum(float(h["SpotPrice"]) for h in history if h["AvailabilityZone"] == "eu-west-3a") / len(
        [h for h in history if h["AvailabilityZone"] == "eu-west-3a"]
    )
    assert found.measured and found.value == pytest.approx(1 - spot / prices.node("c5.2xlarge").ec2)
    assert "EC2 spot price history, eu-west-3a" in found.note
    valid(
        "ec2",
        "DescribeSpotPriceHistory",
        {
            "InstanceTypes": ["c5.2xlarge"],
            "ProductDescriptions": ["Linux/UNIX"],
            "StartTime": datetime.now(timezone.utc),
            "AvailabilityZone": "eu-west-3a",
        },
    )
    with pytest.raises(FruitlensError, match="--spot-discount must be in"):
        spot_discount(prices, "c5.2xlarge", given=1.0)


def test_plan_costs_uses_the_subnet_it_would_launch_in(aws):
    settings = EmrSettings(bucket=BUCKET, region=REGION, task_count=1)
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    private = ec2.create_subnet(VpcId=vpc, CidrBlock="10.7.1.0/24")["Subnet"]["SubnetId"]
    est = kit.plan_costs(EmrSettings(bucket=BUCKET, region=REGION, task_count=1, subnet_id=private), Aws(REGION))
    assert est.public_ips == 0 and est.ipv4_usd == 0 and f"{private} is private" in est.lines()[0]
    est = kit.plan_costs(settings, Aws(REGION))
    assert est.public_ips == 4 and "gives public addresses" in est.lines()[0]  # primary, 2 core, 1 task
