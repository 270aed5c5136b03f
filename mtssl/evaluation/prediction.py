"""Predictions for image files of any size and mode, written next to each other in one folder.

Each task writes through its own :class:`PredictionWriter` (a CSV of class
probabilities, mask PNGs at each image's original size); bridge maps are
saved as 8-bit PNGs, scaled per image to the full 0-255 range, also at the
original size, in ``OUT/MAP_NAME/``. ``OUT/index.csv`` maps every output
name to its input file and says what became of it.

Everything is written into a temporary folder beside ``OUT`` and moved into
place when the last image is done: a predict that stops at an unreadable
file (without ``--skip-bad``) leaves ``OUT`` as it was, not half-written.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from mtssl.data.decode import read_image, resize_channels, to_channels_uint8
from mtssl.data.errors import DataError, Skipped
from mtssl.evaluation.inference import LoadedModel, Predictions, predict
from mtssl.run.staging import merge_into, staging_beside

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".dcm", ".dicom"}
INDEX = "index.csv"
NOT_AN_IMAGE = "not an image (file type)"


@dataclass
class InputFiles:
    """What the inputs expand to: images to predict, and files inside given folders that are not images."""

    images: list[Path]
    ignored: list[Path] = field(default_factory=list)


@dataclass
class PredictionSummary:
    images: int = 0
    files: list[Path] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)


def scan_inputs(inputs: Iterable[str | Path]) -> InputFiles:
    """Files as given, folders expanded (recursively, sorted) to their image files; other files are kept
    aside to be reported, not dropped without a word."""
    inputs = list(inputs)
    found = InputFiles([])
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for entry in sorted(p for p in path.rglob("*") if not p.is_dir()):
                (found.images if entry.suffix.lower() in IMAGE_SUFFIXES else found.ignored).append(entry)
        elif path.is_file():
            found.images.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    if not found.images:
        raise FileNotFoundError(f"no image files found in {', '.join(map(str, inputs))}"
                                + (f" ({ignored_line(found.ignored)})" if found.ignored else ""))
    found.images = list(dict.fromkeys(found.images))
    return found


def ignored_line(paths: Sequence[Path], shown: int = 3) -> str:
    """``N file(s) that are not images ignored: a, b, c and K more`` (one line however many)."""
    names = ", ".join(str(p) for p in paths[:shown])
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return f"{len(paths)} file(s) that are not images ignored: {names}{more}"


def output_names(paths: Sequence[Path]) -> list[str]:
    """File stems, made unique with ``-2``, ``-3``... where inputs share one.

    Uniqueness ignores case (``X.png`` and ``x.png`` would overwrite each other on a case-insensitive file
    system), and a suffixed name never takes another input's own stem (``x``, ``x``, ``x-2`` give ``x``,
    ``x-3``, ``x-2``).
    """
    stems = {p.stem.lower() for p in paths}
    used: set[str] = set()
    names = []
    for path in paths:
        name, count = path.stem, 1
        while name.lower() in used or (count > 1 and name.lower() in stems):
            count += 1
            name = f"{path.stem}-{count}"
        used.add(name.lower())
        names.append(name)
    return names


def save_map(path: Path, heat: np.ndarray, original_size: tuple[int, int]) -> None:
    heat = np.asarray(heat, np.float32)
    span = float(heat.max() - heat.min())
    scaled = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    height, width = original_size
    resized = Image.fromarray(scaled, mode="F").resize((width, height), Image.Resampling.BILINEAR)
    Image.fromarray(np.clip(np.rint(np.asarray(resized) * 255), 0, 255).astype(np.uint8)).save(path)


def predict_files(loaded: LoadedModel, inputs: Iterable[str | Path] | InputFiles, out_dir: str | Path,
                  batch_size: int = 16, skip_bad: bool = False,
                  tick: Callable[[int], None] | None = None) -> PredictionSummary:
    """Predict every task (and bridge map) for the input images; write everything under ``out_dir``.

    Without ``skip_bad`` the first unreadable image stops the run and nothing is written.
    """
    found = inputs if isinstance(inputs, InputFiles) else scan_inputs(inputs)
    out_dir = Path(out_dir)
    with staging_beside(out_dir) as staging:
        summary = _predict_into(loaded, found, staging, out_dir, batch_size, skip_bad, tick)
        summary.files = [out_dir / path.relative_to(staging) for path in summary.files]
        merge_into(staging, out_dir)
    return summary


def model_input(loaded: LoadedModel, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """A decoded image (HxW or HxWxC, 8/16-bit or float) as the model reads it, ``[C, S, S]`` uint8, and its
    original height and width."""
    planes = to_channels_uint8(image, loaded.config.channels or 1)
    return resize_channels(planes, loaded.size), planes.shape[-2:]


def predict_images(loaded: LoadedModel, images: Iterable[np.ndarray], batch_size: int = 16) -> Predictions:
    """Probabilities and bridge maps for in-memory images of any size (each as :func:`model_input` takes it);
    maps stay at the model's size."""
    batch = np.stack([model_input(loaded, image)[0] for image in images])
    return predictor(loaded)(batch, list(loaded.parts.tasks), batch_size, with_maps=True)


