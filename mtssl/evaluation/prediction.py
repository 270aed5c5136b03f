"""Predictions for image files of any size and mode, written next to each other in one folder.

Each task writes through its own :class:`PredictionWriter` (a CSV of class
probabilities, mask PNGs at each image's original size); bridge maps are
saved as 8-bit PNGs, scaled per image to the full 0-255 range, also at the
original size, in ``OUT/MAP_NAME/``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from mtssl.data.decode import read_image, resize_channels, to_channels_uint8
from mtssl.data.errors import DataError, Skipped
from mtssl.evaluation.inference import LoadedModel, predict

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".dcm", ".dicom"}


@dataclass
class PredictionSummary:
    images: int = 0
    files: list[Path] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def list_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded (recursively, sorted) to their image files."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    if not found:
        raise FileNotFoundError(f"no image files found in {', '.join(map(str, inputs))}")
    return list(dict.fromkeys(found))


def output_names(paths: Sequence[Path]) -> list[str]:
    """File stems, made unique with a numeric suffix where two inputs share one."""
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        count = seen.get(path.stem, 0)
        seen[path.stem] = count + 1
        names.append(path.stem if count == 0 else f"{path.stem}-{count + 1}")
    return names


def save_map(path: Path, heat: np.ndarray, original_size: tuple[int, int]) -> None:
    heat = np.asarray(heat, np.float32)
    span = float(heat.max() - heat.min())
    scaled = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    height, width = original_size
    resized = Image.fromarray(scaled, mode="F").resize((width, height), Image.Resampling.BILINEAR)
    Image.fromarray(np.clip(np.rint(np.asarray(resized) * 255), 0, 255).astype(np.uint8)).save(path)


def predict_files(loaded: LoadedModel, inputs: Iterable[str | Path], out_dir: str | Path, batch_size: int = 16,
                  skip_bad: bool = False, tick: Callable[[int], None] | None = None) -> PredictionSummary:
    """Predict every task (and bridge map) for the input images; write everything under ``out_dir``."""
    out_dir = Path(out_dir)
    paths = list_inputs(inputs)
    names = output_names(paths)
    out_dir.mkdir(parents=True, exist_ok=True)
    writers = {}
    for task_name, task in loaded.parts.tasks.items():
        writer = task.prediction_writer(out_dir, loaded.class_names.get(task_name, ()))
        if writer is not None:
            writers[task_name] = writer
    summary = PredictionSummary()
    try:
        for start in range(0, len(paths), batch_size):
            batch, sizes, kept = [], [], []
            for path, name in zip(paths[start:start + batch_size], names[start:start + batch_size]):
                try:
                    image = to_channels_uint8(read_image(path), loaded.config.channels or 1)
                except (DataError, ValueError) as exc:
                    error = exc if isinstance(exc, DataError) else DataError(path, str(exc))
                    if not skip_bad:
                        raise error from exc
                    summary.skipped.append(Skipped.of(error))
                    continue
                batch.append(resize_channels(image, loaded.size))
                sizes.append(image.shape[-2:])
                kept.append(name)
            if batch:
                run = getattr(loaded, "predict", None) or partial(predict, loaded)  # a run, or an exported folder
                out = run(np.stack(batch), list(writers), len(batch), with_maps=True)
                for i, name in enumerate(kept):
                    for task_name, writer in writers.items():
                        writer.write(name, out.probabilities[task_name][i], sizes[i])
                    for map_name, maps in out.maps.items():
                        folder = out_dir / map_name
                        folder.mkdir(exist_ok=True)
                        save_map(folder / f"{name}.png", maps[i], sizes[i])
                        summary.files.append(folder / f"{name}.png")
                summary.images += len(kept)
            if tick:
                tick(min(batch_size, len(paths) - start))
    finally:
        for writer in writers.values():
            summary.files[:0] = writer.close()
    return summary
