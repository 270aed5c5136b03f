"""A built-in synthetic chest radiograph phantom, so mtssl runs with no data at all.

Each image has a soft-tissue torso, two lung fields of varying shape, size and
position, a mediastinum and heart, curved ribs, correlated tissue texture and
noise. Class 1 ("pneumonia") adds hazy opacities inside the lungs, faint
enough that a classifier needs the texture, not a single pixel. Masks are the
lung fields minus the heart (the JSRT/SCR convention); ``structures=lungs+heart``
adds the heart as a second channel. Item ``i`` depends only on ``(seed, i)``,
so a dataset is the same however it is read.

``domain`` shifts the acquisition: intensity curve, contrast, blur and noise,
to mimic another hospital's scanner.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
from scipy.ndimage import gaussian_filter

from pydantic import AfterValidator, Field

from mtssl.api import Options, Sample, Source, read_options
from mtssl_plugins.targets import CLASS_LABEL, binary_masks, wants_masks

CLASS_NAMES = ("normal", "pneumonia")
STRUCTURES = ("lungs", "heart")


@dataclass(frozen=True)
class Domain:
    """Acquisition profile: gamma of the intensity curve, contrast, blur (pixels at 256 px), noise std."""

    gamma: float
    contrast: float
    blur: float
    noise: float
    offset: float


DOMAINS = (
    Domain(gamma=1.0, contrast=1.0, blur=0.8, noise=0.035, offset=0.0),
    Domain(gamma=1.5, contrast=0.75, blur=2.0, noise=0.06, offset=0.06),
    Domain(gamma=0.7, contrast=1.2, blur=0.4, noise=0.02, offset=-0.05),
    Domain(gamma=1.2, contrast=0.6, blur=3.0, noise=0.08, offset=0.1),
)


def _ellipse_field(x, y, cx, cy, rx, ry, angle, power=2.0):
    """Superellipse 'radius' (<1 inside) rotated by angle."""
    c, s = np.cos(angle), np.sin(angle)
    xr, yr = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
    return np.abs(xr / rx) ** power + np.abs(yr / ry) ** power


def render(size: int, rng: np.random.Generator, label: int,
           domain: Domain) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One phantom at ``size`` px: uint8 image and binary masks by structure (lungs, heart)."""
    lin = np.linspace(-1, 1, size, dtype=np.float32)
    x, y = np.meshgrid(lin, lin)
    px = size / 256.0  # pixels per paper pixel, to scale blur with size

    cx = rng.normal(0, 0.04)
    cy = rng.normal(0.02, 0.04)
    body = _ellipse_field(x, y, cx, cy + 0.05, rng.uniform(0.8, 0.95), rng.uniform(1.0, 1.2), 0.0, 2.0) < 1
    image = np.where(body, 0.55, 0.05).astype(np.float32)

    lungs = np.zeros_like(body)
    gap = rng.uniform(0.09, 0.16)
    width_scale = rng.uniform(0.85, 1.15)
    height_scale = rng.uniform(0.85, 1.15)
    for side in (-1, 1):
        rx = rng.uniform(0.24, 0.32) * width_scale * (0.9 if side > 0 else 1.0)
        ry = rng.uniform(0.50, 0.62) * height_scale
        lx = cx + side * (gap + rx)
        ly = cy + rng.uniform(-0.12, -0.02)
        field = _ellipse_field(x, y, lx, ly, rx, ry, side * rng.uniform(0.0, 0.15), rng.uniform(1.8, 2.6))
        # flatten the lung bases (diaphragm) with a tilted cut
        base = ly + ry * rng.uniform(0.65, 0.9) + side * rng.uniform(-0.05, 0.05) * x
        lungs |= (field < 1) & (y < base)

    heart = _ellipse_field(x, y, cx + rng.uniform(0.08, 0.16), cy + rng.uniform(0.2, 0.32),
                           rng.uniform(0.18, 0.27), rng.uniform(0.16, 0.24), rng.uniform(-0.4, 0.0)) < 1
    mediastinum = (np.abs(x - cx) < gap * rng.uniform(0.8, 1.1)) & body
    mask = lungs & ~heart & ~mediastinum

    image = np.where(mask, 0.22, image)
    image = np.where(mediastinum | (heart & body), 0.68, image)

    # ribs: bright curved bands across the thorax
    spacing = rng.uniform(0.14, 0.19)
    phase = rng.uniform(0, spacing)
    curve = y - 0.35 * (x - cx) ** 2 * rng.uniform(0.8, 1.2)
    ribs = np.cos(2 * np.pi * (curve - phase) / spacing)
    rib_band = np.clip((ribs - 0.55) * 3.0, 0, 1) * (np.abs(y - cy) < 0.75) * body
    image += 0.12 * rib_band * np.where(mask, 1.0, 0.35)

    # correlated soft-tissue / vascular texture inside the lungs
    texture = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), sigma=max(0.6, 2.0 * px * 4))
    texture /= texture.std() + 1e-6
    image += 0.035 * texture * mask

    if label == 1:
        lung_pixels = np.argwhere(mask)
        for _ in range(rng.integers(1, 4)):
            if len(lung_pixels) == 0:
                break
            py, pxl = lung_pixels[rng.integers(len(lung_pixels))]
            radius = rng.uniform(0.10, 0.25)
            blob = np.exp(-(((x - lin[pxl]) ** 2 + (y - lin[py]) ** 2) / (2 * radius ** 2)))
            patchy = np.clip(1 + 0.6 * gaussian_filter(rng.standard_normal((size, size)).astype(np.float32),
                                                       sigma=max(0.5, 3 * px * 4)), 0, None)
            image += rng.uniform(0.12, 0.25) * blob * patchy * mask

    image = gaussian_filter(image, sigma=domain.blur * px * 2 + 0.3)
    image = np.clip(image + domain.offset, 0, 1) ** domain.gamma
    image = 0.5 + (image - 0.5) * domain.contrast * rng.uniform(0.9, 1.1)
    image += rng.normal(0, domain.noise, size=image.shape)
    masks = {"lungs": mask.astype(np.uint8), "heart": (heart & body).astype(np.uint8)}
    return (np.clip(image, 0, 1) * 255).astype(np.uint8), masks


