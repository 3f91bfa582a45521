"""Throughput and memory of `fruitlens featurize` vs the model alone, measured in one run.

    .venv/bin/python bench/featurize_bench.py --images 10000 40000

For each size: replicates the Fruits-360 sample in ../shared (copies under new names, hard links
where possible) to N images, runs `fruitlens featurize` (Spark local mode, the defaults) while
sampling the peak RSS of the driver, the JVM and the Python workers, and compares its images/s with
the model alone (same model, same total threads, same batch) on already-decoded images in memory.
Prints a Markdown table and writes bench/_work/featurize_bench.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SAMPLE = SHARED / "data" / "fruits-360-sample"
MODELS = SHARED / "models"
WORK = REPO / "bench" / "_work"


def replicate(n: int) -> Path:
    dest = WORK / f"images-{n}"
    if dest.is_dir() and sum(1 for _ in dest.rglob("*.jpg")) == n:
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    sources = sorted(SAMPLE.rglob("*.jpg"))
    for i in range(n):
        src = sources[i % len(sources)]
        rel = src.relative_to(SAMPLE)
        target = dest / rel.parent / f"c{i // len(sources)}_{src.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, target)
        except OSError:
            shutil.copy(src, target)
    return dest


def _model_only_worker(threads: int, batch: int, seconds: float, queue, size=None) -> None:
    from fruitlens import backbones
    from fruitlens.config import DEFAULT_BACKBONE
    from fruitlens.decode import decode_image

    spec = backbones.at_size(backbones.get_spec(DEFAULT_BACKBONE), size)  # what featurize runs by default
    model = backbones.load(spec, str(MODELS / spec.model_file.filename), threads)
    files = sorted(SAMPLE.rglob("*.jpg"))[::50][:batch * 4]
    images = np.stack([decode_image(f.read_bytes(), spec.input_size, 10**8) for f in files])
    batches = [images[i : i + batch] for i in range(0, len(images), batch)]
    model.embed(batches[0])
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        model.embed(batches[n // batch % len(batches)])
        n += batch
    queue.put(n / (time.perf_counter() - t0))


def model_only(processes: int, threads: int, batch: int, seconds: float, size=None) -> float:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_model_only_worker, args=(threads, batch, seconds, queue, size)) for _ in range(processes)]
    for p in procs:
        p.start()
    rates = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(rates)


def role(proc: psutil.Process, root_pid: int) -> str:
    try:
        if proc.pid == root_pid:
            return "driver_python"
        name = proc.name()
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        return "other"
    if name == "java" or "java" in cmd.split(" ")[0]:
        return "jvm"
    if "pyspark.daemon" in cmd or "pyspark/daemon" in cmd or "worker" in cmd or "python" in name:
        return "python_workers"
    return "other"


def run_pipeline(images: Path, out: Path, extra: list[str]) -> dict:
    env = {**os.environ, "FRUITLENS_MODEL_DIR": str(MODELS)}
    cmd = [str(REPO / ".venv" / "bin" / "fruitlens"), "featurize", str(images), str(out), "--quiet", *extra]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak: dict[str, int] = {}
    peak_worker_single = 0
    stop = threading.Event()

    def sample():
        nonlocal peak_worker_single
        root = psutil.Process(proc.pid)
        while not stop.wait(0.2):
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            now: dict[str, int] = {}
            for p in procs:
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                r = role(p, proc.pid)
                now[r] = now.get(r, 0) + rss
                if r == "python_workers":
                    peak_worker_single = max(peak_worker_single, rss)
            for r, v in now.items():
                peak[r] = max(peak.get(r, 0), v)

    t = threading.Thread(target=sample, daemon=True)
    t0 = time.perf_counter()
    t.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    t.join()
    if proc.returncode != 0:
        raise SystemExit(f"featurize failed:\n{output}")
    report = json.loads((out / "report.json").read_text())
    mib = 1024 * 1024
    return {
        "process_wall_s": round(wall, 1),
        "report": report["featurize"],
        "peak_rss_mib": {k: round(v / mib) for k, v in sorted(peak.items())},
        "peak_rss_one_python_worker_mib": round(peak_worker_single / mib),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, nargs="+", default=[10_000, 40_000])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=20.0, help="duration of each model-only measurement")
    ap.add_argument("--image-size", type=int, default=None, help="featurize --image-size (default: the backbone's)")
    ap.add_argument("--extra", default="", help="more featurize options, space-separated")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    WORK.mkdir(parents=True, exist_ok=True)
    results = {"cores": cores, "batch_size": args.batch_size, "image_size": args.image_size, "extra": args.extra,
               "runs": []}

    # Same model, same total threads, same batch: one process with all threads, and one process
    # per core with one thread each (the pipeline's shape). The better one is the baseline.
    one_proc = model_only(1, cores, args.batch_size, args.seconds, args.image_size)
    per_core = model_only(cores, 1, args.batch_size, args.seconds, args.image_size)
    baseline = max(one_proc, per_core)
    results["model_only_images_per_s"] = {
        f"1 process x {cores} threads": round(one_proc, 1),
        f"{cores} processes x 1 thread": round(per_core, 1),
    }
    print(f"model alone: {one_proc:.1f} img/s (1 process x {cores} threads), "
          f"{per_core:.1f} img/s ({cores} processes x 1 thread)", flush=True)

    for n in args.images:
        images = replicate(n)
        out = WORK / f"out-{n}"
        extra = ["--batch-size", str(args.batch_size), *args.extra.split()]
        if args.image_size:
            extra += ["--image-size", str(args.image_size)]
        r = run_pipeline(images, out, extra)
        stages = r["report"]["stages"]
        embed_rate = stages["embed"]["images_per_s"]
        total = stages["total"]
        row = {
            "images": n,
            "embed_images_per_s": embed_rate,
            "embed_ratio_vs_model_only": round(embed_rate / baseline, 3),
            "list_embed_write_images_per_s": total["images_per_s"],
            "list_embed_write_ratio": round(total["images_per_s"] / baseline, 3),
            "process_wall_s": r["process_wall_s"],
            # wall-clock of the whole `fruitlens featurize` process: Spark start-up included
            "process_images_per_s": round(n / r["process_wall_s"], 1),
            "process_ratio": round(n / r["process_wall_s"] / baseline, 3),
            "stages": stages,
            "model_loads": r["report"]["model"]["loads"],
            "partitions": r["report"]["partitions"],
            "peak_rss_mib": r["peak_rss_mib"],
            "peak_rss_one_python_worker_mib": r["peak_rss_one_python_worker_mib"],
        }
        results["runs"].append(row)
        print(json.dumps(row), flush=True)
        shutil.rmtree(out, ignore_errors=True)

    (WORK / f"featurize_bench-{'-'.join(map(str, args.images))}-{args.image_size or 224}.json").write_text(json.dumps(results, indent=2))
    print()
    print(f"Model alone (baseline): {baseline:.1f} images/s")
    print("| images | embed img/s | ratio vs model | list+embed+publish img/s | ratio | list s | read | decode+resize | infer | write (tasks) | publish s | peak RSS driver / JVM / workers (MiB) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in results["runs"]:
        s = row["stages"]
        ts = s["embed"]["task_seconds"]
        rss = row["peak_rss_mib"]
        print(
            f"| {row['images']:,} | {row['embed_images_per_s']:.1f} | {row['embed_ratio_vs_model_only']:.0%} | "
            f"{row['list_embed_write_images_per_s']:.1f} | {row['list_embed_write_ratio']:.0%} | "
            f"{s['list']['wall_s']:.2f} | {ts['read']:.1f} | {ts['decode_resize']:.1f} | {ts['infer']:.1f} | "
            f"{ts['write']:.1f} | {s['publish']['wall_s']:.2f} | {rss.get('driver_python', 0)} / {rss.get('jvm', 0)} / {rss.get('python_workers', 0)} |"
        )


if __name__ == "__main__":
    main()
