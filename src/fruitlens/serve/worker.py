"""One `serve --workers N` process: uvicorn's supervisor starts N of them (and, on SIGHUP, new
ones before it stops the old: a rolling reload), each importing `create` by its name. The
configuration travels in the environment as JSON (`to_env`); each worker loads the model itself.
Imported only by `serve --workers` (it imports uvicorn at its top)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys

import uvicorn  # noqa: TID253 - this module is the uvicorn worker, imported by serve --workers only
from uvicorn.supervisors import multiprocess  # noqa: TID253 - as above

from .. import FruitlensError
from ..config import ServeConfig
from ..storage.location import S3Options
from .app import create_app
from .service import load_service

CONFIG_ENV = "FRUITLENS_SERVE_CONFIG"
STARTUP_FAILURE = 3  # uvicorn's: the supervisor stops instead of starting the worker again
GRACE_S = 1.0  # a stopping worker's wait, no longer accepting, for the requests of connections just accepted


class DrainingServer(uvicorn.Server):
    """uvicorn's server, stopping in two steps: it stops accepting, gives the connections it has
    just accepted GRACE_S to send their request, then shuts down as uvicorn does (requests in
    flight finish). uvicorn alone closes a connection accepted a moment before SIGTERM whose
    request it has not read yet: during a rolling reload that client got no answer."""

    async def shutdown(self, sockets=None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        await asyncio.sleep(GRACE_S)
        await super().shutdown(sockets=sockets)


class Worker(multiprocess.Process):
    """uvicorn's worker process, with the draining server."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = DrainingServer(config=self.config)
        return self._server


def supervisor(config: uvicorn.Config) -> multiprocess.Multiprocess:
    """uvicorn's supervisor, starting `Worker`s: it names its process class at module level, so
    that name is pointed at ours in this (the supervisor's) process."""
    multiprocess.Process = Worker  # type: ignore[misc]
    return multiprocess.Multiprocess(config, sockets=[config.bind_socket()])


def to_env(cfg: ServeConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg))


def from_env() -> ServeConfig:
    fields = json.loads(os.environ[CONFIG_ENV])
    return ServeConfig(
        **{**fields, "index": tuple(fields["index"]), "info": tuple(fields["info"]), "s3": S3Options(**fields["s3"])}
    )


def create():
    """The app of one worker process (uvicorn's factory): its own model, the shared limits."""
    from . import give_back_large_allocations  # noqa: PLC0415 - the package's, once the worker runs

    give_back_large_allocations()
    try:
        service = load_service(from_env(), say=lambda line: print(f"{line} [pid {os.getpid()}]", flush=True))
    except FruitlensError as exc:
        print(f"fruitlens: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(STARTUP_FAILURE)
    return create_app(service)
