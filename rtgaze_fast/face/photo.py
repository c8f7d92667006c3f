"""Reading and writing photos as they come: EXIF orientation, any Pillow mode, refusals with a message."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import UserError

MAX_PIXELS = 40_000_000  # refuse larger images (decompression bombs) before decoding them


class PhotoError(UserError):
    """A photo that cannot be read (missing, not an image, truncated, too large)."""


@dataclass
class Photo:
    """``rgb`` (H, W, 3) uint8 after EXIF orientation; ``alpha`` (H, W) uint8 when the file had
    transparency (put back on save); ``mode`` the file's Pillow mode."""
    rgb: np.ndarray
    alpha: Optional[np.ndarray]
    mode: str


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Integer or float samples of any depth -> uint8 (16-bit data scaled, not clipped)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        hi = 1.0 if float(np.nanmax(arr, initial=0)) <= 1.0 else 255.0
        return np.clip(np.nan_to_num(arr) / hi * 255 + 0.5, 0, 255).astype(np.uint8)
    hi = 65535 if int(arr.max(initial=0)) > 255 or arr.dtype in (np.uint16, np.int32, np.uint32) else 255
    return np.clip(arr.astype(np.float64) / hi * 255 + 0.5, 0, 255).astype(np.uint8)


def load_photo(path: str) -> Photo:
    """Read an image file as RGB uint8 with its EXIF orientation applied (any mode Pillow opens:
    L, P, RGBA, CMYK, 16-bit, 1-bit...); a one-line ``PhotoError`` otherwise."""
    from PIL import Image, ImageOps
    if not os.path.isfile(path):
        raise PhotoError(f"image {path!r} does not exist")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:
                raise PhotoError(f"image {path!r} is {img.width}x{img.height}, over the {MAX_PIXELS} pixel limit")
            img.load()
            mode = img.mode
            img = ImageOps.exif_transpose(img)
            alpha = None
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                alpha = np.asarray(rgba)[..., 3].copy()
                rgb = np.asarray(rgba.convert("RGB")).copy()
            elif mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
                grey = _to_uint8(np.asarray(img))
                rgb = np.repeat(grey[..., None], 3, axis=2)
            else:
                rgb = np.asarray(img.convert("RGB")).copy()
    except PhotoError:
        raise
    except Image.DecompressionBombError as e:
        raise PhotoError(f"image {path!r} refused as a decompression bomb: {e}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # not an image, truncated, corrupt
        raise PhotoError(f"cannot read image {path!r}: {e}") from None
    return Photo(np.ascontiguousarray(rgb), alpha, mode)


def save_photo(rgb: np.ndarray, path: str, alpha: Optional[np.ndarray] = None) -> None:
    """Write RGB uint8 (with ``alpha`` where the format keeps it); JPEG at quality 95."""
    from PIL import Image
    img = Image.fromarray(np.ascontiguousarray(rgb))
    ext = os.path.splitext(path)[1].lower()
    if alpha is not None and ext in (".png", ".webp", ".tif", ".tiff"):
        img = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise PhotoError(f"output folder {folder!r} does not exist")
    try:
        img.save(path, **({"quality": 95} if ext in (".jpg", ".jpeg") else {}))
    except (OSError, ValueError, KeyError) as e:
        raise PhotoError(f"cannot write {path!r}: {e}") from None
