"""Peak memory of `fruitlens serve` for the worst photos one can make under its limits: each photo
at the pixel limit (50 Mpx: 7071 x 7071) and small enough to upload, in the formats and modes that
cost the most to decode (16-bit greyscale PNG, RGBA PNG, palette PNG, progressive JPEG, CMYK JPEG,
and a lossless WebP at its own limit, a quarter of the pixels: 3535 x 3535). For each: the
server's peak RSS over its idle RSS for one request alone, then for 16 requests at once (and 16
requests of 5 such photos each), each case on a freshly started server (warmed by one small
photo), by the kernel's high-water mark (/proc/PID/status VmHWM).

    flock /tmp/fruitlens-test.lock .venv/bin/python bench/decode_memory_bench.py [--before REV]

Without --model/--index it trains a small model on ../shared's sample first (Spark, a minute or two).
`--before REV` also measures, alone only, the code of that git revision (its src/ exported to a
temporary folder): the same photos, one at a time (16 at once of the old decoding would take
~20 GB). Writes bench/_work/decode_memory_bench.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from local_cluster import free_port  # noqa: E402

SHARED = Path(os.environ.get("FRUITLENS_SHARED") or REPO.parent / "shared")
WORK = REPO / "bench" / "_work"
SIDE = 7071  # 7071^2 = 49,999,041 pixels: just under the default --max-pixels (50,000,000)


def worst_photos(side: int) -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, media type): smooth gradients, so each compresses to an uploadable size."""
    ramp = np.arange(side, dtype=np.uint32)
    grey16 = np.broadcast_to((ramp * 65535 // (side - 1)).astype(np.uint16), (side, side)).copy()
    grey8 = np.broadcast_to((ramp * 255 // (side - 1)).astype(np.uint8), (side, side))
    rgb = Image.merge("RGB", [Image.fromarray(np.ascontiguousarray(grey8))] * 3)
    out = {}

    def save(name, img, fmt, media, **kw):
        buf = io.BytesIO()
        img.save(buf, format=fmt, **kw)
        out[name] = (buf.getvalue(), media)

    save("16-bit grey PNG", Image.fromarray(grey16), "PNG", "image/png")
    del grey16
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.ascontiguousarray(grey8)))
    save("RGBA PNG", rgba, "PNG", "image/png")
    del rgba
    save("palette PNG", rgb.convert("P"), "PNG", "image/png")
    save("progressive JPEG", rgb, "JPEG", "image/jpeg", progressive=True, quality=90)
    save("CMYK JPEG", rgb.convert("CMYK"), "JPEG", "image/jpeg", quality=90)
    quarter = int((side * side // 4) ** 0.5)  # a WebP's own limit: a quarter of the pixels (decode.py)
    save("lossless WebP", rgb.resize((quarter, quarter)), "WEBP", "image/webp", lossless=True, quality=0, method=0)
    return out


def small_model(root: Path) -> tuple[Path, Path]:
    """6 classes x 16 images featurized and trained (lr_pca), as the serve tests do."""
    from conftest import SAMPLE

    from fruitlens.config import FeaturizeConfig, SparkConfig, TrainConfig
    from fruitlens.jobs import run_featurize, run_train

    if (root / "model").is_dir() and (root / "index").is_dir():
        return root / "model", root / "index"
    shutil.rmtree(root, ignore_errors=True)
    for name in sorted(p.name for p in (SAMPLE / "Training").iterdir())[::20][:6]:
        for split, step, count in (("Training", 5, 16), ("Test", 7, 4)):
            (root / "images" / split / name).mkdir(parents=True)
            for f in sorted((SAMPLE / split / name).iterdir())[::step][:count]:
                shutil.copy(f, root / "images" / split / name / f.name)
    run_featurize(FeaturizeConfig(input=str(root / "images"), output=str(root / "index")), SparkConfig(), quiet=True)
    run_train(
        TrainConfig(input=str(root / "index"), output=str(root / "model"), models=("lr_pca",), max_iter=50),
        SparkConfig(),
        quiet=True,
    )
    return root / "model", root / "index"


class Served:
    def __init__(self, model: Path, index: Path, src: Path, log: Path, extra_env: dict[str, str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, **extra_env, "PYTHONPATH": str(src), "FRUITLENS_MODEL_DIR": str(SHARED / "models")}
        cmd = [sys.executable, "-m", "fruitlens", "serve", "--model", str(model), "--index", str(index)]
        cmd += ["--port", str(self.port), "--rate-limit", "100000"]
        out = open(log, "w")  # noqa: SIM115 - the server's log, open while it runs
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 180
        while True:
            try:
                if httpx.get(self.url + "/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"serve did not start: {log.read_text()}")
            time.sleep(0.3)

    def status(self, field: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    def reset_peak(self) -> None:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def post(url: str, photos: list[tuple[bytes, str]]) -> int:
    files = [("photo", (f"p{i}", data, media)) for i, (data, media) in enumerate(photos)]
    with httpx.Client(timeout=600) as c:
        return c.post(url + "/api/v1/identify", files=files).status_code


def case(server: Served, idle: int, photos: list[tuple[bytes, str]], clients: int) -> dict:
    server.reset_peak()
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        codes = list(pool.map(lambda _: post(server.url, photos), range(clients)))
    took = time.perf_counter() - t0
    return {
        "clients": clients,
        "photos_each": len(photos),
        "codes": {str(c): codes.count(c) for c in sorted(set(codes))},
        "peak_over_idle_mb": round((server.status("VmHWM") - idle) / 2**20),
        "rss_after_over_idle_mb": round((server.status("VmRSS") - idle) / 2**20),
        "seconds": round(took, 1),
    }


def fresh(model, index, src: Path, log: Path, env: dict[str, str]) -> tuple[Served, int]:
    """A server just started and warmed by one small photo, and its idle RSS."""
    server = Served(model, index, src, log, env)
    jpeg = next((SHARED / "data" / "fruits-360-sample" / "Test").rglob("*.jpg")).read_bytes()
    post(server.url, [(jpeg, "image/jpeg")])
    return server, server.status("VmRSS")


def measure(model, index, src: Path, photos, log: Path, crowds: bool, env: dict[str, str]) -> dict:
    """Each case on a fresh server: what one case leaves allocated does not count in the next."""
    out: dict = {"cases": {}}
    plan = [(name, [photo], clients) for name, photo in photos.items() for clients in ((1, 16) if crowds else (1,))]
    if crowds:
        plan.append(("16-bit grey PNG x5", [photos["16-bit grey PNG"]] * 5, 16))
    for name, sent, clients in plan:
        server, idle = fresh(model, index, src, log, env)
        try:
            run = case(server, idle, sent, clients)
        finally:
            server.stop()
        run["idle_rss_mb"] = round(idle / 2**20)
        out["cases"].setdefault(name, []).append(run)
        print(name, run, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--index")
    ap.add_argument("--before", help="a git revision to measure too (alone only)")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="for the servers")
    args = ap.parse_args()
    env = dict(e.split("=", 1) for e in args.env)
    WORK.mkdir(parents=True, exist_ok=True)
    if args.model and args.index:
        model, index = Path(args.model), Path(args.index)
    else:
        model, index = small_model(WORK / "decode-bench")
    photos = worst_photos(SIDE)
    sizes = {name: len(data) for name, (data, _) in photos.items()}
    print("photos (bytes):", sizes, flush=True)
    result = {"side": SIDE, "pixels": SIDE * SIDE, "bytes": sizes, "cpus": os.cpu_count(), "env": env}
    result["after"] = measure(model, index, REPO / "src", photos, WORK / "decode-bench-serve.log", True, env)
    if args.before:
        with tempfile.TemporaryDirectory() as tmp:
            archive = subprocess.run(["git", "archive", args.before, "src"], cwd=REPO, capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
            log = WORK / "decode-bench-before.log"
            result["before"] = measure(model, index, Path(tmp) / "src", photos, log, False, env)
            result["before"]["revision"] = args.before
    (WORK / "decode_memory_bench.json").write_text(json.dumps(result, indent=1))
    print("\n| photo (7071 x 7071) | bytes | alone: peak over idle | 16 at once: peak over idle | before, alone |")
    print("| --- | --- | --- | --- | --- |")
    for name, runs in result["after"]["cases"].items():
        before = result.get("before", {}).get("cases", {}).get(name)
        alone = f"{runs[0]['peak_over_idle_mb']} MB" if runs[0]["clients"] == 1 else "-"
        crowd = runs[-1] if runs[-1]["clients"] == 16 else None
        crowded = f"{crowd['peak_over_idle_mb']} MB ({crowd['seconds']} s, {crowd['codes']})" if crowd else "-"
        was = f"{before[0]['peak_over_idle_mb']} MB" if before else "-"
        print(f"| {name} | {sizes.get(name.removesuffix(' x5'), 0):,} | {alone} | {crowded} | {was} |")


if __name__ == "__main__":
    main()
