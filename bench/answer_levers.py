"""Answer more, stay right: each lever's gain and cost on GroceryStore val/ (never test), with the
product's classifier, catalogue and rules (the builtin catalogue's species and families, cartons
"(not produce)"; `PortableModel.decide`; the thresholds of engine/calibrate.py).

Honest protocol: the thresholds are chosen without val/ (on held-out photos of train/), the model
then refit on all of train/ and val/ scored once, as `train` refits on train + val and `classify`
meets the test split. Figures are on val/'s fruit and vegetable photos (answered, answers right:
a species answer right when the species is, a family answer when the family is; species and family
accuracy of the best species) and its cartons ("not sure" share).

- `split`: the product's rule today: one held-out split (the last 20% of each class's train
  photos in path order), the model fit on the rest;
- `folds`: 5 folds of each class's train photos in path order; every train photo scored by the
  model fit without its fold (out-of-fold); the thresholds chosen on all of them;
- `in-sample`: the thresholds chosen on val/ itself (what a report of val/ figures would say);
- `val halves`: the thresholds chosen on a random half of val/ (each species' photos halved), read on
  the other half, both ways, 10 times (the mean): what thresholds chosen on val/ give on photos
  they were not chosen on (the honest estimate of the product's rule, which calibrates on val/);
- `temperature`: the classifier's logits divided by T, T minimising the held-out photos' log-loss;
- `separate` (before: species answers `target` right, then family answers `target` right) or
  `joint fixed` (the same species threshold; the family threshold the smallest at which species
  and family answers together are `target` right: engine/calibrate.py `joint_thresholds`),
  `joint floor` (the species threshold may rise, trading species answers for family answers where
  that answers more), `joint free` (any species threshold);
- `no family`: species answers only.

    flock /tmp/fruitlens-test.lock .venv/bin/python bench/answer_levers.py --source int8:1280 --views 12
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from grocery_features import Features, lite2, product, view_index

from fruitlens.catalogue import Catalogue
from fruitlens.config import DEFAULT_VARIANCE
from fruitlens.engine.calibrate import Thresholds, joint_thresholds, novelty_threshold_of, thresholds
from fruitlens.engine.data import Scores
from fruitlens.engine.evaluate import answers, of_a_species
from fruitlens.engine.model import PortableModel
from fruitlens.engine.solvers import Candidate, DriverSolver
from fruitlens.engine.stages import normalized, portable


class Species:
    """GroceryStore's labels through the builtin catalogue: class index and family of each photo."""

    def __init__(self, labels: np.ndarray):
        cat = Catalogue.load("builtin")
        self.species = np.array([cat.species_of(label) for label in labels])
        assert all(s is not None for s in self.species), "a GroceryStore label the builtin catalogue lacks"
        self.classes = sorted(set(self.species))
        self.families = [cat.family_of(s) for s in self.classes]
        self.index = {s: i for i, s in enumerate(self.classes)}

    def y(self, feats: Features) -> np.ndarray:
        cat = Catalogue.load("builtin")
        return np.array([self.index[cat.species_of(label)] for label in feats.label])


def blocks(feats: Features, k: int) -> np.ndarray:
    """Each train photo's fold: each class's photos in path order cut into `k` contiguous blocks."""
    fold = np.zeros(len(feats.y), np.int64)
    for c in np.unique(feats.y):
        members = np.flatnonzero(feats.y == c)  # train.txt lists each class's photos in path order
        fold[members] = np.minimum((np.arange(len(members)) * k) // len(members), k - 1)
    return fold


MAX_ITER = [200]
RULES = ("no family", "separate", "joint fixed", "joint floor", "joint free")


def fit(feats: Features, y: np.ndarray, sp: Species, reg: float, train_views: int) -> PortableModel:
    d = feats.x.shape[2]
    cols = view_index(train_views)
    solver = DriverSolver(
        feats.x[:, cols].reshape(-1, d), np.repeat(y, len(cols)), len(sp.classes), DEFAULT_VARIANCE, MAX_ITER[0]
    )
    f = solver.fit(Candidate("lr_full", reg))
    refs = []
    for c in np.unique(y):  # up to 50 whole photos per class, as train's references
        members = np.flatnonzero(y == c)
        refs += list(members[np.linspace(0, len(members) - 1, min(50, len(members))).round().astype(int)])
    r = normalized(f.front.inputs(feats.x[sorted(set(refs)), 0], False)).astype(np.float32)
    return portable(f, sp.classes, sp.families, r, {})


def logits_of(model: PortableModel, feats: Features, views: int) -> tuple[np.ndarray, np.ndarray]:
    """(photos, views, classes) logits of the views predict averages, and each photo's novelty."""
    idx = view_index(views)
    d = feats.x.shape[2]
    _, nov, _ = model.scores(feats.x[:, idx].reshape(-1, d), len(idx))
    inputs = model.inputs(feats.x[:, idx].reshape(-1, d))
    w, b = model.layers[-1]
    return (inputs @ w.T + b).reshape(len(feats.y), len(idx), -1), nov


def probs_at(logits: np.ndarray, t: float) -> np.ndarray:
    """`PortableModel.scores` with the last layer divided by `t`: each view's softmax, averaged."""
    z = logits / t
    z = z - z.max(axis=2, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=2, keepdims=True)).mean(axis=1)


