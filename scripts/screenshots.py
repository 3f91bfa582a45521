"""The README's screenshots of the page on a phone (390x844), in English and French: starts
`fruitlens serve` on loopback and drives Debian's chromium with Playwright.

    .venv/bin/python scripts/screenshots.py                       # out/product if present, else a small model
    .venv/bin/python scripts/screenshots.py --model out/product --index out/grocery --index out/demo

With `out/product` (./scripts/demo.sh) and its indexes it shows the product model; without, it first
trains a small model of the same kind here (4 GroceryStore folders and 3 Fruits-360 classes, the
builtin catalogue, about a minute: `featurize`, `train`, `index` on copies under bench/_work/screens)
and says so. Writes docs/serve-phone-en.png and docs/serve-phone-fr.png (the first screen after
identifying a GroceryStore val photo) and docs/serve-phone-fr-full.png (the whole French page).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GROCERY = SHARED / "data" / "grocerystore"
SAMPLE = SHARED / "data" / "fruits-360-sample"
WORK = REPO / "bench" / "_work" / "screens"
SHOP = ["Fruit/Banana", "Fruit/Kiwi", "Vegetables/Asparagus", "Packages/Juice/Bravo-Apple-Juice"]
TURNTABLE = ["Banana", "Kiwi", "Lemon"]
PHOTO = GROCERY / "val" / "Vegetables" / "Asparagus"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def fruitlens(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "fruitlens", *args], check=True, stdout=subprocess.DEVNULL)


def small_model() -> tuple[str, list[str]]:
    """A model of the product's kind on a few classes (what the tests use), with both indexes."""
    shutil.rmtree(WORK, ignore_errors=True)
    shop, turntable = WORK / "grocerystore", WORK / "fruits-360"
    for folder in SHOP:
        for split in ("train", "val"):
            (shop / split / folder).mkdir(parents=True)
            for f in sorted((GROCERY / split / folder).iterdir())[: 16 if split == "train" else 4]:
                shutil.copy(f, shop / split / folder / f.name)
    for name in ("LICENSE", "classes.csv"):
        shutil.copy(GROCERY / name, shop / name)
    (shop / "iconic-images-and-descriptions").symlink_to(GROCERY / "iconic-images-and-descriptions")
    for split, count in (("Training", 16), ("Test", 4)):
        for name in TURNTABLE:
            (turntable / split / name).mkdir(parents=True)
            for f in sorted((SAMPLE / split / name).iterdir())[::5][:count]:
                shutil.copy(f, turntable / split / name / f.name)
    shutil.copy(SAMPLE / "LICENSE", turntable / "LICENSE")
    fruitlens("featurize", str(shop), str(WORK / "shop"))
    fruitlens("featurize", str(turntable), str(WORK / "turntable"))
    model = str(WORK / "model")
    fruitlens("train", str(WORK / "shop"), str(WORK / "turntable"), model, "--catalogue", "builtin",
              "--candidates", "lr_full:1e-3", "--target-precision", "0.9")  # fmt: skip
    fruitlens("index", str(WORK / "shop"), str(WORK / "turntable"), "--model", model)
    return model, [str(WORK / "shop"), str(WORK / "turntable")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="out/product")
    ap.add_argument("--index", action="append", default=None, help="collections (default: out/grocery, out/demo)")
    ap.add_argument("--photo", default=None, help="default: a GroceryStore val photo of asparagus")
    ap.add_argument("--out", default="docs")
    args = ap.parse_args()
    os.environ.setdefault("FRUITLENS_MODEL_DIR", str(SHARED / "models"))
    model, indexes = args.model, args.index or ["out/grocery", "out/demo"]
    if not (Path(model) / "model.json").exists():
        print(f"[screenshots] no model at {model}: training a small one (4 shop folders, 3 turntable classes)")
        model, indexes = small_model()
    print(f"[screenshots] model {model}, collections {', '.join(indexes)}")
    photo = args.photo or str(sorted(PHOTO.iterdir())[1])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    info = [a for d in (SHARED / "data" / "fruits-360-meta", GROCERY) if d.is_dir() for a in ("--info", str(d))]
    cmd = [sys.executable, "-m", "fruitlens", "serve", "--model", model, "--ann", "--port", str(port), *info]
    for i in indexes:
        cmd += ["--index", i]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        from PIL import Image
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            for lang, locale in (("en", "en-GB"), ("fr", "fr-FR")):
                context = browser.new_context(
                    viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True, device_scale_factor=1,
                    locale=locale,
                )  # fmt: skip
                page = context.new_page()
                page.goto(url + "/")
                page.set_input_files("#choose", photo)
                page.wait_for_selector("#result:not([hidden])", timeout=120_000)
                page.wait_for_function(
                    "[...document.querySelectorAll('#similar img')].every(i => i.complete && i.naturalWidth > 0)"
                )
                shots = {f"serve-phone-{lang}.png": page.screenshot()}
                if lang == "fr":
                    shots["serve-phone-fr-full.png"] = page.screenshot(full_page=True)
                for name, png in shots.items():
                    out = Path(args.out) / name
                    img = Image.open(io.BytesIO(png))
                    img.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(out, optimize=True)
                    print(f"{out}: {img.width}x{img.height}, {os.path.getsize(out):,} bytes")
                context.close()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
