"""Why the network runs slower inside the chain than alone, in plain Python (no Spark), one thread:

1. `decode_image` of the sample's 100x100 JPEGs, split into open, libjpeg's decode and the rest;
2. the published network at 224x224 ("the model alone" of featurize_bench) against the graph
   featurize runs (bilinear resize from 100x100 inside it), on the same 64 photos and on 2,048
   others, with the other core idle and then busy decoding JPEGs (as the I/O threads do).

    flock /tmp/fruitlens-spark.lock .venv/bin/python bench/inchain_bench.py

Prints CPU and wall milliseconds per image; two rounds, so the machine's drift shows.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fruitlens.config import DEFAULT_BACKBONE
from fruitlens.embedding import backbones
from fruitlens.embedding.decode import decode_image

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "fruits-360-sample"
MODELS = REPO.parent / "shared" / "models"


def files() -> list[Path]:
    return sorted(SAMPLE.glob("Training/*/*.jpg"))


def per_image_ms(fn, items, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, (time.perf_counter() - t) / len(items) * 1e3)
    return best


def decode_split() -> None:
    datas = [p.read_bytes() for p in files()[:2000]]

    def opened(d):
        return Image.open(io.BytesIO(d))

    def loaded(d):
        img = Image.open(io.BytesIO(d))
        img.load()

    decoded = per_image_ms(lambda d: decode_image(d, (224, 224), 10**8, upscale=False), datas)
    print(f"decode_image (100x100 JPEG, no upscale): {decoded:.3f} ms")
    print(f"  Image.open only:                       {per_image_ms(opened, datas):.3f} ms")
    print(f"  open + load (libjpeg-turbo's decode):  {per_image_ms(loaded, datas):.3f} ms")


def _decode_forever(stop) -> None:
    datas = [p.read_bytes() for p in files()[:3000]]
    i = 0
    while not stop.is_set():
        decode_image(datas[i % len(datas)], (224, 224), 10**8, upscale=False)
        i += 1


def measure(model, batches, seconds: float) -> tuple[float, float]:
    model.embed(batches[0])
    n, k = 0, 0
    t0, c0 = time.perf_counter(), time.thread_time()
    while time.perf_counter() - t0 < seconds:
        model.embed(batches[k % len(batches)])
        k += 1
        n += len(batches[0])
    return (time.thread_time() - c0) / n * 1e3, (time.perf_counter() - t0) / n * 1e3


def network_ab(seconds: float) -> None:
    spec = backbones.get_spec(DEFAULT_BACKBONE)
    path = str(MODELS / spec.file.filename)
    alone = backbones.load(spec, path, 1, resize_in_graph=False)
    graph = backbones.load(spec, path, 1)
    every = files()
    same = [p.read_bytes() for p in every[::50][:64]]
    at224 = np.stack([decode_image(d, spec.input_size, 10**8) for d in same])
    at100 = np.stack([decode_image(d, spec.input_size, 10**8, upscale=False) for d in same])
    others = np.stack([decode_image(p.read_bytes(), spec.input_size, 10**8, upscale=False) for p in every[::5][:2048]])
    cases = {
        "published network, 224x224, 64 photos": (alone, at224),
        "featurize's graph, 100x100 in, same 64": (graph, at100),
        "featurize's graph, 100x100 in, 2,048 others": (graph, others),
    }
    ctx = mp.get_context("spawn")
    for round_ in (1, 2):
        for busy in (False, True):
            stop, proc = ctx.Event(), None
            if busy:
                proc = ctx.Process(target=_decode_forever, args=(stop,))
                proc.start()
                time.sleep(1)
            for name, (model, images) in cases.items():
                cpu, wall = measure(model, [images[i : i + 16] for i in range(0, len(images), 16)], seconds)
                beside = "decoding beside" if busy else "idle beside   "
                print(
                    f"round {round_}, {beside} | {name:45s} | CPU {cpu:.3f} ms, wall {wall:.3f} ms per image",
                    flush=True,
                )
            if proc is not None:
                stop.set()
                proc.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="per network measurement")
    args = ap.parse_args()
    decode_split()
    network_ab(args.seconds)


if __name__ == "__main__":
    main()
