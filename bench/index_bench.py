"""The saved similar-images index at a million images: start-up, search latency, recall@8.

    .venv/bin/python bench/index_bench.py --images 1000000 --dim 256

Synthetic unit vectors with the structure of a photo collection (clusters of near-copies around
2,000 centres, noise), saved exactly as `fruitlens index` saves OUTPUT/index (a usearch HNSW graph,
float16, connectivity 16, expansion 128/64; entries.parquet of keys and paths, sorted by key).
Then, in a fresh process as `serve` starts: the graph restored with `view=True` (memory-mapped) and
the entries read, timed; 1,000 queries (a stored vector with noise, as a new photo of a known
fruit) timed one at a time (p50/p95/p99); recall@8 of 200 of them against the exact top 8 by brute
force over every vector. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "_work" / "index"


def vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (2000, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        x = centres[rng.integers(0, len(centres), m)] + rng.normal(0, 0.6, (m, dim)).astype(np.float32)
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def build(n: int, dim: int) -> dict:
    from usearch.index import Index

    WORK.mkdir(parents=True, exist_ok=True)
    x = vectors(n, dim)
    np.save(WORK / "vectors.npy", x)
    keys = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # spread like hash ids
    t0 = time.perf_counter()
    index = Index(ndim=dim, metric="ip", dtype="f16", connectivity=16, expansion_add=128, expansion_search=64)
    index.add(keys, x, threads=os.cpu_count() or 1)
    build_s = time.perf_counter() - t0
    index.save(str(WORK / "hnsw.usearch"))
    order = np.argsort(keys)
    pq.write_table(
        pa.table(
            {
                "key": pa.array(keys[order], pa.uint64()),
                "path": [f"s3://fruits/collection/{int(k):016x}.jpg" for k in keys[order]],
                "label": ["Apple"] * n,
                "split": ["train"] * n,
                "path_bytes": pa.array([None] * n, pa.binary()),
            }
        ),
        WORK / "entries.parquet",
        compression="zstd",
    )
    np.save(WORK / "keys.npy", keys)
    return {
        "images": n,
        "dim": dim,
        "build_s": round(build_s, 1),
        "graph_mb": round((WORK / "hnsw.usearch").stat().st_size / 2**20),
        "entries_mb": round((WORK / "entries.parquet").stat().st_size / 2**20),
    }


def serve_side(queries: int, recall_queries: int) -> dict:
    """In a fresh process: start (restore view + entries), then search."""
    t0 = time.perf_counter()
    from usearch.index import Index

    index = Index.restore(str(WORK / "hnsw.usearch"), view=True)
    entries = pq.read_table(WORK / "entries.parquet", columns=["key", "path", "label", "split", "path_bytes"])
    sorted_keys = entries.column("key").to_numpy()
    start_s = time.perf_counter() - t0
    x = np.load(WORK / "vectors.npy", mmap_mode="r")
    keys = np.load(WORK / "keys.npy")
    rng = np.random.default_rng(1)
    picks = rng.integers(0, len(x), queries)
    q = np.asarray(x[picks]) + rng.normal(0, 0.02, (queries, x.shape[1])).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    times, found = [], []
    for v in q:
        t = time.perf_counter()
        r = index.search(v, 8)
        rows = np.searchsorted(sorted_keys, r.keys)  # the entries of the answer, as SavedIndex does
        _ = [entries.column("path")[int(i)].as_py() for i in rows]
        times.append((time.perf_counter() - t) * 1e3)
        found.append(set(int(k) for k in r.keys))
    hits = 0
    for v, f in zip(q[:recall_queries], found[:recall_queries]):
        s = np.asarray(x) @ v  # exact: every vector
        top = np.argpartition(-s, 8)[:8]
        hits += len(f & set(int(k) for k in keys[top]))
    t = np.asarray(times)
    return {
        "start_s": round(start_s, 2),
        "queries": queries,
        "p50_ms": round(float(np.percentile(t, 50)), 3),
        "p95_ms": round(float(np.percentile(t, 95)), 3),
        "p99_ms": round(float(np.percentile(t, 99)), 3),
        "recall_at_8": round(hits / (8 * recall_queries), 4),
        "recall_queries": recall_queries,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--recall-queries", type=int, default=200)
    ap.add_argument("--serve-side", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_side:
        print(json.dumps(serve_side(args.queries, args.recall_queries)))
        return
    result = {"build": build(args.images, args.dim)}
    print(json.dumps(result["build"]), flush=True)
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--serve-side",
            "--queries",
            str(args.queries),
            "--recall-queries",
            str(args.recall_queries),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result["serve"] = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(result["serve"]), flush=True)
    (REPO / "bench" / "_work" / "index_bench.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