def temperature(logits: np.ndarray, y: np.ndarray) -> float:
    grid = np.geomspace(0.25, 4.0, 49)
    nll = [-np.log(np.maximum(probs_at(logits, t)[np.arange(len(y)), y], 1e-12)).mean() for t in grid]
    return float(grid[int(np.argmin(nll))])


def report(model: PortableModel, th: Thresholds, scores: Scores) -> dict:
    m = th.applied_to(model)
    keep = of_a_species(scores, m.not_produce)
    a = answers(m, scores.y[keep], scores.probs[keep], scores.novelty[keep])
    best = scores.probs[keep].argmax(axis=1)
    cartons = scores.y == m.not_produce
    level, _, _ = m.decide(scores.probs[cartons], scores.novelty[cartons])
    return {
        "species": round(float((best == scores.y[keep]).mean()), 4),
        "family": round(float((m.family_index[best] == m.family_index[scores.y[keep]]).mean()), 4),
        "answered": a["answered"],
        "right": a["answers_right"],
        "species_answers": a["answered_species"],
        "family_answers": a["answered_family_only"],
        "cartons_not_sure": round(float((level == 0).mean()), 4),
        "thresholds": [round(th.species, 4), round(th.family, 4), round(th.novelty, 4)],
    }


def choose(model, scores, target, rule) -> Thresholds:
    nov = novelty_threshold_of(model, scores, target)
    if rule == "no family":
        return Thresholds(thresholds(model, scores, target)[0], float("inf"), nov)
    if rule == "separate":
        return Thresholds(*thresholds(model, scores, target), nov)
    return Thresholds(*joint_thresholds(model, scores, target, species=rule.split()[1]), nov)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default="int8:1280", help="mnv2, or QUANT:DIM of bench/lite2_embeddings.py")
    ap.add_argument("--lite2", default="/tmp/lite2")
    ap.add_argument("--mnv2", default="/tmp/lite2/mnv2_grocery/embeddings")
    ap.add_argument("--views", type=int, default=12, help="views predict averages")
    ap.add_argument("--train-views", type=int, default=12)
    ap.add_argument("--reg", type=float, default=1e-4)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--folds", type=int, default=5, help="5: the folds too; 1: the split alone")
    ap.add_argument("--max-iter", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=10, help="random halvings of val/ (`halves`)")
    ap.add_argument("--halves-targets", default="", help="more targets for `halves` (separate and joint fixed)")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    MAX_ITER[0] = args.max_iter
    t0 = time.perf_counter()
    if args.source == "mnv2":
        feats = product(args.mnv2)
    else:
        quant, dim = args.source.split(":")
        feats = lite2(os.path.join(args.lite2, f"lite2_{quant}_grocery_v12.npz"), slice(0, int(dim)))
    tr, va = feats.take("train"), feats.take("val")
    sp = Species(feats.label)
    y_tr, y_va = sp.y(tr), sp.y(va)
    full = fit(tr, y_tr, sp, args.reg, args.train_views)
    val_logits, val_nov = logits_of(full, va, args.views)

    def val_scores(t):
        return Scores(y_va, np.zeros(len(y_va), np.int64), probs_at(val_logits, t), val_nov)

    held = {}  # calibration source -> (model fit without those photos, their logits, novelty, labels)
    fold = blocks(tr, max(args.folds, 5))
    # the product's one split: the last fold (= last 20% in path order) held out
    last = fold == fold.max()
    m = fit(_take(tr, ~last), y_tr[~last], sp, args.reg, args.train_views)
    lg, nv = logits_of(m, _take(tr, last), args.views)
    held["split"] = (m, lg, nv, y_tr[last])
    if args.folds > 1:
        oof_l, oof_n = np.zeros((len(y_tr), len(view_index(args.views)), len(sp.classes))), np.zeros(len(y_tr))
        for k in range(fold.max() + 1):
            out = fold == k
            mk = m if k == fold.max() else fit(_take(tr, ~out), y_tr[~out], sp, args.reg, args.train_views)
            oof_l[out], oof_n[out] = logits_of(mk, _take(tr, out), args.views)
        held["folds"] = (m, oof_l, oof_n, y_tr)
    fit_s = time.perf_counter() - t0
    results = {}
    for source, (m_held, lg, nv, yy) in [*held.items(), ("in-sample", (full, val_logits, val_nov, y_va))]:
        for temp in (False, True):
            t = temperature(lg, yy) if temp else 1.0
            cal = Scores(yy, np.zeros(len(yy), np.int64), probs_at(lg, t), nv)
            for rule in RULES:
                th = choose(m_held, cal, args.target, rule)
                name = f"{source} | T={t:.2f} | {rule}" if temp else f"{source} | T=1 | {rule}"
                results[name] = report(full, th, val_scores(t))
                r = results[name]
                print(
                    f"{name:45s} answered {r['answered']:.1%} right {r['right']:.1%} "
                    f"(species {r['species_answers']:.1%}, family {r['family_answers']:.1%}); "
                    f"species {r['species']:.1%} family {r['family']:.1%}; "
                    f"cartons not sure {r['cartons_not_sure']:.1%}",
                    flush=True,
                )
    targets = [args.target, *(float(t) for t in args.halves_targets.split(",") if t)]
    results.update(halves(full, val_logits, val_nov, y_va, targets, args.repeats))
    print(f"[levers] {args.source}: {time.perf_counter() - t0:.0f}s ({fit_s:.0f}s fitting)")
    if args.out:
        tmp = args.out + f".tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)
        os.replace(tmp, args.out)


