"""The model alone (the default backbone) at each --image-size, one after another in one run.

    .venv/bin/python bench/image_size_bench.py [--sizes 224 192 160 128] [--seconds 10]

2 processes x 1 thread (the shape of `featurize` in local mode on 2 cores), batch 16, decoded
sample images in memory, as bench/featurize_bench.py measures its baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from featurize_bench import model_only


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 192, 160, 128])
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    rates = {}
    for size in args.sizes:
        rates[size] = round(model_only(2, 1, 16, args.seconds, size), 1)
        print(f"{size}: {rates[size]} images/s ({rates[size] / rates[args.sizes[0]]:.2f}x {args.sizes[0]})", flush=True)
    print(json.dumps(rates))


if __name__ == "__main__":
    main()
