"""S3 -> S3 against local -> local throughput of `fruitlens featurize`, in one run.

    .venv/bin/python bench/s3_bench.py --images 3000

Starts a real S3 API server (moto, its own process) on loopback, uploads N replicated sample
images to it, and runs `fruitlens featurize` twice with the same settings: local folder -> local
folder, then s3:// -> s3://. Reports both images/s and their ratio. The S3 server runs on the same
2 cores as Spark, so the S3 figure includes serving every object too (a pessimistic bound).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from featurize_bench import MODELS, WORK, replicate  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def featurize(src: str, dst: str, env: dict) -> dict:
    cmd = [str(REPO / ".venv/bin/fruitlens"), "featurize", src, dst, "--quiet"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    wall = time.perf_counter() - t0
    return {"process_wall_s": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=3000)
    args = ap.parse_args()
    import boto3
    import s3fs

    images = replicate(args.images)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "FRUITLENS_MODEL_DIR": str(MODELS),
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": endpoint,
    }
    os.environ.update(
        {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3")}
    )
    try:
        client = boto3.client("s3")
        for _ in range(100):
            try:
                client.list_buckets()
                break
            except Exception:  # noqa: BLE001
                time.sleep(0.1)
        client.create_bucket(Bucket="bench")
        files = sorted(images.rglob("*.jpg"))
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda f: client.upload_file(str(f), "bench", f"in/{f.relative_to(images)}"), files))
        results = {"images": len(files)}
        out_local = WORK / "s3bench-local"
        results["local_to_local"] = featurize(str(images), str(out_local), env)
        results["local_to_local"]["report"] = json.loads((out_local / "report.json").read_text())["featurize"]["stages"]
        results["s3_to_s3"] = featurize("s3://bench/in", "s3://bench/out", env)
        fs = s3fs.S3FileSystem()
        results["s3_to_s3"]["report"] = json.loads(fs.cat_file("bench/out/report.json"))["featurize"]["stages"]
    finally:
        server.terminate()
    loc, rem = results["local_to_local"]["report"], results["s3_to_s3"]["report"]
    results["ratio_embed_stage"] = round(rem["embed"]["images_per_s"] / loc["embed"]["images_per_s"], 3)
    results["ratio_list_embed_write"] = round(rem["total"]["images_per_s"] / loc["total"]["images_per_s"], 3)
    (WORK / "s3_bench.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
