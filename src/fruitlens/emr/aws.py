"""AWS access for the EMR kit: botocore clients from the standard credential chain (environment,
~/.aws profiles, container or instance role), and every AWS error as one line.

botocore, not boto3: it is the SDK core s3fs already installs, at the version aiobotocore pins, so
`pip install "fruitlens[emr]"` adds nothing that can conflict with it (boto3 pins its own botocore
range, which pip cannot reconcile with aiobotocore's)."""

from __future__ import annotations

import contextlib
import re

from .. import FruitlensError

# The Price List API answers only in these regions (of the aws partition); us-east-1 is the first.
PRICING_REGIONS = ("us-east-1", "eu-central-1", "ap-south-1")


class Aws:
    """Lazily created botocore clients for one region."""

    def __init__(self, region: str):
        try:
            import botocore.session
        except ImportError:
            raise FruitlensError('`fruitlens emr` needs botocore: pip install "fruitlens[emr]"') from None
        with aws_errors("AWS configuration"):  # e.g. AWS_PROFILE naming no profile: one line, here
            self._session = botocore.session.Session()
            self._session.get_scoped_config()
        self.region = region
        self._clients: dict[tuple[str, str, bool], object] = {}

    def client(self, name: str, region: str | None = None, quick: bool = False):
        """`quick`: for optional look-ups (prices, quotas) that must not hold up a command when an
        endpoint is unreachable: short timeouts, two attempts."""
        from botocore.config import Config

        region = region or self.region
        key = (name, region, quick)
        if key not in self._clients:
            config = (
                Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=5, read_timeout=20)
                if quick
                else Config(retries={"mode": "standard"})
            )
            with aws_errors("AWS configuration"):
                self._clients[key] = self._session.create_client(name, region_name=region, config=config)
        return self._clients[key]

    @property
    def emr(self):
        return self.client("emr")

    @property
    def s3(self):
        return self.client("s3")

    @property
    def iam(self):
        return self.client("iam")

    @property
    def ec2(self):
        return self.client("ec2")

    @property
    def sts(self):
        return self.client("sts")

    def pricing(self):
        return self.client("pricing", region=PRICING_REGIONS[0], quick=True)

    def has_credentials(self) -> bool:
        try:
            return self._session.get_credentials() is not None
        except Exception:  # noqa: BLE001 - a broken profile or credential process: no credentials
            return False


def code(exc) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def message(exc) -> str:
    err = getattr(exc, "response", {}).get("Error", {})
    text = str(err.get("Message", "")) if err else str(exc)
    if "<Message>" in text:  # an XML error body botocore could not parse (e.g. from a proxy)
        text = dict(re.findall(r"<(Code|Message)>([^<]*)</", text)).get("Message", "")
    elif "<title>" in text:  # an HTML error page (a proxy, a server error): its title
        text = re.search(r"<title>([^<]*)</title>", text).group(1)
    return " ".join(text.split())[:300]


def short(exc) -> str:
    """Any exception as one short line: 'Code: message' for AWS errors."""
    c = code(exc)
    return f"{c}: {message(exc)}".rstrip(": ") if c else " ".join(str(exc).split())[:300] or type(exc).__name__


@contextlib.contextmanager
def aws_errors(what: str):
    """botocore's errors (a failed upload, an unknown profile, no credentials) as one line
    (FruitlensError), never a traceback."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
    )

    try:
        yield
    except ClientError as exc:
        found = code(exc) or "error"
        text = message(exc)
        if "<Code>" in str(exc.response.get("Error", {}).get("Message", "")):
            found = dict(re.findall(r"<(Code|Message)>([^<]*)</", exc.response["Error"]["Message"])).get("Code", found)
        raise FruitlensError(f"{what}: {found}: {text}".rstrip(": ")) from None
    except NoCredentialsError:
        raise FruitlensError(f"{what}: no AWS credentials found (environment, ~/.aws profile or role)") from None
    except EndpointConnectionError as exc:
        raise FruitlensError(f"{what}: cannot reach {exc.kwargs.get('endpoint_url', 'the AWS endpoint')}") from None
    except BotoCoreError as exc:
        raise FruitlensError(f"{what}: {' '.join(str(exc).split())[:300]}") from None


def account_id(aws: Aws) -> str:
    with aws_errors("sts:GetCallerIdentity"):
        return aws.sts.get_caller_identity()["Account"]
