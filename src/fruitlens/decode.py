"""Decoding: image bytes -> RGB uint8 array at the backbone's input size, or a readable reason."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Never decode partially-written files silently: a truncated file is an error, not a grey image.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class DecodeError(Exception):
    """A file that cannot be used. `reason` is a short category, the message says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def decode_image(data: bytes, size: tuple[int, int], max_pixels: int) -> np.ndarray:
    """Decode, apply EXIF orientation, flatten any pixel mode to RGB on white, resize to `size`.

    Returns a C-contiguous uint8 array (height, width, 3). Raises DecodeError with a reason of
    `empty`, `not an image`, `decompression bomb`, `truncated` or `corrupt`.
    """
    if not data:
        raise DecodeError("empty", "file has 0 bytes")
    width, height = size
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise DecodeError("not an image", "format not recognised") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise DecodeError("decompression bomb", f"more than {max_pixels:,} pixels") from None
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a property of the file
            raise DecodeError("corrupt", _describe(exc)) from None
        try:
            if img.width * img.height > max_pixels:
                raise DecodeError(
                    "decompression bomb", f"{img.width}x{img.height} exceeds {max_pixels:,} pixels"
                )
            if img.format == "JPEG":
                # Let libjpeg scale down by 1/2..1/8 while decoding large photos: much faster.
                img.draft("RGB", (width, height))
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = to_rgb(img)
            if rgb.size != (width, height):
                rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
        except DecodeError:
            raise
        except (OSError, SyntaxError, ValueError) as exc:
            message = _describe(exc)
            if "truncated" in message.lower() or "premature end" in message.lower():
                raise DecodeError("truncated", message) from None
            raise DecodeError("corrupt", message) from None
        except Exception as exc:  # noqa: BLE001
            raise DecodeError("corrupt", _describe(exc)) from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB. Transparency is composited on white (the Fruits-360 background),
    16/32-bit greyscale is rescaled to 8 bits rather than clipped."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        grey = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
        grey = ((arr - lo) / ((hi - lo) or 1.0) * 255.0).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
