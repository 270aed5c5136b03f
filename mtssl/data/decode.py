"""Image normalisation: any decoded array -> 8-bit grayscale at the training size."""
from __future__ import annotations

import numpy as np
from PIL import Image


def to_gray_uint8(image: np.ndarray) -> np.ndarray:
    """HxW or HxWxC, 8- or 16-bit or float -> HxW uint8 (RGB averaged, alpha dropped, full range kept)."""
    array = np.asarray(image)
    if array.ndim == 3:
        if array.shape[2] in (2, 4):  # drop alpha
            array = array[..., :-1]
        array = array.mean(axis=2) if array.shape[2] > 1 else array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D image or HxWxC, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    array = array.astype(np.float64)
    if np.issubdtype(np.asarray(image).dtype, np.integer) and array.max() > 255:
        lo, hi = array.min(), array.max()
        array = (array - lo) / max(hi - lo, 1) * 255
    elif array.max() <= 1.0:
        array = array * 255
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


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
