"""Reading image and mask files, and normalising any decoded array to 8-bit grayscale at the training size."""
from __future__ import annotations

import errno
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mtssl.data.errors import DataError
from mtssl.data.pixel_limit import check_pixels, max_pixels

STRIP_PIXELS = 1 << 18
"""Large images are converted this many pixels at a time, so that float temporaries stay small: a
9500x9500 16-bit scan peaks at a few bytes per pixel instead of ~26 (float64 copies of the whole image)."""


def row_strips(height: int, width: int) -> list[slice]:
    """Row ranges of about :data:`STRIP_PIXELS` pixels each."""
    rows = max(1, STRIP_PIXELS // max(width, 1))
    return [slice(start, min(start + rows, height)) for start in range(0, height, rows)]


def _plane(part: np.ndarray) -> np.ndarray:
    """HxW or HxWxC (alpha already dropped) -> HxW: the channel mean, or the only channel."""
    if part.ndim == 2:
        return part
    return part.mean(axis=2) if part.shape[2] > 1 else part[..., 0]


def to_gray_uint8(image: np.ndarray) -> np.ndarray:
    """HxW or HxWxC, 8- or 16-bit or float -> HxW uint8 (RGB averaged, alpha dropped, full range kept).

    Integer images above 255 are stretched from their minimum to their maximum; floats up to 1 are
    scaled by 255. Large images are converted in row strips (:func:`row_strips`), with the same result.
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] in (2, 4):  # drop alpha
        array = array[..., :-1]
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise ValueError(f"expected a 2-D image or HxWxC, got shape {np.asarray(image).shape}")
    if array.dtype == np.uint8 and array.ndim == 2:
        return array
    strips = row_strips(*array.shape[:2])
    out = np.empty(array.shape[:2], np.uint8)
    if array.dtype == np.uint8 and array.shape[2] == 3:  # fast exact path: rint(sum / 3) == (sum + 1) // 3
        for rows in strips:
            part = array[rows]
            total = part[..., 0].astype(np.uint16) + part[..., 1] + part[..., 2]
            out[rows] = (total + 1) // 3
        return out
    lo, hi = np.inf, -np.inf  # of the grey plane; np.minimum/np.maximum let a NaN through, as min()/max() do
    for rows in strips:
        plane = _plane(array[rows])
        lo, hi = np.minimum(lo, plane.min()), np.maximum(hi, plane.max())
    lo, hi = float(lo), float(hi)
    stretch = np.issubdtype(array.dtype, np.integer) and hi > 255
    for rows in strips:
        part = _plane(array[rows]).astype(np.float64)
        if stretch:
            part = (part - lo) / max(hi - lo, 1) * 255
        elif hi <= 1.0:
            part = part * 255
        out[rows] = np.clip(np.rint(part), 0, 255)
    return out


def to_channels_uint8(image: np.ndarray, channels: int) -> np.ndarray:
    """Any decoded image -> ``[channels, H, W]`` uint8.

    One channel is the grayscale of :func:`to_gray_uint8`. Several channels
    keep the image's own channels (alpha dropped; a grayscale image is
    repeated), each scaled like :func:`to_gray_uint8` scales one.
    """
    if channels == 1:
        return to_gray_uint8(image)[None]
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] in (2, 4):
        array = array[..., :-1]
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(f"expected a 2-D image or HxWxC, got shape {np.asarray(image).shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, channels, axis=2)
    if array.shape[2] != channels:
        raise ValueError(f"image has {array.shape[2]} channels; the task reads {channels}")
    if array.dtype != np.uint8:
        array = np.stack([to_gray_uint8(array[..., c]) for c in range(channels)], axis=2)
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def resize_channels(image: np.ndarray, size: int) -> np.ndarray:
    """``[C, H, W]`` uint8 -> ``[C, size, size]`` with :func:`resize_image` per channel."""
    return np.stack([resize_image(plane, size) for plane in image])


def resize_map(plane: np.ndarray, size: int, resample: str) -> np.ndarray:
    """Resize one target plane (any numeric dtype) to ``size`` x ``size``, nearest or bilinear."""
    if plane.shape == (size, size):
        return plane
    method = Image.Resampling.NEAREST if resample == "nearest" else Image.Resampling.BILINEAR
    resized = Image.fromarray(np.asarray(plane, np.float32), mode="F").resize((size, size), method)
    return np.asarray(resized)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Square resize of a uint8 grayscale image with area-aware (bilinear/box) filtering."""
    if image.shape == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0))


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour square resize of a mask, binarised to {0, 1}."""
    binary = (np.asarray(mask) > 0).astype(np.uint8)
    if binary.ndim == 3:
        binary = binary.max(axis=2)
    if binary.shape == (size, size):
        return binary
    return np.asarray(Image.fromarray(binary * 255).resize((size, size), Image.Resampling.NEAREST)) // 255


# -- reading files -------------------------------------------------------------

DICOM_SUFFIXES = {".dcm", ".dicom"}
MASK_CLEAN_SHARE = 0.95
"""At least this share of a mask's pixels must sit near its darkest or brightest value."""
MASK_NEAR = 0.10
"""'Near' means within this fraction of the mask's value range."""


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with open(path, "rb") as handle:
        head = handle.read(132)
    return head[128:132] == b"DICM"


