"""`fruitlens serve`: the identification service (HTTP API + web page).

One role per module: `species_info.py` (species names and information, in English and French),
`index.py` and `saved_index.py` (the neighbour index), `feedback.py` (users' corrections, kept with
consent), `limits.py` (API keys, rate limits), `service.py` (everything loaded once, shared by
requests); on the web: `app.py` (`create_app`: the FastAPI app assembled for a loaded service),
`routers/` (one APIRouter per resource: identify, species, images, feedback, health, the page),
`schemas.py` (the answers' pydantic models), `deps.py` (the dependencies: the service, the rate
limit, the language), `errors.py` (one-line JSON errors), `middleware.py` (upload limit, capacity),
`static/` (the page: plain HTML/CSS/JS), `worker.py` (one process of `--workers N`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
import sys
import threading

from .. import FruitlensError
from ..config import ServeConfig
from .service import Service, load_service


def run(cfg: ServeConfig) -> None:
    """Load, then serve until interrupted (uvicorn on cfg.host:cfg.port): in this process, or in
    `cfg.workers` processes. SIGHUP loads the model again without downtime (`Reloader` in one
    process; uvicorn's rolling restart of the workers with several)."""
    import uvicorn

    from .app import create_app  # noqa: PLC0415 - the app (FastAPI) loads to serve, not for serve's helpers (limits, saved_index)
    from .connections import GuardedConfig  # noqa: PLC0415 - uvicorn too

    _check_port(cfg.host, cfg.port)  # before loading: a taken port is a one-line error, at once
    give_back_large_allocations()
    trusted = cfg.forwarded_allow_ips
    options = dict(
        host=cfg.host,
        port=cfg.port,
        log_level="warning",
        access_log=False,
        # a last resort only: idle connections are capped below it (connections.py), requests at
        # work by --max-connections, uploads arriving by 4x that (middleware.py)
        limit_concurrency=cfg.max_idle_connections + 8 * cfg.max_connections,
        timeout_keep_alive=5,
        server_header=False,
        header_timeout=cfg.header_timeout,
        max_idle_connections=cfg.max_idle_connections,
        # X-Forwarded-For/-Proto only from the proxies named (uvicorn's default trusts 127.0.0.1)
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or "",
    )
    if cfg.workers > 1:
        return _run_workers(cfg, options)
    service = load_service(cfg, say=lambda line: print(line, flush=True))
    app = create_app(service)
    _say_where(cfg)
    signal.signal(signal.SIGHUP, Reloader(app, cfg).request)
    uvicorn.Server(GuardedConfig(app, **options)).run()


def _run_workers(cfg: ServeConfig, options: dict) -> None:

    from .connections import GuardedConfig  # noqa: PLC0415 - uvicorn too
    from .worker import CONFIG_ENV, STARTUP_FAILURE, supervisor, to_env  # noqa: PLC0415 - uvicorn's workers

    Service.check(cfg)  # keys, limits storage, feedback: a one-line error here rather than in N workers
    os.environ[CONFIG_ENV] = to_env(cfg)
    config = GuardedConfig(
        "fruitlens.serve.worker:create", factory=True, workers=cfg.workers, timeout_worker_healthcheck=120, **options
    )
    workers = supervisor(config)
    _say_where(cfg, f"{cfg.workers} processes, SIGHUP to pid {os.getpid()} reloads the model")
    workers.run()
    if any(p.exitcode == STARTUP_FAILURE for p in workers.processes):
        raise SystemExit(2)  # a worker said why, in one line


def _say_where(cfg: ServeConfig, note: str = "") -> None:
    print(
        f"[serve] page http://{cfg.host}:{cfg.port}/  API http://{cfg.host}:{cfg.port}/api/v1/  "
        f"schema http://{cfg.host}:{cfg.port}/api/v1/openapi.json" + (f"  ({note})" if note else ""),
        flush=True,
    )


class Reloader:
    """SIGHUP in a one-process service: the model, its species information and the index loaded
    again in a thread while the service answers, then swapped in. A request takes the service once,
    when it starts: answers in flight finish on the previous model. A load that fails keeps the
    previous model and says why in one line."""

    def __init__(self, app, cfg: ServeConfig):
        self.app, self.cfg = app, cfg
        self._busy = threading.Lock()

    def request(self, signum=None, frame=None) -> None:
        threading.Thread(target=self.reload, name="fruitlens-reload", daemon=True).start()

    def reload(self) -> Service | None:
        if not self._busy.acquire(blocking=False):
            print("[serve] reload: one is under way already", flush=True)
            return None
        old = self.app.state.service
        try:
            new = load_service(self.cfg, say=lambda line: print(f"[reload] {line}", flush=True), keep=old)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the previous model, said in one line
            reason = str(exc) if isinstance(exc, FruitlensError) else f"{type(exc).__name__}: {exc}"
            print(f"[serve] reload failed, still answering with model {old.model_id}: {reason}", file=sys.stderr)
            return None
        finally:
            self._busy.release()
        self.app.state.service = new
        print(f"[serve] reloaded: model {old.model_id} -> {new.model_id}", flush=True)
        return new


def give_back_large_allocations() -> None:
    """glibc only: every allocation of 1 MB or more is its own mapping, returned to the system when
    freed. Otherwise glibc raises its threshold to the size of the blocks Pillow frees (16 MB), and
    the decodes' blocks, once freed, stay in the worker threads' malloc arenas: the server's RSS
    kept the peak of its last burst of large photos (docs/benchmarks.md). Elsewhere: nothing."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD (also fixes it: no more dynamic raising)
    except (OSError, AttributeError):
        pass


def _check_port(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FruitlensError(f"--host {host}: {exc.strerror}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            raise FruitlensError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


__all__ = ["ServeConfig", "Service", "load_service", "run"]
