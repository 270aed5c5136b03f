"""SimMatch (Zheng et al., CVPR 2022): pseudo-labels refined by similarity to labeled embeddings.

Each unlabeled image's weak embedding is compared (temperature ``T``) with a
bank of labeled embeddings: the similarities, gathered per class and mixed
into the weak class prediction (``p^ = alpha p + (1 - alpha) aggregated``),
give the class pseudo-label (labels propagation); scaled by the weak class
probability of each bank item's label and renormalised ("unfolding"), they give
the instance target that the strong view's similarities to the bank must
match. The class term is cross-entropy of the strong view against ``p^`` where
``max p^ >= threshold``; the instance term is cross-entropy of the similarity
distributions, weighted by ``instance_weight``.

Differences from the paper, stated plainly: the embedding is the globally
pooled, L2-normalised deepest backbone feature map (a strategy trains no
projection head); weak and labeled embeddings come from the student without
gradient (the paper uses its EMA teacher); the bank is a queue of the last
``bank`` labeled embeddings, not one slot per labeled item (views carry no item
identities), so set ``bank`` near the label budget; no distribution alignment.
The queue is gathered over processes, persists across ``--resume`` and grows
only on applied steps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mtssl.api import (Field, Options, StrategyInputs, StrategyLoss, ViewRequest, gather_rows,
                       weighted_cross_entropy)
from mtssl_plugins.strategies.stateful import StatefulStrategy


class SimMatchOptions(Options):
    threshold: float = Field(0.95, ge=0.0, le=1.0, description="confidence the refined pseudo-label needs")
    T: float = Field(0.1, gt=0.0, description="temperature of the similarities")
    alpha: float = Field(0.9, ge=0.0, le=1.0, description="share of the class prediction in the pseudo-label")
    weight: float = Field(1.0, ge=0.0, description="weight of the class term")
    instance_weight: float = Field(1.0, ge=0.0, description="weight of the instance (similarity) term")
    bank: int = Field(100, ge=1, description="labeled embeddings kept (about the label budget)")


def embed(features: list[torch.Tensor]) -> torch.Tensor:
    """An image's embedding: its deepest feature map, averaged over space and L2-normalised."""
    return F.normalize(features[-1].float().mean(dim=(2, 3)), dim=1)


def simmatch_targets(weak_probs: torch.Tensor, weak_embeddings: torch.Tensor, bank: torch.Tensor,
                     bank_labels: torch.Tensor, temperature: float,
                     alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SimMatch's class pseudo-labels ``p^`` ``[B, C]`` and instance targets ``q^`` ``[B, K]`` (detached).

    ``q = softmax(w . bank / T)``; ``q^_k ~ q_k p(label_k)`` renormalised (unfolding);
    ``p^ = alpha p + (1 - alpha) sum_{k: label_k = c} q_k`` (aggregation).
    """
    p = weak_probs.detach().float()
    q = torch.softmax(weak_embeddings.detach().float() @ bank.T / temperature, dim=1)
    labels = bank_labels.expand(len(p), -1)
    unfolded = q * p.gather(1, labels)
    unfolded = unfolded / unfolded.sum(dim=1, keepdim=True)
    aggregated = torch.zeros_like(p).scatter_add(1, labels, q)
    return alpha * p + (1 - alpha) * aggregated, unfolded


class SimMatch(StatefulStrategy):
    """weight * masked soft CE(strong, p^) + instance_weight * CE(q^, softmax(strong . bank / T))."""

    STATE = ("bank", "labels")
    options_model = SimMatchOptions

    def serves(self, target):
        """One class per image: the bank holds class labels."""
        return target.categorical

    def plan(self):
        return [ViewRequest("labeled", "labeled", "weak", grad=False, features=True),
                ViewRequest("weak", "unlabeled", "weak", grad=False, features=True),
                ViewRequest("strong", "unlabeled", "strong", features=True)]

    def initial_state(self, classes, device):
        """An empty bank (its width is the embedding's, known at the first step)."""
        return {"bank": torch.zeros(0, 0, device=device), "labels": torch.zeros(0, dtype=torch.long, device=device)}

    def grown_bank(self, bank: torch.Tensor, labels: torch.Tensor, embeddings: torch.Tensor,
                   new_labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The queue with every process's labeled embeddings in front, cut to ``bank`` entries."""
        context = self.context
        embeddings = gather_rows(embeddings, context.rank, context.world_size, context.all_reduce_sum)
        new_labels = gather_rows(new_labels.float(), context.rank, context.world_size, context.all_reduce_sum)
        if len(bank) == 0:
            bank = embeddings[:0]
        return {"bank": torch.cat([embeddings, bank])[:self.bank],
                "labels": torch.cat([new_labels.round().long(), labels])[:self.bank]}

    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        labeled_target = inputs.view_targets.get("labeled")
        if labeled_target is None:
            raise ValueError(f"strategy '{self.name}' needs the targets of its labeled view")
        weak, strong = inputs.views["weak"], inputs.views["strong"]
        features = inputs.view_features
        probs = torch.softmax(weak.detach().float(), dim=1)
        state = self.committed(probs.shape[1], probs.device)
        bank, bank_labels = state["bank"], state["labels"]
        strong_embeddings = embed(features["strong"])
        if len(bank):
            pseudo, instance = simmatch_targets(probs, embed(features["weak"]), bank, bank_labels,
                                                self.T, self.alpha)
            log_student = F.log_softmax(strong_embeddings @ bank.T / self.T, dim=1)
            in_loss = -(instance * log_student).sum(dim=1).mean()
        else:  # nothing to compare with before the first labeled batch is banked
            pseudo, in_loss = probs, strong_embeddings.sum() * 0.0
        self.propose(self.grown_bank(bank, bank_labels, embed(features["labeled"]), labeled_target.long()))
        mask = pseudo.max(dim=1).values >= self.threshold
        class_loss = weighted_cross_entropy(strong, pseudo, mask)
        loss = self.weight * class_loss + self.instance_weight * in_loss
        return StrategyLoss(loss, {"mask_rate": mask.float().mean(), "class": class_loss.detach(),
                                   "instance": in_loss.detach()})

