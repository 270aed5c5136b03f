"""Weak and strong augmentations as batched Kornia modules on the training device.

Images are ``[B, C, H, W]`` floats in [0, 1] with any number of channels
(intensity operations act per channel). Dense targets ``[B, K, H, W]`` with
any number of channels move with every geometric operation, resampled per
call: ``nearest`` for label maps, ``bilinear`` for continuous maps.

Every image draws its own parameters. The strong pipeline picks ``n_ops``
operations per image from the paper's pool; the picks are drawn on the host,
so each operation runs only on the rows that picked it (index, apply,
scatter back) without a device sync or a per-image Python loop. The
``strong_photometric`` kind draws from the intensity operations only: a
strong view of a weak view with the weak view's geometry, so dense
pseudo-labels made from the weak view line up with it.
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
PHOTOMETRIC = tuple(n for n in STRONG_POOL if n not in GEOMETRIC)
RESAMPLE = ("nearest", "bilinear")
KINDS = ("none", "weak", "strong", "strong_photometric")


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
    """Applies geometric augmentations to images, and with the same parameters to dense targets when given.

    Label maps go through Kornia's mask path (nearest); continuous maps ride
    along as extra image channels, so they are resampled bilinearly exactly
    like the image.
    """

    def __init__(self, *ops: nn.Module):
        super().__init__()
        self.seq = K.AugmentationSequential(*ops, data_keys=["input", "mask"])

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None,
                resample: str = "nearest") -> tuple[torch.Tensor, torch.Tensor | None]:
        if targets is None:
            return self.seq(images, data_keys=["input"]), None
        if resample == "bilinear":
            both = self.seq(torch.cat([images, targets.to(images.dtype)], dim=1), data_keys=["input"])
            return both[:, : images.shape[1]], both[:, images.shape[1]:].to(targets.dtype)
        out, out_targets = self.seq(images, targets, data_keys=["input", "mask"])
        return out, out_targets


def _check(images: torch.Tensor, targets: torch.Tensor | None, resample: str) -> None:
    if images.dim() != 4:
        raise ValueError(f"augmentation: images must be [B, C, H, W], got shape {tuple(images.shape)}")
    if resample not in RESAMPLE:
        raise ValueError(f"augmentation: resample must be one of {', '.join(RESAMPLE)}, got '{resample}'")
    if targets is not None and (targets.dim() != 4 or targets.shape[0] != images.shape[0]
                                or targets.shape[-2:] != images.shape[-2:]):
        raise ValueError(f"augmentation: dense targets must be [B, K, H, W] matching images {tuple(images.shape)}, "
                         f"got {tuple(targets.shape)}")


class WeakAugmentation(nn.Module):
    """Random horizontal flip + random crop from a zero-padded image (paper: pad 32 at 256 px)."""

    def __init__(self, size: int, pad: int | None = None):
        super().__init__()
        pad = max(1, size // 8) if pad is None else pad
        self.pipeline = _Paired(K.RandomHorizontalFlip(p=0.5), K.RandomCrop((size, size), padding=pad, p=1.0))

    def forward(self, images, targets=None, resample: str = "nearest"):
        _check(images, targets, resample)
        return self.pipeline(images, targets, resample)


class StrongAugmentation(nn.Module):
    """``n_ops`` distinct random operations per image from the paper's heavy pool (or a given pool)."""

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
        self.photometric = [k for k, n in enumerate(self.names) if n not in GEOMETRIC]

    def choose(self, batch: int, device: torch.device | None = None, photometric_only: bool = False) -> torch.Tensor:
        """Boolean ``[batch, len(pool)]`` on the host: which operations each image gets (n_ops distinct ones).

        Drawn with the host generator, so the rows of each operation are known
        without waiting for the device (``device`` is accepted for older callers).
        """
        scores = torch.rand(batch, len(self.names))
        if photometric_only:
            if not self.photometric:
                raise ValueError("strong_photometric: the strong pool has no intensity operations")
            allowed = torch.zeros(len(self.names), dtype=torch.bool)
            allowed[self.photometric] = True
            scores = scores.masked_fill(~allowed, -1.0)
        picked = scores.topk(min(self.n_ops, len(self.photometric) if photometric_only else self.n_ops), dim=1).indices
        return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, picked, True)

    def forward(self, images, targets=None, resample: str = "nearest", photometric_only: bool = False):
        _check(images, targets, resample)
        chosen = self.choose(images.shape[0], photometric_only=photometric_only)
        for k in chosen.any(0).nonzero().flatten().tolist():  # host tensors: no device sync
            name, op = self.names[k], self.ops[k]
            if name == "identity":
                continue
            rows = chosen[:, k].nonzero().flatten().to(images.device, non_blocking=True)
            if name in GEOMETRIC:
                out, out_targets = op(images.index_select(0, rows),
                                      None if targets is None else targets.index_select(0, rows), resample)
                if targets is not None:
                    targets = targets.index_copy(0, rows, out_targets)
            else:
                out = op(images.index_select(0, rows))
            images = images.index_copy(0, rows, out.clamp(0, 1).to(images.dtype))
        return images, targets


class Augmenter(nn.Module):
    """The view kinds a strategy may request: none, weak, strong, strong_photometric.

    ``augmenter(images, kind, targets, resample)``: ``targets`` are dense maps
    that move with the images (or None); per-image targets need no augmentation.
    """

    def __init__(self, size: int, strong_ops: int = 2):
        super().__init__()
        self.weak = WeakAugmentation(size)
        self.strong = StrongAugmentation(size, strong_ops)

    def forward(self, images: torch.Tensor, kind: str, targets: torch.Tensor | None = None,
                resample: str = "nearest"):
        if kind == "none":
            return images, targets
        if kind == "weak":
            return self.weak(images, targets, resample)
        if kind == "strong":
            return self.strong(images, targets, resample)
        if kind == "strong_photometric":
            return self.strong(images, targets, resample, photometric_only=True)
        raise ValueError(f"unknown view kind '{kind}' ({', '.join(KINDS)})")