def parse_structures(text: str) -> tuple[str, ...]:
    """``lungs+heart`` -> ``("lungs", "heart")``: distinct names from :data:`STRUCTURES`."""
    names = tuple(s.strip().lower() for s in str(text).split("+") if s.strip())
    if not names or any(s not in STRUCTURES for s in names) or len(set(names)) != len(names):
        raise ValueError(f"must be distinct names from {', '.join(STRUCTURES)} joined by '+', got '{text}'")
    return names


def checked_structures(text: str) -> str:
    parse_structures(text)
    return text


class SyntheticChest(Source):
    """Synthetic chest X-rays with pneumonia labels or structure masks; deterministic per (seed, index)."""

    def __init__(self, masks: bool = False, n: int = 1000, seed: int = 0, domain: int = 0,
                 prevalence: float = 0.5, size: int = 256, structures: str = "lungs"):
        if not 0 <= domain < len(DOMAINS):
            raise ValueError(f"synthetic source: domain must be 0..{len(DOMAINS) - 1}, got {domain}")
        self.structures = parse_structures(structures)
        self.masks = masks
        self.target = binary_masks(len(self.structures)) if masks else CLASS_LABEL
        self.class_names = (self.structures if len(self.structures) > 1 else ()) if masks else CLASS_NAMES
        self.n, self.seed, self.domain, self.native = int(n), int(seed), int(domain), int(size)
        label_rng = np.random.default_rng([self.seed, 7919])
        self._labels = (label_rng.random(self.n) < prevalence).astype(int)
        self._keys = [f"synthetic/d{self.domain}/s{self.seed}/{i:06d}" for i in range(self.n)]

    @property
    def keys(self):
        return self._keys

    def class_labels(self):
        return None if self.masks else self._labels.tolist()

    def _sample(self, index: int, size: int) -> Sample:
        rng = np.random.default_rng([self.seed, self.domain, index])
        label = int(self._labels[index])
        image, masks = render(size, rng, label, DOMAINS[self.domain])
        if not self.masks:
            return Sample(image, label)
        if len(self.structures) == 1:
            return Sample(image, masks[self.structures[0]])
        return Sample(image, np.stack([masks[s] for s in self.structures], axis=-1))

    def load(self, index: int) -> Sample:
        return self._sample(index, self.native)

    def load_resized(self, index: int, size: int) -> Sample:
        return self._sample(index, size)


class SyntheticOptions(Options):
    n: int = Field(1000, ge=1, le=10_000_000, description="number of images")
    domain: int = Field(0, ge=0, le=len(DOMAINS) - 1,
                        description="acquisition profile: intensity curve, contrast, blur and noise")
    prevalence: float = Field(0.5, ge=0.0, le=1.0, description="probability that an image is class 1 (pneumonia)")
    size: int = Field(256, ge=8, le=4096, description="side of the generated square images, in pixels")
    structures: Annotated[str, AfterValidator(checked_structures)] = Field(
        "lungs", description="mask channels joined by +: lungs, heart")


def build(name: str, path: str | None = None, target=None, seed: int = 0, **options) -> SyntheticChest:
    settings = read_options(f"source '{name}'", options, SyntheticOptions)
    if path:
        raise ValueError(f"source '{name}' generates its images and takes no path (got '{path}')")
    return SyntheticChest(masks=wants_masks(target), seed=seed, **settings.model_dump())
