"""What every on-disk source shares: listing images, pairing masks, fingerprints, loading.

A file source is a list of :class:`Item` (an image path, its class or its
mask files) built once when the source opens. Bad entries found while
listing are kept as :class:`~mtssl.api.DataError` in ``problems()`` instead
of being raised, so the core decides (stop, or skip and count).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterable, Optional, Sequence

import numpy as np
from pydantic import AfterValidator, ConfigDict, Field

from mtssl.api import (DataError, Options, Sample, Source, TargetSpec, UnservedTarget, check_mask_size, read_image,
                       read_mask)
from mtssl_plugins.targets import CLASS_LABEL, binary_masks

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".dcm", ".dicom")
MASK_STEM_SUFFIXES = ("_mask", "-mask", "_seg", "_label")
"""A mask file belongs to the image whose stem it repeats, optionally followed by one of these."""


@dataclass(frozen=True)
class Item:
    """An image with its class, or with its mask files: one tuple per channel, OR-merged within it."""

    image: Path
    label: int | None = None
    masks: tuple[tuple[Path, ...], ...] = ()


def require_dir(path: str | Path, what: str = "folder") -> Path:
    folder = Path(path).expanduser()
    if not folder.exists():
        raise DataError(folder, f"{what} not found")
    if not folder.is_dir():
        raise DataError(folder, f"expected a {what}, found a file")
    return folder


def list_images(folder: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Entries with an image suffix directly in ``folder``, sorted by name; hidden files ignored.

    Anything named like an image that is not a folder is listed, a broken link, a link loop or a FIFO
    included, so that reading it reports a bad file instead of the file silently missing.
    """
    return sorted(p for p in folder.iterdir()
                  if not p.name.startswith(".") and p.suffix.lower() in suffixes and not p.is_dir())


def subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def file_fingerprint(path: Path) -> str:
    try:
        stat = path.stat()
    except OSError:
        return f"{path}:missing"
    return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"


def mask_stem(path: Path) -> str:
    """The image stem a mask file names (``a_mask.png`` -> ``a``)."""
    stem = path.stem
    for suffix in MASK_STEM_SUFFIXES:
        if stem.lower().endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def scan_class_folders(root: Path, names: Sequence[str]) -> tuple[list[Item], list[DataError]]:
    """One class per sub-folder of ``root`` (label = position in ``names``); empty folders are problems."""
    items: list[Item] = []
    problems: list[DataError] = []
    for label, name in enumerate(names):
        files = list_images(root / name)
        if not files:
            problems.append(DataError(root / name, f"class folder is empty (no {'/'.join(IMAGE_SUFFIXES)} files)"))
        items.extend(Item(f, label) for f in files)
    return items, problems


def pair_by_stem(images: Iterable[Path], masks: Iterable[Path], masks_dir: Path) -> tuple[list[Item], list[DataError]]:
    """Match masks to images by stem (see :data:`MASK_STEM_SUFFIXES`); every leftover is a problem."""
    by_stem: dict[str, list[Path]] = {}
    for mask in masks:
        by_stem.setdefault(mask_stem(mask), []).append(mask)
    items: list[Item] = []
    problems: list[DataError] = []
    for image in images:
        found = by_stem.pop(image.stem, [])
        if not found:
            problems.append(DataError(image, f"mask missing: no '{image.stem}.*' or "
                                             f"'{image.stem}_mask.*' in {masks_dir}"))
        elif len(found) > 1:
            problems.append(DataError(image, f"several masks match: {', '.join(p.name for p in found)}"))
        else:
            items.append(Item(image, masks=((found[0],),)))
    for stem, orphans in sorted(by_stem.items()):
        for orphan in orphans:
            problems.append(DataError(orphan, f"mask matches no image (no image with stem '{stem}')"))
    return items, problems


def stem_class(path: Path, names: Sequence[str]) -> int | None:
    """Class from a trailing ``_<digit>`` in the stem (Montgomery/Shenzhen: ``_0`` normal, ``_1`` TB)."""
    tail = path.stem.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() and int(tail) < len(names) else None


def target_mode(source: str, target: TargetSpec | None, supported: Sequence[str]) -> str:
    """``"mask"`` when the task asked for a map, ``"class"`` otherwise; refused when the source has no such data."""
    mode = "mask" if target is not None and target.spatial else "class"
    yields = CLASS_LABEL if mode == "class" else binary_masks(target.channels)
    if mode not in supported or (target is not None and not target.agrees(yields)):
        kinds = " or ".join("class labels" if t == "class" else "masks" for t in supported)
        wanted = target.describe() if target is not None else mode
        raise UnservedTarget(f"source '{source}' provides {kinds}, not {wanted}")
    return mode


