"""Tiny on-disk datasets in every supported layout, written by the tests themselves."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 40


def gradient(seed: int, side: int = SIDE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (side, side), dtype=np.uint8)


def lung_mask(seed: int, side: int = SIDE, value: int = 255) -> np.ndarray:
    """A rectangle whose position depends on ``seed``, values {0, value}."""
    mask = np.zeros((side, side), np.uint8)
    off = seed % (side // 4)
    mask[off: off + side // 2, side // 4: side // 4 + side // 3] = value
    return mask


def write(path: Path, array: np.ndarray, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **save)
    return path


def write_varied(path_stem: Path, seed: int) -> Path:
    """Cycle through formats: 8-bit gray PNG, RGB JPEG, 16-bit PNG, palette PNG, RGBA PNG."""
    image = gradient(seed)
    kind = seed % 5
    if kind == 0:
        return write(path_stem.with_suffix(".png"), image)
    if kind == 1:
        return write(path_stem.with_suffix(".jpeg"), np.stack([image] * 3, axis=2), quality=90)
    if kind == 2:
        return write(path_stem.with_suffix(".png"), image.astype(np.uint16) * 256)
    if kind == 3:
        path = path_stem.with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).convert("P").save(path)
        return path
    rgba = np.dstack([image, image, image, np.full_like(image, 255)])
    return write(path_stem.with_suffix(".png"), rgba)


def class_tree(root: Path, counts: dict[str, int]) -> Path:
    seed = 0
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            write_varied(root / name / f"{name.lower()}_{i:03d}", seed)
            seed += 1
    return root


def pairs_tree(root: Path, count: int, mask_suffix: str = "_mask") -> tuple[Path, Path]:
    images, masks = root / "images", root / "masks"
    for i in range(count):
        write(images / f"case{i:03d}.png", gradient(i))
        write(masks / f"case{i:03d}{mask_suffix}.png", lung_mask(i))
    return images, masks


def montgomery_tree(root: Path, count: int) -> Path:
    for i in range(count):
        name = f"MCUCXR_{i:04d}_{i % 2}.png"
        write(root / "CXR_png" / name, gradient(i))
        left, right = lung_mask(i), np.zeros((SIDE, SIDE), np.uint8)
        right[5:20, 30:38] = 255
        write(root / "ManualMask" / "leftMask" / name, left)
        write(root / "ManualMask" / "rightMask" / name, right)
    return root


def shenzhen_tree(root: Path, count: int, masked: int | None = None) -> Path:
    for i in range(count):
        stem = f"CHNCXR_{i:04d}_{i % 2}"
        write(root / "CXR_png" / f"{stem}.png", gradient(i))
        if masked is None or i < masked:
            write(root / "mask" / f"{stem}_mask.png", lung_mask(i))
    return root


JSRT_SIDE = 2048


def jsrt_tree(root: Path, stems: list[str], mask_side: int = 1024) -> tuple[Path, Path]:
    """Raw 12-bit big-endian .IMG files and SCR-style 'left lung'/'right lung' GIF masks."""
    images, masks = root / "All247images", root / "scr" / "fold1" / "masks"
    images.mkdir(parents=True)
    for i, stem in enumerate(stems):
        raw = np.zeros((JSRT_SIDE, JSRT_SIDE), ">u2")
        raw[:, JSRT_SIDE // 2:] = 4095  # right half dense on film -> dark after inversion
        raw[:8, :8] = i
        raw.tofile(images / f"{stem}.IMG")
        left = np.zeros((mask_side, mask_side), np.uint8)
        left[mask_side // 4: mask_side // 2, : mask_side // 2] = 255
        right = np.zeros_like(left)
        right[mask_side // 4: mask_side // 2, mask_side // 2:] = 255
        write(masks / "left lung" / f"{stem}.gif", left)
        write(masks / "right lung" / f"{stem}.gif", right)
    return images, root / "scr"


def nih_tree(root: Path, rows: list[tuple[str, str]], missing: tuple[str, ...] = ()) -> Path:
    """``rows`` of (image name, finding labels); images go to images_001/images/ unless listed in ``missing``."""
    lines = ["Image Index,Finding Labels,Follow-up #,Patient ID"]
    for i, (name, findings) in enumerate(rows):
        lines.append(f"{name},{findings},0,{i}")
        if name not in missing:
            write(root / "images_001" / "images" / name, gradient(i))
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join(lines) + "\n")
    return root
