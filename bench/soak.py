"""Load and soak of `fruitlens serve`: N clients identifying for M minutes against one process and
against two (`--workers 2`, limits in a real Redis), with and without hostile clients mixed in
(slow trickle uploads, idle sockets, oversize uploads). Per run: identify answers/s, p50/p95/p99
latency, errors by kind, and the server's RSS (every process of it) sampled over time: flat, or
growing?

    .venv/bin/python bench/soak.py --model out/product --index out/f360 \\
        --info ../shared/data/fruits-360-meta --clients 4 --minutes 2 --processes 1,2 --hostile no,yes

Writes bench/_work/soak.json and prints a Markdown table (docs/benchmarks.md has one). Not a
test: nothing is asserted. Run it alone on the machine (under the lock): the clients share the
cores with the server.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from local_cluster import free_port  # noqa: E402

SHARED = REPO.parent / "shared"


def pct(values, q):
    return round(float(np.percentile(np.asarray(values), q)), 1) if values else None


def start_redis() -> tuple[subprocess.Popen, str]:
    exe = shutil.which("redis-server")
    if not exe:
        raise SystemExit("soak: two processes share their limits through redis-server (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    return proc, f"redis://127.0.0.1:{port}/0"


def start_server(args, port: int, processes: int, redis_url: str | None, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "fruitlens", "serve", "--model", args.model, "--index", args.index]
    for info in args.info:
        cmd += ["--info", info]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--rate-limit", "1000000"]
    if processes > 1:
        cmd += ["--workers", str(processes), "--limits-storage", redis_url]
    env = {"FRUITLENS_MODEL_DIR": str(SHARED / "models"), **os.environ}  # the backbone from ../shared, never downloaded
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)  # noqa: SIM115 - the log outlives this
    deadline = time.time() + 300
    ready = 0
    while ready < processes:  # every worker has loaded (its "ready in" line), not only the first
        if proc.poll() is not None or time.time() > deadline:
            raise SystemExit(f"soak: the server did not start: {log.read_text()[-2000:]}")
        ready = log.read_text().count("[serve] ready in")
        time.sleep(0.5)
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)


def rss_mb(proc: subprocess.Popen) -> float:
    try:
        p = psutil.Process(proc.pid)
        return sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]) / 2**20
    except psutil.NoSuchProcess:
        return float("nan")


class Hostile:
    """Clients that try to starve the others: sockets that trickle an upload one byte at a time,
    sockets that never send a byte, and uploads over the size limit. Each kind reopens what the
    server closes, until stopped; what the server answered is counted."""

    def __init__(self, port: int, trickle: int, idle: int, oversize: int):
        self.port, self.trickle, self.idle, self.oversize = port, trickle, idle, oversize
        self.stop = threading.Event()
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def _connect(self) -> socket.socket | None:
        try:
            return socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except OSError:
            self.count("connect refused")
            return None

    def trickler(self):
        head = (
            b"POST /api/v1/identify HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 100000\r\n\r\n"
        )
        while not self.stop.is_set():
            s = self._connect()
            if s is None:
                time.sleep(1)
                continue
            try:
                s.sendall(head)
                self.count("trickle opened")
                while not self.stop.wait(2):
                    s.sendall(b"-")
            except OSError:
                self.count("trickle closed by server")
            finally:
                s.close()

    def idler(self):
        while not self.stop.is_set():
            s = self._connect()
            if s is None:
                time.sleep(1)
                continue
            self.count("idle opened")
            try:
                s.settimeout(60)
                while not self.stop.is_set():
                    if s.recv(1024) == b"":  # closed by the server
                        self.count("idle closed by server")
                        break
            except OSError:
                self.count("idle closed by server")
            finally:
                s.close()

    def oversizer(self):
        big = os.urandom(12 * 2**20)  # over the 10 MB a photo, under the 50 MB a request
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60) as c:
            while not self.stop.is_set():
                try:
                    r = c.post("/api/v1/identify", files={"photo": ("big.jpg", big, "image/jpeg")})
                    self.count(f"oversize {r.status_code}")
                except httpx.HTTPError as exc:
                    self.count(f"oversize {type(exc).__name__}")
                self.stop.wait(0.5)

    def start(self) -> list[threading.Thread]:
        kinds = [self.trickler] * self.trickle + [self.idler] * self.idle + [self.oversizer] * self.oversize
        threads = [threading.Thread(target=k, daemon=True) for k in kinds]
        for t in threads:
            t.start()
        return threads


def run_one(args, photos: list[bytes], processes: int, hostile: bool, redis_url: str | None, work: Path) -> dict:
    port = free_port()
    log = work / f"serve-{processes}p-{'hostile' if hostile else 'clean'}.log"
    proc = start_server(args, port, processes, redis_url, log)
    stop = threading.Event()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    rss: list[tuple[float, float]] = []
    t0 = time.time()

    def client(seed: int):
        rng = random.Random(seed)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            while not stop.is_set():
                data = rng.choice(photos)
                t = time.perf_counter()
                try:
                    r = c.post("/api/v1/identify", files={"photo": ("p.jpg", data, "image/jpeg")})
                    what = str(r.status_code)
                except httpx.HTTPError as exc:
                    what = type(exc).__name__
                ms = (time.perf_counter() - t) * 1e3
                with lock:
                    statuses[what] = statuses.get(what, 0) + 1
                    if what == "200":
                        latencies.append(ms)

    def sampler():
        while not stop.is_set():
            rss.append((round(time.time() - t0, 1), round(rss_mb(proc), 1)))
            stop.wait(args.sample_s)

    bad = Hostile(port, args.trickle, args.idle, args.oversize) if hostile else None
    threads = [threading.Thread(target=sampler, daemon=True)]
    threads += [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
    for t in threads:
        t.start()
    hostile_threads = bad.start() if bad else []
    time.sleep(args.minutes * 60)
    stop.set()
    if bad:
        bad.stop.set()
    for t in threads:
        t.join(60)
    elapsed = time.time() - t0
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    for t in hostile_threads:
        t.join(5)
    values = [v for _, v in rss]
    warm = values[len(values) // 4 :] or values  # after the first quarter: the model and caches loaded
    ok = statuses.get("200", 0)
    return {
        "processes": processes,
        "hostile": hostile,
        "clients": args.clients,
        "minutes": args.minutes,
        "identify_per_s": round(ok / elapsed, 2),
        "answered": ok,
        "p50_ms": pct(latencies, 50),
        "p95_ms": pct(latencies, 95),
        "p99_ms": pct(latencies, 99),
        "statuses": statuses,
        "errors": sum(n for k, n in statuses.items() if k != "200"),
        "hostile_seen": bad.counts if bad else {},
        "rss_mb_first_last_max": [values[0], values[-1], max(values)] if values else None,
        "rss_growth_after_warmup_mb": round(warm[-1] - warm[0], 1) if warm else None,
        "rss_mb_over_time": rss,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--index", required=True)
    ap.add_argument("--info", action="append", default=[])
    ap.add_argument("--photos", default=str(SHARED / "data" / "fruits-360-sample" / "Test"))
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--processes", default="1,2")
    ap.add_argument("--hostile", default="no,yes")
    ap.add_argument("--trickle", type=int, default=16, help="hostile: sockets trickling an upload")
    ap.add_argument("--idle", type=int, default=64, help="hostile: sockets that never send")
    ap.add_argument("--oversize", type=int, default=1, help="hostile: clients sending 12 MB photos")
    ap.add_argument("--sample-s", type=float, default=5.0)
    ap.add_argument("--out", default=str(REPO / "bench" / "_work" / "soak.json"))
    args = ap.parse_args()
    files = sorted(Path(args.photos).rglob("*.jpg"))
    photos = [p.read_bytes() for p in files[:: max(1, len(files) // 200)][:200]]
    work = REPO / "bench" / "_work"
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    redis_proc, redis_url = None, None
    try:
        for processes in [int(p) for p in args.processes.split(",")]:
            if processes > 1 and redis_proc is None:
                redis_proc, redis_url = start_redis()
            for hostile in [h == "yes" for h in args.hostile.split(",")]:
                try:
                    run = run_one(args, photos, processes, hostile, redis_url, work)
                except SystemExit as exc:  # a server that did not start: said, and the other runs go on
                    print(f"soak: {processes} process(es), hostile={hostile}: {exc}", flush=True)
                    continue
                runs.append(run)
                print(json.dumps({k: v for k, v in run.items() if k != "rss_mb_over_time"}), flush=True)
                Path(args.out).write_text(json.dumps({"args": vars(args), "runs": runs}, indent=2))
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
    Path(args.out).write_text(json.dumps({"args": vars(args), "runs": runs}, indent=2))
    print("\n| processes | hostile | identify/s | p50 ms | p95 ms | p99 ms | errors | RSS MB first → last (max) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in runs:
        first, last, top = r["rss_mb_first_last_max"] or (0, 0, 0)
        errors = ", ".join(f"{k}: {n}" for k, n in r["statuses"].items() if k != "200") or "0"
        print(
            f"| {r['processes']} | {'yes' if r['hostile'] else 'no'} | {r['identify_per_s']} | {r['p50_ms']} | "
            f"{r['p95_ms']} | {r['p99_ms']} | {errors} | {first:.0f} → {last:.0f} ({top:.0f}) |"
        )


if __name__ == "__main__":
    main()
