"""Similar photos for shop photos: of a GroceryStore val photo's 8 nearest indexed photos, how many
show the same species, and how many come from the same collection (shop photos), at the product
index's dimensions and at a reduced projection.

    .venv/bin/fruitlens featurize ../shared/data/grocerystore out/grocery
    .venv/bin/fruitlens featurize ../shared/data/fruits-360-sample out/f360
    .venv/bin/fruitlens train out/grocery out/f360 out/product --catalogue builtin --target-precision 0.95
    .venv/bin/fruitlens index out/grocery out/f360 --model out/product          # the saved indexes (256 dims)
    .venv/bin/python bench/similar_bench.py --shop out/grocery --other out/f360 --model out/product

The index is what `serve --index out/grocery --index out/f360` searches: every photo of both
collections, the query photo itself left out (GroceryStore val photos are in the index as the demo
builds it); queries are GroceryStore's val photos (never its test split). Neighbours are compared
at the model's species (the catalogue maps GroceryStore's and Fruits-360's folder names to one
species). Three searches: exact at the model's full inputs (1,992 for the product model), exact
after the projection `fruitlens index --dims` saves (the references' top principal axes), and the
saved HNSW graphs themselves (float16, what `serve --ann` answers). Also: the share of same-species
neighbours by cosine band (how the page's words for similarity were chosen) and the brute-force
distance cost at both dimensions (one run: a ratio).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from fruitlens.catalogue import NOT_PRODUCE, Catalogue  # noqa: E402
from fruitlens.engine.model import PortableModel  # noqa: E402
from fruitlens.serve.saved_index import SavedIndex, project, reduction  # noqa: E402
from fruitlens.storage.dataset import Dataset  # noqa: E402
from fruitlens.storage.location import Location  # noqa: E402

K = 8
BANDS = (0.9, 0.8, 0.7, 0.6, 0.5, -1.0)  # cosine bands' lower ends


def load(where: str, model: PortableModel):
    table = Dataset.at(Location.of(where) / "embeddings").table(["path", "label", "split", "embedding"])
    emb = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    return (
        table.column("path").to_pylist(),
        table.column("label").to_pylist(),
        table.column("split").to_pylist(),
        model.inputs(emb),
    )


def top(q: np.ndarray, x: np.ndarray, k: int, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sims = q @ x.T
    sims[np.arange(len(q)), exclude] = -np.inf  # the query photo itself
    idx = np.argpartition(-sims, k, axis=1)[:, :k]
    s = np.take_along_axis(sims, idx, axis=1)
    order = np.argsort(-s, axis=1)
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(s, order, axis=1)


def shares(idx, species, collection, q_species, produce) -> dict:
    same_species = species[idx] == q_species[:, None]
    same_coll = collection[idx] == 0
    out = {}
    for name, rows in (("fruit and vegetables", produce), ("cartons", ~produce), ("all", np.ones_like(produce))):
        if rows.any():
            out[name] = {
                "queries": int(rows.sum()),
                "same_species": round(float(same_species[rows].mean()), 4),
                "same_collection": round(float(same_coll[rows].mean()), 4),
            }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shop", default="out/grocery", help="the shop photos' collection (GroceryStore, with val/)")
    ap.add_argument("--other", action="append", default=None, help="other collections indexed (repeatable)")
    ap.add_argument("--model", default="out/product")
    ap.add_argument("--dims", type=int, default=256)
    args = ap.parse_args()
    others = args.other or ["out/f360"]
    model = PortableModel.load(Location.of(args.model))
    catalogue = Catalogue.of_model(Location.of(args.model), model.classes)
    paths, labels, splits, feats, coll = [], [], [], [], []
    for c, where in enumerate([args.shop, *others]):
        p, lab, sp, x = load(where, model)
        paths += p
        labels += lab
        splits += sp
        feats.append(x)
        coll += [c] * len(p)
    x = np.concatenate(feats).astype(np.float32)
    species = np.array([catalogue.species_of(lab) or f"?{lab}" for lab in labels])
    collection = np.array(coll)
    queries = np.where((collection == 0) & (np.array(splits) == "validation"))[0]
    q_species = species[queries]
    produce = q_species != NOT_PRODUCE
    report: dict = {
        "index": {"images": len(x), "collections": [args.shop, *others], "queries": len(queries)},
        "model_dims": int(x.shape[1]),
    }

    full = project(x, None)
    basis = reduction(model, args.dims)
    small = project(x, basis)
    for name, v in (("exact_full", full), (f"exact_{args.dims}", small)):
        idx, sims = top(v[queries], v, K, queries)
        report[name] = {"dims": int(v.shape[1]), **shares(idx, species, collection, q_species, produce)}
        same = species[idx] == q_species[:, None]
        bands, hi = {}, np.inf
        for lo in BANDS:  # the fruit and vegetable queries' neighbours by cosine band (the page's words)
            band = (sims >= lo) & (sims < hi) & produce[:, None]
            bands[f"[{lo}, {hi if np.isfinite(hi) else 1})"] = {
                "neighbours": int(band.sum()),
                "same_species": round(float(same[band].mean()), 4) if band.any() else None,
            }
            hi = lo
        report[name]["bands"] = bands
        if name.endswith(str(args.dims)):
            exact_small = idx

    # the saved graphs (fruitlens index), as serve --ann searches them: each collection's k+1, merged
    saved = [SavedIndex.open(Location.of(w), model) for w in [args.shop, *others]]
    if all(s is not None for s in saved):
        row_of = {p: i for i, p in enumerate(paths)}
        idx = np.zeros((len(queries), K), np.int64)
        recall = 0
        for qi, r in enumerate(queries):
            found = sorted(
                (n for s in saved for n in s.search(x[r], K + 1) if n.entry.path != paths[r]),
                key=lambda n: -n.similarity,
            )[:K]
            idx[qi] = [row_of[n.entry.path] for n in found]
            recall += len(set(idx[qi]) & set(exact_small[qi]))
        report["saved_hnsw"] = {
            "dims": saved[0].dim,
            **shares(idx, species, collection, q_species, produce),
            "recall_at_8_vs_exact_same_dims": round(recall / (K * len(queries)), 4),
        }
    else:
        report["saved_hnsw"] = "not built for this model: run `fruitlens index` on every collection first"

    # brute-force distance cost at both dimensions (same rows, same queries, one run)
    timing = {}
    for name, v in (("full", full), ("reduced", small)):
        t0 = time.perf_counter()
        for _ in range(5):
            v[queries] @ v.T
        timing[name] = time.perf_counter() - t0
    report["distance_cost_full_over_reduced"] = round(timing["full"] / timing["reduced"], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
