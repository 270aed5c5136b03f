"""One training step: backbone passes over the views, each task's losses, the update.

Each task's loss is its supervised term plus its strategies' weighted SSL
terms; the run's task weighting combines the tasks (a plain sum by default).
All loss terms are fetched to the host in one transfer, which is also where
the divergence guard looks at them: a step whose loss is not finite updates
nothing. That includes the state of strategies and the weighting: they
propose its update while scoring a step, and the step commits it
(:meth:`~mtssl.interfaces.SSLStrategy.commit`) only when it is applied.
"""
from __future__ import annotations

import math
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from mtssl.model.assemble import Components
from mtssl.training.grad_shares import gradient_shares
from mtssl.training.guard import DivergenceGuard
from mtssl.interfaces import StrategyInputs, WeightedLoss, Weighting
from mtssl.training.precision import Precision
from mtssl.training.stopping import StopRequest
from mtssl.training.teacher import EMATeacher
from mtssl.training.views import View, plan_passes


@dataclass
class StepResult:
    loss: torch.Tensor
    logs: dict[str, float | torch.Tensor] = field(default_factory=dict)
    problem: str | None = None  # why the divergence guard rejects this step (any rank), or None
    stop: bool = False  # a stop was requested on some rank (agreed by all under torchrun)
    task_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    combined: WeightedLoss | None = None


@dataclass
class Networks:
    """The networks a step runs: the student (as saved and as called) and what strategies asked for."""

    model: nn.Module
    forward: nn.Module  # the student as called: a DistributedDataParallel wrapper under torchrun
    teacher: EMATeacher | None = None
    peer: nn.Module | None = None

    def train(self) -> None:
        for network in (self.model, self.teacher, self.peer):
            if network is not None:
                network.train()

    def by_role(self, role: str) -> nn.Module:
        network = {"student": self.forward, "teacher": self.teacher, "peer": self.peer}[role]
        if network is None:
            raise ValueError(f"a strategy planned '{role}' views without asking for that network "
                             "(teacher_decay() / needs_peer())")
        return network


def fetch_logs(logs: dict[str, float | torch.Tensor]) -> dict[str, float]:
    """Log values as floats, with every tensor copied from the device in one transfer."""
    keys = [k for k, v in logs.items() if isinstance(v, torch.Tensor)]
    out = {k: float(v) for k, v in logs.items() if k not in set(keys)}
    if keys:
        values = torch.stack([logs[k].detach().float().reshape(()) for k in keys]).tolist()
        out.update(zip(keys, values))
    return {k: out[k] for k in logs}


