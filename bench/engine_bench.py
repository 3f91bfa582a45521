"""The identification engine, measured in one run on the ../shared sample:

    .venv/bin/python bench/engine_bench.py

1. `fruitlens featurize` of the sample (13,090 images), then `fruitlens train` comparing every model:
   train time, validation and test accuracy, the chosen model, its "not sure" figures.
2. predict latency for one photo (read + decode + embed + classify, as `predict` and the service
   do), p50/p99 over 300 photos one at a time, against the model alone on one already-decoded image
   in the same process (same threads).
3. classify images/s against featurize images/s on the Test split (3,570 images), both `--full`,
   one after the other.
4. photos that are not fruit (scikit-image's sample photos + synthetic): how many are "not sure".
Writes bench/_work/engine_bench.json and prints Markdown tables.
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))
from featurize_bench import MODELS, SAMPLE, WORK  # noqa: E402

FRUITLENS = str(REPO / ".venv" / "bin" / "fruitlens")
os.environ.setdefault("FRUITLENS_MODEL_DIR", str(MODELS))  # this process loads the backbone too
ENV = dict(os.environ)


def sh(*args) -> float:
    t0 = time.perf_counter()
    res = subprocess.run([FRUITLENS, *args], env=ENV, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"fruitlens {' '.join(args)} failed:\n{res.stderr}")
    return time.perf_counter() - t0


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "mean_ms": round(float(ms.mean()), 2),
    }


def latency(model: Path, threads: int) -> dict:
    from fruitlens.embedding.decode import decode_image
    from fruitlens.engine.predict import Identifier

    identifier = Identifier.load(str(model), threads=threads)
    photos = sorted((SAMPLE / "Test").rglob("*.jpg"))[::11][:300]
    for p in photos[:10]:
        identifier.identify(p.read_bytes())  # warm up
    pipeline = []
    for p in photos:
        t0 = time.perf_counter()
        identifier.identify(p.read_bytes())
        pipeline.append(time.perf_counter() - t0)
    pixels = [decode_image(p.read_bytes(), identifier.embedder.spec.input_size, 10**8)[None] for p in photos]
    alone = []
    with identifier.embedder.interpreter() as backbone:
        for x in pixels:
            t0 = time.perf_counter()
            backbone.embed(x)
            alone.append(time.perf_counter() - t0)
    a, b = percentiles(pipeline), percentiles(alone)
    return {
        "threads": threads,
        "predict_one_photo": a,
        "model_alone_one_image": b,
        "ratio_p50": round(a["p50_ms"] / b["p50_ms"], 3),
    }


def non_fruit(model: Path) -> dict:
    from photos import non_fruit_photos

    from fruitlens.engine.predict import Identifier

    identifier = Identifier.load(str(model), threads=1)
    out = {}
    for name, data in non_fruit_photos().items():
        p = identifier.identify(data)
        out[name] = {
            "not_sure": p.not_sure,
            "why": p.why,
            "best_guess": p.predicted,
            "probability": round(p.top[0][1], 3),
            "novelty": round(p.novelty, 3),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--reuse-model", action="store_true", help="measure the model the last run trained")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    emb, model = WORK / "engine-emb", WORK / "engine-model"
    results: dict = {}
    # Incremental: reuses the embeddings of an earlier run only if they were made the same way
    # (backbone, model file, size, resize), so a change to how images are embedded is picked up.
    results["featurize_sample_s"] = round(sh("featurize", str(SAMPLE), str(emb), "--quiet"), 1)
    t = (
        float("nan")
        if args.reuse_model and (model / "report.json").exists()
        else sh("train", str(emb), str(model), "--quiet")
    )
    report = json.loads((model / "report.json").read_text())
    results["train"] = {
        "wall_s": round(t, 1),
        "candidates": report["candidates"],
        "chosen": report["chosen"]["candidate"],
        "params": report["chosen"]["params"],
        "pca_k": report["pca_k"],
        "test": {k: report["chosen"]["test"][k] for k in ("accuracy", "top5_accuracy", "macro_f1")},
        "not_sure": report["chosen"]["not_sure"],
        "most_confused": report["chosen"]["test"]["most_confused"][:5],
    }
    print(json.dumps(results["train"], indent=1), flush=True)

    results["latency"] = latency(model, args.threads)
    print(json.dumps(results["latency"]), flush=True)

    feat_out, cls_out = WORK / "engine-featurize", WORK / "engine-classify"
    for d in (feat_out, cls_out):
        shutil.rmtree(d, ignore_errors=True)
    sh("featurize", str(SAMPLE / "Test"), str(feat_out), "--quiet", "--full")
    sh("classify", "--model", str(model), str(SAMPLE / "Test"), str(cls_out), "--quiet", "--full")
    f = json.loads((feat_out / "report.json").read_text())
    c = json.loads((cls_out / "report.json").read_text())
    n = f["featurize"]["inputs"]["images_found"]
    results["classify"] = {
        "images": n,
        "featurize_wall_s": f["wall_s"],
        "classify_wall_s": c["wall_s"],
        "featurize_images_per_s": round(n / f["wall_s"], 1),
        "classify_images_per_s": round(n / c["wall_s"], 1),
        "ratio": round(f["wall_s"] / c["wall_s"], 3),
        "classify_stage_s": c["classify"]["wall_s"],
        "accuracy": c["classify"]["accuracy"],
        "coverage": c["classify"]["coverage"],
        "answered_accuracy": c["classify"]["answered_accuracy"],
    }
    print(json.dumps(results["classify"]), flush=True)

    results["non_fruit"] = non_fruit(model)
    flagged = sum(v["not_sure"] for v in results["non_fruit"].values())
    print(f"non-fruit photos answered 'not sure': {flagged} of {len(results['non_fruit'])}")
    (WORK / "engine_bench.json").write_text(json.dumps(results, indent=2, default=float))

    print("\n| candidate | fit s | iterations | validation acc |")
    print("| --- | --- | --- | --- |")
    for r in results["train"]["candidates"]:
        print(f"| {r['candidate']} | {r['seconds']} | {r['iterations']} | {r['validation_accuracy']:.2%} |")
    test = results["train"]["test"]
    print(
        f"chosen {results['train']['chosen']}: test {test['accuracy']:.2%}, top-5 {test['top5_accuracy']:.2%}, "
        f"macro-F1 {test['macro_f1']:.4f}"
    )
    lat = results["latency"]
    photo, alone = lat["predict_one_photo"], lat["model_alone_one_image"]
    print(
        f"\npredict one photo: p50 {photo['p50_ms']} ms, p99 {photo['p99_ms']} ms;"
        f" model alone: p50 {alone['p50_ms']} ms, p99 {alone['p99_ms']} ms"
    )
    print("\n| photo | not sure | why | best guess | p | novelty |\n| --- | --- | --- | --- | --- | --- |")
    for name, v in results["non_fruit"].items():
        print(f"| {name} | {v['not_sure']} | {v['why']} | {v['best_guess']} | {v['probability']} | {v['novelty']} |")


if __name__ == "__main__":
    main()
