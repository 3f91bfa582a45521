"""`fruitlens train` before and after, and its cost curve to a million rows.

    .venv/bin/python bench/train_bench.py compare --old /path/to/old/checkout/src   # the sample, both codes, one run
    .venv/bin/python bench/train_bench.py scale --rows 10000,100000,1000000          # synthetic rows, Spark solver

`compare` runs the command as a user does (`python -m fruitlens train EMBEDDINGS MODEL --quiet`) on
the sample's embeddings (bench/_work/train-emb, made by `fruitlens featurize` if missing), first
with this checkout's code, then with the old one (PYTHONPATH), and reports the wall times, their
ratio and each model's choice and test accuracy. `scale` writes N rows of the sample's train
embeddings replicated with small noise (labels kept, a test split of 10%) and trains on them with
the Spark solver (`--solver spark`, the path for rows beyond the driver's memory), sampling the
resident memory of the driver process, of its JVM and of the Python workers every 0.5 s: wall
time, peak memory of each, disk used by Spark's spills, per row count.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from fruitlens.storage.writer import ROW_GROUP_ROWS  # featurize's row groups: what Spark reads in production

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
WORK = REPO / "bench" / "_work"
ENV = {**os.environ, "FRUITLENS_MODEL_DIR": str(SHARED / "models")}


def embeddings() -> Path:
    out = WORK / "train-emb"
    if not (out / "embeddings" / "_SUCCESS").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "fruitlens",
                "featurize",
                str(SHARED / "data" / "fruits-360-sample"),
                str(out),
                "--quiet",
            ],
            check=True,
            env=ENV,
        )
    return out


class Peak:
    """Peak RSS, sampled every 0.5 s, of a process (the driver's Python), of its JVM (local mode:
    the driver and the executor) and of the Python workers together (Spark's daemon and workers)."""

    def __init__(self, pid: int, spill: Path | None = None):
        self.proc, self.driver, self.jvm, self.workers, self._stop = psutil.Process(pid), 0, 0, 0, False
        self.spill_folder, self.spill = spill, 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop:
            try:
                self.driver = max(self.driver, self.proc.memory_info().rss)
                jvm = workers = 0
                for c in self.proc.children(recursive=True):
                    try:
                        rss = c.memory_info().rss
                        if "java" in c.name():
                            jvm += rss
                        else:
                            workers += rss
                    except psutil.Error:
                        pass
                self.jvm, self.workers = max(self.jvm, jvm), max(self.workers, workers)
                if self.spill_folder is not None:
                    self.spill = max(
                        self.spill, sum(f.stat().st_size for f in self.spill_folder.rglob("*") if f.is_file())
                    )
            except psutil.Error:
                return
            except OSError:  # a spill file removed while counted
                pass
            time.sleep(0.5)

    def stop(self):
        self._stop = True
        self.thread.join(2)


def train(args: list[str], pythonpath: str | None = None, spill: Path | None = None) -> dict:
    """`fruitlens train ARGS` as a user runs it; with `spill`, Spark's local folder (its spills) there."""
    env = {**ENV, **({"PYTHONPATH": pythonpath} if pythonpath else {})}
    if spill is not None:
        shutil.rmtree(spill, ignore_errors=True)
        spill.mkdir(parents=True)
        args = [*args, "--conf", f"spark.local.dir={spill}"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fruitlens", "train", *args, "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = Peak(proc.pid, spill)
    _, err = proc.communicate()
    peak.stop()
    wall = time.perf_counter() - t0
    if spill is not None:
        shutil.rmtree(spill, ignore_errors=True)
    if proc.returncode:
        raise SystemExit(f"train failed: {err[-2000:]}")
    out = {
        "wall_s": round(wall, 1),
        "peak_driver_mb": round(peak.driver / 2**20),
        "peak_jvm_mb": round(peak.jvm / 2**20),
        "peak_workers_mb": round(peak.workers / 2**20),
    }
    if spill is not None:
        out["peak_spill_mb"] = round(peak.spill / 2**20)
    return out


def compare(old_src: str) -> dict:
    emb = embeddings()
    results = {}
    for name, pythonpath in (("after", None), ("before", old_src)):
        model = WORK / f"train-model-{name}"
        shutil.rmtree(model, ignore_errors=True)
        r = train([str(emb), str(model)], pythonpath)
        report = json.loads((model / "report.json").read_text())
        chosen = report["chosen"]
        r.update(
            {
                "chosen": chosen.get("candidate") or f"{chosen['model']} {chosen['params']}",
                "test_accuracy": chosen["test"]["accuracy"],
                "candidates": len(report["candidates"]),
                "solver": report.get("solver", "spark"),
            }
        )
        results[name] = r
        print(name, json.dumps(r), flush=True)
    results["speed_up"] = round(results["before"]["wall_s"] / results["after"]["wall_s"], 2)
    print(json.dumps(results, indent=1))
    return results


def synthetic(rows: int, seed: int = 0) -> Path:
    """`rows` embeddings: the sample's train embeddings, replicated with small noise."""
    out = WORK / f"train-scale-{rows}"
    if (out / "embeddings" / "_SUCCESS").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    (out / "embeddings").mkdir(parents=True)
    src = pq.read_table(embeddings() / "embeddings", columns=["path", "label", "split", "embedding"])
    src = src.filter(pa.compute.equal(src.column("split"), "train"))
    base = np.stack(src.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    labels = np.array(src.column("label").to_pylist())
    scale = base.std(axis=0) * 0.05
    rng = np.random.default_rng(seed)
    files, written, part = [], 0, 0
    while written < rows:
        n = min(50_000, rows - written)
        idx = rng.integers(0, len(base), n)
        x = base[idx] + rng.normal(0, 1, (n, base.shape[1])).astype(np.float32) * scale
        split = np.where(rng.random(n) < 0.1, "test", "train")
        table = pa.table(
            {
                "path": [f"synthetic/{labels[i]}/{written + j:08d}.jpg" for j, i in enumerate(idx)],
                "label": labels[idx],
                "split": split,
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), base.shape[1]).cast(
                    pa.list_(pa.float32())
                ),
            }
        )
        name = f"part-{part:05d}.parquet"
        pq.write_table(table, out / "embeddings" / name, compression="zstd", row_group_size=ROW_GROUP_ROWS)
        files.append({"path": name, "rows": n, "bytes": (out / "embeddings" / name).stat().st_size})
        written, part = written + n, part + 1
    manifest = json.loads((embeddings() / "embeddings" / "_SUCCESS").read_text())
    manifest.update({"files": files, "rows": rows, "run_id": "synthetic"})
    (out / "embeddings" / "_SUCCESS").write_text(json.dumps(manifest))
    return out


def scale(rows: list[int], max_iter: int, extra: list[str]) -> dict:
    results = {}
    for n in rows:
        data = synthetic(n)
        model = WORK / f"train-scale-model-{n}"
        shutil.rmtree(model, ignore_errors=True)
        r = train(
            [str(data), str(model), "--solver", "spark", "--max-iter", str(max_iter), *extra],
            spill=WORK / "spark-local",
        )
        report = json.loads((model / "report.json").read_text())
        r.update(
            {
                "rows": n,
                "iterations": report["candidates"][0]["iterations"],
                "fit_s": report["candidates"][0]["seconds"],
                "timings": report["timings"],
                "test_accuracy": report["chosen"]["test"]["accuracy"],
            }
        )
        results[n] = r
        print(json.dumps(r), flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--old", required=True, help="the old checkout's src folder (PYTHONPATH)")
    s = sub.add_parser("scale")
    s.add_argument("--rows", default="10000,100000,1000000")
    s.add_argument("--max-iter", type=int, default=20)
    s.add_argument("extra", nargs="*", help="more train options, after --")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    if args.mode == "compare":
        result = compare(args.old)
    else:
        result = scale([int(r) for r in args.rows.split(",")], args.max_iter, args.extra)
    (WORK / f"train_bench_{args.mode}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