def _read_dicom(path: Path) -> np.ndarray:
    try:
        import pydicom
    except ImportError:
        raise DataError(path, "is a DICOM file, but pydicom is not installed "
                              "(pip install 'mtssl[dicom]' or pip install pydicom)") from None
    try:
        dataset = pydicom.dcmread(str(path))
        check_pixels(path, int(getattr(dataset, "Columns", 0)), int(getattr(dataset, "Rows", 0)))
        pixels = np.asarray(dataset.pixel_array)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds
        raise DataError(path, f"cannot decode DICOM ({type(exc).__name__}: {exc})") from exc
    if pixels.ndim == 3 and pixels.shape[-1] not in (3, 4):
        pixels = pixels[0]  # multi-frame: first frame
    if getattr(dataset, "PhotometricInterpretation", "") == "MONOCHROME1":
        pixels = pixels.max() - pixels  # stored inverted: make bone bright
    return pixels


def _pil_to_array(image: Image.Image) -> np.ndarray:
    """Keep bit depth and channels; expand palettes and exotic modes to L/RGB(A)."""
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    elif mode == "1":
        image = image.convert("L")
    elif mode in {"CMYK", "YCbCr", "LAB", "HSV"}:
        image = image.convert("RGB")
    return image_rows(image)


def image_rows(image: Image.Image) -> np.ndarray:
    """``np.asarray(image)`` in native byte order, copied a strip of rows at a time for large images
    (``tobytes`` of the whole image would hold it twice over)."""
    width, height = image.size
    strips = row_strips(height, width)
    if len(strips) <= 1:
        array = np.asarray(image)
        return array.astype(array.dtype.newbyteorder("=")) if array.dtype.byteorder == ">" else array
    first = np.asarray(image.crop((0, strips[0].start, width, strips[0].stop)))
    out = np.empty((height, *first.shape[1:]), first.dtype.newbyteorder("="))
    out[strips[0]] = first
    for rows in strips[1:]:
        out[rows] = np.asarray(image.crop((0, rows.start, width, rows.stop)))
    return out


def _allow_pillow(limit: int) -> None:
    """Let Pillow open what ``limit`` allows: its own bomb check stops at 2x ``MAX_IMAGE_PIXELS``."""
    if Image.MAX_IMAGE_PIXELS is not None and limit >= 2 * Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit // 2 + 1


