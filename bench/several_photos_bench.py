"""Several photos of one question: how should their answers combine? Measured on held-out photos.

    .venv/bin/python bench/several_photos_bench.py EMBEDDINGS                    # train's fit-split model
    .venv/bin/python bench/several_photos_bench.py EMBEDDINGS --model MODEL --split test

EMBEDDINGS: a `featurize` output (GroceryStore with `--views 12`). Without --model: the model
`fruitlens train EMBEDDINGS --catalogue builtin --target-precision 0.95` fits on the train photos
and calibrates on the validation photos (train's own stages, before its refit on train + val:
the shipped model has fitted val/), measured on those validation photos. With --model: a model
folder that never fitted the photos of split `--split`. Each photo is scored once with the
product's scoring (`PortableModel.scores`, the model's views);
then every pair and triple of different photos of one product (the same fine label: GroceryStore's
photos of one product vary from close-ups to wide shelf shots) is answered by each rule of
`model.combine_photos` and the model's own rules (`PortableModel.decide`), against each photo alone:

- answered: species or family answered (not "not sure"); right: of those answers, the right ones;
  right answers: answered and right, over every question; top-1: the best species right;
- hurt: questions where one of the photos alone is answered rightly and the combination is not.

Also: pairs of two carton photos (answered should stay 0), and pairs of two photos of different
species (a mixed-up question: answered at species level should be rare). Writes
bench/_work/several_photos.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fruitlens.catalogue import NOT_PRODUCE, Catalogue
from fruitlens.embedding.views import Views
from fruitlens.engine.calibrate import calibrate
from fruitlens.engine.data import Scores, scored
from fruitlens.engine.model import PortableModel, combine_photos
from fruitlens.storage.dataset import Dataset
from fruitlens.storage.location import Location

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "_work"
# (name, rule, temperature: a number or "n" = the number of photos,
#  every photo votes even when unlike the training images)
RULES = [
    ("mean of probabilities, every photo votes (before)", "mean", 1.0, True),
    ("mean of probabilities", "mean", 1.0, False),
    ("most confident photo", "confident", 1.0, False),
    ("product of experts, T = 1 (sum of log-probabilities)", "product", 1.0, False),
    ("product of experts, T = 1, every photo votes", "product", 1.0, True),
    ("product of experts, T = 1.5", "product", 1.5, False),
    ("product when the photos' best species agree, else the one sure photo or the mean", "agreed", 1.0, False),
    ("product of experts, T = n (geometric mean = mean of logits)", "product", "n", False),
]


def load_photos(model: PortableModel, where: str, split: str):
    """(paths, fine labels, species index (-1: not a species: a carton), probabilities, novelty)."""
    dataset = Dataset.at(embeddings_of(where))
    names = list(Views.of_params(dataset.params or {}).names)
    tables = [t for _, t in dataset.tables(["path", "label", "split", "embedding", "views"])]
    table = pa.concat_tables(tables, promote_options="default")
    table = table.filter(pc.equal(table.column("split"), split))
    order = np.argsort(table.column("path").to_pylist())
    table = table.take(pa.array(order))
    paths, labels = table.column("path").to_pylist(), table.column("label").to_pylist()
    emb = table.column("embedding").combine_chunks()
    x = np.asarray(pc.list_flatten(emb).to_numpy(zero_copy_only=False), np.float32).reshape(len(paths), -1)
    views = [np.asarray(v, np.float32) if v else None for v in table.column("views").to_pylist()]
    probs, nov = scored(model, x, views, [names] * len(x), model.views)
    catalogue = Catalogue.load("builtin")
    species = [catalogue.species_of(label) for label in labels]
    y = np.array([model.classes.index(s) if s in model.classes and s != NOT_PRODUCE else -1 for s in species])
    return paths, labels, y, probs, nov


def embeddings_of(folder: str) -> Location:
    """A featurize output's embeddings dataset (or the dataset itself)."""
    inner = os.path.join(folder, "embeddings")
    return Location.of(inner if os.path.isdir(inner) else folder)