def regular_expression(pattern: str | None) -> str | None:
    """A ``group=`` pattern, checked to compile (the options refuse it otherwise)."""
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc}), got {pattern!r}") from None
    return pattern


PatientPattern = Annotated[Optional[str], AfterValidator(regular_expression)]
"""A regex whose first group (else whole match) on a file name is the patient, so splits keep patients apart."""


class SourceOptions(Options):
    """Options of a first-party source; a number given where text is expected (``csv=2017``) is read as text."""

    model_config = ConfigDict(coerce_numbers_to_str=True)


class FileOptions(SourceOptions):
    """Options of sources that read any folder of images: channels and the patient pattern."""

    channels: int = Field(1, ge=1, description="image channels the model reads: 1 grey, 3 colour")
    group: PatientPattern = Field(
        None, description="regex whose first group (else match) in a file name is the patient")


def group_keys(paths: Sequence[Path], pattern: str | None) -> tuple[list[str] | None, list[str]]:
    """A patient key per file from a regex on its name (first group, else the whole match).

    A file the regex does not match is its own group; the remark counts them.
    """
    if not pattern:
        return None, []
    regex = re.compile(regular_expression(pattern))
    keys, unmatched = [], 0
    for path in paths:
        match = regex.search(path.name)
        if match is None:
            unmatched += 1
            keys.append(f"file:{path.name}")
        else:
            keys.append(next((g for g in match.groups() if g), match.group(0)))
    remark = [f"{unmatched} file name(s) match no patient pattern {pattern!r}; each is its own patient"]
    return keys, remark if unmatched else []


class FileSource(Source):
    """Images on disk with a class label, or mask files per channel (OR-merged within a channel)."""

    def __init__(self, mode: str, items: Sequence[Item], class_names: Sequence[str] = (),
                 problems: Sequence[DataError] = (), remarks: Sequence[str] = (), channels: int = 1,
                 groups: Sequence[str] | None = None):
        self.mode = mode
        self.items = list(items)
        self.class_names = tuple(class_names)
        structures = max((len(item.masks) for item in self.items), default=1)
        self.target = binary_masks(structures) if mode == "mask" else CLASS_LABEL
        self.channels = int(channels)
        if self.channels < 1:
            raise ValueError(f"channels must be a positive number, got {channels}")
        self._keys = [str(item.image) for item in self.items]
        self._problems = list(problems)
        self._groups = None if groups is None else list(groups)
        self._remarks = list(remarks)

    def group_by(self, pattern: str | None) -> "FileSource":
        """Take each item's patient from a regex on its file name (see :func:`group_keys`)."""
        if pattern:
            self._groups, remarks = group_keys([item.image for item in self.items], pattern)
            self._remarks += remarks
        return self

    @property
    def keys(self) -> list[str]:
        return self._keys

    def class_labels(self) -> list[int] | None:
        return [item.label for item in self.items] if self.mode == "class" else None

    def groups(self) -> list[str] | None:
        return self._groups

    def fingerprint(self, index: int) -> str:
        item = self.items[index]
        return "|".join(file_fingerprint(p) for p in (item.image, *(m for ch in item.masks for m in ch)))

    def problems(self) -> list[DataError]:
        return self._problems

    def remarks(self) -> list[str]:
        return self._remarks

    def read(self, path: Path) -> np.ndarray:
        """Decode one image file (override for raw formats)."""
        return read_image(path)

    def fit_mask(self, mask: np.ndarray, image: np.ndarray, image_path: Path, mask_path: Path) -> np.ndarray:
        """Check a mask against its image (override to accept a known scale difference)."""
        check_mask_size(image, mask, image_path, mask_path)
        return mask

    def load(self, index: int) -> Sample:
        item = self.items[index]
        image = self.read(item.image)
        if self.mode == "class":
            return Sample(image, item.label)
        merged = np.zeros((*image.shape[:2], len(item.masks)), np.uint8)
        for channel, paths in enumerate(item.masks):
            for mask_path in paths:
                merged[..., channel] |= self.fit_mask(read_mask(mask_path), image, item.image, mask_path)
        return Sample(image, merged[..., 0] if len(item.masks) == 1 else merged)


def file_count_remark(kind: str, count: int, why: str) -> list[str]:
    return [f"{count} {kind} {why}"] if count else []
