"""The multiscale backbone's stage averages: in the graph (now) vs in NumPy (commit 264dc43).

    .venv/bin/python bench/stage_mean_bench.py [--seconds 8] [--rounds 2]

Loads the old LiteRTBackbone from git (264dc43, the averages computed in NumPy on the int8
activations) beside the current one, checks their embeddings agree, and measures images/s of the
plain pooled backbone, the old and the new multiscale one, interleaved in one process (batch 16,
2 threads, 64 decoded sample images in memory).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
OLD = "264dc43"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    from fruitlens.embedding import backbones
    from fruitlens.embedding.decode import decode_image

    source = subprocess.run(
        ["git", "show", f"{OLD}:src/fruitlens/backbones/litert.py"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    source = source.replace("from ..model_store", "from fruitlens.embedding.backbone_file").replace(
        "from .base", "from fruitlens.embedding.backbones.base"
    )
    tmp = Path(tempfile.mkdtemp())
    (tmp / "old_litert.py").write_text(source)
    sys.path.insert(0, str(tmp))
    import old_litert

    model = str(SHARED / "models" / "tf2_mobilenet_v2_1.0_224_ptq.tflite")
    files = sorted((SHARED / "data" / "fruits-360-sample").rglob("*.jpg"))[::50][:64]
    images = np.stack([decode_image(f.read_bytes(), (224, 224), 10**8) for f in files])
    new = backbones.load(backbones.get_spec("mobilenet_v2_multiscale"), model, 2)
    old = old_litert.LiteRTBackbone(old_litert.MOBILENET_V2_MULTISCALE, model, 2)
    plain = backbones.load(backbones.get_spec("mobilenet_v2"), model, 2)
    a, b = old.embed(images[:16]), new.embed(images[:16])
    same = bool((a[:, :1280] == b[:, :1280]).all())
    print(f"max |old - new| = {np.abs(a - b).max():.3g}; pooled part identical: {same}")

    def rate(m) -> float:
        batches = [images[i : i + 16] for i in range(0, 64, 16)]
        m.embed(batches[0])
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            m.embed(batches[n // 16 % 4])
            n += 16
        return n / (time.perf_counter() - t0)

    for r in range(args.rounds):
        p, o, w = rate(plain), rate(old), rate(new)
        print(
            f"round {r + 1}: plain {p:.1f}  multiscale NumPy averages {o:.1f} ({o / p:.0%})  "
            f"in-graph averages {w:.1f} ({w / p:.0%}) images/s"
        )


if __name__ == "__main__":
    main()
