"""Small matplotlib helpers shared by the task plugins' report figures.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot),
so drawing never needs a display or touches global state.
"""
from __future__ import annotations

from pathlib import PurePath
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

MAX_PANELS = 6
"""Most images one row of a gallery figure shows."""
MAX_LISTED = 20
"""Most cases a caption names before it gives a count instead."""


def figure(columns: int = 1, rows: int = 1, panel: float = 3.2) -> tuple[Figure, np.ndarray]:
    """A figure with a ``rows`` x ``columns`` grid of axes (always a 2-D array)."""
    fig = Figure(figsize=(panel * columns, panel * rows), layout="constrained")
    axes = np.asarray(fig.subplots(rows, columns, squeeze=False))
    return fig, axes


def show_image(ax, image: np.ndarray, title: str = "") -> None:
    """A uint8 image (``[C, H, W]``, or ``[H, W]``) without ticks: grey for one channel, colour for three."""
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[0] if image.shape[0] == 1 else np.moveaxis(image[:3], 0, -1)
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def show_map(ax, image: np.ndarray, heat: np.ndarray, title: str = "") -> None:
    """An image with a heat map (scaled to its own range) drawn over it."""
    show_image(ax, image, title)
    span = float(heat.max() - heat.min())
    scaled = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat, dtype=float)
    ax.imshow(scaled, cmap="inferno", alpha=0.55, vmin=0, vmax=1, interpolation="bilinear")


def blank(ax, text: str = "") -> None:
    ax.set_frame_on(False)
    ax.set_xticks([])
    ax.set_yticks([])
    if text:
        ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=8, wrap=True)


def short_name(key: str) -> str:
    """A panel title's name for an item: the file name of a path key, the key itself otherwise."""
    return PurePath(key).name or key


def case_list(keys: Sequence[str], limit: int = MAX_LISTED) -> str:
    """Items named in full (paths as the source gave them) for a caption: ``a; b; ... and N more``."""
    listed = "; ".join(keys[:limit])
    return listed + (f"; and {len(keys) - limit} more" if len(keys) > limit else "")
