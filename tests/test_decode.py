"""Decoding real files of every supported format and pixel mode, and the broken ones."""

import io

import numpy as np
import pytest
from PIL import Image

from fruitlens.decode import DecodeError, decode_image

SIZE = (224, 224)
LIMIT = 100_000_000


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def red_square(mode="RGB"):
    return Image.new("RGB", (100, 100), (220, 20, 20)).convert(mode)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP"])
def test_every_format_decodes_to_rgb_at_model_size(fmt):
    out = decode_image(encode(red_square(), fmt), SIZE, LIMIT)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    r, g, b = out[112, 112].astype(int)
    assert r > 180 and g < 70 and b < 70


@pytest.mark.parametrize(
    "mode,fmt", [("L", "PNG"), ("P", "PNG"), ("CMYK", "JPEG"), ("1", "BMP"), ("LA", "PNG"), ("RGBA", "WEBP")]
)
def test_any_pixel_mode_becomes_rgb(mode, fmt):
    out = decode_image(encode(red_square(mode), fmt), SIZE, LIMIT)
    assert out.shape == (224, 224, 3)


def test_transparent_pixels_are_composited_on_white():
    img = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    out = decode_image(encode(img, "PNG"), SIZE, LIMIT)
    assert out.min() == 255


def test_16_bit_greyscale_is_rescaled_not_clipped():
    arr = np.full((40, 40), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    img = Image.fromarray(arr)
    assert img.mode.startswith("I;16")
    out = decode_image(encode(img, "PNG"), SIZE, LIMIT)
    assert 120 <= out.mean() <= 135


def test_exif_orientation_is_applied():
    # Left half red, right half blue; EXIF orientation 6 means "rotate 90 degrees clockwise".
    arr = np.zeros((60, 120, 3), np.uint8)
    arr[:, :60] = (255, 0, 0)
    arr[:, 60:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    out = decode_image(encode(Image.fromarray(arr), "JPEG", exif=exif.tobytes(), quality=95), SIZE, LIMIT)
    top, bottom = out[20, 112].astype(int), out[200, 112].astype(int)
    assert top[0] > 200 and top[2] < 60  # red now on top
    assert bottom[2] > 200 and bottom[0] < 60  # blue below


def test_large_photo_is_downscaled():
    out = decode_image(encode(Image.new("RGB", (4000, 3000), (0, 200, 0)), "JPEG"), SIZE, LIMIT)
    assert out.shape == (224, 224, 3) and out[100, 100, 1] > 150


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty"),
        (b"this is a text file, not a photo", "not an image"),
        (bytes(range(256)) * 10, "not an image"),
    ],
)
def test_unusable_bytes_have_a_reason(data, reason):
    with pytest.raises(DecodeError) as info:
        decode_image(data, SIZE, LIMIT)
    assert info.value.reason == reason


def test_truncated_jpeg_is_reported_as_truncated():
    full = encode(Image.effect_noise((300, 300), 60).convert("RGB"), "JPEG")
    with pytest.raises(DecodeError) as info:
        decode_image(full[: len(full) // 2], SIZE, LIMIT)
    assert info.value.reason == "truncated"


def test_corrupt_png_body_is_reported():
    data = bytearray(encode(Image.effect_noise((200, 200), 60), "PNG"))
    data[200:400] = b"\x00" * 200
    with pytest.raises(DecodeError) as info:
        decode_image(bytes(data), SIZE, LIMIT)
    assert info.value.reason in ("corrupt", "truncated")


def test_decompression_bomb_is_refused_before_decoding():
    bomb = encode(Image.new("1", (12_000, 12_000)), "PNG")  # 144 Mpx, a few kB on disk
    assert len(bomb) < 100_000
    with pytest.raises(DecodeError) as info:
        decode_image(bomb, SIZE, LIMIT)
    assert info.value.reason == "decompression bomb"
