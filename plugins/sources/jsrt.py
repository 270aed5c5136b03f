"""``jsrt:IMAGES[:masks=SCR_ROOT]`` — JSRT radiographs with SCR lung masks.

Images are the original ``.IMG`` files (2048x2048, 12-bit, big-endian, no
header; stored dark-is-dense, so they are inverted to look like a film) or
PNG conversions of them. SCR masks are found anywhere under ``masks`` (the
images folder by default) in sibling folders named like ``left lung`` and
``right lung`` (``left_lung``, ``leftlung`` ... too), as ``<stem>.gif`` or
``.png``; left and right are merged (OR). ``structures=lungs+heart+clavicles``
asks for one channel per structure (``heart/``, ``left clavicle/`` +
``right clavicle/``), named in that order. SCR draws masks at 1024x1024 for
the 2048x2048 images, so a mask whose image is an exact integer multiple of
it is upscaled (nearest). For class targets the file prefix gives the label:
``JPCNN`` non-nodule (0), ``JPCLN`` nodule (1).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
from pydantic import BeforeValidator, Field

from mtssl.api import DataError, check_mask_size, read_options
from mtssl_plugins.sources.files import (IMAGE_SUFFIXES, FileSource, Item, SourceOptions, list_images, require_dir,
                                         target_mode)

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


STRUCTURES = {"lungs": ("leftlung", "rightlung"), "heart": ("heart",),
              "clavicles": ("leftclavicle", "rightclavicle")}
"""SCR structure -> its mask folders (names compared without case, spaces or underscores), OR-merged."""


def find_structure_masks(root: Path, folders: tuple[str, ...]) -> dict[str, tuple[Path, ...]]:
    """``stem -> one mask per folder`` for every set of sibling ``folders`` under ``root``."""
    found: dict[str, tuple[Path, ...]] = {}
    first = folders[0]
    for anchor in sorted(p for p in [root, *root.rglob("*")] if p.is_dir() and _norm(p.name) == first):
        siblings = {_norm(p.name): p for p in anchor.parent.iterdir() if p.is_dir()}
        if any(name not in siblings for name in folders):
            continue
        per_folder = [{p.stem: p for p in list_images(siblings[name])} for name in folders]
        for stem in per_folder[0]:
            if all(stem in masks for masks in per_folder):
                found[stem] = tuple(masks[stem] for masks in per_folder)
    return found


def parse_structures(text: object) -> tuple[str, ...]:
    """``lungs+heart`` -> ``("lungs", "heart")``: known SCR structures, each once."""
    names = [n.strip().lower() for n in str(text).split("+") if n.strip()]
    unknown = [n for n in names if n not in STRUCTURES]
    if not names or unknown:
        raise ValueError(f"must be names from {', '.join(STRUCTURES)} joined by '+', got '{text}'")
    if len(set(names)) != len(names):
        raise ValueError(f"lists a name twice, got '{text}'")
    return tuple(names)


class JsrtOptions(SourceOptions):
    masks: Optional[str] = Field(
        None, description="folder searched for the SCR mask folders (default: the images folder)")
    invert: bool = Field(True, description="invert raw .IMG files so that bone is bright, as on film")
    structures: Annotated[tuple[str, ...], BeforeValidator(parse_structures)] = Field(
        ("lungs",), description="mask channels joined by +: lungs, heart, clavicles")


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


def open_jsrt(path: str, mode: str, masks: str | None = None, invert: bool = True,
              structures: tuple[str, ...] = ("lungs",)) -> JsrtSource:
    root = require_dir(path)
    images = list_images(root, SUFFIXES)
    if not images and (root / "All247images").is_dir():
        images = list_images(root / "All247images", SUFFIXES)
    if not images:
        raise DataError(root, "matches no known layout for 'jsrt': no .IMG or image files in it or in All247images/")
    items, problems = [], []
    if mode == "class":
        for image in images:
            prefix = image.stem[:5].upper()
            if prefix not in {"JPCNN", "JPCLN"}:
                problems.append(DataError(image, "file name does not start with JPCNN (non-nodule) or JPCLN (nodule)"))
            else:
                items.append(Item(image, int(prefix == "JPCLN")))
        source = JsrtSource(mode, items, CLASS_NAMES, problems)
    else:
        mask_root = require_dir(masks, "masks folder") if masks else root
        found = {name: find_structure_masks(mask_root, STRUCTURES[name]) for name in structures}
        for name, per_stem in found.items():
            if not per_stem:
                folders = " and ".join(f"'{f}/'" for f in STRUCTURES[name])
                raise DataError(mask_root, f"no SCR {name} masks found: expected {folders} folders under it "
                                           "(set the folder with jsrt:IMAGES:masks=SCR_ROOT)")
        first = found[structures[0]]
        for image in images:
            absent = [name for name in structures if image.stem not in found[name]]
            if absent:
                problems.append(DataError(image, f"mask missing: no '{image.stem}' in the {', '.join(absent)} mask "
                                                 f"folders under {mask_root}"))
            else:
                items.append(Item(image, masks=tuple(found[name][image.stem] for name in structures)))
        known = {image.stem for image in images}
        for stem in sorted(set(first) - known):
            problems.append(DataError(first[stem][0], f"mask matches no image (no image with stem '{stem}')"))
        names = tuple(structures) if len(structures) > 1 else ()
        source = JsrtSource(mode, items, names, problems)
    source.invert = invert
    return source


def build(name: str, path: str | None = None, target=None, seed: int = 0, **options) -> JsrtSource:
    settings = read_options(f"source '{name}'", options, JsrtOptions)
    mode = target_mode(name, target, ("class", "mask"))
    if not path:
        raise ValueError(f"source '{name}' needs a path: {name}:IMAGES_DIR[:masks=SCR_ROOT]")
    return open_jsrt(path, mode, settings.masks or None, settings.invert, settings.structures)
