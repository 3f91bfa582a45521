"""`fruitlens emr …`: a thin layer over emr.kit and emr.costs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .. import FruitlensError
from .aws import Aws, account_id
from .costs import MEASURED_IMAGES_PER_S_PER_CORE
from .settings import DEFAULT_RELEASE, EmrSettings

REGION = click.option(
    "--region", default="us-east-1", show_default=True, help="AWS region (e.g. eu-west-3 to keep data in the EU)."
)


def location_options(f):
    options = [
        click.option(
            "--bucket", required=True, help="Data bucket (artifacts, logs, inputs and outputs live under it)."
        ),
        click.option(
            "--prefix",
            default="fruitlens",
            show_default=True,
            help="Prefix in the bucket: PREFIX/artifacts (read-only for the nodes), PREFIX/logs (write-only).",
        ),
        REGION,
        click.option(
            "--data-prefix",
            "data_prefixes",
            multiple=True,
            metavar="KEY_PREFIX",
            help="Where the nodes may read and write data (repeatable). Default: PREFIX/data.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def cluster_options(f):
    options = [
        click.option("--name", default="fruitlens", show_default=True, help="Cluster name."),
        click.option(
            "--release-label", default=DEFAULT_RELEASE, show_default=True, help="EMR 7.x release (Spark 3.5)."
        ),
        click.option("--primary-type", default="m5.xlarge", show_default=True),
        click.option("--core-type", default="m5.xlarge", show_default=True),
        click.option("--core-count", type=int, default=2, show_default=True),
        click.option("--task-type", default="c5.2xlarge", show_default=True),
        click.option("--task-count", type=int, default=0, show_default=True),
        click.option(
            "--task-spot/--task-on-demand", default=True, show_default=True, help="Spot market for task nodes."
        ),
        click.option(
            "--idle-timeout",
            "idle_timeout_s",
            type=int,
            default=3600,
            show_default=True,
            help="Terminate after this many idle seconds.",
        ),
        click.option("--log-uri", default=None, help="Default: s3://BUCKET/PREFIX/logs/."),
        click.option(
            "--subnet-id",
            default=None,
            help="EC2 subnet; it and its VPC must carry the tag for-use-with-amazon-emr-managed-policies=true "
            "(--tag-network adds it). Default: the default VPC's first default subnet.",
        ),
        click.option(
            "--offline-nodes",
            is_flag=True,
            help="Nodes need no internet: wheels (for each CPU architecture of the shape) and model files "
            "are staged in ARTIFACTS and installed from there.",
        ),
        click.option(
            "--offline-backbone",
            "offline_backbones",
            multiple=True,
            help="With --offline-nodes: stage only this backbone's file (repeat for several; e.g. "
            "mobilenet_v2_multiscale and lite2). Default: every backbone's file (about 32 MB).",
        ),
        click.option(
            "--ebs-gb",
            type=int,
            default=32,
            show_default=True,
            help="The gp3 data volume of every node, GiB (YARN's local dirs); the root volume is EMR's 15 GiB.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return location_options(f)


def cost_options(f):
    options = [
        click.option(
            "--spot-discount",
            type=float,
            default=None,
            help="Spot discount on task nodes' EC2 price (default: from EC2's spot price history, else "
            "0.5 from prices.json).",
        ),
        click.option(
            "--prices",
            "prices_path",
            type=click.Path(dir_okay=False),
            default=None,
            help="Your own price table (the layout of fruitlens/emr/prices.json), used as it is.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _settings(kw) -> EmrSettings:
    kw["data_prefixes"] = tuple(kw.get("data_prefixes") or ())
    kw["offline_backbones"] = tuple(kw.get("offline_backbones") or ())
    settings = EmrSettings(**kw)
    settings.validate()
    return settings


@click.group()
def emr():
    """Deploy on AWS EMR (pip install "fruitlens[emr]"; credentials from the standard AWS chain)."""


def _say(line: str) -> None:
    click.echo(line, err=True)


class _Progress:
    """`up`'s waiting line on stderr: rewritten in place on a terminal, one line per state otherwise."""

    def __init__(self):
        self.tty = sys.stderr.isatty()
        self.state = None

    def __call__(self, state: str, elapsed: float) -> None:
        text = f"cluster {state} ({int(elapsed // 60)}:{int(elapsed % 60):02d} min)"
        if self.tty:
            click.echo(f"\r{text}   ", err=True, nl=False)
        elif state != self.state:
            click.echo(text, err=True)
        self.state = state

    def done(self) -> None:
        if self.tty and self.state:
            click.echo("", err=True)


@emr.command()
@cluster_options
@cost_options
@click.option("--images", type=int, default=None, help="Planned number of images (for the time and cost estimate).")
@click.option("--hours", type=float, default=None, help="Planned hours (instead of --images).")
@click.option(
    "--images-per-s-per-vcpu",
    type=float,
    default=None,
    help=f"Throughput per worker vCPU (default: half the {MEASURED_IMAGES_PER_S_PER_CORE:g} images/s per core "
    "measured in docs/benchmarks.md).",
)
@click.option(
    "--offline-prices",
    is_flag=True,
    help="No AWS calls: the price table and its planning spot discount (default: AWS's Price List API and "
    "spot price history when your credentials allow).",
)
def estimate(images, hours, images_per_s_per_vcpu, spot_discount, prices_path, offline_prices, **kw):
    """Cost (EC2, EMR fee, EBS, public IPv4) and throughput of a cluster shape: prices from AWS's
    Price List API when your credentials allow, else the dated table in the package."""
    from . import kit

    settings = _settings(kw)
    aws, why = None, "not asked (--offline-prices)"
    if not offline_prices:  # (with --prices FILE: your prices, the spot discount still from the history)
        try:
            aws = Aws(settings.region)
        except FruitlensError as exc:  # a broken profile: the table, saying why not the API
            aws, why = None, str(exc)
    est = kit.plan_costs(
        settings,
        aws,
        prices_path=prices_path,
        given_spot_discount=spot_discount,
        images=images,
        hours=hours,
        images_per_s_per_vcpu=images_per_s_per_vcpu,
        why_offline=why,
    )
    for line in est.lines():
        click.echo(line)


