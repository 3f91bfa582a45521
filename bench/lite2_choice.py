"""Choosing the backbone's quantization, pooling and predict views on GroceryStore val/ (never
test), with the product's own classifier: `train`'s driver solver (standardised inputs, Spark ML's
multinomial logistic regression, every training view a row) and `PortableModel.scores` (each
photo's views' probabilities averaged), for the 81 fine classes of the dataset's protocol; coarse
accuracy is the predicted fine class's coarse class.

    flock /tmp/fruitlens-test.lock .venv/bin/python bench/lite2_choice.py \
        --mnv2 /tmp/lite2/mnv2_grocery/embeddings --out /tmp/lite2/choice.json

Sources: EfficientNet-Lite2 int8 and fp32 (bench/lite2_embeddings.py), each pooled 1280 (the
first 1280 outputs) and all 2136 (+ the 7 stages' means); today's MobileNetV2 multi-scale through
`fruitlens featurize --views 12`. `--train-views 1` fits on the whole photos alone (no views as
augmentation).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from grocery_features import GROCERY, Features, lite2, product, view_index

from fruitlens.config import DEFAULT_VARIANCE
from fruitlens.engine.solvers import Candidate, DriverSolver
from fruitlens.engine.stages import normalized, portable

VIEW_SETS = (1, 2, 4, 6, 12)


def coarse_of_fine() -> np.ndarray:
    out = {}
    with open(os.path.join(GROCERY, "classes.csv")) as f:
        next(f)
        for line in f:
            cells = line.strip().split(",")
            out[int(cells[1])] = int(cells[3])
    return np.array([out[i] for i in range(len(out))])


def evaluate(feats: Features, regs: tuple[float, ...], train_views: int, max_iter: int) -> dict:
    tr, va = feats.take("train"), feats.take("val")
    d = tr.x.shape[2]
    cols = view_index(train_views)
    x = tr.x[:, cols].reshape(-1, d)
    y = np.repeat(tr.y, len(cols))
    n_classes = int(max(tr.y.max(), va.y.max())) + 1
    coarse = coarse_of_fine()
    classes = [str(i) for i in range(n_classes)]
    t0 = time.perf_counter()
    solver = DriverSolver(x, y, n_classes, DEFAULT_VARIANCE, max_iter)
    front_s = time.perf_counter() - t0
    out = {"dim": d, "train_rows": len(x), "front_s": round(front_s, 1), "by_reg": {}}
    for reg in regs:
        fit = solver.fit(Candidate("lr_full", reg))
        refs = normalized(fit.front.inputs(tr.x[:: max(1, len(tr.x) // 200), 0], False)).astype(np.float32)
        model = portable(fit, classes, [str(c) for c in coarse[:n_classes]], refs, {})
        row = {"fit_s": round(fit.seconds, 1), "iterations": fit.iterations, "views": {}}
        for v in VIEW_SETS:
            idx = view_index(v)
            probs, _, _ = model.scores(va.x[:, idx].reshape(-1, d), len(idx))
            pred = probs.argmax(axis=1)
            row["views"][v] = {
                "fine": round(float((pred == va.y).mean()), 4),
                "coarse": round(float((coarse[pred] == va.coarse).mean()), 4),
            }
        out["by_reg"][f"{reg:g}"] = row
        print(
            f"  reg {reg:g}: {fit.seconds:.0f}s, "
            + ", ".join(f"{v}v {m['fine']:.1%}/{m['coarse']:.1%}" for v, m in row["views"].items()),
            flush=True,
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lite2", default="/tmp/lite2")
    ap.add_argument("--mnv2", default="/tmp/lite2/mnv2_grocery/embeddings")
    ap.add_argument("--sources", nargs="+", default=["mnv2", "int8:1280", "int8:2136", "fp32:1280", "fp32:2136"])
    ap.add_argument("--regs", default="1e-4")
    ap.add_argument("--train-views", type=int, default=12)
    ap.add_argument("--max-iter", type=int, default=200)
    ap.add_argument("--out", default="/tmp/lite2/choice.json")
    args = ap.parse_args()
    regs = tuple(float(r) for r in args.regs.split(","))
    results = {}
    for source in args.sources:
        print(f"[choice] {source} (train views {args.train_views})", flush=True)
        if source == "mnv2":
            feats = product(args.mnv2)
        else:
            quant, dim, *suffix = source.split(":")  # QUANT:DIM[:SUFFIX of lite2_embeddings.py --suffix]
            name = f"lite2_{quant}_grocery_v12{''.join(suffix)}.npz"
            feats = lite2(os.path.join(args.lite2, name), slice(0, int(dim)))
        results[source] = evaluate(feats, regs, args.train_views, args.max_iter)
    tmp = args.out + f".tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"train_views": args.train_views, "results": results}, f, indent=1)
    os.replace(tmp, args.out)
    print(f"[choice] -> {args.out}")


if __name__ == "__main__":
    main()
