"""A straightforward MultiMix training step written from the paper, as the speed baseline.

It follows Algorithm 1 and Tables 4-5 the plain way a first implementation
would: five streams of ``m`` images each (labeled classification, labeled
segmentation, unlabeled classification seen weakly and strongly, unlabeled
segmentation) drawn from uint8 arrays, every image augmented on its own with
Pillow on the CPU (weak: flip + padded crop; strong: operations picked at
random from the paper's heavy pool), all ``5m`` images concatenated, a
separate eval-mode pass over the whole batch for the input-gradient
saliency, then encoder and decoder over every image, the summed loss
(eq. 1, 2, 5) and one Adam step. It shares no code with mtssl, so timing the
two side by side compares designs, not a shared implementation.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps
from torch import nn

# -- model: paper Tables 4 and 5 ------------------------------------------------


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.InstanceNorm2d(cout), nn.LeakyReLU(0.2),
        nn.Conv2d(cout, cout, 3, padding=1), nn.InstanceNorm2d(cout), nn.LeakyReLU(0.2),
        nn.Dropout(0.25))


class ReferenceMultiMix(nn.Module):
    """Encoder 16-32-64-128-256; classifier max-pool, avg-pool, FC; decoder 128-64-32-16 with skips.

    The first decoder block (stride 8) also takes ``[image, saliency]``
    downsampled by 8 (the saliency bridge).
    """

    widths = (16, 32, 64, 128, 256)

    def __init__(self, classes: int = 2):
        super().__init__()
        w = self.widths
        self.enc = nn.ModuleList([conv_block(1, w[0])] + [conv_block(w[i - 1], w[i]) for i in range(1, 5)])
        self.fc = nn.Linear(w[4], classes)
        self.dec = nn.ModuleList([
            conv_block(w[4] + w[3] + 2, w[3]),
            conv_block(w[3] + w[2], w[2]),
            conv_block(w[2] + w[1], w[1]),
            conv_block(w[1] + w[0], w[0]),
        ])
        self.out = nn.Conv2d(w[0], 1, 1)

    def encode(self, x):
        skips = []
        for i, block in enumerate(self.enc):
            x = block(F.max_pool2d(x, 2) if i else x)
            skips.append(x)
        return skips

    def classify_features(self, deepest):
        return self.fc(F.max_pool2d(deepest, 2).mean(dim=(2, 3)))

    def classify(self, x):
        return self.classify_features(self.encode(x)[-1])

    def forward(self, x, bridge):
        skips = self.encode(x)
        logits = self.classify_features(skips[-1])
        y = skips[-1]
        for j, block in enumerate(self.dec):
            skip = skips[3 - j]
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            parts = [y, skip, bridge] if j == 0 else [y, skip]
            y = block(torch.cat(parts, 1))
        return logits, self.out(y)


# -- augmentation: per image, Pillow ---------------------------------------------


def weak_pair(image: Image.Image, mask: Image.Image | None, pad: int, rng: random.Random):
    """Random horizontal flip, then a random crop of the zero-padded image (same for the mask)."""
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
        mask = ImageOps.mirror(mask) if mask is not None else None
    size = image.size[0]
    dx, dy = rng.randint(0, 2 * pad), rng.randint(0, 2 * pad)
    box = (dx, dy, dx + size, dy + size)
    image = ImageOps.expand(image, pad, fill=0).crop(box)
    mask = ImageOps.expand(mask, pad, fill=0).crop(box) if mask is not None else None
    return image, mask


def _affine(image, matrix):
    return image.transform(image.size, Image.Transform.AFFINE, matrix, resample=Image.Resampling.BILINEAR)


def strong_op(name: str, image: Image.Image, pad: int, rng: random.Random) -> Image.Image:
    size = image.size[0]
    if name == "hflip":
        return ImageOps.mirror(image)
    if name == "crop":
        return weak_pair(image, None, pad, rng)[0]
    if name == "autocontrast":
        return ImageOps.autocontrast(image)
    if name == "brightness":
        return ImageEnhance.Brightness(image).enhance(rng.uniform(0.6, 1.4))
    if name == "contrast":
        return ImageEnhance.Contrast(image).enhance(rng.uniform(0.5, 1.5))
    if name == "equalize":
        return ImageOps.equalize(image)
    if name == "identity":
        return image
    if name == "posterize":
        return ImageOps.posterize(image, rng.randint(3, 7))
    if name == "rotate":
        return image.rotate(rng.uniform(-30, 30), resample=Image.Resampling.BILINEAR)
    if name == "sharpness":
        return ImageEnhance.Sharpness(image).enhance(rng.uniform(0.1, 1.9))
    if name == "shear_x":
        return _affine(image, (1, rng.uniform(-0.3, 0.3), 0, 0, 1, 0))
    if name == "shear_y":
        return _affine(image, (1, 0, 0, rng.uniform(-0.3, 0.3), 1, 0))
    if name == "solarize":
        return ImageOps.solarize(image, rng.randint(0, 255))
    if name == "translate_x":
        return _affine(image, (1, 0, rng.uniform(-0.3, 0.3) * size, 0, 1, 0))
    if name == "translate_y":
        return _affine(image, (1, 0, 0, 0, 1, rng.uniform(-0.3, 0.3) * size))
    raise ValueError(f"unknown operation {name}")


POOL = ("hflip", "crop", "autocontrast", "brightness", "contrast", "equalize", "identity", "posterize", "rotate",
        "sharpness", "shear_x", "shear_y", "solarize", "translate_x", "translate_y")


def to_tensor(images: list[Image.Image]) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(i, np.float32) / 255.0 for i in images])).unsqueeze(1)


# -- losses (eq. 1, 2) -----------------------------------------------------------


def dice_loss(logits, target, eps=1.0):
    p, g = torch.sigmoid(logits).flatten(1), target.flatten(1)
    return (1 - (2 * (p * g).sum(1) + eps) / (p.sum(1) + g.sum(1) + eps)).mean()


def bernoulli_kl(p_ref, q_logits):
    q = torch.sigmoid(q_logits).clamp(1e-6, 1 - 1e-6)
    p = p_ref.clamp(1e-6, 1 - 1e-6)
    return (p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()).mean()


# -- the step --------------------------------------------------------------------


@dataclass
class Streams:
    """uint8 image arrays ``[N, S, S]`` of each stream, with their targets."""

    labeled_cls: np.ndarray
    labeled_cls_y: np.ndarray
    labeled_seg: np.ndarray
    labeled_seg_masks: np.ndarray
    unlabeled_cls: np.ndarray
    unlabeled_seg: np.ndarray


@dataclass
class PhaseTimes:
    draw: float = 0.0
    augment: float = 0.0
    compute: float = 0.0
    steps: int = 0
    extra: dict = field(default_factory=dict)


class ReferenceStep:
    """One MultiMix training step per call, on ``device``; phases timed separately."""

    def __init__(self, streams: Streams, m: int = 10, device: str = "cpu", seed: int = 0,
                 threshold: float = 0.7, lam: float = 0.25, alpha: float = 5.0, beta: float = 0.01,
                 strong_ops: int = 2):
        torch.manual_seed(seed)
        self.streams, self.m, self.device = streams, m, torch.device(device)
        self.rng, self.np_rng = random.Random(seed), np.random.default_rng(seed)
        self.model = ReferenceMultiMix().to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.threshold, self.lam, self.alpha, self.beta, self.strong_ops = threshold, lam, alpha, beta, strong_ops
        self.size = streams.labeled_cls.shape[-1]
        self.pad = max(1, self.size // 8)
        self.times = PhaseTimes()

    def _draw(self, array: np.ndarray, *others: np.ndarray):
        index = self.np_rng.choice(len(array), self.m, replace=len(array) < self.m)
        return (array[index], *(o[index] for o in others))

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def __call__(self) -> float:
        s, t0 = self.streams, time.perf_counter()
        lc, lc_y = self._draw(s.labeled_cls, s.labeled_cls_y)
        ls, ls_m = self._draw(s.labeled_seg, s.labeled_seg_masks)
        (uc,) = self._draw(s.unlabeled_cls)
        (us,) = self._draw(s.unlabeled_seg)
        t1 = time.perf_counter()

        pil = Image.fromarray
        lc_w = [weak_pair(pil(i), None, self.pad, self.rng)[0] for i in lc]
        ls_pairs = [weak_pair(pil(i), pil(mk * 255), self.pad, self.rng) for i, mk in zip(ls, ls_m)]
        uc_w = [weak_pair(pil(i), None, self.pad, self.rng)[0] for i in uc]
        uc_g = []
        for i in uc:
            image = pil(i)
            for name in self.rng.sample(POOL, self.strong_ops):
                image = strong_op(name, image, self.pad, self.rng)
            uc_g.append(image)
        us_p = [pil(i) for i in us]
        x = torch.cat([to_tensor(lc_w), to_tensor([p[0] for p in ls_pairs]), to_tensor(uc_w), to_tensor(uc_g),
                       to_tensor(us_p)]).to(self.device)
        masks = (to_tensor([p[1] for p in ls_pairs]) > 0.5).float().to(self.device)
        labels = torch.from_numpy(lc_y).long().to(self.device)
        self._sync()
        t2 = time.perf_counter()

        # Saliency: a separate eval-mode pass over the whole batch, gradient of the top class w.r.t. the input.
        self.model.eval()
        xs = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.model.classify(xs).max(1).values.sum(), xs)
        saliency = grad.abs()
        saliency = saliency / saliency.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
        self.model.train()
        bridge = F.avg_pool2d(torch.cat([x, saliency], 1), 8)

        m = self.m
        cls_logits, seg_logits = self.model(x, bridge)
        supervised_cls = F.cross_entropy(cls_logits[:m], labels)
        probs = torch.softmax(cls_logits[2 * m:3 * m].detach(), 1)
        confidence, pseudo = probs.max(1)
        keep = (confidence >= self.threshold).float()
        unsupervised_cls = (F.cross_entropy(cls_logits[3 * m:4 * m], pseudo, reduction="none") * keep).mean()
        supervised_seg = dice_loss(seg_logits[m:2 * m], masks)
        reference = torch.sigmoid(seg_logits[m:2 * m].detach())
        unsupervised_seg = bernoulli_kl(reference, seg_logits[4 * m:5 * m])
        loss = supervised_cls + self.lam * unsupervised_cls + self.alpha * supervised_seg + self.beta * unsupervised_seg
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self._sync()
        t3 = time.perf_counter()
        self.times.draw += t1 - t0
        self.times.augment += t2 - t1
        self.times.compute += t3 - t2
        self.times.steps += 1
        return float(loss.detach())
