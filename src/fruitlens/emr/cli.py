"""`fruitlens emr …`: a thin layer over emr.kit and emr.costs."""

from __future__ import annotations

import json

import click

from .settings import DEFAULT_RELEASE, EmrSettings


def cluster_options(f):
    options = [
        click.option("--bucket", required=True, help="Data bucket (artifacts, logs, inputs and outputs live under it)."),
        click.option("--prefix", default="fruitlens", show_default=True, help="Prefix in the bucket the roles may touch."),
        click.option("--region", default="us-east-1", show_default=True, help="AWS region (e.g. eu-west-3 to keep data in the EU)."),
        click.option("--name", default="fruitlens", show_default=True, help="Cluster name."),
        click.option("--release-label", default=DEFAULT_RELEASE, show_default=True, help="EMR 7.x release (Spark 3.5)."),
        click.option("--primary-type", default="m5.xlarge", show_default=True),
        click.option("--core-type", default="m5.xlarge", show_default=True),
        click.option("--core-count", type=int, default=2, show_default=True),
        click.option("--task-type", default="c5.2xlarge", show_default=True),
        click.option("--task-count", type=int, default=0, show_default=True),
        click.option("--task-spot/--task-on-demand", default=True, show_default=True, help="Spot market for task nodes."),
        click.option("--idle-timeout", "idle_timeout_s", type=int, default=3600, show_default=True,
                     help="Terminate after this many idle seconds."),
        click.option("--log-uri", default=None, help="Default: s3://BUCKET/PREFIX/logs/."),
        click.option("--subnet-id", default=None, help="EC2 subnet (default VPC if not given)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _settings(kw) -> EmrSettings:
    settings = EmrSettings(**kw)
    settings.validate()
    return settings


@click.group()
def emr():
    """Deploy on AWS EMR (credentials from the standard AWS chain)."""


@emr.command()
@cluster_options
@click.option("--images", type=int, default=None, help="Planned number of images (for the time and cost estimate).")
@click.option("--hours", type=float, default=None, help="Planned hours (instead of --images).")
def estimate(images, hours, **kw):
    """Cost and throughput estimate for a cluster shape, from the price table."""
    from .costs import estimate as compute

    for line in compute(_settings(kw), images=images, hours=hours).lines():
        click.echo(line)


@emr.command()
@cluster_options
@click.option("--create-roles", is_flag=True, help="Create/update the two IAM roles with the least-privilege policies.")
@click.option("--images", type=int, default=None, help="Planned number of images (for the cost estimate).")
@click.option("--dry-run", is_flag=True, help="Print the RunJobFlow request, create nothing.")
def up(create_roles, images, dry_run, **kw):
    """Create a cluster: uploads the bootstrap script, locked requirements and the package, then RunJobFlow."""
    from . import kit
    from .costs import estimate as compute

    settings = _settings(kw)
    for line in compute(settings, images=images).lines():
        click.echo(f"estimate: {line}")
    if dry_run:
        click.echo(json.dumps(kit.run_job_flow_request(settings), indent=2))
        return
    click.echo(kit.up(settings, create_iam_roles=create_roles))


@emr.command()
@click.argument("cluster_id")
@click.argument("input")
@click.argument("output")
@click.option("--bucket", required=True, help="The bucket given to `up`.")
@click.option("--prefix", default="fruitlens", show_default=True)
@click.option("--region", default="us-east-1", show_default=True)
@click.option("--command", type=click.Choice(["run", "featurize", "reduce"]), default="run", show_default=True)
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
def submit(cluster_id, input, output, bucket, prefix, region, command, extra):
    """Add `fruitlens COMMAND INPUT OUTPUT [EXTRA…]` as a step (s3:// INPUT and OUTPUT)."""
    from . import kit

    settings = EmrSettings(bucket=bucket, prefix=prefix, region=region)
    click.echo(kit.submit(settings, cluster_id, command, input, output, list(extra)))


@emr.command()
@click.argument("cluster_id")
@click.option("--region", default="us-east-1", show_default=True)
def status(cluster_id, region):
    """Cluster state and its steps."""
    from . import kit

    click.echo(json.dumps(kit.status(region, cluster_id), indent=2))


@emr.command()
@click.argument("cluster_id")
@click.argument("step_id")
@click.option("--region", default="us-east-1", show_default=True)
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
@click.option("--region", default="us-east-1", show_default=True)
def down(cluster_id, region):
    """Terminate the cluster."""
    from . import kit

    kit.down(region, cluster_id)
    click.echo(f"terminating {cluster_id}")
