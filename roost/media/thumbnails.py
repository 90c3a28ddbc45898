"""Thumbnails with Pillow: crop or scale to a configured size, in a thread.

Decoding is the costly and the dangerous part: the size in an image's header
is checked before a single pixel is decoded, so a decompression bomb (a tiny
file claiming gigapixels) is refused without the memory it asks for. Pillow's
own bomb guard is set to the same limit as a second line.

`crop` fills exactly width x height and cuts what overflows, centred;
`scale` fits inside width x height, keeping the aspect ratio. Neither makes an
image larger. An animated GIF or WebP stays animated when the caller asks for
it (every frame resized, durations and looping kept); otherwise the first
frame is used. JPEG sources give JPEG thumbnails, everything else PNG (or the
animated format).

Pillow is imported where a thumbnail is first made (`pillow()`), not at start:
it is 2.3 MiB of resident memory that a server which never thumbnails would
carry for nothing (bench/memory.py's RSS target).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from PIL import Image

# Formats we thumbnail (by media type), and what Pillow calls them.
THUMBNAILABLE = {
    "image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF", "image/webp": "WEBP",
    "image/apng": "PNG",
}
ANIMATED_OUT = {"GIF": ("GIF", "image/gif"), "WEBP": ("WEBP", "image/webp"),
                "PNG": ("PNG", "image/png")}
_MAX_FRAMES = 300


class ThumbnailError(Exception):
    """The image cannot be thumbnailed (not an image, too large, corrupt)."""


@dataclass(frozen=True)
class Size:
    width: int
    height: int
    method: str  # "crop" or "scale"


def choose_size(sizes: list[Size], width: int, height: int, method: str) -> Size | None:
    """The configured size to serve for a request: the smallest of the method asked for
    that is at least as large as asked, else the largest of that method (any method when
    none is configured for it)."""
    same = [s for s in sizes if s.method == method] or sizes
    if not same:
        return None
    big_enough = [s for s in same if s.width >= width and s.height >= height]
    if big_enough:
        return min(big_enough, key=lambda s: s.width * s.height)
    return max(same, key=lambda s: s.width * s.height)


def thumbnail_name(size: Size, animated: bool) -> str:
    return f"{size.width}x{size.height}-{size.method}" + ("-animated" if animated else "")


def make_thumbnail(source: BinaryIO, size: Size, animated: bool, max_pixels: int
                   ) -> tuple[bytes, str, bool]:
    """(thumbnail bytes, its media type, whether it is animated). Blocking: run in a thread."""
    Image = pillow()
    try:
        with Image.open(source) as image:
            width, height = image.size
            if width < 1 or height < 1 or width * height > max_pixels:
                raise ThumbnailError(f"image of {width}x{height} pixels is too large")
            fmt = image.format or ""
            frames = getattr(image, "n_frames", 1)
            if animated and frames > 1 and fmt in ANIMATED_OUT:
                if frames * width * height > max_pixels * 4 or frames > _MAX_FRAMES:
                    raise ThumbnailError("animation has too many frames")
                return _animated(image, size, fmt)
            return _still(image, size, fmt)
    except ThumbnailError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ThumbnailError(f"image is too large: {e}") from None
    except MemoryError:
        raise
    except Exception as e:  # Pillow's decoders raise many kinds on corrupt input
        raise ThumbnailError(f"cannot read image: {e}") from None


def _target(width: int, height: int, size: Size) -> tuple[int, int]:
    """The dimensions of the thumbnail for an image of width x height."""
    if size.method == "crop":
        return min(size.width, width), min(size.height, height)
    ratio = min(size.width / width, size.height / height, 1.0)
    return max(1, round(width * ratio)), max(1, round(height * ratio))


def _resize(frame: Image.Image, size: Size) -> Image.Image:
    from PIL import Image, ImageOps

    target = _target(frame.width, frame.height, size)
    if size.method == "crop":
        return ImageOps.fit(frame, target, Image.Resampling.LANCZOS)
    return frame.resize(target, Image.Resampling.LANCZOS)


def _still(image: Image.Image, size: Size, fmt: str) -> tuple[bytes, str, bool]:
    from PIL import ImageOps

    image.seek(0)
    if fmt == "JPEG":
        frame = ImageOps.exif_transpose(image).convert("RGB")
        out_fmt, media_type = "JPEG", "image/jpeg"
    else:
        frame = image.convert("RGBA" if _has_alpha(image) else "RGB")
        out_fmt, media_type = "PNG", "image/png"
    buf = io.BytesIO()
    _resize(frame, size).save(buf, out_fmt, **({"quality": 85} if out_fmt == "JPEG" else {}))
    return buf.getvalue(), media_type, False


def _animated(image: Image.Image, size: Size, fmt: str) -> tuple[bytes, str, bool]:
    from PIL import ImageSequence

    out_fmt, media_type = ANIMATED_OUT[fmt]
    frames, durations = [], []
    for frame in ImageSequence.Iterator(image):
        durations.append(frame.info.get("duration", 100))
        frames.append(_resize(frame.convert("RGBA"), size))
    buf = io.BytesIO()
    frames[0].save(buf, out_fmt, save_all=True, append_images=frames[1:], duration=durations,
                   loop=image.info.get("loop", 0), disposal=2)
    return buf.getvalue(), media_type, True


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info


_max_image_pixels: list[int] = []  # what configure_pillow was given, applied by pillow()


def configure_pillow(max_pixels: int) -> None:
    """Pillow's own guard: refuse (not just warn) past twice our limit. Applied when
    Pillow is first used (`pillow()`)."""
    _max_image_pixels[:] = [max_pixels]


def pillow() -> ModuleType:
    """PIL.Image with the configured guard, imported on first use. Every use of Pillow
    in roost goes through here so that the guard is set before any image is opened."""
    from PIL import Image

    if _max_image_pixels:
        Image.MAX_IMAGE_PIXELS = _max_image_pixels[0]
    return Image
