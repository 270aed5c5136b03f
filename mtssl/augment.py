"""Weak and strong augmentations as batched Kornia modules on the training device.

Every image in a batch draws its own parameters. The strong pipeline picks
``n_ops`` operations per image from the paper's pool without any per-image
Python: each operation runs once over the whole batch and ``torch.where``
keeps its result only for the images that picked it. Geometric operations
move masks with their images (nearest-neighbour).
"""
from __future__ import annotations

import torch
from kornia import augmentation as K
from torch import nn

STRONG_POOL = (
    "hflip", "crop", "autocontrast", "brightness", "contrast", "equalize", "identity", "posterize",
    "rotate", "sharpness", "shear_x", "shear_y", "solarize", "translate_x", "translate_y",
)
GEOMETRIC = {"hflip", "crop", "rotate", "shear_x", "shear_y", "translate_x", "translate_y"}


def _op(name: str, size: int, pad: int) -> nn.Module:
    shear = 16.7  # degrees, ~0.3 rad as in RandAugment's shear range
    table = {
        "hflip": lambda: K.RandomHorizontalFlip(p=1.0),
        "crop": lambda: K.RandomCrop((size, size), padding=pad, p=1.0),
        "autocontrast": lambda: K.RandomAutoContrast(p=1.0),
        "brightness": lambda: K.RandomBrightness((0.6, 1.4), p=1.0),
        "contrast": lambda: K.RandomContrast((0.5, 1.5), p=1.0),
        "equalize": lambda: K.RandomEqualize(p=1.0),
        "identity": nn.Identity,
        "posterize": lambda: K.RandomPosterize((3.0, 7.0), p=1.0),
        "rotate": lambda: K.RandomRotation(30.0, p=1.0),
        "sharpness": lambda: K.RandomSharpness((0.1, 0.9), p=1.0),
        "shear_x": lambda: K.RandomAffine(0.0, shear=(-shear, shear, 0.0, 0.0), p=1.0),
        "shear_y": lambda: K.RandomAffine(0.0, shear=(0.0, 0.0, -shear, shear), p=1.0),
        "solarize": lambda: K.RandomSolarize(0.1, 0.1, p=1.0),
        "translate_x": lambda: K.RandomAffine(0.0, translate=(0.3, 0.0), p=1.0),
        "translate_y": lambda: K.RandomAffine(0.0, translate=(0.0, 0.3), p=1.0),
    }
    if name not in table:
        raise ValueError(f"unknown augmentation '{name}'; known: {', '.join(STRONG_POOL)}")
    return table[name]()


class _Paired(nn.Module):
    """Applies one augmentation to images, and with the same parameters to masks when given."""

    def __init__(self, *ops: nn.Module):
        super().__init__()
        self.seq = K.AugmentationSequential(*ops, data_keys=["input", "mask"])

    def forward(self, images: torch.Tensor, masks: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if masks is None:
            return self.seq(images, data_keys=["input"]), None
        out, out_masks = self.seq(images, masks, data_keys=["input", "mask"])
        return out, out_masks


class WeakAugmentation(nn.Module):
    """Random horizontal flip + random crop from a zero-padded image (paper: pad 32 at 256 px)."""

    def __init__(self, size: int, pad: int | None = None):
        super().__init__()
        pad = max(1, size // 8) if pad is None else pad
        self.pipeline = _Paired(K.RandomHorizontalFlip(p=0.5), K.RandomCrop((size, size), padding=pad, p=1.0))

    def forward(self, images, masks=None):
        return self.pipeline(images, masks)


class StrongAugmentation(nn.Module):
    """``n_ops`` distinct random operations per image from the paper's heavy pool."""

    def __init__(self, size: int, n_ops: int = 2, pool: tuple[str, ...] = STRONG_POOL, pad: int | None = None):
        super().__init__()
        if not 1 <= n_ops <= len(pool):
            raise ValueError(f"strong augmentation: n_ops must be 1..{len(pool)}, got {n_ops}")
        pad = max(1, size // 8) if pad is None else pad
        self.names = tuple(pool)
        self.n_ops = n_ops
        self.ops = nn.ModuleList(
            _Paired(_op(n, size, pad)) if n in GEOMETRIC else _op(n, size, pad) for n in self.names
        )

    def choose(self, batch: int, device: torch.device) -> torch.Tensor:
        """Boolean ``[batch, len(pool)]``: which operations each image gets (n_ops distinct ones)."""
        scores = torch.rand(batch, len(self.names), device=device)
        picked = scores.topk(self.n_ops, dim=1).indices
        return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, picked, True)

    def forward(self, images, masks=None):
        chosen = self.choose(images.shape[0], images.device)
        for k, (name, op) in enumerate(zip(self.names, self.ops)):
            keep = chosen[:, k].view(-1, 1, 1, 1)
            if name in GEOMETRIC:
                out, out_masks = op(images, masks)
                if masks is not None:
                    masks = torch.where(keep, out_masks, masks)
            else:
                out = op(images)
            images = torch.where(keep, out.clamp(0, 1), images)
        return images, masks


class Augmenter(nn.Module):
    """The three view kinds a strategy may request: none, weak, strong."""

    def __init__(self, size: int, strong_ops: int = 2):
        super().__init__()
        self.weak = WeakAugmentation(size)
        self.strong = StrongAugmentation(size, strong_ops)

    def forward(self, images: torch.Tensor, kind: str, masks: torch.Tensor | None = None):
        if kind == "none":
            return images, masks
        if kind == "weak":
            return self.weak(images, masks)
        if kind == "strong":
            return self.strong(images, masks)
        raise ValueError(f"unknown view kind '{kind}' (none, weak, strong)")
