"""The page at phone size after identifying a fruit, as docs/serve-phone.png: starts `fruitlens serve`
on loopback and drives Debian's chromium with Playwright.

    .venv/bin/python scripts/serve_screenshot.py --model out/model --index out/demo \\
        --photo ../shared/data/fruits-360-sample/Test/Banana/100_100.jpg --out docs/serve-phone.png
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="out/model")
    ap.add_argument("--index", default="out/demo")
    ap.add_argument("--info", default=str(REPO.parent / "shared" / "data" / "fruits-360-meta"))
    ap.add_argument("--photo", required=True)
    ap.add_argument("--out", default="docs/serve-phone.png")
    ap.add_argument("--width", type=int, default=390)
    ap.add_argument("--height", type=int, default=844)
    args = ap.parse_args()
    os.environ.setdefault("FRUITLENS_MODEL_DIR", str(REPO.parent / "shared" / "models"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fruitlens",
            "serve",
            "--model",
            args.model,
            "--index",
            args.index,
            "--info",
            args.info,
            "--port",
            str(port),
        ]
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--no-first-run",
                ],
            )
            page = browser.new_page(
                viewport={"width": args.width, "height": args.height},
                is_mobile=True,
                has_touch=True,
                device_scale_factor=1,
            )
            page.goto(url + "/")
            page.set_input_files("#choose", args.photo)
            page.wait_for_selector("#result:not([hidden])", timeout=60_000)
            page.wait_for_function(
                "[...document.querySelectorAll('#similar img')].every(i => i.complete && i.naturalWidth > 0)"
            )
            png = page.screenshot(full_page=True)
            browser.close()
        from PIL import Image

        img = Image.open(io.BytesIO(png))
        img.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(args.out, optimize=True)  # small file
        print(f"{args.out}: {img.width}x{img.height}, {os.path.getsize(args.out):,} bytes")
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
