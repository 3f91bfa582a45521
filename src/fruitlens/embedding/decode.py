"""Decoding: image bytes -> RGB uint8 array at the backbone's input size, or a readable reason."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

# Never decode partially-written files silently: a truncated file is an error, not a grey image.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Pillow's own default is ~89 Mpx; a phone photo is 12-50 Mpx. Anything larger is treated as a
# decompression bomb and recorded as an error rather than decoded.
DEFAULT_MAX_PIXELS = 100_000_000

# Every DecodeError.reason is one of these.
DECODE_REASONS = ("empty", "not an image", "truncated", "corrupt", "decompression bomb")

# Known formats by their leading bytes: (format, ((offset, bytes), ...)), every part must match.
_SIGNATURES = (
    ("JPEG", ((0, b"\xff\xd8\xff"),)),
    ("PNG", ((0, b"\x89PNG\r\n\x1a\n"),)),
    ("GIF", ((0, b"GIF87a"),)),
    ("GIF", ((0, b"GIF89a"),)),
    ("WEBP", ((0, b"RIFF"), (8, b"WEBP"))),
    ("BMP", ((0, b"BM"),)),
)
# DIB header sizes a BMP may declare at byte 14, as the 4 bytes there (a cut field never matches).
_BMP_HEADER_SIZES = frozenset(n.to_bytes(4, "little") for n in (12, 16, 40, 52, 56, 64, 108, 124))
# Pillow's words for "the data stopped": trusted only where the format's own end cannot be checked.
_TRUNCATION_WORDS = ("truncated", "premature end", "broken data stream")
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # empty IEND chunk with its fixed CRC
_END_NAMES = {"JPEG": "EOI marker", "PNG": "IEND chunk", "GIF": "trailer"}


class DecodeError(Exception):
    """A file that cannot be used: `reason` is one of DECODE_REASONS, `detail` one line on why."""

    def __init__(self, reason: str, detail: str):
        if reason not in DECODE_REASONS:
            raise ValueError(f"unknown decode failure reason {reason!r}")
        super().__init__(reason, detail)  # both in args, so the error survives pickling
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


def decode_image(data: bytes, size: tuple[int, int], max_pixels: int, *, upscale: bool = True) -> np.ndarray:
    """Decode, apply EXIF orientation, flatten any pixel mode to RGB on white, resize to `size`.

    With `upscale=False`, an image no larger than `size` in either dimension keeps its own size:
    for a backbone that resizes inside its graph (half the decode cost of a 100x100 photo was
    Pillow's upscale to 224x224). Larger images are always brought down to `size` here, with
    Pillow's antialiasing (and libjpeg's draft scaling), which the graph's bilinear resize lacks.

    Returns a C-contiguous uint8 array (height, width, 3). Raises DecodeError with a reason of
    `empty`, `not an image`, `decompression bomb`, `truncated` or `corrupt`.
    """
    return fit(open_rgb(data, max_pixels, draft=size), size, upscale)


def open_rgb(data: bytes, max_pixels: int, draft: tuple[int, int] | None = None) -> Image.Image:
    """The photo decoded, turned as its EXIF orientation says, in RGB (transparency on white): the
    one way bytes become a picture here (photos, their views, photos kept as feedback). `draft`:
    the size the picture is for; a larger photo is brought down before any conversion, by
    libjpeg's draft mode for a JPEG (decoded at 1/2..1/8 scale) and by Pillow's integer `reduce`
    for the other formats, always keeping at least twice `draft` (as Pillow's `reducing_gap=2`),
    so the conversions below run on a small picture. Integer arithmetic throughout: no float
    copy of a photo at any size. Raises DecodeError (`empty`, `not an image`, `decompression
    bomb`, `truncated`, `corrupt`)."""
    if not data:
        raise DecodeError("empty", "file has 0 bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            img: Image.Image = Image.open(io.BytesIO(data))
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a property of the file
            raise _failure(data, exc, max_pixels) from None
        try:
            if img.width * img.height > max_pixels:
                raise DecodeError("decompression bomb", f"{img.width}x{img.height} exceeds {max_pixels:,} pixels")
            copies = _DECODER_COPIES.get(img.format or "", 1)
            if img.width * img.height * copies > max_pixels:
                raise DecodeError(
                    "decompression bomb",
                    f"{img.format} of {img.width}x{img.height} exceeds {max_pixels // copies:,} pixels "
                    f"(1/{copies} of the limit: its decoder holds {copies} copies of the picture)",
                )
            if draft is not None and img.format == "JPEG":
                img.draft("RGB", draft)
            img.load()
            turn = _ORIENTATIONS.get(img.getexif().get(ExifTags.Base.Orientation, 1))
            if draft is not None:
                img = _reduced(img, draft)
            if turn is not None:  # after the reduction: the turned copy is the small picture's
                img = img.transpose(turn)
            return to_rgb(img)
        except DecodeError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _failure(data, exc, max_pixels) from None


# Formats whose decoder holds several whole copies of the picture (Pillow's WebP goes through
# libwebp's animation decoder: its two canvases, the bytes it hands over, the image; ~760 MB at
# 50 Mpx against ~200 MB for a PNG): their pixel limit is the limit divided by that many, so a
# WebP costs no more than a PNG at the limit (12.5 Mpx by default: a 12 Mpx phone photo passes).
_DECODER_COPIES = {"WEBP": 4}
# EXIF orientation -> the transposition that shows the picture upright (as ImageOps.exif_transpose).
_ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Modes Pillow's `reduce` averages (a palette's indices cannot be averaged; 16-bit greyscale is
# brought to 8 bits first).
_REDUCIBLE = ("L", "LA", "La", "I", "F", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")


_STRIP_ROWS = 256


def _reduced(img: Image.Image, draft: tuple[int, int]) -> Image.Image:
    """`img` brought down by an integer factor (box average; nearest pixel for a palette, which
    would otherwise be converted to RGBA at full size: 4 bytes a pixel) while it still covers twice
    `draft` (the orientation may swap width and height, so the smaller side is compared to the
    larger draft side); unchanged when that factor is below 2."""
    need = 2 * max(draft)
    factor = min(img.width, img.height) // need
    if factor < 2:
        return img
    if img.mode.startswith("I;16"):
        img = _grey8(img)  # 2 bytes a pixel -> 1, in place of a 4-byte "I" copy
    if img.mode not in _REDUCIBLE:  # a palette's indices (or 1-bit) cannot be averaged: every factor-th pixel
        return img.resize((img.width // factor, img.height // factor), Image.Resampling.NEAREST)
    return img.reduce(factor)


def fit(img: Image.Image, size: tuple[int, int], upscale: bool = True) -> np.ndarray:
    """An RGB picture as the backbone's input pixels: brought down to `size` by Pillow (bilinear);
    one no larger than `size` keeps its own size when `upscale` is False (the backbone resizes in
    its graph)."""
    if img.size != size and (upscale or img.width > size[0] or img.height > size[1]):
        img = img.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB, by Pillow's own conversions and integer arithmetic (no float copy).
    Transparency is composited on white (the Fruits-360 background); 16/32-bit greyscale is
    rescaled to 8 bits rather than clipped."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        return _grey8(img).convert("RGB")
    if mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float32))  # only TIFF has it: not an upload format
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
        grey = ((arr - lo) * (255.0 / ((hi - lo) or 1.0))).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode in ("P", "PA"):
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = img if mode == "RGBA" else img.convert("RGBA")
        on_white = Image.new("RGB", rgba.size, (255, 255, 255))
        on_white.paste(rgba, mask=rgba.getchannel("A"))  # integer alpha blending, in place
        return on_white
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def _grey8(img: Image.Image) -> Image.Image:
    """16-bit ("I;16*") or 32-bit ("I") greyscale -> 8-bit "L", rescaled rather than clipped: the
    top 8 bits of a 16-bit sample (x >> 8, what 16 -> 8-bit tools do), a 32-bit one by 65535 or 255
    (whichever its largest value needs), in integers; one 1-byte copy of the picture at most
    besides the decoded one."""
    if img.mode.startswith("I;16"):
        grey = np.empty((img.height, img.width), np.uint8)
        for top in range(0, img.height, _STRIP_ROWS):  # by strips: no 2-byte copy of the whole picture
            strip = np.asarray(img.crop((0, top, img.width, min(img.height, top + _STRIP_ROWS))))
            grey[top : top + len(strip)] = strip >> 8
        return Image.fromarray(grey, "L")
    arr = np.asarray(img, dtype=np.int32)
    top = 65535 if arr.max(initial=0) > 255 else 255
    grey = ((np.clip(arr, 0, top).astype(np.int64) * 255 + top // 2) // top).astype(np.uint8)
    return Image.fromarray(grey, "L")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _failure(data: bytes, exc: BaseException, max_pixels: int) -> DecodeError:
    """One classification for failures at open (header) and at load (pixels).

    A file with a known signature is `truncated` when it stops before its format's end (EOI,
    IEND, trailer, declared length) and `corrupt` when that end is there; where the end cannot be
    checked, Pillow's message decides. `not an image` is only for unknown bytes Pillow rejects.
    """
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return DecodeError("decompression bomb", f"more than {max_pixels:,} pixels")
    fmt = _sniff(data)
    # Pillow claims anything starting with 'BM'; without a plausible header that is not a bitmap.
    if fmt is None and (isinstance(exc, UnidentifiedImageError) or data.startswith(b"BM")):
        return DecodeError("not an image", "format not recognised")
    message = "header not readable" if isinstance(exc, UnidentifiedImageError) else _describe(exc)
    complete = _has_end(fmt, data) if fmt else None
    if fmt and complete is False:  # (complete is None without fmt)
        end = _END_NAMES.get(fmt, "declared length")
        return DecodeError("truncated", f"{fmt} stops after {len(data):,} bytes, before its {end}; {message}")
    prefix = f"{fmt}: " if fmt else ""
    if complete is None and any(word in message.lower() for word in _TRUNCATION_WORDS):
        return DecodeError("truncated", prefix + message)
    return DecodeError("corrupt", prefix + message)


def image_format(data: bytes) -> str | None:
    """JPEG, PNG, GIF, WEBP or BMP by the leading bytes (also when cut short), else None."""
    return _sniff(data)


def _sniff(data: bytes) -> str | None:
    """The format whose signature `data` starts with, or would if it were not cut within it."""
    head = data[:18]
    for fmt, parts in _SIGNATURES:
        have = [head[offset : offset + len(sig)] for offset, sig in parts]
        if not all(have) or any(got != sig[: len(got)] for got, (_, sig) in zip(have, parts)):
            continue  # a part is missing ('RIFF' alone is also WAV, AVI) or differs
        if sum(map(len, have)) < min(3, sum(len(sig) for _, sig in parts)):
            continue  # a cut signature counts from 3 bytes on
        if fmt == "BMP" and head[14:18] not in _BMP_HEADER_SIZES:
            continue  # 'BM' alone is too weak: require a DIB header size too
        return fmt
    return None


def _has_end(fmt: str, data: bytes) -> bool | None:
    """Whether `data` reaches its format's end: True, False (cut short), None (cannot tell)."""
    if fmt == "JPEG":
        return _jpeg_has_end(data)
    if fmt == "PNG":
        return _PNG_IEND in data
    if fmt == "GIF":
        return _gif_has_end(data)
    if fmt == "WEBP":
        return len(data) >= 12 and len(data) >= 8 + int.from_bytes(data[4:8], "little")
    if fmt == "BMP":
        declared = int.from_bytes(data[2:6], "little")  # some writers leave it 0
        offset = int.from_bytes(data[10:14], "little")
        if len(data) < max(offset, declared):
            return False
        return True if declared > offset else None
    return None


