"""The largest image mtssl decodes (``--max-pixels``), checked from the file header before decoding.

A 280 KB PNG can declare 12000x12000 pixels at 16 bits; decoding it would take
gigabytes. Kept apart from the decoders (numpy, Pillow) so that commands can
show the default in their help without loading them.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator

from mtssl.data.errors import DataError

DEFAULT_MAX_PIXELS = 100_000_000
"""Largest image (width x height) decoded by default: 100 megapixels, ~10000x10000."""
_MAX_PIXELS: ContextVar[int] = ContextVar("mtssl_max_pixels", default=DEFAULT_MAX_PIXELS)


@contextmanager
def pixel_limit(max_pixels: int) -> Iterator[None]:
    """Refuse larger images (checked from the header, before decoding) inside this block (``--max-pixels``)."""
    if max_pixels < 1:
        raise ValueError(f"--max-pixels must be at least 1, got {max_pixels}")
    token = _MAX_PIXELS.set(int(max_pixels))
    try:
        yield
    finally:
        _MAX_PIXELS.reset(token)


def max_pixels() -> int:
    """The pixel limit in force (see :func:`pixel_limit`)."""
    return _MAX_PIXELS.get()


def check_pixels(path: str | Path, width: int, height: int) -> None:
    """A :class:`DataError` naming the file when ``width x height`` exceeds the limit in force."""
    limit = max_pixels()
    if width * height > limit:
        raise DataError(path, f"image is {width}x{height} = {width * height / 1e6:.1f} megapixels, above the limit "
                              f"of {limit / 1e6:g} megapixels (--max-pixels {limit}); not decoded")
