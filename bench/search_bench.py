"""The exact cosine search with a bound (`nearest.CosineSearch`) against the full product it replaced,
measured in one run: the novelty check of `predict`/`serve` (nearest of a model's reference
features) and the service's exact neighbour search (8 nearest of the index), one photo at a time,
on fruit photos (Test) and on photos that are not fruit (scikit-image's sample photos and synthetic
images: where the bound prunes least), with the caches cleared between queries as the network
clears them between requests. Then `predict`'s whole time for one photo with each.

    flock /tmp/fruitlens-spark.lock .venv/bin/python bench/search_bench.py --model out/model --index out/demo

A model trained before the bound existed has no bound arrays: the bench builds them in memory (what
`train` now saves), so one model gives both sides. Answers are compared: they must be the same.
Writes bench/_work/search_bench.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from photos import non_fruit_photos  # noqa: E402
from serve_bench import photos  # noqa: E402  (Test photos spread over the classes)

from fruitlens.engine.model import one_blas_thread  # noqa: E402
from fruitlens.engine.nearest import CosineSearch  # noqa: E402
from fruitlens.engine.predict import Identifier  # noqa: E402
from fruitlens.serve.index import NeighbourIndex  # noqa: E402
from fruitlens.storage.location import Location  # noqa: E402

_SCRATCH = np.zeros(64 * 2**20 // 8)


def per_query_ms(fn, queries, rounds: int = 3) -> list[float]:
    """Each query's median time over `rounds` passes, in ms. Before each query 64 MB are written,
    as the network's activations and weights do between two requests of the service: the stored
    vectors come from memory, not from a cache that a tight loop of searches would keep warm."""
    times = [[] for _ in queries]
    for _ in range(rounds):
        for i, q in enumerate(queries):
            _SCRATCH.fill(i)
            t = time.perf_counter()
            fn(q)
            times[i].append((time.perf_counter() - t) * 1e3)
    return [float(np.median(t)) for t in times]


def summary(times: list[float]) -> dict:
    return {
        "p50_ms": round(float(np.percentile(times, 50)), 3),
        "p95_ms": round(float(np.percentile(times, 95)), 3),
        "max_ms": round(max(times), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="out/model")
    ap.add_argument("--index", default="out/demo")
    ap.add_argument("--sample", default=str(REPO.parent / "shared" / "data" / "fruits-360-sample"))
    ap.add_argument("--photos", type=int, default=120, help="fruit photos (Test), one query each")
    ap.add_argument("--out", default=str(REPO / "bench" / "_work" / "search_bench.json"))
    args = ap.parse_args()

    ident = Identifier.load(args.model)
    model = ident.model
    bound = model.refs_search if model.refs_search.pruned else CosineSearch.build(model.refs)
    full = CosineSearch(model.refs)  # no basis: the full product, as before
    sets = {"fruit (Test)": photos(Path(args.sample), args.photos), "not fruit": list(non_fruit_photos().values())}
    feats = {
        name: model.inputs(np.stack([ident.embedder.embed_bytes(d) for d in photos])) for name, photos in sets.items()
    }
    unit = {name: (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32) for name, f in feats.items()}

    t = time.perf_counter()
    index = NeighbourIndex.load(Location.of(args.index), model)
    index_s = time.perf_counter() - t
    index_full = CosineSearch(index.vectors)
    n_refs, n_index = model.refs.shape, index.vectors.shape
    print(
        f"model: {model.meta.get('kind')}, references {n_refs[0]:,} x {n_refs[1]}; index {n_index[0]:,} x "
        f"{n_index[1]} (loaded and bound built in {index_s:.1f} s)",
        flush=True,
    )

    rows = []
    with one_blas_thread():  # as predict and serve run them
        for name, queries in unit.items():
            for what, searches, k in (
                ("novelty (nearest reference)", (full, bound), 1),
                ("neighbours (8 nearest in the index)", (index_full, index.exact), 8),
            ):
                a = [searches[0].top(q, k) for q in queries]
                b = [searches[1].top(q, k) for q in queries]
                diff = max(float(np.abs(x[1] - y[1]).max()) for x, y in zip(a, b))
                same = sum(set(x[0]) == set(y[0]) for x, y in zip(a, b))
                before = per_query_ms(lambda q: searches[0].top(q, k), queries)  # noqa: B023 - called here
                after = per_query_ms(lambda q: searches[1].top(q, k), queries)  # noqa: B023 - called here
                row = {
                    "photos": name,
                    "search": what,
                    "queries": len(queries),
                    "full_product": summary(before),
                    "bound": summary(after),
                    "speed_up_p50": round(np.percentile(before, 50) / np.percentile(after, 50), 2),
                    "max_similarity_diff": diff,
                    "same_rows": f"{same}/{len(queries)}",
                }
                rows.append(row)
                print(json.dumps(row), flush=True)

    # predict's whole time for one photo (decode, network, classifier, novelty), alternating.
    fruit = sets["fruit (Test)"]
    timings = {"full product": [], "bound": []}
    for _ in range(3):
        for label, search in (("full product", full), ("bound", bound)):
            model.refs_search = search
            for d in fruit[:3]:
                ident.identify(d)
            for d in fruit:
                t = time.perf_counter()
                ident.identify(d)
                timings[label].append((time.perf_counter() - t) * 1e3)
    predict = {
        label: {"p50_ms": round(float(np.percentile(v, 50)), 2), "mean_ms": round(statistics.mean(v), 2)}
        for label, v in timings.items()
    }
    print(json.dumps({"predict_one_photo": predict}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "model": args.model,
                "index": args.index,
                "refs": list(n_refs),
                "index_vectors": list(n_index),
                "rows": rows,
                "predict": predict,
            },
            indent=2,
        )
    )

    print(
        "\n| photos | search | full product p50 / p95 / max ms | with the bound p50 / p95 / max ms "
        "| speed-up (p50) | same answers |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        f, b = r["full_product"], r["bound"]
        print(
            f"| {r['photos']} ({r['queries']}) | {r['search']} | {f['p50_ms']} / {f['p95_ms']} / {f['max_ms']} | "
            f"{b['p50_ms']} / {b['p95_ms']} / {b['max_ms']} | **{r['speed_up_p50']}×** | {r['same_rows']} "
            f"(max diff {r['max_similarity_diff']:.1e}) |"
        )
    print(
        f"\npredict, one fruit photo, p50: {predict['full product']['p50_ms']} ms with the full product, "
        f"{predict['bound']['p50_ms']} ms with the bound"
    )


if __name__ == "__main__":
    sys.exit(main())