def _jpeg_has_end(data: bytes) -> bool | None:
    """Walk the header segments by their lengths to the first scan, then look for EOI after it.

    Entropy-coded data never holds FF D9 (FF is stuffed), so EOI after the scan start is the end;
    EOIs of EXIF thumbnails sit inside APP segments and are skipped with them.
    """
    pos = 2
    while True:
        if pos + 4 > len(data):
            return False  # the header itself is cut
        if data[pos] != 0xFF:
            return None  # not a marker where one must be: damaged header, cannot tell
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1  # fill byte
        elif marker == 0xD9:
            return True
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:
            pos += 2  # markers without a length
        elif marker == 0xDA:
            return data.find(b"\xff\xd9", pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")) >= 0
        else:
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")


def _gif_has_end(data: bytes) -> bool | None:
    """Walk GIF blocks (sub-blocks are length-prefixed) to the 0x3B trailer."""
    if len(data) < 13:
        return False

    def after_palette(pos: int, flags: int) -> int:
        return pos + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)

    pos = after_palette(13, data[10])
    while pos < len(data):
        block = data[pos]
        if block == 0x3B:
            return True
        if block == 0x21:
            pos += 2  # introducer and label
        elif block == 0x2C:
            if pos + 10 > len(data):
                return False
            pos = after_palette(pos + 10, data[pos + 9]) + 1  # descriptor, palette, LZW code size
        else:
            return None  # not a block: damaged, cannot tell
        while pos < len(data) and data[pos]:
            pos += data[pos] + 1
        pos += 1  # the zero-length terminator
    return False
