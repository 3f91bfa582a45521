"""Incremental runs and soak: one full `fruitlens featurize` over N images, then back-to-back
incremental reruns into the same OUTPUT, each after a churn of the collection, in one run.

    .venv/bin/python bench/incremental_bench.py --images 40000 --churn 0.01 --reruns 3

Rerun 1 adds `churn` x N new images only (the "1% new images" case); the later reruns each add,
remove and change (overwrite with another photo) images, `churn` x N in all. For every run: wall
time, images read and embedded, per-stage seconds, peak RSS of driver, JVM and Python workers;
after every run the output is checked exactly: one row per image on disk, no other, rows of changed
files re-embedded, and a sample of rows equal to the model's own embedding of the file.
Prints a Markdown table and writes bench/_work/incremental_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from featurize_bench import MODELS, SAMPLE, WORK, replicate, run_pipeline  # noqa: E402


def churn(images: Path, n: int, step: int, rng: random.Random, mixed: bool) -> dict:
    """Add (and, when mixed, remove and change) about n images under `images`."""
    sources = sorted(SAMPLE.rglob("*.jpg"))
    present = sorted(images.rglob("*.jpg"))
    added = n if not mixed else n // 2
    removed = changed = 0 if not mixed else n // 4
    for i in range(added):
        src = rng.choice(sources)
        rel = src.relative_to(SAMPLE)
        target = images / rel.parent / f"new{step}_{i}_{src.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, target)
    victims = rng.sample(present, removed + changed)
    for p in victims[:removed]:
        p.unlink()
    for p in victims[removed:]:
        p.unlink()  # a new file (inode) under the same name, other content
        shutil.copy(rng.choice(sources), p)
    return {
        "added": added,
        "removed": removed,
        "changed": changed,
        "changed_paths": [str(p) for p in victims[removed:]],
    }


def check(out: Path, images: Path, changed: list[str], rng: random.Random) -> dict:
    """Exactly one row per image on disk; changed files re-embedded; a sample equal to the model."""
    from fruitlens.embedding import backbones
    from fruitlens.embedding.decode import decode_image

    table = ds.dataset(str(out / "embeddings"), format="parquet").to_table(columns=["path", "embedding", "modified_ns"])
    paths = table.column("path").to_pylist()
    on_disk = {str(p) for p in images.rglob("*.jpg")}
    assert len(paths) == len(set(paths)) == len(on_disk) and set(paths) == on_disk, "output is not exact"
    mtimes = dict(zip(paths, table.column("modified_ns").to_pylist()))
    for p in changed:
        assert mtimes[p] == os.stat(p).st_mtime_ns, f"changed file kept its old row: {p}"
    spec = backbones.get_spec("mobilenet_v2")
    model = backbones.load(spec, str(MODELS / spec.file.filename), 1)
    index = {p: i for i, p in enumerate(paths)}
    sample = rng.sample(sorted(on_disk), 32) + changed[:8]
    pixels = np.stack([decode_image(Path(p).read_bytes(), spec.input_size, 10**8) for p in sample])
    expected = model.embed(pixels)
    embeddings = table.column("embedding")
    for p, e in zip(sample, expected):
        np.testing.assert_array_equal(np.asarray(embeddings[index[p]].as_py(), np.float32), e)
    return {"rows": len(paths), "sample_checked": len(sample)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=40_000)
    ap.add_argument("--churn", type=float, default=0.01)
    ap.add_argument("--reruns", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    base = replicate(args.images)
    images = WORK / f"incremental-{args.images}"
    shutil.rmtree(images, ignore_errors=True)
    shutil.copytree(base, images, copy_function=os.link)  # a private copy to churn (hard links)
    out = WORK / f"incremental-out-{args.images}"
    shutil.rmtree(out, ignore_errors=True)

    runs = []
    for step in range(args.reruns + 1):
        change = {"added": args.images, "removed": 0, "changed": 0, "changed_paths": []}
        if step:
            change = churn(images, round(args.images * args.churn), step, rng, mixed=step > 1)
        r = run_pipeline(images, out, [])
        rep = r["report"]
        exact = check(out, images, change["changed_paths"], rng)
        st = rep["stages"]
        row = {
            "run": "full" if step == 0 else f"rerun {step}",
            "churn": {k: v for k, v in change.items() if k != "changed_paths"},
            "found": rep["inputs"]["images_found"],
            "embedded": rep["incremental"]["embedded"],
            "incremental": rep["incremental"],
            "process_wall_s": r["process_wall_s"],
            "stage_wall_s": {k: v["wall_s"] for k, v in st.items()},
            "infer_task_s": st["embed"]["task_seconds"]["infer"],
            "peak_rss_mib": r["peak_rss_mib"],
            "exact": exact,
        }
        runs.append(row)
        print(json.dumps(row), flush=True)

    full = runs[0]
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "incremental_bench.json").write_text(
        json.dumps({"images": args.images, "churn": args.churn, "runs": runs}, indent=2)
    )
    print()
    print(
        "| run | churn (added / removed / changed) | embedded | embed stage s | vs full | infer task s | vs full "
        "| list s | plan s | rewrite s | publish s | process wall s | vs full | peak RSS driver / JVM / workers (MiB) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in runs:
        s, c, rss = row["stage_wall_s"], row["churn"], row["peak_rss_mib"]
        print(
            f"| {row['run']} | {c['added']:,} / {c['removed']:,} / {c['changed']:,} | {row['embedded']:,} | "
            f"{s['embed']:.1f} | {s['embed'] / full['stage_wall_s']['embed']:.1%} | {row['infer_task_s']:.1f} | "
            f"{row['infer_task_s'] / full['infer_task_s']:.1%} | {s['list']:.2f} | {s['plan']:.2f} | "
            f"{s['rewrite']:.2f} | {s['publish']:.2f} | {row['process_wall_s']:.1f} | "
            f"{row['process_wall_s'] / full['process_wall_s']:.1%} | "
            f"{rss.get('driver_python', 0)} / {rss.get('jvm', 0)} / {rss.get('python_workers', 0)} |"
        )


if __name__ == "__main__":
    main()
