"""Benchmark of `fruitlens serve`: identify requests/s and p50/p95/p99 latency under a bounded
concurrent load on loopback (1, 4 and 16 clients; 1 or more photos a request), against predict's
single-image time (Identifier.identify) measured in the same run; then the neighbour search: one
exact query on the index, its extrapolation to 1M images, and the approximate (usearch HNSW) index.

    .venv/bin/python bench/serve_bench.py --model out/model --index out/demo \\
        --info ../shared/data/fruits-360-meta --clients 1,4,16 --photos 1,2

Writes bench/_work/serve_bench.json and prints a Markdown summary (docs/benchmarks.md has one).
Run it alone on the machine: the client shares the cores with the server.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from local_cluster import free_port  # noqa: E402

from fruitlens.engine.model import PortableModel  # noqa: E402
from fruitlens.engine.predict import Identifier  # noqa: E402
from fruitlens.serve.index import NeighbourIndex  # noqa: E402
from fruitlens.storage.location import Location  # noqa: E402


def pct(values, q):
    return float(np.percentile(np.asarray(values), q))


def photos(sample: Path, n: int) -> list[bytes]:
    files = sorted((sample / "Test").rglob("*.jpg"))
    step = max(1, len(files) // n)
    return [p.read_bytes() for p in files[::step][:n]]


def bench_predict(model: str, data: list[bytes]) -> dict:
    ident = Identifier.load(model)
    for d in data[:3]:
        ident.identify(d)
    times = []
    for d in data:
        t = time.perf_counter()
        ident.identify(d)
        times.append((time.perf_counter() - t) * 1e3)
    return {
        "images": len(times),
        "p50_ms": round(pct(times, 50), 1),
        "p99_ms": round(pct(times, 99), 1),
        "mean_ms": round(statistics.mean(times), 1),
        "per_s_one_at_a_time": round(1e3 / statistics.mean(times), 1),
    }


def start_server(args, interpreters: int, extra=()) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "fruitlens",
        "serve",
        "--model",
        args.model,
        "--index",
        args.index,
        "--info",
        args.info,
        "--port",
        str(port),
        "--interpreters",
        str(interpreters),
        "--rate-limit",
        "100000000",
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"serve exited {proc.returncode}: {' '.join(cmd)}")
        try:
            if httpx.get(url + "/api/v1/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    raise SystemExit("serve did not start")


def load(url: str, data: list[bytes], clients: int, per_client: int, photos_per_request: int = 1) -> dict:
    def worker(c):
        lat = []
        with httpx.Client(base_url=url, timeout=120) as http:
            for i in range(per_client):
                first = (c * per_client + i) * photos_per_request
                files = [
                    ("photo", (f"p{j}.jpg", data[(first + j) % len(data)], "image/jpeg"))
                    for j in range(photos_per_request)
                ]
                t = time.perf_counter()
                r = http.post("/api/v1/identify", files=files)
                lat.append((time.perf_counter() - t) * 1e3)
                assert r.status_code == 200, r.text
        return lat

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        lat = [x for part in pool.map(worker, range(clients)) for x in part]
    wall = time.perf_counter() - t0
    return {
        "clients": clients,
        "photos_per_request": photos_per_request,
        "requests": len(lat),
        "req_per_s": round(len(lat) / wall, 1),
        "p50_ms": round(pct(lat, 50), 1),
        "p95_ms": round(pct(lat, 95), 1),
        "p99_ms": round(pct(lat, 99), 1),
    }


def bench_neighbours(args) -> dict:
    model = PortableModel.load_folder(args.model)
    t = time.perf_counter()
    exact = NeighbourIndex.load(Location.of(args.index), model)
    load_s = time.perf_counter() - t
    n, d = exact.vectors.shape
    rng = np.random.default_rng(0)
    queries = exact.vectors[rng.choice(n, 50, replace=False)] + rng.normal(0, 0.01, (50, d)).astype(np.float32)
    times = []
    for q in queries:
        t = time.perf_counter()
        exact.search(q, 8)
        times.append((time.perf_counter() - t) * 1e3)
    exact_ms = pct(times, 50)
    # a synthetic collection of --scale images (the real features, each copied with noise): the exact
    # product's growth, and the HNSW index's build time, query time and recall at that size
    from usearch.index import Index

    from fruitlens.engine.model import one_blas_thread

    m = args.scale
    big = exact.vectors[rng.integers(0, n, m)] + rng.normal(0, 0.02, (m, d)).astype(np.float32)
    big /= np.linalg.norm(big, axis=1, keepdims=True)
    bt, truth = [], []
    for q in queries[:20]:
        t = time.perf_counter()
        with one_blas_thread():
            s = big @ (q / np.linalg.norm(q))
        top = np.argpartition(-s, 7)[:8]
        bt.append((time.perf_counter() - t) * 1e3)
        truth.append(set(top.tolist()))
    t = time.perf_counter()
    hnsw = Index(ndim=d, metric="ip", dtype="f32", connectivity=16, expansion_add=128, expansion_search=64)
    hnsw.add(np.arange(m, dtype=np.uint64), big, threads=os.cpu_count() or 1)
    big_build = time.perf_counter() - t
    ht, big_hits = [], 0
    for q, tr in zip(queries[:20], truth):
        t = time.perf_counter()
        found = hnsw.search(q / np.linalg.norm(q), 8)
        ht.append((time.perf_counter() - t) * 1e3)
        big_hits += len(set(int(k) for k in found.keys) & tr)
    del big, hnsw
    t = time.perf_counter()
    approx = NeighbourIndex.load(Location.of(args.index), model, ann=True)
    ann_load_s = time.perf_counter() - t
    at, hits = [], 0
    for q in queries:
        t = time.perf_counter()
        a = approx.search(q, 8)
        at.append((time.perf_counter() - t) * 1e3)
        hits += len({x.entry.id for x in a} & {x.entry.id for x in exact.search(q, 8)})
    return {
        "images": n,
        "dims": d,
        "index_load_s": round(load_s, 2),
        "exact_query_ms": round(exact_ms, 2),
        "synthetic_images": m,
        "exact_query_ms_synthetic": round(pct(bt, 50), 2),
        "ann_build_s_synthetic": round(big_build, 1),
        "ann_query_ms_synthetic": round(pct(ht, 50), 3),
        "ann_recall_at_8_synthetic": round(big_hits / (8 * len(truth)), 3),
        "exact_query_ms_1m_extrapolated": round(exact_ms * 1e6 / n, 1),
        "exact_matrix_gb_1m": round(1e6 * d * 4 / 1e9, 2),
        "ann_build_s": round(ann_load_s - load_s, 2),
        "ann_query_ms": round(pct(at, 50), 3),
        "ann_recall_at_8": round(hits / (8 * len(queries)), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="out/model")
    ap.add_argument("--index", default="out/demo")
    ap.add_argument("--info", default=str(REPO.parent / "shared" / "data" / "fruits-360-meta"))
    ap.add_argument("--sample", default=str(REPO.parent / "shared" / "data" / "fruits-360-sample"))
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--photos", default="1", help="photos per request, comma-separated (e.g. 1,2)")
    ap.add_argument("--requests", type=int, default=40, help="requests per client")
    ap.add_argument("--interpreters", default="2")
    ap.add_argument("--skip-neighbours", action="store_true")
    ap.add_argument("--scale", type=int, default=200_000, help="images in the synthetic neighbour-search collection")
    ap.add_argument("--out", default=str(REPO / "bench" / "_work" / "serve_bench.json"))
    args = ap.parse_args()
    os.environ.setdefault("FRUITLENS_MODEL_DIR", str(REPO.parent / "shared" / "models"))

    data = photos(Path(args.sample), 60)
    result = {"machine": {"cpus": os.cpu_count()}, "predict": bench_predict(args.model, data), "serve": []}
    print("predict (Identifier.identify, in process):", result["predict"], flush=True)
    for interpreters in [int(x) for x in args.interpreters.split(",")]:
        proc, url = start_server(args, interpreters)
        try:
            load(url, data[:8], 1, 8)  # warm-up
            for per in [int(x) for x in args.photos.split(",")]:
                for c in [int(x) for x in args.clients.split(",")]:
                    row = {
                        "interpreters": interpreters,
                        **load(url, data, c, args.requests, per),
                        "server_rss_mb": round(psutil.Process(proc.pid).memory_info().rss / 2**20),
                    }
                    result["serve"].append(row)
                    print("serve:", row, flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
    if not args.skip_neighbours:
        result["neighbours"] = bench_neighbours(args)
        print("neighbours:", result["neighbours"], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))

    p = result["predict"]
    print(
        f"\npredict, one image at a time: p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms ({p['per_s_one_at_a_time']}/s)\n"
    )
    print(
        "| interpreters | photos a request | concurrent clients | requests | requests/s | p50 ms | p95 ms | p99 ms | "
        "server RSS MB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in result["serve"]:
        print(
            f"| {r['interpreters']} | {r['photos_per_request']} | {r['clients']} | {r['requests']} | "
            f"{r['req_per_s']} | "
            f"{r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r['server_rss_mb']} |"
        )
    if "neighbours" in result:
        print(f"\nneighbours: {result['neighbours']}")


if __name__ == "__main__":
    main()
