"""Segmentation consistency (MultiMix eq. 2): beta * KL(labeled predictions || unlabeled predictions).

The published code took a softmax over a single output channel, which is
identically 1, so its term was always zero. Here each pixel is a Bernoulli
variable (sigmoid of the logit) and the KL is real; a softmax head
(``activation=softmax``) compares each pixel's categorical distribution over
its channels instead.

Pairing: the labeled and unlabeled batches hold different patients, so
pairing image i with image i is arbitrary. By default (``pairing=mean``)
the reference is the mean labeled foreground probability map of the batch,
a per-pixel shape prior, and every unlabeled prediction is pulled toward it.
``pairing=index`` pairs image i with image i, as the paper's equation reads.
The labeled side is detached: the term trains the unlabeled predictions,
and the Dice term alone trains the labeled ones.

Reduction: ``mean`` (default) averages the per-pixel KL over pixels and
images; ``sum`` sums it over the pixels of an image and averages over
images, which is what the paper's KL between two segmentation maps (products
of per-pixel Bernoullis) implies. A sum grows with the image area, so the two
need very different betas: ``preset=paper`` is the paper's beta = 0.01 with
``reduction=sum``; options given beside a preset override it.
"""
from __future__ import annotations

import torch

from typing import Literal

from mtssl.api import Field, Options, SSLStrategy, StrategyInputs, StrategyLoss, ViewRequest
from mtssl_plugins.functional import bernoulli_kl
from mtssl_plugins.strategies.dense import activation_of, distribution_kl, log_distribution


def consistency_reference(probs: torch.Tensor, pairing: str, unlabeled_count: int) -> torch.Tensor:
    """Per-pixel reference probabilities (labeled predictions, ``[B, ...]``) for each unlabeled image."""
    probs = probs.detach().float()
    if pairing == "mean":
        return probs.mean(dim=0, keepdim=True).expand(unlabeled_count, *probs.shape[1:])
    if probs.shape[0] < unlabeled_count:
        repeats = -(-unlabeled_count // probs.shape[0])
        probs = probs.repeat(repeats, *([1] * (probs.dim() - 1)))
    return probs[:unlabeled_count]


PRESETS = {"paper": {"weight": 0.01, "reduction": "sum"}}


class KLOptions(Options):
    weight: float | None = Field(None, ge=0.0, description="beta of the KL term (None: the preset's, else 0.01)")
    pairing: Literal["mean", "index"] = Field(
        "mean", description="mean: the labeled batch's mean map is the reference; index: image i for image i")
    reduction: Literal["mean", "sum"] | None = Field(
        None, description="KL averaged over pixels, or summed per image (None: the preset's, else mean)")
    preset: Literal["paper"] | None = Field(
        None, description="paper: beta 0.01 with reduction=sum; options given beside it override it")


class KLConsistency(SSLStrategy):
    """beta * KL between labeled and unlabeled per-pixel predictions (mean or per-image sum): Bernoulli per
    channel for a sigmoid head, categorical across channels for a softmax head."""

    options_model = KLOptions

    def serves(self, target):
        """Binary structure maps, one or more channels (a sigmoid or a softmax head)."""
        return target.spatial and target.binary

    def __init__(self, name: str, **options):
        super().__init__(name, **options)
        preset = PRESETS.get(self.preset or "", {})  # unset weight and reduction fall back to the preset's
        self.weight = self.weight if self.weight is not None else preset.get("weight", 0.01)
        self.reduction = self.reduction or preset.get("reduction", "mean")

    def plan(self):
        return [ViewRequest("plain", "unlabeled", "none")]

    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        unlabeled = inputs.views["plain"]
        if inputs.labeled_output is None:
            raise ValueError(f"strategy '{self.name}' needs labeled predictions of task '{inputs.task.name}'")
        count = unlabeled.shape[0]
        if activation_of(inputs.task) == "sigmoid":  # the paper's Bernoulli pixels
            reference = consistency_reference(torch.sigmoid(inputs.labeled_output.detach().float()), self.pairing,
                                              count)
            kl = bernoulli_kl(reference, unlabeled, self.reduction)
        else:
            reference = consistency_reference(log_distribution(inputs.task, inputs.labeled_output).exp(),
                                              self.pairing, count)
            kl = distribution_kl(reference, log_distribution(inputs.task, unlabeled), self.reduction)
        return StrategyLoss(self.weight * kl, {"kl": kl.detach()})
