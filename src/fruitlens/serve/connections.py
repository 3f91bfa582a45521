"""The connections, before a request reaches the app: uvicorn's h11 protocol with a deadline for each
request's line and headers and a cap on idle connections, which uvicorn does not have.

uvicorn (0.54) closes a kept-alive connection after `timeout_keep_alive`, but a connection that has
sent nothing, or half its headers, stays open for as long as the client likes, and every one counts
towards `limit_concurrency`, beyond which uvicorn answers everyone with a plain-text 503: a few
hundred silent sockets lock a service out. `GuardedH11` adds, per connection:

- **a header deadline** (`--header-timeout`): from the moment a connection opens or its previous
  answer is sent, its next request's line and headers must arrive within that time; past it the
  connection is closed (with a JSON 408 when part of a request had arrived);
- **a cap on idle connections** (`--max-idle-connections`): connections without a request in
  progress (just opened, sending headers, kept alive); when a new one makes them too many, the one
  idle the longest is closed, so a new client always gets in. A client that trickles its headers
  is idle all along.

It also answers uvicorn's own refusal of a request it cannot parse as one line of JSON, as every
other refusal (uvicorn's is plain text). uvicorn's other protocol, httptools, has the same gaps
(no header deadline, the same `limit_concurrency`) and is not installed: `serve` always runs h11.

The body's deadlines are the app's (`middleware.UploadLimit`, per chunk and a minimum rate); once a
request's headers are in, it counts against `--max-connections` only when its body is in.

Why not another server: hypercorn has a read timeout per read (a client trickling a byte a second
passes it) and granian's header timeout comes with a Rust runtime and its own worker model; both
would replace the server that `serve --workers` and the tests use. This is ~80 lines on uvicorn's
documented `http=` protocol class, tested against real sockets (tests/serve/test_open_internet.py,
which fails if an upgrade of uvicorn changes the two internals it reads: `cycle` and
`on_response_complete`).
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol


class GuardedConfig(uvicorn.Config):
    """uvicorn's Config with the guard's settings, serving with `GuardedH11` (module-level and
    picklable, as uvicorn's workers need)."""

    def __init__(self, app, *, header_timeout: float = 10.0, max_idle_connections: int = 256, **kw):
        super().__init__(app, http=GuardedH11, **kw)
        self.header_timeout = header_timeout
        self.max_idle_connections = max_idle_connections


def _timeout_answer() -> bytes:
    body = json.dumps(
        {"ok": False, "reason": "too slow", "detail": "the request's headers did not arrive in time"}
    ).encode()
    return (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


TIMEOUT_ANSWER = _timeout_answer()
NOT_HTTP = json.dumps({"ok": False, "reason": "bad request", "detail": "not an HTTP/1.1 request"}).encode()


class GuardedH11(H11Protocol):
    """H11Protocol with a header deadline and a cap on idle connections (the module's docstring)."""

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self._guard_timer: asyncio.TimerHandle | None = None
        self._guard_bytes = 0
        super().connection_made(transport)
        self._idle()

    def data_received(self, data: bytes) -> None:
        idle = self._is_idle()
        if idle:
            self._guard_bytes += len(data)
        before = self.cycle
        super().data_received(data)
        if idle and self.cycle is not before and self.cycle is not None:
            self._busy()  # its headers are in: a request now

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._busy()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes h11 cannot parse, as one line of JSON."""
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(NOT_HTTP)).encode()),
            (b"connection", b"close"),
        ]
        self.transport.write(self.conn.send(h11.Response(status_code=400, headers=headers, reason=b"Bad Request")))
        self.transport.write(self.conn.send(h11.Data(data=NOT_HTTP)))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()

    # the guard

    def _registry(self) -> OrderedDict:
        """This server's idle connections, oldest first (kept on uvicorn's per-server state)."""
        state = self.server_state
        idle = getattr(state, "fruitlens_idle", None)
        if idle is None:
            idle = OrderedDict()
            state.fruitlens_idle = idle
        return idle

    def _is_idle(self) -> bool:
        return self in self._registry()

    def _idle(self) -> None:
        idle = self._registry()
        idle[self] = None
        idle.move_to_end(self)
        self._guard_bytes = 0
        if self._guard_timer is not None:
            self._guard_timer.cancel()
        self._guard_timer = self.loop.call_later(getattr(self.config, "header_timeout", 10.0), self._too_slow)
        cap = getattr(self.config, "max_idle_connections", 256)
        while len(idle) > cap:
            oldest = next(iter(idle))
            oldest._close(answer=False)

    def _busy(self) -> None:
        self._registry().pop(self, None)
        if self._guard_timer is not None:
            self._guard_timer.cancel()
            self._guard_timer = None

    def _too_slow(self) -> None:
        self._guard_timer = None
        if self._is_idle():
            self._close(answer=self._guard_bytes > 0)

    def _close(self, answer: bool) -> None:
        self._busy()
        if not self.transport.is_closing():
            if answer:
                self.transport.write(TIMEOUT_ANSWER)
            self.transport.close()
