"""Scaling on a real Spark standalone cluster: `fruitlens featurize` with one worker vs two
workers of one core each, on this machine, in one run, against the model alone on one core
(1 process x 1 thread, measured in the same run): the per-core figure `fruitlens emr estimate`
prices clusters with.

    .venv/bin/python bench/cluster_bench.py --images 4000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from featurize_bench import MODELS, WORK, model_only, replicate  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))
from local_cluster import StandaloneCluster  # noqa: E402


def featurize_on(workers: int, images: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp, StandaloneCluster(Path(tmp), workers=workers, cores=1) as cluster:
        out = Path(tmp) / "out"
        env = {**os.environ, "FRUITLENS_MODEL_DIR": str(MODELS)}
        t0 = time.perf_counter()
        subprocess.run(
            [str(REPO / ".venv/bin/fruitlens"), "featurize", str(images), str(out), "--quiet", "--master", cluster.url],
            check=True,
            env=env,
        )
        wall = time.perf_counter() - t0
        stages = json.loads((out / "report.json").read_text())["featurize"]["stages"]
        return {
            "workers": workers,
            "process_wall_s": round(wall, 1),
            "embed_images_per_s": stages["embed"]["images_per_s"],
            "total_images_per_s": stages["total"]["images_per_s"],
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of the model-only measurement")
    args = ap.parse_args()
    images = replicate(args.images)
    alone = model_only(1, 1, 16, args.seconds)
    one = featurize_on(1, images)
    two = featurize_on(2, images)
    result = {
        "images": args.images,
        "model_alone_one_core_images_per_s": round(alone, 1),
        "one_worker": one,
        "two_workers": two,
        "one_worker_embed_vs_model_alone_one_core": round(one["embed_images_per_s"] / alone, 2),
        "speedup_embed": round(two["embed_images_per_s"] / one["embed_images_per_s"], 2),
        "speedup_total": round(two["total_images_per_s"] / one["total_images_per_s"], 2),
    }
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "cluster_bench.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
