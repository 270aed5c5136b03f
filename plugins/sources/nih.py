"""``nih:ROOT[:classes=No Finding|Pneumonia]`` — NIH ChestX-ray14 with classes from its findings.

ROOT holds ``Data_Entry_2017*.csv`` (or set ``csv=FILE``) and the PNGs, in
``images*/images/``, ``images*/`` or ROOT itself. ``classes`` lists findings
separated by ``|``; the first is class 0. A row belongs to the first listed
class among its ``Finding Labels``; rows matching none are dropped and
counted, rows whose image file is absent are bad items. The ``Patient ID``
column (when present) keeps each patient's images on one side of every split.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated, Optional, Sequence

from pydantic import BeforeValidator, Field

from mtssl.api import DataError, read_options
from mtssl_plugins.sources.files import FileSource, Item, SourceOptions, list_images, require_dir, target_mode

DEFAULT_CLASSES = "No Finding|Pneumonia"
COLUMNS = ("Image Index", "Finding Labels")
PATIENT_COLUMN = "Patient ID"


def find_csv(root: Path) -> Path:
    found = sorted(root.glob("Data_Entry_2017*.csv"))
    if not found:
        raise DataError(root, "matches no known layout for 'nih': no Data_Entry_2017*.csv in it (or give csv=FILE)")
    return found[0]


def index_images(root: Path) -> dict[str, Path]:
    """File name -> path over ROOT, ROOT/images*/ and ROOT/images*/images/."""
    folders = [root]
    for sub in sorted(root.glob("images*")):
        if sub.is_dir():
            folders += [sub, *([sub / "images"] if (sub / "images").is_dir() else [])]
    return {image.name: image for folder in folders for image in list_images(folder)}


def read_rows(table: Path) -> list[tuple[str, set[str], str | None]]:
    try:
        with open(table, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(table, f"missing column(s) {', '.join(missing)}; found {', '.join(reader.fieldnames or [])}")
            return [(row[COLUMNS[0]].strip(), {f.strip().lower() for f in (row[COLUMNS[1]] or "").split("|")},
                     (row.get(PATIENT_COLUMN) or "").strip() or None)
                    for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(table, f"cannot read CSV ({exc})") from exc


def parse_classes(text: object) -> tuple[str, ...]:
    """``No Finding|Pneumonia`` -> the findings, in class order; at least two."""
    names = tuple(c.strip() for c in str(text).split("|") if c.strip())
    if len(names) < 2:
        raise ValueError(f"needs at least two findings separated by '|', got '{text}'")
    return names


class NihOptions(SourceOptions):
    classes: Annotated[tuple[str, ...], BeforeValidator(parse_classes)] = Field(
        parse_classes(DEFAULT_CLASSES), description="findings separated by |, the first is class 0")
    csv: Optional[str] = Field(None, description="findings table (default: the root's Data_Entry_2017*.csv)")


def open_nih(path: str, names: Sequence[str] = parse_classes(DEFAULT_CLASSES), table: str | None = None) -> FileSource:
    root = require_dir(path)
    csv_path = Path(table) if table else find_csv(root)
    images = index_images(root)
    items, problems, unmatched, patients = [], [], 0, []
    wanted = [n.lower() for n in names]
    for name, findings, patient in read_rows(csv_path):
        label = next((i for i, c in enumerate(wanted) if c in findings), None)
        if label is None:
            unmatched += 1
        elif name in images:
            items.append(Item(images[name], label))
            patients.append(f"patient:{patient}" if patient else f"file:{name}")
        else:
            problems.append(DataError(root / name, f"listed in {csv_path.name} but no image file found"))
    remarks = [f"{unmatched} row(s) of {csv_path.name} match none of {', '.join(names)} and were dropped"]
    for label, cls in enumerate(names):
        if not any(item.label == label for item in items):
            problems.append(DataError(csv_path, f"class '{cls}' is empty: no row with that finding has an image"))
    return FileSource("class", items, names, problems, remarks, groups=patients)


def build(name: str, path: str | None = None, target=None, seed: int = 0, **options) -> FileSource:
    settings = read_options(f"source '{name}'", options, NihOptions)
    target_mode(name, target, ("class",))
    if not path:
        raise ValueError(f"source '{name}' needs a path: {name}:ROOT[:classes=No Finding|Pneumonia]")
    return open_nih(path, settings.classes, settings.csv or None)