class TrainingStep:
    """Turns a step's views into losses and, unless the guard objects, into one optimizer update."""

    def __init__(self, networks: Networks, parts: Components, weighting: Weighting, precision: Precision,
                 guard: DivergenceGuard, stop: StopRequest, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, device: torch.device, log_grad_shares: int = 0):
        self.networks, self.parts, self.weighting = networks, parts, weighting
        self.precision, self.guard, self.stop = precision, guard, stop
        self.optimizer, self.scheduler, self.device = optimizer, scheduler, device
        self.log_grad_shares = log_grad_shares

    def run_pass(self, views: list[View]) -> tuple[dict[tuple[str, str], torch.Tensor],
                                                   dict[tuple[str, str], tuple[list[torch.Tensor], dict]]]:
        """One backbone pass over the concatenated views; each head runs on its own task's rows.

        Returns every view's output and, for views that asked for them, its backbone features with the
        bridge extras its head got (``{stride: tensor}``).
        """
        rows, start = {}, 0
        for view in views:  # a task's views are adjacent, so its rows form one slice
            first = rows.get(view.task, slice(start, start))
            rows[view.task] = slice(first.start, start + len(view.images))
            start += len(view.images)
        batch = torch.cat([v.images for v in views])
        network = self.networks.by_role(views[0].model)
        features: dict[str, list[torch.Tensor]] | None = {} if any(v.features for v in views) else None
        extras: dict[str, dict[int, torch.Tensor]] = {}
        with nullcontext() if views[0].grad else torch.no_grad(), self.precision.autocast():
            outputs = network(batch, rows) if features is None else network(batch, rows, features=features,
                                                                            extras=extras)
        by_view, features_by_view, offsets = {}, {}, {name: 0 for name in rows}
        for view in views:
            part = slice(offsets[view.task], offsets[view.task] + len(view.images))
            offsets[view.task] += len(view.images)
            out = outputs[view.task][part]
            by_view[(view.task, view.key)] = out if view.grad else out.detach()
            if view.features:
                maps = [f[part] for f in features[view.task]]
                features_by_view[(view.task, view.key)] = (maps if view.grad else [f.detach() for f in maps],
                                                           {s: e[part] for s, e in extras[view.task].items()})
        return by_view, features_by_view

    def head_forward(self, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """Task ``name``'s output for new images: one more backbone pass, for strategies that need it."""
        def forward(x: torch.Tensor) -> torch.Tensor:
            with self.precision.autocast():
                return self.networks.forward(x, {name: slice(0, len(x))})[name]

        return forward

    def feature_head(self, name: str, prefix: str, planned: dict[tuple[str, str], tuple[list[torch.Tensor], dict]],
                     roles: dict[tuple[str, str], str]) -> Callable[[str, list[torch.Tensor]], torch.Tensor]:
        """Task ``name``'s head (or a strategy's own) on given features in place of those of one of its views."""
        def head(view: str, features: list[torch.Tensor], module: nn.Module | None = None) -> torch.Tensor:
            key = (name, prefix + view)
            if key not in planned:
                raise ValueError(f"head('{view}', ...): strategy view '{view}' of task '{name}' was not planned "
                                 "with features=True")
            if module is None:
                network = self.networks.by_role(roles[key])
                module = getattr(network, "module", network).heads[name]  # past a DDP wrapper or the teacher's shell
            with nullcontext() if roles[key] != "teacher" else torch.no_grad(), self.precision.autocast():
                return module(features, planned[key][1])

        return head

    def compute_loss(self, views: list[View], step: int) -> StepResult:
        """Every loss term of step ``step`` (0-based), fetched to the host once and checked by the guard."""
        by_view: dict[tuple[str, str], torch.Tensor] = {}
        features: dict[tuple[str, str], tuple[list[torch.Tensor], dict]] = {}
        for group in plan_passes(views, self.parts.bridges):
            outputs, group_features = self.run_pass(group)
            by_view.update(outputs)
            features.update(group_features)
        targets = {(v.task, v.key): v.target for v in views}
        images = {(v.task, v.key): v.images for v in views}
        roles = {(v.task, v.key): v.model for v in views}

        logs: dict[str, float | torch.Tensor] = {}
        terms: dict[str, torch.Tensor] = {}  # fetched together below; logs keeps their place
        task_losses: dict[str, torch.Tensor] = {}
        for name, task in self.parts.tasks.items():
            labeled_out, labeled_target = by_view[(name, "labeled")], targets[(name, "labeled")]
            sup = task.supervised_loss(labeled_out, labeled_target)
            total = torch.zeros((), device=self.device, dtype=torch.float32) + sup
            terms[f"{name}/sup"] = sup
            logs[f"{name}/sup"] = math.nan
            for strategy in self.parts.strategies[name]:
                prefix = f"{strategy.name}/"
                mine = [(t, k) for (t, k) in by_view if t == name and k.startswith(prefix)]
                result = strategy.loss(StrategyInputs(
                    task, {k[len(prefix):]: by_view[(t, k)] for t, k in mine}, labeled_out, labeled_target,
                    step, view_images={k[len(prefix):]: images[(t, k)] for t, k in mine},
                    view_targets={k[len(prefix):]: targets[(t, k)] for t, k in mine},
                    forward=self.head_forward(name),
                    view_features={k[len(prefix):]: features[(t, k)][0] for t, k in mine if (t, k) in features},
                    head=self.feature_head(name, prefix, features, roles)))
                total = total + result.loss
                terms[f"{name}/{strategy.name}"] = result.loss
                logs[f"{name}/{strategy.name}"] = math.nan
                logs.update({f"{name}/{strategy.name}/{k}": v for k, v in result.logs.items()})
            task_losses[name] = total
        loss_terms = dict(terms)
        combined = self.weighting.combine(task_losses, step)
        logs.update({f"weight/{k}": v for k, v in combined.weights.items()})
        logs.update({f"weighting/{k}": v for k, v in combined.logs.items()})
        terms["loss"] = combined.loss
        logs["loss"] = math.nan
        fetched = self.guard.fetch(list(terms.values()), self.stop.requested)  # the step's one host sync
        logs.update(zip(terms, fetched.values))
        logs = fetch_logs(logs)  # strategies' tensor logs: one more copy, the device is idle after the sync
        problem = None
        if fetched.bad:
            problem = (self.guard.problem(list(terms), fetched.values)
                       or "a loss term on another process is not finite or exceeds --max-loss")
        return StepResult(combined.loss, logs, problem, fetched.stop, task_losses, loss_terms, combined)

    def scaled_for_backward(self, result: StepResult) -> tuple[dict[str, torch.Tensor], WeightedLoss]:
        """The task losses and total a gradient-based weighting differentiates, times the fp16 loss scale.

        The scaler divides the scale out of every gradient before the optimizer step (and skips a step
        whose gradients overflowed), as it does for the plain backward.
        """
        combined = result.combined
        scaled = {name: self.precision.scale(loss) for name, loss in result.task_losses.items()}
        return scaled, WeightedLoss(self.precision.scale(combined.loss), combined.weights, combined.logs)

    def commit_state(self) -> None:
        """Let every strategy and the weighting apply the state updates this (applied) step proposed."""
        for strategy in (s for group in self.parts.strategies.values() for s in group):
            strategy.commit()
        self.weighting.commit()

    def update(self, views: list[View], step: int, checkpoint_note: Callable[[], str]) -> StepResult:
        """Losses, backward and optimizer step for step ``step``; a rejected step updates nothing.

        ``checkpoint_note`` says where the last good checkpoint is, for the
        guard's message when it stops the run.
        """
        self.networks.train()
        representation = {}  # the backward keyword, only for a weighting that asks for it
        if self.weighting.needs_representation:
            with self.networks.model.recording_representation() as recorded:
                result = self.compute_loss(views, step)
            representation = {"representation": recorded}
        else:
            result = self.compute_loss(views, step)
        shared = self.networks.model.shared_parameters()
        if self.log_grad_shares and (step + 1) % self.log_grad_shares == 0:
            result.logs.update(gradient_shares(result.terms, shared))
        self.optimizer.zero_grad(set_to_none=True)
        problem = result.problem
        backward_logs: dict[str, float | torch.Tensor] = {}
        if problem is None:
            shared_ids = {id(p) for p in shared}
            others = [p for group in self.optimizer.param_groups for p in group["params"] if id(p) not in shared_ids]
            if self.weighting.needs_task_gradients:  # it backpropagates each task itself (scaled losses in fp16)
                backward_logs = self.weighting.backward(*self.scaled_for_backward(result), shared, others,
                                                        **representation)
            else:
                self.precision.backward(result.loss)
            if (self.guard.skip_budget and self.precision.scaler is None
                    and not self.guard.gradients_finite(self.networks.model.parameters())):
                problem = "the gradient is not finite"  # (in fp16 the gradient scaler skips such steps itself)
        if problem is None:
            self.precision.step(self.optimizer)
            self.scheduler.step()
            if self.networks.teacher is not None:
                self.networks.teacher.update(self.networks.model)
            self.commit_state()
        else:
            self.guard.bad_step(step + 1, problem, checkpoint_note())
            self.optimizer.zero_grad(set_to_none=True)
            result.logs["skipped"] = 1
            with warnings.catch_warnings():  # torch warns when the schedule steps before any update
                warnings.simplefilter("ignore", UserWarning)
                self.scheduler.step()
        result.logs.update(fetch_logs(backward_logs))  # one transfer, once the update is queued
        return result
