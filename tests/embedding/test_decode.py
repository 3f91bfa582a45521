"""Decoding real files of every supported format and pixel mode, and the broken ones."""

import io
import pickle

import numpy as np
import pytest
from PIL import Image

from fruitlens.embedding.decode import DECODE_REASONS, DecodeError, decode_image

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


def halves(mode: str, size=(2400, 1200)) -> Image.Image:
    """Left half red, right half blue (with an alpha or palette per `mode`), large enough to be
    reduced before its conversion."""
    img = Image.new("RGB", size, (255, 0, 0))
    img.paste((0, 0, 255), (size[0] // 2, 0, size[0], size[1]))
    return img.convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "LA", "CMYK"])
def test_large_photos_of_every_mode_are_reduced_then_converted_with_the_same_colours(mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = decode_image(encode(halves(mode), fmt), SIZE, LIMIT).astype(int)
    left, right = out[112, 40], out[112, 184]
    if mode == "LA":  # grey: red and blue become two greys, in the same places
        assert abs(int(left[0]) - int(right[0])) > 10 and left[0] == left[1] == left[2]
    else:
        assert left[0] > 200 and left[2] < 60 and right[2] > 200 and right[0] < 60


def test_transparency_on_a_large_photo_is_white():
    img = Image.new("RGBA", (3000, 2000), (0, 0, 0, 0))
    img.paste((0, 128, 0, 255), (0, 0, 1500, 2000))  # left half opaque green, right half transparent
    out = decode_image(encode(img, "PNG"), SIZE, LIMIT)
    assert tuple(out[112, 40]) == (0, 128, 0) and tuple(out[112, 184]) == (255, 255, 255)


def test_large_16_bit_greyscale_is_rescaled_and_turned_by_its_exif():
    arr = np.zeros((1500, 3000), np.uint16)
    arr[:, 1500:] = 65535  # left black, right white (16 bits)
    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90 degrees clockwise: the left half ends on top
    out = decode_image(encode(Image.fromarray(arr), "PNG", exif=exif.tobytes()), SIZE, LIMIT)
    assert out[20, 112].max() < 10 and out[200, 112].min() > 245


def test_a_webp_has_a_quarter_of_the_pixel_limit_its_decoder_holds_four_copies():
    small = encode(Image.new("RGB", (2000, 1500), (0, 200, 0)), "WEBP", quality=50)
    large = encode(Image.new("RGB", (4000, 3200), (0, 200, 0)), "WEBP", quality=50)
    assert decode_image(small, SIZE, 12_000_000)[100, 100, 1] > 150  # 3 Mpx: under a quarter of 12 M
    with pytest.raises(DecodeError) as refused:
        decode_image(large, SIZE, 50_000_000)  # 12.8 Mpx: over a quarter of 50 M
    assert refused.value.reason == "decompression bomb" and "12,500,000 pixels" in refused.value.detail


def test_a_16_bit_photo_decodes_without_a_float_copy():
    """The 16-bit greyscale PNG the attack used (a few hundred KB, 16 Mpx here): the arrays decoding
    allocates stay under 4 bytes a pixel (float64 arrays and their temporaries were 8 bytes each)."""
    import tracemalloc

    side = 4000
    grad = (np.arange(side, dtype=np.uint32) * 65535 // (side - 1)).astype(np.uint16)
    data = encode(Image.fromarray(np.broadcast_to(grad, (side, side)).copy()), "PNG")
    tracemalloc.start()
    try:
        out = decode_image(data, SIZE, LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.shape == (224, 224, 3) and out[0, 0].max() < 5 and out[0, -1].min() > 250
    assert peak < 4 * side * side, f"{peak / side / side:.1f} bytes a pixel"


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
    assert info.value.reason == "corrupt"  # damaged, but its IEND chunk is there


def test_decompression_bomb_is_refused_before_decoding():
    bomb = encode(Image.new("1", (12_000, 12_000)), "PNG")  # 144 Mpx, a few kB on disk
    assert len(bomb) < 100_000
    with pytest.raises(DecodeError) as info:
        decode_image(bomb, SIZE, LIMIT)
    assert info.value.reason == "decompression bomb"


# --- Truncated versus corrupt versus not an image -------------------------------------------------


def photo() -> Image.Image:
    """A 200x150 gradient with noise: compresses like a photo, not like a flat square."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:150, 0:200]
    arr = np.stack([x * 255 // 199, y * 255 // 149, (x + y) % 256], axis=-1)
    arr = arr + rng.integers(-30, 30, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


ENCODINGS = {
    "jpeg": lambda: encode(photo(), "JPEG", quality=90),
    "progressive jpeg": lambda: encode(photo(), "JPEG", quality=90, progressive=True),
    "png": lambda: encode(photo(), "PNG"),
    "gif": lambda: encode(photo(), "GIF"),
    "webp": lambda: encode(photo(), "WEBP"),
    "bmp": lambda: encode(photo(), "BMP"),
}


def failure(data: bytes) -> DecodeError | None:
    """The DecodeError for `data`, or None when it decodes; checks the error's shape on the way."""
    try:
        decode_image(data, SIZE, LIMIT)
    except DecodeError as exc:
        assert exc.reason in DECODE_REASONS
        assert exc.detail and "\n" not in exc.detail and exc.detail == exc.detail.strip()
        assert not exc.detail.lower().startswith(exc.reason)
        assert str(exc) == f"{exc.reason}: {exc.detail}"
        return exc
    return None


# Bytes a cut file needs before it names its format: 'RIF' is also WAV or AVI, 'BM' also text.
SHORTEST_SIGNATURE = {"webp": 9, "bmp": 18}


def cuts(n: int) -> list[int]:
    return sorted({3, 10, 20, *(n * pct // 100 for pct in range(5, 100, 5)), n - 3, n - 2, n - 1})


@pytest.mark.parametrize("kind", list(ENCODINGS))
def test_every_cut_is_truncated(kind):
    full = ENCODINGS[kind]()
    assert failure(full) is None
    for cut in cuts(len(full)):
        if cut < SHORTEST_SIGNATURE.get(kind, 3):
            continue  # too short to tell from other files: see test_short_prefixes_are_not_an_image
        exc = failure(full[:cut])
        if exc is None:
            # Only a file missing just its last bytes (IEND's CRC, GIF's trailer) may decode whole.
            assert len(full) - cut <= 4, f"{kind} cut at {cut}/{len(full)} decoded"
        else:
            assert exc.reason == "truncated", f"{kind} cut at {cut}/{len(full)}: {exc}"


@pytest.mark.parametrize("kind", ["webp", "bmp"])
def test_short_prefixes_are_not_an_image(kind):
    full = ENCODINGS[kind]()
    for cut in range(1, SHORTEST_SIGNATURE[kind]):
        assert failure(full[:cut]).reason == "not an image"
    assert failure(full[: SHORTEST_SIGNATURE[kind]]).reason == "truncated"


def test_text_starting_with_bm_is_not_an_image():
    assert failure(b"BMW service history, 2019-2024\n" * 4).reason == "not an image"


@pytest.mark.parametrize("progressive", [False, True])
def test_garbage_in_jpeg_scan_data_is_never_truncated(progressive):
    full = encode(photo(), "JPEG", quality=90, progressive=progressive)
    scan = full.find(b"\xff\xda")
    outcomes = set()
    for seed in range(30):
        rng = np.random.default_rng(seed)
        data = bytearray(full)
        start, n = int(rng.integers(scan + 20, len(full) - 200)), int(rng.integers(1, 200))
        data[start : start + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        exc = failure(bytes(data))
        outcomes.add(exc.reason if exc else "decoded")
    assert outcomes <= {"corrupt", "decoded"}


@pytest.mark.parametrize("progressive", [False, True])
def test_damaged_but_complete_jpeg_is_corrupt(progressive):
    data = bytearray(encode(photo(), "JPEG", quality=90, progressive=progressive))
    table = data.find(b"\xff\xc4")  # first Huffman table: overwrite its code counts
    data[table + 5 : table + 21] = b"\xff" * 16
    assert failure(bytes(data)).reason == "corrupt"


def test_jpeg_cut_after_its_exif_thumbnail_is_truncated():
    # The thumbnail's own EOI sits inside APP1 and must not pass for the end of the photo.
    thumb = encode(photo().resize((40, 30)), "JPEG")
    app1 = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00" + thumb
    segment = b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1
    full = (lambda j: j[:2] + segment + j[2:])(encode(photo(), "JPEG", quality=90))
    assert failure(full) is None
    end_of_thumb = 2 + len(segment)
    for cut in (end_of_thumb - 2, end_of_thumb, end_of_thumb + 1, end_of_thumb + 30, len(full) // 2):
        assert failure(full[:cut]).reason == "truncated"


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes_are_not_an_image(seed):
    data = np.random.default_rng(seed).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    assert failure(data).reason == "not an image"


@pytest.mark.parametrize(
    "data",
    [b"\xff\xd8", b"GI", b"RIFF\x24\x00\x00\x00WAVEfmt ", b"BM", b"%PDF-1.7\n", b"<svg></svg>"],
)
def test_other_formats_and_two_byte_prefixes_are_not_an_image(data):
    assert failure(data).reason == "not an image"


def test_empty_file():
    exc = failure(b"")
    assert exc.reason == "empty" and exc.detail == "file has 0 bytes"


def test_decode_error_carries_reason_and_detail():
    exc = DecodeError("truncated", "JPEG stops after 10 bytes")
    assert (exc.reason, exc.detail) == ("truncated", "JPEG stops after 10 bytes")
    assert str(exc) == "truncated: JPEG stops after 10 bytes"
    copy = pickle.loads(pickle.dumps(exc))
    assert (copy.reason, copy.detail, str(copy)) == (exc.reason, exc.detail, str(exc))
    assert DECODE_REASONS == ("empty", "not an image", "truncated", "corrupt", "decompression bomb")
    with pytest.raises(ValueError):
        DecodeError("broken", "not a category")
