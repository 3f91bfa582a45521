"""What the serve tests share besides fixtures: the classes of the small model, the real
`fruitlens serve` started as a subprocess on loopback, and the photos posted to it."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import httpx
from conftest import MODELS, SAMPLE, SHARED
from local_cluster import free_port
from PIL import Image

from fruitlens.config import SparkConfig

META = SHARED / "data" / "fruits-360-meta"
GROCERY = SHARED / "data" / "grocerystore"
CHROMIUM = "/usr/bin/chromium"
# 2019 names: exact ("Tomato 1"), "<name> 1" ("Apple Braeburn"), an alias ("Redcurrant" -> "Currant red 1");
# Lemon's metadata is removed from the test's copy of the metadata folder: a class without information.
CLASSES = ["Apple Braeburn", "Banana", "Kiwi", "Lemon", "Redcurrant", "Tomato 1"]
NO_META = "Lemon"
SPARK = SparkConfig()


def serve_cmd(root: Path, port: int, *extra: str, model=None, index=None, info=None) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fruitlens",
        "serve",
        "--model",
        model or str(root / "model"),
        "--index",
        index or str(root / "index"),
        "--info",
        info or str(root / "meta"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra,
    ]


FEEDBACK_ARGS = ("--feedback", "{root}/feedback", "--rate-limit", "100000")  # the main server: no limit in the way


class Server:
    def __init__(self, root: Path, log: Path, *extra: str, **where):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**os.environ, "FRUITLENS_MODEL_DIR": str(MODELS)}
        self.proc = subprocess.Popen(
            serve_cmd(root, self.port, *extra, **where), stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env
        )
        deadline = time.time() + 120
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"fruitlens serve exited {self.proc.returncode}: {log.read_text()}")
            try:
                if httpx.get(self.url + "/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise AssertionError(f"fruitlens serve did not start: {log.read_text()}")
            time.sleep(0.2)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def photo_of(name: str, i: int = 0) -> Path:
    """A Test photo of a class that is not among the copies indexed (those are 0, 7, 14, 21)."""
    assert 0 <= i <= 2
    return sorted((SAMPLE / "Test" / name).iterdir())[1 + 2 * i]


def post_photo(client, data: bytes, filename="photo.jpg", ctype="image/jpeg", **kw):
    return client.post("/api/v1/identify", files={"photo": (filename, data, ctype)}, **kw)


def post_photos(client, datas: list[bytes], **kw):
    return client.post(
        "/api/v1/identify", files=[("photo", (f"p{i}.jpg", d, "image/jpeg")) for i, d in enumerate(datas)], **kw
    )


def png_header_only(width: int, height: int) -> bytes:
    """A complete, tiny PNG that declares width x height pixels: a decompression bomb."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def tiff() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="TIFF")
    return buf.getvalue()


def jpeg_with_gps() -> bytes:
    """A real photo carrying EXIF with a GPS position and a camera, as phones write them."""
    img = Image.open(photo_of("Banana"))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0110] = "Phone 12"  # Model
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)}  # GPS: Paris
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif, comment=b"secret note")
    return buf.getvalue()
