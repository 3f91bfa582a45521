"""One `serve --workers N` process: uvicorn's supervisor starts N of them (and, on SIGHUP, new
ones before it stops the old: a rolling reload), each importing `create` by its name. The
configuration travels in the environment as JSON (`to_env`); each worker loads the model itself."""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from .. import FruitlensError
from ..config import ServeConfig
from ..storage.location import S3Options
from .app import create_app
from .service import load_service

CONFIG_ENV = "FRUITLENS_SERVE_CONFIG"
STARTUP_FAILURE = 3  # uvicorn's: the supervisor stops instead of starting the worker again


def to_env(cfg: ServeConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg))


def from_env() -> ServeConfig:
    fields = json.loads(os.environ[CONFIG_ENV])
    return ServeConfig(**{**fields, "info": tuple(fields["info"]), "s3": S3Options(**fields["s3"])})


def create():
    """The app of one worker process (uvicorn's factory): its own model, the shared limits."""
    try:
        service = load_service(from_env(), say=lambda line: print(f"{line} [pid {os.getpid()}]", flush=True))
    except FruitlensError as exc:
        print(f"fruitlens: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(STARTUP_FAILURE)
    return create_app(service)
