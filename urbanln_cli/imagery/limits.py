"""Image size limits: measuring an image from its header before decoding it, and refusing one that is too large."""

from __future__ import annotations

import contextlib
import io
import threading
import warnings
from collections.abc import Iterator
from typing import Any

from urbanln_cli.errors import InputError, UsageProblem

# Image size limits. Every image urbanln decodes whole (a picture in a folder, a tile of a tiles
# artifact in embed, caption, fuse, segment, evaluate) is measured from its header first, and one
# over the limit is never decoded; raster windows are bounded by --size² instead. The default is
# Pillow's own warning threshold, about 9459 x 9459 pixels (some 270 MB as RGB).
DEFAULT_MAX_PIXELS = 89_478_485
MAX_PIXELS_CEILING = 1 << 31  # the most --max-pixels accepts: 46341² px, 6.4 GB as RGB
_PIL_LOCK = threading.Lock()


class ImageTooLarge(ValueError):
    """An image whose header says it has more pixels than the limit (never decoded).

    A ValueError, so code that treats undecodable images as bad ones treats these the same.
    """

    def __init__(self, width: int, height: int, limit: int, what: str = "the image", message: str | None = None):
        self.width, self.height, self.limit = width, height, limit
        super().__init__(
            message or f"{what} is {width}×{height} px ({width * height:,} pixels), over the limit of {limit:,} pixels"
        )


OVERSIZE_HINT = (
    "re-create the tiles with `urbanln tile` (it skips images over --max-pixels), or with a higher "
    "--max-pixels to keep them"
)


def decode_tile(data: bytes, max_pixels: int | None, name: str):
    """A tile's image as RGB, or an InputError naming the tile (oversize: never decoded; garbage: what PIL said)."""
    from urbanln_cli.redact import plain_error

    try:
        with open_image(data, max_pixels, f"{name}: its image") as img:
            return img.convert("RGB")
    except ImageTooLarge as exc:
        raise InputError(str(exc), hint=OVERSIZE_HINT) from None
    except (OSError, ValueError) as exc:  # PIL raises UnidentifiedImageError (an OSError) for garbage
        raise InputError(
            f"{name}: cannot decode its image ({plain_error(exc)})", hint="re-create the tiles with `urbanln tile`"
        ) from None


def check_max_pixels(value: int, option: str = "--max-pixels") -> int:
    """A usage error unless ``value`` is a whole number of pixels between 1 and ``MAX_PIXELS_CEILING``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PIXELS_CEILING:
        raise UsageProblem(
            f"{option} {value} must be a number of pixels between 1 and {MAX_PIXELS_CEILING}",
            hint=f"the default is {DEFAULT_MAX_PIXELS} (about 9459² px); raise it for larger single images",
        )
    return value


def max_pixels_of(manifest: dict[str, Any] | None) -> int:
    """The limit for decoding a tiles artifact's images: the one it was made with, never below the default."""
    value = manifest.get("max_pixels") if isinstance(manifest, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PIXELS_CEILING:
        return DEFAULT_MAX_PIXELS
    return max(value, DEFAULT_MAX_PIXELS)


def check_pixels(width: int, height: int, max_pixels: int | None = None, what: str = "the image") -> None:
    """Raise ``ImageTooLarge`` when a ``width``×``height`` image is over the limit."""
    limit = max_pixels or DEFAULT_MAX_PIXELS
    if int(width) * int(height) > limit:
        raise ImageTooLarge(int(width), int(height), limit, what)


@contextlib.contextmanager
def open_image(data: bytes, max_pixels: int | None = None, what: str = "the image") -> Iterator[Any]:
    """A PIL image from encoded bytes, opened after its header size is checked against the limit.

    Use as ``with open_image(raw, limit) as img: rgb = img.convert("RGB")``; the decode inside the
    block runs with Pillow's DecompressionBombWarning silenced (the limit here replaces it) and a
    DecompressionBombError there (a GIF frame or TIFF tile larger than the header said) becomes
    ``ImageTooLarge``. Pillow's own errors for undecodable bytes (OSError, ValueError) pass through.
    """
    from PIL import Image, UnidentifiedImageError

    limit = max_pixels or DEFAULT_MAX_PIXELS
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit  # a limit raised on purpose: Pillow's later checks (crops, frames) follow it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with _PIL_LOCK:  # the header only, without Pillow's check, so an image of any size reports its size
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                img = Image.open(io.BytesIO(data))
            except UnidentifiedImageError:  # Pillow's message names the BytesIO object by its memory address
                raise UnidentifiedImageError("cannot identify image file (not an image format Pillow reads)") from None
            finally:
                Image.MAX_IMAGE_PIXELS = saved
        with img:
            check_pixels(*img.size, limit, what)
            try:
                yield img
            except Image.DecompressionBombError:
                raise ImageTooLarge(
                    *img.size, limit, what, f"{what} holds a frame or tile larger than the limit of {limit:,} pixels"
                ) from None
