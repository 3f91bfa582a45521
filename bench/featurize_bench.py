"""Throughput and memory of `fruitlens featurize` vs the model alone, measured in one run.

    .venv/bin/python bench/featurize_bench.py --images 10000 40000

For each size: replicates the Fruits-360 sample in ../shared (copies under new names, hard links
where possible) to N images, runs `fruitlens featurize` (Spark local mode, the defaults) while
sampling the peak RSS of the driver, the JVM and the Python workers, and compares its images/s with
the model alone (same model, same total threads, same batch) on already-decoded images in memory.
The model alone is measured before each size and again after it (runs of 360,000 images take long
enough for the machine's speed to drift); each run's ratio uses the higher of the two, so drift
never flatters it.
Spark's event log (the data behind the Spark UI) gives the embed stage's task times: min, median,
95th percentile, max, and max/median as the skew. CPU seconds by process role say who used the
cores. Prints a Markdown table and writes bench/_work/featurize_bench-*.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import subprocess
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


def _model_only_worker(threads: int, batch: int, seconds: float, queue, size=None, backbone=None) -> None:
    from fruitlens.config import DEFAULT_BACKBONE
    from fruitlens.embedding import backbones
    from fruitlens.embedding.decode import decode_image

    # what featurize runs by default (or with --backbone)
    spec = backbones.at_size(backbones.get_spec(backbone or DEFAULT_BACKBONE), size)
    # The published network alone, at its input size (no in-graph resize: featurize pays for that).
    model = backbones.load(spec, str(MODELS / spec.file.filename), threads, resize_in_graph=False)
    files = sorted(SAMPLE.rglob("*.jpg"))[::50][: batch * 4]
    images = np.stack([decode_image(f.read_bytes(), spec.input_size, 10**8) for f in files])
    batches = [images[i : i + batch] for i in range(0, len(images), batch)]
    model.embed(batches[0])
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        model.embed(batches[n // batch % len(batches)])
        n += batch
    queue.put(n / (time.perf_counter() - t0))


def model_only(processes: int, threads: int, batch: int, seconds: float, size=None, backbone=None) -> float:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_model_only_worker, args=(threads, batch, seconds, queue, size, backbone))
        for _ in range(processes)
    ]
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


def task_times(event_dir: Path) -> dict:
    """The embed stage's task durations from Spark's event log (the stage with the most tasks)."""
    logs = sorted(p for p in event_dir.iterdir() if p.is_file())
    tasks: dict[int, list[float]] = {}
    for line in logs[-1].open():
        event = json.loads(line)
        if event["Event"] == "SparkListenerTaskEnd":
            info = event["Task Info"]
            tasks.setdefault(event["Stage ID"], []).append((info["Finish Time"] - info["Launch Time"]) / 1000)
    durations = sorted(max(tasks.values(), key=len))
    pick = lambda q: durations[min(len(durations) - 1, int(q * len(durations)))]  # noqa: E731
    return {
        "tasks": len(durations),
        "min_s": round(durations[0], 2),
        "median_s": round(pick(0.5), 2),
        "p95_s": round(pick(0.95), 2),
        "max_s": round(durations[-1], 2),
        "max_over_median": round(durations[-1] / pick(0.5), 2),
        "p95_over_median": round(pick(0.95) / pick(0.5), 2),
        "sum_s": round(sum(durations), 1),
    }


def run_pipeline(images: Path, out: Path, extra: list[str]) -> dict:
    env = {**os.environ, "FRUITLENS_MODEL_DIR": str(MODELS)}
    events = WORK / "events"
    shutil.rmtree(events, ignore_errors=True)
    events.mkdir(parents=True)
    event_log = [
        "--conf",
        "spark.eventLog.enabled=true",
        "--conf",
        f"spark.eventLog.dir={events.as_uri()}",
        "--conf",
        "spark.eventLog.compress=false",
        "--conf",
        "spark.eventLog.rolling.enabled=false",
    ]
    cmd = [str(REPO / ".venv" / "bin" / "fruitlens"), "featurize", str(images), str(out), "--quiet", *event_log, *extra]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak: dict[str, int] = {}
    cpu: dict[int, tuple[str, float]] = {}  # pid -> (role, CPU seconds so far)
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
                    times = p.cpu_times()
                except psutil.Error:
                    continue
                r = role(p, proc.pid)
                cpu[p.pid] = (r, times.user + times.system)
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
    cpu_by_role: dict[str, float] = {}
    for r, seconds in cpu.values():
        cpu_by_role[r] = cpu_by_role.get(r, 0.0) + seconds
    return {
        "process_wall_s": round(wall, 1),
        "embed_tasks": task_times(events),
        "cpu_s": {k: round(v, 1) for k, v in sorted(cpu_by_role.items()) if v >= 0.05},
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
    ap.add_argument(
        "--slots",
        type=int,
        default=None,
        help="inference slots: featurize --master local[N], against the model alone on N threads "
        "(default: every core). Fewer slots than cores leave cores to decoding, Spark and "
        "Parquet, as on a node with more vCPUs than inference threads",
    )
    args = ap.parse_args()
    cores = args.slots or os.cpu_count() or 1
    WORK.mkdir(parents=True, exist_ok=True)
    results = {
        "cores": os.cpu_count(),
        "slots": cores,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "extra": args.extra,
        "runs": [],
    }

    for n in args.images:
        # Same model, same total threads, same batch: one process with all threads, and one process
        # per core with one thread each (the pipeline's shape). The better one is the baseline.
        one_proc = model_only(1, cores, args.batch_size, args.seconds, args.image_size)
        per_core = model_only(cores, 1, args.batch_size, args.seconds, args.image_size)
        baseline = max(one_proc, per_core)
        print(
            f"model alone: {one_proc:.1f} img/s (1 process x {cores} threads), "
            f"{per_core:.1f} img/s ({cores} processes x 1 thread)",
            flush=True,
        )
        images = replicate(n)
        out = WORK / f"out-{n}"
        extra = ["--batch-size", str(args.batch_size), *args.extra.split()]
        if args.slots:
            extra += ["--master", f"local[{args.slots}]"]
        if args.image_size:
            extra += ["--image-size", str(args.image_size)]
        r = run_pipeline(images, out, extra)
        # ... and once more after it, in the better shape: the machine's speed drifts (other tenants,
        # clocks), and the higher of the two is the baseline, so drift never flatters the ratio.
        after = model_only(
            *((1, cores) if one_proc >= per_core else (cores, 1)), args.batch_size, args.seconds, args.image_size
        )
        print(f"model alone after the run: {after:.1f} img/s", flush=True)
        baseline = max(baseline, after)
        stages = r["report"]["stages"]
        embed_rate = stages["embed"]["images_per_s"]
        total = stages["total"]
        row = {
            "images": n,
            "model_only_images_per_s": {
                f"1 process x {cores} threads": round(one_proc, 1),
                f"{cores} processes x 1 thread": round(per_core, 1),
                "after the run, the better shape": round(after, 1),
            },
            "embed_images_per_s": embed_rate,
            "embed_ratio_vs_model_only": round(embed_rate / baseline, 3),
            "list_embed_write_images_per_s": total["images_per_s"],
            "list_embed_write_ratio": round(total["images_per_s"] / baseline, 3),
            "process_wall_s": r["process_wall_s"],
            # wall-clock of the whole `fruitlens featurize` process: Spark start-up included
            "process_images_per_s": round(n / r["process_wall_s"], 1),
            "process_ratio": round(n / r["process_wall_s"] / baseline, 3),
            "stages": stages,
            "model_loads": r["report"]["backbone"]["loads"],
            "partitions": r["report"]["partitions"],
            "peak_rss_mib": r["peak_rss_mib"],
            "peak_rss_one_python_worker_mib": r["peak_rss_one_python_worker_mib"],
            "embed_tasks": r["embed_tasks"],
            "cpu_s": r["cpu_s"],
        }
        results["runs"].append(row)
        print(json.dumps(row), flush=True)
        shutil.rmtree(out, ignore_errors=True)

    slots = f"-slots{args.slots}" if args.slots else ""
    (WORK / f"featurize_bench-{'-'.join(map(str, args.images))}-{args.image_size or 224}{slots}.json").write_text(
        json.dumps(results, indent=2)
    )
    print()
    print(
        "| images | model alone img/s | embed img/s | **embed / model** | whole process s (img/s) "
        "| **process / model** | embed tasks: n, median / p95 / max s (max/median) "
        "| peak RSS driver / JVM / workers MiB | CPU s driver / JVM / workers |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in results["runs"]:
        base = max(row["model_only_images_per_s"].values())
        t, rss, cpu = row["embed_tasks"], row["peak_rss_mib"], row["cpu_s"]
        print(
            f"| {row['images']:,} | {base:.1f} | {row['embed_images_per_s']:.1f} | "
            f"**{row['embed_ratio_vs_model_only']:.2f}** | "
            f"{row['process_wall_s']:.1f} ({row['process_images_per_s']:.1f}) | **{row['process_ratio']:.2f}** | "
            f"{t['tasks']}, {t['median_s']} / {t['p95_s']} / {t['max_s']} ({t['max_over_median']}) | "
            f"{rss.get('driver_python', 0)} / {rss.get('jvm', 0)} / {rss.get('python_workers', 0)} | "
            f"{cpu.get('driver_python', 0)} / {cpu.get('jvm', 0)} / {cpu.get('python_workers', 0)} |"
        )


if __name__ == "__main__":
    main()
