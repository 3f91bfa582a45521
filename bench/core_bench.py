"""The embedding core without Spark: `runner.run_partition` (read, decode, infer, write Parquet) in
plain Python processes against the model alone, measured in one run.

    .venv/bin/python bench/core_bench.py --images 3000 --rounds 2

Splits what `featurize` costs beyond the network into the core's share (this bench: the same
code a Spark task runs, one process per core, no JVM, no scheduling) and Spark's share (the gap
between this ratio and bench/featurize_bench.py's embed ratio). Each round measures the model alone
(2 processes × 1 thread, batch 16, decoded images in memory: bench/featurize_bench.py's
`model_only`), then the core with `--io-threads` 4 (the default) and 1, on N images of the
replicated sample per process. Prints a Markdown
table and writes bench/_work/core_bench.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import featurize_bench as fb


def _core_worker(io_threads: int, files: list[str], queue) -> None:
    from fruitlens.chain import runner
    from fruitlens.config import DEFAULT_BACKBONE
    from fruitlens.embedding.embedder import Embedder
    from fruitlens.storage.location import Location
    from fruitlens.storage.writer import Target

    embedder = Embedder.resolve(DEFAULT_BACKBONE, backbone_file=str(fb.MODELS))
    out_dir = tempfile.mkdtemp(prefix="fruitlens-core-")
    out = Location.of(out_dir)
    task = runner.EmbedTask(
        input=Location.of(str(fb.SAMPLE)),
        embeddings=Target(out / "embeddings", out, "b"),
        errors=Target(out / "errors", out, "b"),
        embedder=embedder,
        io_threads=io_threads,
    )
    rows = [
        dict(
            path=f, label=Path(f).parent.name, split="train", size_bytes=0, modified_ns=None, etag=None, path_bytes=None
        )
        for f in files
    ]
    runner.run_partition(task, rows[:64], 0, 0)  # warm: the model loaded, the interpreter allocated
    c0, t0 = time.process_time(), time.perf_counter()
    result = runner.run_partition(task, rows, 1, 0)
    wall = time.perf_counter() - t0
    assert sum(r for _, _, r in result.parts) == len(rows), result.parts
    queue.put((len(rows) / wall, (time.process_time() - c0) / len(rows) * 1000))
    shutil.rmtree(out_dir, ignore_errors=True)


def core(processes: int, io_threads: int, files: list[str], per_process: int) -> tuple[float, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_core_worker, args=(io_threads, files[i::processes][:per_process], queue))
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(r[0] for r in results), sum(r[1] for r in results) / len(results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=3000, help="images per process")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10, help="model-alone measurement time")
    args = ap.parse_args()
    processes = 2
    files = [str(f) for f in sorted(fb.replicate(args.images * processes).rglob("*.jpg"))]
    rows = []
    for _ in range(args.rounds):
        model = fb.model_only(processes, 1, 16, args.seconds)
        for io_threads in (4, 1):
            rate, cpu_ms = core(processes, io_threads, files, args.images)
            rows.append(
                {
                    "model_alone_images_per_s": round(model, 1),
                    "io_threads": io_threads,
                    "core_images_per_s": round(rate, 1),
                    "ratio": round(rate / model, 3),
                    "core_cpu_ms_per_image": round(cpu_ms, 2),
                    "model_cpu_ms_per_image": round(processes / model * 1000, 2),
                }
            )
            print(rows[-1], flush=True)
    fb.WORK.mkdir(parents=True, exist_ok=True)
    (fb.WORK / "core_bench.json").write_text(json.dumps(rows, indent=1))
    print(
        "\n| round | model alone img/s | `--io-threads` | core img/s | **core / model** | CPU ms/img core vs model |\n"
        "| --- | --- | --- | --- | --- | --- |"
    )
    for i, r in enumerate(rows):
        print(
            f"| {i // 2 + 1} | {r['model_alone_images_per_s']} | {r['io_threads']} | {r['core_images_per_s']} | "
            f"**{r['ratio']:.2f}** | {r['core_cpu_ms_per_image']} vs {r['model_cpu_ms_per_image']} |"
        )


if __name__ == "__main__":
    main()
