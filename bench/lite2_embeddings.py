"""EfficientNet-Lite2 embeddings of GroceryStore train/ and val/ for choosing on validation, outside
the product: the LiteRT files of ../shared/models (int8 and float32, both 2136 outputs: the pooled
1280 then the 7 stages' spatial means), each photo's views exactly as the product cuts them
(`Views(n).pixels`, 260 px, upscaled), one decode for both files.

Writes one npz per file to OUT (atomically: a temporary name, then a rename): `x` (photos, views,
2136) float16 (NaN for views not embedded: `--train-views`), `y` fine class id, `coarse` coarse
class id, `split` ("train"/"val"), `path`.

    flock /tmp/fruitlens-test.lock .venv/bin/python bench/lite2_embeddings.py --out /tmp/lite2
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from fruitlens.embedding.decode import DEFAULT_MAX_PIXELS
from fruitlens.embedding.views import Views

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
FILES = {
    "int8": "models/efficientnet_lite2_ms_int8.tflite",
    "fp32": "models/efficientnet_lite2_ms_fp32.tflite",
}
SIZE = (260, 260)


def photos(root: str, split: str) -> list[tuple[str, int, int]]:
    """(path, fine id, coarse id) from the dataset's own split list."""
    out = []
    with open(os.path.join(root, f"{split}.txt")) as f:
        for line in f:
            if line.strip():
                path, fine, coarse = (s.strip() for s in line.split(","))
                out.append((path, int(fine), int(coarse)))
    return out


class Runner:
    """One LiteRT interpreter at batch `batch`, quantising its input and dequantising its output."""

    def __init__(self, path: str, threads: int, batch: int):
        from ai_edge_litert.interpreter import Interpreter

        self.it = Interpreter(model_path=path, num_threads=threads)
        inp = self.it.get_input_details()[0]
        self.it.resize_tensor_input(inp["index"], [batch, *SIZE, 3])
        self.it.allocate_tensors()
        self.inp, self.out = self.it.get_input_details()[0], self.it.get_output_details()[0]
        self.batch = batch

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        n = len(pixels)
        x = np.zeros((self.batch, *SIZE, 3), np.float32)
        x[:n] = pixels
        scale, zero = self.inp["quantization"]
        if self.inp["dtype"] != np.float32:
            info = np.iinfo(self.inp["dtype"])
            x = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(self.inp["dtype"])
        self.it.set_tensor(self.inp["index"], x)
        self.it.invoke()
        y = self.it.get_tensor(self.out["index"])[:n]
        scale, zero = self.out["quantization"]
        return ((y.astype(np.float32) - zero) * scale) if self.out["dtype"] != np.float32 else y.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(SHARED, "data", "grocerystore"))
    ap.add_argument("--out", default="/tmp/lite2")
    ap.add_argument("--models", nargs="+", default=list(FILES))
    ap.add_argument("--views", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--train-views", type=int, default=0, help="embed only these views of train photos (the rest NaN)")
    ap.add_argument("--suffix", default="", help="added to the output names")
    ap.add_argument("--limit", type=int, default=0, help="photos per split (0: all), for a quick try")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    views = Views(args.views)
    train_views = Views(args.train_views or args.views)
    slots = [views.names.index(n) for n in train_views.names]
    runners = {m: Runner(os.path.join(SHARED, FILES[m]), args.threads, args.batch) for m in args.models}
    rows = [(s, *p) for s in ("train", "val") for p in photos(args.data, s)[: args.limit or None]]
    feats = {m: np.full((len(rows), args.views, 2136), np.nan, np.float16) for m in args.models}
    seconds = dict.fromkeys(args.models, 0.0)
    t_decode, pending, t0 = 0.0, [], time.perf_counter()

    def flush():
        px = np.stack([v for _, vs in pending for v in vs]).astype(np.float32)
        for m, run in runners.items():
            t = time.perf_counter()
            emb = np.concatenate([run(px[i : i + args.batch]) for i in range(0, len(px), args.batch)])
            seconds[m] += time.perf_counter() - t
            at = 0
            for i, vs in pending:
                where = slots if len(vs) < args.views else list(range(args.views))
                feats[m][i, where] = emb[at : at + len(vs)]
                at += len(vs)
        pending.clear()

    for i, (split, path, _, _) in enumerate(rows):
        t = time.perf_counter()
        with open(os.path.join(args.data, path), "rb") as f:
            cut = train_views if split == "train" else views
            pending.append((i, cut.pixels(f.read(), SIZE, DEFAULT_MAX_PIXELS, upscale=True)))
        t_decode += time.perf_counter() - t
        if sum(len(vs) for _, vs in pending) >= 8 * args.batch:
            flush()
        if i % 500 == 0:
            print(f"[lite2] {i}/{len(rows)} photos, {time.perf_counter() - t0:.0f}s", flush=True)
    if pending:
        flush()
    n_views = sum(args.views if r[0] == "val" else len(train_views.names) for r in rows)
    meta = {
        "y": np.array([r[2] for r in rows]),
        "coarse": np.array([r[3] for r in rows]),
        "split": np.array([r[0] for r in rows]),
        "path": np.array([r[1] for r in rows]),
        "view_names": np.array(views.names),
    }
    for m in args.models:
        final = os.path.join(args.out, f"lite2_{m}_grocery_v{args.views}{args.suffix}.npz")
        tmp = final + f".tmp{os.getpid()}.npz"
        np.savez(tmp, x=feats[m], **meta)
        os.replace(tmp, final)
        print(f"[lite2] {m}: {n_views / seconds[m]:.0f} views/s model alone ({args.threads} threads) -> {final}")
    print(f"[lite2] decode + views: {n_views / t_decode:.0f} views/s; total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