def fit_split_model(embeddings: str, candidate: str, target: float) -> PortableModel:
    """The model train fits on the fit split and calibrates on validation (its stages), with the views it chose."""
    from fruitlens.config import TrainConfig
    from fruitlens.engine.stages import choose, fit_candidates, prepare
    from fruitlens.engine.train import _all_labels, collection_of

    cfg = TrainConfig(
        input=(embeddings,), output="unused", catalogue="builtin", candidates=(candidate,), target_precision=target
    )
    collections = [collection_of(embeddings_of(embeddings))]
    catalogue = Catalogue.load(cfg.catalogue, _all_labels(collections))
    prepared = prepare(lambda: None, cfg, collections, catalogue)
    choice = choose(fit_candidates(lambda: None, cfg, prepared), None)
    thresholds = calibrate(choice.model, choice.validation, target)
    meta = {"embedding_params": {k: v for k, v in (collections[0].params or {}).items() if k not in ("views", "crop")}}
    return thresholds.applied_to(replace(choice.model, views=choice.views, meta=meta))


def outcome(model: PortableModel, probs: np.ndarray, nov: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Per question: answered, answered rightly (at its level), top-1 right."""
    level, fam, _ = model.decide(probs, nov)
    best = probs.argmax(axis=1)
    right = np.where(level == 2, best == y, fam == model.family_index[np.clip(y, 0, None)])
    return {"answered": level > 0, "right": (level > 0) & right, "species": level == 2, "top1": best == y}


def summary(o: dict[str, np.ndarray], alone_right: np.ndarray | None = None) -> dict:
    n = len(o["answered"])
    answered = int(o["answered"].sum())
    out = {
        "n": n,
        "answered": round(answered / n, 4),
        "species_answered": round(float(o["species"].mean()), 4),
        "right_of_answers": round(int(o["right"].sum()) / max(1, answered), 4),
        "right_answers": round(float(o["right"].mean()), 4),
        "top1": round(float(o["top1"].mean()), 4),
    }
    if alone_right is not None:
        out["hurt"] = int((alone_right & ~o["right"]).sum())
    return out


def questions(groups: dict, size: int) -> np.ndarray:
    return np.array([q for members in groups.values() for q in itertools.combinations(members, size)], np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("embeddings")
    ap.add_argument("--model", help="a model folder (default: train's fit-split model on EMBEDDINGS)")
    ap.add_argument("--split", default="validation", help="the split of EMBEDDINGS holding the held-out photos")
    ap.add_argument("--candidate", default="lr_full:1e-4", help="without --model: the candidate fitted")
    ap.add_argument("--target-precision", type=float, default=0.95, help="without --model: train's option")
    ap.add_argument(
        "--calibrate",
        action="store_true",
        help="with --model: its thresholds chosen again on the measured photos alone (train's calibrate, "
        "as train chooses them on val/), for a model whose own were chosen on a validation carved from train",
    )
    ap.add_argument("--mixed", type=int, default=20000, help="pairs of different species drawn (seed 0)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.model:
        model = PortableModel.load_folder(args.model)
    else:
        model = fit_split_model(args.embeddings, args.candidate, args.target_precision)
        args.split = "validation"
    paths, labels, y, probs, nov = load_photos(model, args.embeddings, args.split)
    if args.model and args.calibrate:
        target = float(model.meta.get("target_precision") or args.target_precision)
        model = calibrate(model, Scores(y, np.zeros(len(y), np.int64), probs, nov), target).applied_to(model)
    print(
        f"{len(paths)} photos ({(y >= 0).sum()} of a species), model views {model.views}, "
        f"thresholds species {model.threshold:.4f} family {model.family_threshold:.4f} "
        f"novelty {model.novelty_threshold:.4f}"
    )
    alone = outcome(model, probs, nov, y)
    produce = {}
    cartons = {}
    for i, label in enumerate(labels):
        (produce if y[i] >= 0 else cartons).setdefault(label, []).append(i)
    result: dict = {
        "photos": len(paths),
        "single": summary({k: v[y >= 0] for k, v in alone.items()}),
        "model": args.model,
        "views": model.views,
    }
    sets = {"pairs": questions(produce, 2), "triples": questions(produce, 3)}
    # the case: one photo answered rightly and very sure alone, the other not answered rightly
    pairs = sets["pairs"]
    sure = alone["right"] & alone["species"] & (probs.max(axis=1) >= 0.999)
    both = np.concatenate([pairs, pairs[:, ::-1]])
    sets["sure + unsure pairs"] = both[sure[both[:, 0]] & ~alone["right"][both[:, 1]]]
    carton_pairs = questions(cartons, 2)
    rng = np.random.default_rng(0)
    produce_idx = np.flatnonzero(y >= 0)
    draw = rng.choice(produce_idx, size=(args.mixed * 2, 2))
    mixed = draw[y[draw[:, 0]] != y[draw[:, 1]]][: args.mixed]
    rows = []
    for name, rule, temperature, all_vote in RULES:
        entry = {"rule": rule, "temperature": temperature, "every_photo_votes": all_vote}
        for set_name, q in sets.items():
            t = q.shape[1] if temperature == "n" else temperature
            p, n = combine_photos(
                probs[q], nov[q], np.inf if all_vote else model.novelty_threshold, rule, t, model.threshold
            )
            o = outcome(model, p, n, y[q[:, 0]])
            entry[set_name] = summary(o, alone["right"][q].any(axis=1))
            entry[set_name]["first_alone"] = summary({k: v[q[:, 0]] for k, v in alone.items()})
            better = np.where(alone["right"][q].any(axis=1), 2, np.where((~alone["answered"][q]).any(axis=1), 1, 0))
            entry[set_name]["better_alone"] = {
                "answered": round(float((better != 1).mean()), 4),
                "right_of_answers": round(float((better == 2).sum() / max(1, (better != 1).sum())), 4),
                "right_answers": round(float((better == 2).mean()), 4),
                "top1": round(float(alone["top1"][q].any(axis=1).mean()), 4),
            }
        t = 2 if temperature == "n" else temperature
        thr = np.inf if all_vote else model.novelty_threshold
        p, n = combine_photos(probs[carton_pairs], nov[carton_pairs], thr, rule, t, model.threshold)
        entry["carton pairs answered"] = round(float(outcome(model, p, n, y[carton_pairs[:, 0]])["answered"].mean()), 4)
        entry["carton pairs"] = len(carton_pairs)
        p, n = combine_photos(probs[mixed], nov[mixed], thr, rule, t, model.threshold)
        o = outcome(model, p, n, y[mixed[:, 0]])
        entry["mixed species pairs"] = len(mixed)
        entry["mixed answered species"] = round(float(o["species"].mean()), 4)
        entry["mixed answered"] = round(float(o["answered"].mean()), 4)
        both_sure = (alone["right"] & alone["species"])[mixed].all(axis=1)  # each photo named rightly alone
        entry["mixed, both sure"] = int(both_sure.sum())
        entry["mixed, both sure: answered a species"] = round(float(o["species"][both_sure].mean()), 4)
        result[name] = entry
        rows.append((name, entry))
    result["seconds"] = round(time.perf_counter() - t0, 1)
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "several_photos.json").write_text(json.dumps(result, indent=2))
    single = result["single"]
    print(
        f"\none photo alone ({single['n']}): answered {single['answered']:.1%}, "
        f"right {single['right_of_answers']:.1%}, "
        f"right answers {single['right_answers']:.1%}, top-1 {single['top1']:.1%}"
    )
    for set_name in sets:
        first = rows[0][1][set_name]
        fa, ba = first["first_alone"], first["better_alone"]
        print(f"\n{set_name} (n = {first['n']})\n")
        print("| rule | answered | right of answers | right answers | top-1 | hurt |")
        print("| --- | --- | --- | --- | --- | --- |")
        print(
            f"| first photo alone | {fa['answered']:.1%} | {fa['right_of_answers']:.1%} "
            f"| {fa['right_answers']:.1%} | {fa['top1']:.1%} | |"
        )
        print(
            f"| the better photo alone (per question, after the fact) | {ba['answered']:.1%} "
            f"| {ba['right_of_answers']:.1%} "
            f"| {ba['right_answers']:.1%} | {ba['top1']:.1%} | |"
        )
        for name, entry in rows:
            s = entry[set_name]
            print(
                f"| {name} | {s['answered']:.1%} | {s['right_of_answers']:.1%} | {s['right_answers']:.1%} "
                f"| {s['top1']:.1%} | {s['hurt']} |"
            )
    print(f"\nother questions (carton pairs n = {len(carton_pairs)}, mixed-species pairs n = {len(mixed)})\n")
    print("| rule | carton pairs answered | mixed species: answered a species | mixed: answered | both sure |")
    print("| --- | --- | --- | --- | --- |")
    for name, entry in rows:
        print(
            f"| {name} | {entry['carton pairs answered']:.1%} | {entry['mixed answered species']:.1%} "
            f"| {entry['mixed answered']:.1%} | {entry['mixed, both sure: answered a species']:.1%} "
            f"(n = {entry['mixed, both sure']}) |"
        )
    print(f"\n{result['seconds']} s")


if __name__ == "__main__":
    main()
