"""``jsrt:IMAGES[:masks=SCR_ROOT]`` — JSRT radiographs with SCR lung masks.

Images are the original ``.IMG`` files (2048x2048, 12-bit, big-endian, no
header; stored dark-is-dense, so they are inverted to look like a film) or
PNG conversions of them. SCR masks are found anywhere under ``masks`` (the
images folder by default) in sibling folders named like ``left lung`` and
``right lung`` (``left_lung``, ``leftlung`` ... too), as ``<stem>.gif`` or
``.png``; left and right are merged (OR). SCR draws masks at 1024x1024 for
the 2048x2048 images, so a mask whose image is an exact integer multiple of
it is upscaled (nearest). For class targets the file prefix gives the label:
``JPCNN`` non-nodule (0), ``JPCLN`` nodule (1).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mtssl.api import DataError, check_options, check_mask_size, hookimpl
from mtssl_plugins.sources.files import (IMAGE_SUFFIXES, FileSource, Item, list_images, require_dir,
                                         require_target)

RAW_SIDE = 2048
RAW_BYTES = RAW_SIDE * RAW_SIDE * 2
RAW_MAX = 4095
CLASS_NAMES = ("non-nodule", "nodule")
SUFFIXES = (".img", *IMAGE_SUFFIXES)


def read_raw(path: Path, invert: bool = True) -> np.ndarray:
    """A JSRT ``.IMG``: 12-bit big-endian 2048x2048 -> uint8, bright bone."""
    size = path.stat().st_size if path.is_file() else -1
    if size != RAW_BYTES:
        found = "no file" if size < 0 else f"{size} bytes"
        raise DataError(path, f"not a JSRT raw image: expected {RAW_BYTES} bytes "
                              f"({RAW_SIDE}x{RAW_SIDE} 16-bit big-endian), found {found}")
    raw = np.fromfile(path, dtype=">u2").reshape(RAW_SIDE, RAW_SIDE).astype(np.float32)
    raw = np.clip(raw, 0, RAW_MAX)
    if invert:
        raw = RAW_MAX - raw
    return np.rint(raw * (255.0 / RAW_MAX)).astype(np.uint8)


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def find_lung_masks(root: Path) -> dict[str, tuple[Path, ...]]:
    """``stem -> (left, right)`` for every left/right lung folder pair under ``root``."""
    found: dict[str, tuple[Path, ...]] = {}
    for left_dir in sorted(p for p in [root, *root.rglob("*")] if p.is_dir() and _norm(p.name) == "leftlung"):
        right_dir = next((p for p in left_dir.parent.iterdir() if p.is_dir() and _norm(p.name) == "rightlung"), None)
        if right_dir is None:
            continue
        rights = {p.stem: p for p in list_images(right_dir)}
        for left in list_images(left_dir):
            if left.stem in rights:
                found[left.stem] = (left, rights[left.stem])
    return found


class JsrtSource(FileSource):
    invert = True

    def read(self, path: Path) -> np.ndarray:
        return read_raw(path, self.invert) if path.suffix.lower() == ".img" else super().read(path)

    def fit_mask(self, mask, image, image_path, mask_path):
        (ih, iw), (mh, mw) = image.shape[:2], mask.shape[:2]
        if (ih, iw) != (mh, mw) and mh and mw and ih % mh == 0 and iw % mw == 0 and ih // mh == iw // mw:
            factor = ih // mh
            return np.repeat(np.repeat(mask, factor, axis=0), factor, axis=1)
        check_mask_size(image, mask, image_path, mask_path)
        return mask


def open_jsrt(path: str, target: str, masks: str | None = None, invert: bool = True) -> JsrtSource:
    root = require_dir(path)
    images = list_images(root, SUFFIXES)
    if not images and (root / "All247images").is_dir():
        images = list_images(root / "All247images", SUFFIXES)
    if not images:
        raise DataError(root, "matches no known layout for 'jsrt': no .IMG or image files in it or in All247images/")
    items, problems = [], []
    if target == "class":
        for image in images:
            prefix = image.stem[:5].upper()
            if prefix not in {"JPCNN", "JPCLN"}:
                problems.append(DataError(image, "file name does not start with JPCNN (non-nodule) or JPCLN (nodule)"))
            else:
                items.append(Item(image, int(prefix == "JPCLN")))
        source = JsrtSource(target, items, CLASS_NAMES, problems)
    else:
        mask_root = require_dir(masks, "masks folder") if masks else root
        lungs = find_lung_masks(mask_root)
        if not lungs:
            raise DataError(mask_root, "no SCR lung masks found: expected 'left lung/' and 'right lung/' folders "
                                       "under it (set the folder with jsrt:IMAGES:masks=SCR_ROOT)")
        known = set()
        for image in images:
            known.add(image.stem)
            if image.stem in lungs:
                items.append(Item(image, masks=lungs[image.stem]))
            else:
                problems.append(DataError(image, f"mask missing: no '{image.stem}' in the lung mask folders "
                                                 f"under {mask_root}"))
        for stem in sorted(set(lungs) - known):
            problems.append(DataError(lungs[stem][0], f"mask matches no image (no image with stem '{stem}')"))
        source = JsrtSource(target, items, (), problems)
    source.invert = invert
    return source


def build(name: str, path: str | None = None, target: str = "mask", seed: int = 0, **options) -> JsrtSource:
    check_options(f"source '{name}'", options, {"masks", "invert"})
    require_target(name, target, ("class", "mask"))
    if not path:
        raise ValueError(f"source '{name}' needs a path: {name}:IMAGES_DIR[:masks=SCR_ROOT]")
    masks = options.get("masks")
    return open_jsrt(path, target, str(masks) if masks else None, bool(options.get("invert", True)))


@hookimpl
def register_sources(register):
    register("jsrt", build, description="jsrt:IMAGES[:masks=SCR_ROOT], .IMG raw or PNG + SCR left/right lung masks")
