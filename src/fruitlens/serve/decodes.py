"""At most a few photos decoded at once, whatever the number of requests: decoding is where a
photo costs memory (Pillow holds it whole: up to ~400 MB over idle for an RGBA PNG at the 50 Mpx
limit, docs/benchmarks.md) and CPU, so the service decodes `slots` requests' photos at once
(default: the CPUs, at most 2), queues up to `queue` more, and answers a JSON 503 with Retry-After
beyond.

An asyncio gate, taken by the route before its decoding runs in a worker thread: requests waiting
in the queue hold no thread, only the bytes they were sent.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import asynccontextmanager

MAX_DEFAULT_SLOTS = 2  # x ~400 MB at the pixel limit: the default stays under 1 GB on any machine


def default_slots() -> int:
    """The CPUs this process may run on, at most MAX_DEFAULT_SLOTS."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_DEFAULT_SLOTS))


class Busy(Exception):
    """The decode queue is full: answer 503 and say when to retry."""

    def __init__(self, detail: str, retry_after: int):
        super().__init__(detail)
        self.detail, self.retry_after = detail, retry_after


class DecodeGate:
    def __init__(self, slots: int, queue: int, wait_s: float = 30.0):
        self.slots, self.queue, self.wait_s = slots, queue, wait_s
        self._free = asyncio.Semaphore(slots)
        self.waiting = 0
        self.decoding = 0
        self.peak = 0  # most decodes at once so far (health, benches)

    @asynccontextmanager
    async def slot(self):
        """Held while a request's photos decode. Raises Busy when `queue` requests already wait,
        or when a slot did not come free within `wait_s`."""
        if self._free.locked() and self.waiting >= self.queue:
            raise Busy(f"{self.slots} photos decoding and {self.waiting} waiting: retry in a few seconds", 2)
        self.waiting += 1
        try:
            await asyncio.wait_for(self._free.acquire(), self.wait_s)
        except TimeoutError:
            raise Busy(f"no decode slot within {self.wait_s:g} s: retry in a few seconds", 5) from None
        finally:
            self.waiting -= 1
        self.decoding += 1
        self.peak = max(self.peak, self.decoding)
        try:
            yield
        finally:
            self.decoding -= 1
            self._free.release()
