"""``findings-phantom``: chest phantoms that show the findings their targets report.

Each item is drawn from its index alone. Three findings are drawn into the
image (a bright nodule in a lung, fluid filling the base of a lung, an
enlarged heart), so a model can learn them from pixels. Readings are
incomplete, as in hospital-mined labels: a share of the items has no target
at all (``Sample(target=None)``), and on the others each finding may be
unread (stored as NaN, the target's declared ``missing``). Two studies
belong to each patient, so splits keep them on one side.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtssl.api import Field, Options, Sample, Source, TargetSpec, UnservedTarget, read_options

FINDING_NAMES = ("nodule", "effusion", "cardiomegaly")
FINDINGS = TargetSpec("findings", "float32", (len(FINDING_NAMES),), missing=float("nan"))
"""One 0/1 value per finding; NaN where nobody read that finding."""

STUDIES_PER_PATIENT = 2


class PhantomOptions(Options):
    n: int = Field(200, ge=1, le=1_000_000, description="number of items")
    start: int = Field(0, ge=0, le=1_000_000_000, description="index of the first item (test sets apart from training)")
    unlabeled: float = Field(0.25, ge=0.0, le=1.0, description="share of items without any target")
    unread: float = Field(0.2, ge=0.0, lt=1.0, description="chance that a finding of a labeled item is unread")
    prevalence: float = Field(0.4, gt=0.0, lt=1.0, description="chance that an image shows a finding")


@dataclass(frozen=True)
class Reading:
    """What an image shows (``present``) and which findings a reader reported (``read``; none: no target)."""

    present: np.ndarray
    read: np.ndarray

    @property
    def labeled(self) -> bool:
        return bool(self.read.any())

    def target(self) -> np.ndarray | None:
        if not self.labeled:
            return None
        return np.where(self.read, self.present.astype(np.float32), np.float32(FINDINGS.missing))


def read_item(settings: PhantomOptions, seed: int, index: int) -> Reading:
    """The findings of item ``index`` and their reading, without drawing the image (cheap)."""
    rng = np.random.default_rng([seed, index, 0])
    present = rng.random(len(FINDING_NAMES)) < settings.prevalence
    without_target = rng.random() < settings.unlabeled
    read = rng.random(len(FINDING_NAMES)) >= settings.unread
    if without_target:
        read[:] = False
    elif not read.any():  # a labeled item reports at least one finding
        read[rng.integers(len(read))] = True
    return Reading(present, read)


def draw_chest(size: int, present: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A uint8 chest phantom (thorax, dark lungs, heart) with the ``present`` findings drawn in."""
    nodule, effusion, cardiomegaly = present
    lin = np.linspace(-1, 1, size)
    x, y = np.meshgrid(lin, lin)
    thorax_half = rng.uniform(0.75, 0.9)
    heart_half = thorax_half * (rng.uniform(0.6, 0.7) if cardiomegaly else rng.uniform(0.3, 0.4))
    side = rng.choice([-1.0, 1.0])  # the lung that holds the nodule or the fluid
    thorax = (x / thorax_half) ** 2 + (y / 0.95) ** 2 < 1
    lungs = thorax & (np.abs(x) > 0.08) & (y < 0.6)
    heart = ((x - 0.1 * heart_half) / heart_half) ** 2 + ((y - 0.35) / 0.3) ** 2 < 1
    image = np.where(thorax, 0.6, 0.1)
    image = np.where(lungs, 0.25, image)
    if effusion:
        image = np.where(lungs & (side * x > 0) & (y > -0.1), 0.6, image)
    image = np.where(heart & thorax, 0.75, image)
    if nodule:
        cx, cy = side * rng.uniform(0.3, 0.55) * thorax_half, rng.uniform(-0.6, -0.1)
        image = np.where((x - cx) ** 2 + (y - cy) ** 2 < 0.13 ** 2, 0.9, image)
    image = np.clip(image + rng.normal(0, 0.03, image.shape), 0, 1)
    return (image * 255).astype(np.uint8)


class FindingsPhantom(Source):
    """``findings-phantom[:n=200,start=0,unlabeled=0.25,unread=0.2,prevalence=0.4]``."""

    target = FINDINGS
    class_names = FINDING_NAMES

    def __init__(self, settings: PhantomOptions, seed: int = 0):
        self.settings, self.seed = settings, int(seed)
        self.indices = range(settings.start, settings.start + settings.n)
        self._keys = [f"findings-phantom/s{self.seed}/{i:05d}" for i in self.indices]

    @property
    def keys(self):
        return self._keys

    def reading(self, index: int) -> Reading:
        return read_item(self.settings, self.seed, self.indices[index])

    def labeled(self) -> list[bool]:
        """Items without a target are known from their reading alone: ``--check`` counts budgets without images."""
        return [self.reading(i).labeled for i in range(len(self))]

    def groups(self) -> list[str]:
        return [f"patient{i // STUDIES_PER_PATIENT:05d}" for i in self.indices]

    def load(self, index: int) -> Sample:
        return self.load_resized(index, 128)

    def load_resized(self, index: int, size: int) -> Sample:
        reading = self.reading(index)
        image = draw_chest(size, reading.present, np.random.default_rng([self.seed, self.indices[index], 1]))
        return Sample(image, reading.target())


def build_phantom(name: str, path: str | None = None, target: TargetSpec | None = None, seed: int = 0,
                  **options) -> FindingsPhantom:
    settings = read_options(f"source '{name}'", options, PhantomOptions)
    if path:
        raise ValueError(f"source '{name}' draws its images and takes no path (got '{path}')")
    if target is not None and not target.agrees(FINDINGS):
        raise UnservedTarget(f"source '{name}' yields {FINDINGS.describe()}, not {target.describe()}")
    return FindingsPhantom(settings, seed)
