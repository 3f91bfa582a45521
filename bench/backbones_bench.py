"""Two backbones, the trade: today's default (MobileNetV2 multiscale) against EfficientNet-Lite2,
measured in ONE run so the ratios hold on any machine.

    flock /tmp/fruitlens-test.lock .venv/bin/python bench/backbones_bench.py

For each backbone (default: mobilenet_v2_multiscale, efficientnet_lite2, efficientnet_lite2_fp32):
1. the model alone: the network without the in-graph resize, on already-decoded images in memory,
   one process x every core's threads, batch 16 (featurize_bench's "model alone");
2. the chain: `fruitlens featurize --backbone NAME` (Spark local mode, the defaults) over a few
   hundred Fruits-360 photos (100x100: the in-graph resize upscales them), its embed stage's and
   its whole process's images/s;
3. serve: a small model trained on those embeddings (`fruitlens train`, driver solver), then
   `fruitlens serve` (those embeddings as its --index) and one client posting one real GroceryStore
   photo (about 348x348) at a time:
   p50 and p95 latency of identify;
4. the backbone file's size.
The pooled-only specs (`..._pooled`) run the same graph and keep fewer values: same speed.
Prints a Markdown table and writes bench/_work/backbones_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))
from featurize_bench import MODELS, SAMPLE, WORK, model_only, run_pipeline  # noqa: E402
from local_cluster import free_port  # noqa: E402

from fruitlens.embedding import backbones  # noqa: E402

REPO = BENCH.parent
GROCERY_VAL = SAMPLE.parent / "grocerystore" / "val"
FRUITLENS = str(REPO / ".venv" / "bin" / "fruitlens")
ENV = {**os.environ, "FRUITLENS_MODEL_DIR": str(MODELS)}


def photos_folder(classes: int, per_class: int) -> Path:
    """Fruits-360 photos in their layout: `classes` classes x `per_class` Training photos + 5 Test."""
    dest = WORK / f"backbones-{classes}x{per_class}"
    if dest.is_dir():
        return dest
    names = sorted(p.name for p in (SAMPLE / "Training").iterdir())[:: max(1, 119 // classes)][:classes]
    for split, count in (("Training", per_class), ("Test", 5)):
        for name in names:
            (dest / split / name).mkdir(parents=True, exist_ok=True)
            for f in sorted((SAMPLE / split / name).iterdir())[:count]:
                shutil.copy(f, dest / split / name / f.name)
    return dest


def train(embeddings: Path, model: Path) -> None:
    cmd = [FRUITLENS, "train", str(embeddings), str(model), "--quiet", "--solver", "driver"]
    cmd += ["--candidates", "lr_full:1e-3", "--max-iter", "50"]
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"train failed:\n{res.stdout}\n{res.stderr}")


def serve_latency(model: Path, index: Path, photos: list[bytes]) -> dict:
    port = free_port()
    cmd = [FRUITLENS, "serve", "--model", str(model), "--index", str(index), "--port", str(port)]
    cmd += ["--rate-limit", "100000000"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"serve did not start: {' '.join(cmd)}")
            try:
                if httpx.get(url + "/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        lat = []
        with httpx.Client(base_url=url, timeout=120) as http:
            for i, data in enumerate(photos[:3] + photos):  # 3 warm-up requests
                t = time.perf_counter()
                r = http.post("/api/v1/identify", files=[("photo", ("p.jpg", data, "image/jpeg"))])
                if i >= 3:
                    lat.append((time.perf_counter() - t) * 1e3)
                assert r.status_code == 200, r.text
    finally:
        proc.terminate()
        proc.wait(30)
    return {
        "requests": len(lat),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p95_ms": round(float(np.percentile(lat, 95)), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--backbones",
        default="mobilenet_v2_multiscale,efficientnet_lite2,efficientnet_lite2_fp32",
        help="comma-separated",
    )
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--per-class", type=int, default=30, help="Training photos per class (+5 Test each)")
    ap.add_argument("--seconds", type=float, default=8.0, help="duration of each model-alone measurement")
    ap.add_argument("--requests", type=int, default=40, help="identify requests to serve, one photo each")
    args = ap.parse_args()
    names = args.backbones.split(",")
    cores = os.cpu_count() or 1
    WORK.mkdir(parents=True, exist_ok=True)
    images = photos_folder(args.classes, args.per_class)
    n_images = sum(1 for _ in images.rglob("*.jpg"))
    shop = sorted(GROCERY_VAL.rglob("*.jpg"))
    shop = [p.read_bytes() for p in shop[:: max(1, len(shop) // args.requests)][: args.requests]]
    rows = {}
    for name in names:  # the models alone first, back to back: the figures least disturbed by drift
        rows[name] = {"model_alone_images_per_s": round(model_only(1, cores, 16, args.seconds, None, name), 1)}
        print(name, rows[name], flush=True)
    for name in names:
        spec = backbones.get_spec(name)
        out = WORK / f"backbones-out-{name}"
        shutil.rmtree(out, ignore_errors=True)
        chain = run_pipeline(images, out, ["--backbone", name])
        stages = chain["report"]["stages"]
        model = WORK / f"backbones-model-{name}"
        shutil.rmtree(model, ignore_errors=True)
        train(out, model)
        rows[name].update(
            {
                "embedding_dim": spec.embedding_dim,
                "input": list(spec.input_size),
                "file": spec.file.filename,
                "file_mb": round((MODELS / spec.file.filename).stat().st_size / 1e6, 1),
                "chain_images": n_images,
                "chain_embed_images_per_s": stages["embed"]["images_per_s"],
                "chain_process_wall_s": chain["process_wall_s"],
                "chain_process_images_per_s": round(n_images / chain["process_wall_s"], 1),
                "serve_one_photo": serve_latency(model, out, shop),
            }
        )
        print(name, json.dumps(rows[name]), flush=True)
        shutil.rmtree(out, ignore_errors=True)
    base = rows[names[0]]
    (WORK / "backbones_bench.json").write_text(json.dumps({"cores": cores, "rows": rows}, indent=2))
    print()
    print(
        "| backbone | values | input | file MB | model alone img/s | chain: embed img/s | chain: whole process s "
        f"({n_images} photos) | serve p50 / p95 ms (one photo) | model alone / chain embed / serve p50 vs {names[0]} |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        s = r["serve_one_photo"]
        ratios = (
            f"{r['model_alone_images_per_s'] / base['model_alone_images_per_s']:.2f}x / "
            f"{r['chain_embed_images_per_s'] / base['chain_embed_images_per_s']:.2f}x / "
            f"{s['p50_ms'] / base['serve_one_photo']['p50_ms']:.2f}x"
        )
        print(
            f"| {name} | {r['embedding_dim']} | {r['input'][0]} | {r['file_mb']} | {r['model_alone_images_per_s']} | "
            f"{r['chain_embed_images_per_s']} | {r['chain_process_wall_s']} | "
            f"{s['p50_ms']} / {s['p95_ms']} | {ratios} |"
        )


if __name__ == "__main__":
    main()