def halves(full: PortableModel, logits, nov, y, targets: list[float], repeats: int) -> dict:
    """The thresholds (and temperature) chosen on one half of val/ (each species' photos split at
    random), the figures read on the other half, both ways, `repeats` times: what thresholds chosen
    on val/ give on photos they were not chosen on (the model the same: fit on train/)."""
    out = {}
    combos = [(temp, rule, targets[0]) for temp in (False, True) for rule in RULES[:-1]]
    combos += [(False, rule, target) for target in targets[1:] for rule in ("separate", "joint fixed")]
    for temp, rule, target in combos:
        rng = np.random.default_rng(0)  # the same halvings for every rule: paired comparisons
        runs = []
        for _ in range(repeats):
            half = np.zeros(len(y), bool)
            for c in np.unique(y):
                members = rng.permutation(np.flatnonzero(y == c))
                half[members[: (len(members) + rng.integers(0, 2)) // 2]] = True
            for cal, ev in ((half, ~half), (~half, half)):
                t = temperature(logits[cal], y[cal]) if temp else 1.0

                def scores(rows, t=t):
                    return Scores(y[rows], np.zeros(int(rows.sum()), np.int64), probs_at(logits[rows], t), nov[rows])

                runs.append(report(full, choose(full, scores(cal), target, rule), scores(ev)) | {"t": t})
        name = f"val halves | {'T chosen' if temp else 'T=1'} | {rule}" + (
            f" | target {target:g}" if target != targets[0] else ""
        )
        keys = (
            "answered",
            "right",
            "species_answers",
            "family_answers",
            "species",
            "family",
            "cartons_not_sure",
            "t",
        )
        out[name] = {k: round(float(np.mean([r[k] for r in runs])), 4) for k in keys}
        out[name] |= {f"{k}_sd": round(float(np.std([r[k] for r in runs])), 4) for k in ("answered", "right")}
        r = out[name]
        print(
            f"{name:45s} answered {r['answered']:.1%} (sd {r['answered_sd']:.1%}) right {r['right']:.1%} "
            f"(sd {r['right_sd']:.1%}; species {r['species_answers']:.1%}, family {r['family_answers']:.1%}); "
            f"cartons not sure {r['cartons_not_sure']:.1%}; T {r['t']:.2f}",
            flush=True,
        )
    return out


def _take(feats: Features, keep: np.ndarray) -> Features:
    return Features(feats.x[keep], feats.y[keep], feats.coarse[keep], feats.split[keep], feats.label[keep])


if __name__ == "__main__":
    main()