def not_a_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file (missing, a broken or looping link, a FIFO), or None.

    Checked before opening: opening a FIFO would wait for a writer forever.
    """
    try:
        kind = os.stat(path).st_mode
    except FileNotFoundError:
        return f"broken symbolic link (to {os.readlink(path)})" if path.is_symlink() else "file not found"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
        return f"cannot read ({exc.strerror or exc})"
    if stat.S_ISREG(kind):
        return None
    if stat.S_ISDIR(kind):
        return "is a folder, not an image file"
    if stat.S_ISFIFO(kind):
        return "is a named pipe (FIFO), not an image file"
    return "is not a regular file (a device or socket)"


def read_image(path: str | Path) -> np.ndarray:
    """Decode PNG/JPEG/TIFF/BMP/GIF (Pillow) or DICOM (pydicom) keeping depth and channels.

    Any failure (missing, truncated, not an image, more pixels than :func:`max_pixels`) becomes a
    :class:`DataError` naming the file; the pixel count is read from the header, before decoding.
    """
    path = Path(path)
    if problem := not_a_file(path):
        raise DataError(path, problem)
    try:
        if _is_dicom(path):
            return _read_dicom(path)
        with warnings.catch_warnings():  # mtssl applies its own limit (max_pixels) below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            _allow_pillow(max_pixels())
            with Image.open(path) as image:  # reads the header only
                check_pixels(path, *image.size)
                image.load()
                return _pil_to_array(image)
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(path, "cannot decode image (not a recognised image format)") from None
    except Image.DecompressionBombError as exc:
        raise DataError(path, f"image too large to decode ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(path, f"cannot decode image ({type(exc).__name__}: {exc})") from exc


def binarize_mask(mask: np.ndarray, path: str | Path) -> np.ndarray:
    """Any-depth mask -> HxW uint8 {0, 1}; refuse masks that are not two-valued.

    Rule: colour masks are reduced to their brightest channel (alpha ignored).
    A mask with one value is all background when 0, else all foreground. A
    mask with several values is accepted when at least 95% of its pixels lie
    within 10% of the value range from its minimum or maximum (clean 0/1,
    0/255 or 0/k masks, anti-aliased or JPEG-softened edges), and is then
    thresholded halfway between minimum and maximum. Anything else (a label
    map with several classes, a grayscale image given as a mask) is a
    :class:`DataError`.
    """
    array = np.asarray(mask)
    if array.ndim == 3:
        colour = array[..., :-1] if array.shape[2] in (2, 4) else array
        array = colour.max(axis=2)
    if array.ndim != 2:
        raise DataError(path, f"mask has shape {np.asarray(mask).shape}; expected HxW or HxWxC")
    if array.dtype == bool:
        return array.astype(np.uint8)
    values = array.astype(np.float64) if array.dtype != np.uint8 else array
    lo, hi = values.min(), values.max()
    if lo == hi:
        return np.full(array.shape, 1 if hi > 0 else 0, np.uint8)
    near = MASK_NEAR * (float(hi) - float(lo))
    clean = np.mean((values <= lo + near) | (values >= hi - near))
    if clean < MASK_CLEAN_SHARE:
        distinct = len(np.unique(array))
        raise DataError(path, f"mask is not binary: {distinct} distinct values, {1 - clean:.0%} of pixels between "
                              f"{lo:g} and {hi:g} (at most {1 - MASK_CLEAN_SHARE:.0%} may be, e.g. soft edges)")
    return (values > (float(lo) + float(hi)) / 2).astype(np.uint8)


def read_mask(path: str | Path) -> np.ndarray:
    """Decode and binarise a mask file (see :func:`binarize_mask` for the rule)."""
    return binarize_mask(read_image(path), path)


def check_mask_size(image: np.ndarray, mask: np.ndarray, image_path: str | Path, mask_path: str | Path = "") -> None:
    """Masks must match their image pixel for pixel; a different size means a wrong pairing."""
    if image.shape[:2] != mask.shape[:2]:
        (ih, iw), (mh, mw) = image.shape[:2], mask.shape[:2]
        which = f"{mask_path} is" if mask_path else "the mask is"
        raise DataError(image_path, f"mask size differs: {which} {mw}x{mh} but the image is {iw}x{ih}")