def predictor(loaded) -> Callable[..., Predictions]:
    """:func:`~mtssl.evaluation.inference.predict` for a run, the model's own ``predict`` for an exported folder."""
    return getattr(loaded, "predict", None) or partial(predict, loaded)


def _predict_into(loaded: LoadedModel, found: InputFiles, folder: Path, destination: Path, batch_size: int,
                  skip_bad: bool, tick: Callable[[int], None] | None) -> PredictionSummary:
    paths = found.images
    names = output_names(paths)
    writers = {}
    for task_name, task in loaded.parts.tasks.items():
        writer = task.prediction_writer(folder, loaded.class_names.get(task_name, ()))
        if writer is not None:
            writers[task_name] = writer
    summary = PredictionSummary(ignored=list(found.ignored))
    status: dict[Path, str] = {}
    try:
        for start in range(0, len(paths), batch_size):
            batch, sizes, kept = [], [], []
            for path, name in zip(paths[start:start + batch_size], names[start:start + batch_size]):
                try:
                    resized, size = model_input(loaded, read_image(path))
                except (DataError, ValueError) as exc:
                    error = exc if isinstance(exc, DataError) else DataError(path, str(exc))
                    if not skip_bad:
                        raise DataError(error.path, f"{error.problem}; predict stopped here after "
                                                    f"{summary.images} of {len(paths)} image(s) and wrote nothing "
                                                    f"to {destination} (--skip-bad skips unreadable images)") from exc
                    summary.skipped.append(Skipped.of(error))
                    status[path] = f"skipped: {error.problem}"
                    continue
                batch.append(resized)
                sizes.append(size)
                kept.append((name, path))
            if batch:
                out = predictor(loaded)(np.stack(batch), list(writers), len(batch), with_maps=True)
                for i, (name, path) in enumerate(kept):
                    for task_name, writer in writers.items():
                        writer.source(name, path)
                        writer.write(name, out.probabilities[task_name][i], sizes[i])
                    for map_name, maps in out.maps.items():
                        map_folder = folder / map_name
                        map_folder.mkdir(exist_ok=True)
                        save_map(map_folder / f"{name}.png", maps[i], sizes[i])
                        summary.files.append(map_folder / f"{name}.png")
                    status[path] = "predicted"
                summary.images += len(kept)
            if tick:
                tick(min(batch_size, len(paths) - start))
    finally:
        for writer in writers.values():
            summary.files[:0] = writer.close()
    summary.files.insert(0, write_index(folder / INDEX, paths, names, status, found.ignored))
    return summary


def write_index(path: Path, images: Sequence[Path], names: Sequence[str], status: dict[Path, str],
                ignored: Sequence[Path]) -> Path:
    """``name,path,status``: the output name each input file got (empty for files not predicted)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "path", "status"])
        for image, name in zip(images, names):
            state = status[image]
            writer.writerow([name if state == "predicted" else "", str(image), state])
        for other in ignored:
            writer.writerow(["", str(other), f"ignored: {NOT_AN_IMAGE}"])
    return path