@emr.command()
@cluster_options
@cost_options
@click.option(
    "--create-roles",
    is_flag=True,
    help="Create the two IAM roles (service role: AmazonEMRServicePolicy_v2 + PassRole; nodes: EMRFS on the "
    "data prefixes), or bring those fruitlens created up to date; roles it did not create are left alone.",
)
@click.option(
    "--tag-network",
    is_flag=True,
    help="Tag the subnet and its VPC for-use-with-amazon-emr-managed-policies=true if they lack it.",
)
@click.option(
    "--wheels",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="With --offline-nodes: a folder of already-downloaded wheels of the pinned set (default: pip download).",
)
@click.option("--images", type=int, default=None, help="Planned number of images (for the cost estimate).")
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait until the cluster is WAITING or RUNNING (or has failed, with EMR's reason).",
)
@click.option("--dry-run", is_flag=True, help="Print the RunJobFlow request, create nothing, call no AWS API.")
def up(create_roles, tag_network, wheels, images, wait, dry_run, spot_discount, prices_path, **kw):
    """Create a cluster and wait until it is ready. Checks first (instance types, vCPU quotas,
    subnet tags), then uploads the bootstrap, the pinned requirements and the package, creates the
    roles (--create-roles), RunJobFlow. Prints the cluster id on stdout; progress on stderr."""
    from . import kit

    settings = _settings(kw)
    if dry_run:
        try:  # advisory, from the table: a region or type missing from it never blocks anything
            lines = kit.plan_costs(
                settings,
                None,
                prices_path=prices_path,
                given_spot_discount=spot_discount,
                images=images,
                why_offline="not asked (--dry-run)",
            ).lines()
        except FruitlensError as exc:
            lines = [f"unavailable ({exc})"]
        for line in lines:
            click.echo(f"estimate: {line}", err=True)
        click.echo(json.dumps(kit.run_job_flow_request(settings), indent=2))
        return
    progress = _Progress()
    try:
        cluster_id = kit.up(
            settings,
            create_iam_roles=create_roles,
            tag_network=tag_network,
            wheels=wheels,
            wait=wait,
            say=_say,
            progress=progress,
            prices_path=prices_path,
            spot_discount_given=spot_discount,
            images=images,
        )
    finally:
        progress.done()
    click.echo(cluster_id)


@emr.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@location_options
@click.argument("cluster_id")
@click.argument("command")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def submit(cluster_id, command, args, **kw):
    """Add `fruitlens COMMAND ARGS…` as a step: COMMAND is run, featurize, reduce, train or classify;
    ARGS go to it unchanged (locations s3:// under a data prefix), e.g.

    fruitlens emr submit --bucket B --prefix P j-XXXX run s3://B/P/data/in s3://B/P/data/out --k 100
    """
    from . import kit

    args = list(args)
    if "--" in args:  # `… -- --k 100`: the separator is for this command line, not for the job's
        args.remove("--")
    click.echo(kit.submit(_settings(kw), cluster_id, command, args))


@emr.command()
@click.argument("cluster_id")
@REGION
@click.option(
    "--spot-discount",
    type=float,
    default=None,
    help="Spot discount (default: EC2's spot price history, else prices.json's).",
)
def status(cluster_id, region, spot_discount):
    """Cluster state, its steps, and the cost so far (instance-hours held x the prices, with EBS
    and public IPv4)."""
    from . import kit

    click.echo(json.dumps(kit.status(region, cluster_id, spot_discount_given=spot_discount), indent=2))


@emr.command()
@click.argument("cluster_id")
@click.argument("step_id")
@REGION
def logs(cluster_id, step_id, region):
    """A step's stdout and stderr, from the cluster's log URI."""
    from . import kit

    found = kit.logs(region, cluster_id, step_id)
    if not found:
        click.echo("no logs yet (EMR copies them to the log URI every few minutes)")
    for name, text in found.items():
        click.echo(f"==> {name} <==\n{text}")


@emr.command()
@click.argument("cluster_id")
@REGION
def down(cluster_id, region):
    """Terminate the cluster."""
    from . import kit

    kit.down(region, cluster_id)
    click.echo(f"terminating {cluster_id}")


POLICIES = {
    "user": "user-policy",
    "instance-role": "ec2-instance-role",
    "service-role": "service-role",
    "instance-trust": "ec2-trust",
    "service-trust": "service-trust",
}


@emr.command()
@click.argument("which", type=click.Choice(list(POLICIES)))
@location_options
@click.option("--log-uri", default=None, help="As given to `up` (default s3://BUCKET/PREFIX/logs/).")
@click.option(
    "--account",
    default=None,
    metavar="ACCOUNT_ID",
    help="service-trust: the account EMR acts for (default: sts:GetCallerIdentity of your credentials).",
)
def policy(which, account, **kw):
    """Print a policy document for this bucket and prefix. `user`: what the person running
    `fruitlens emr` needs; `service-role`: the inline part (the role also gets
    AmazonEMRServicePolicy_v2); `instance-role`: what the nodes may do."""
    from .iam import policy as render  # noqa: PLC0415 - the IAM machinery loads with its command (as the kit)

    settings = _settings(kw)
    if which == "service-trust" and account is None:
        account = account_id(Aws(settings.region))
    click.echo(json.dumps(render(POLICIES[which], settings, account), indent=2))
