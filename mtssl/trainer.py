"""The training loop (MultiMix Algorithm 1, for any tasks, strategies and bridges).

Each step draws one batch from every stream (labeled and unlabeled, per
task), builds the views the tasks and strategies ask for on the device,
runs them through the backbone in as few concatenated passes as their
gradients allow (:meth:`Trainer.plan_passes`), adds each task's weighted
SSL terms to its supervised loss, and lets the run's task weighting combine
the tasks (a plain sum by default). Teachers, second networks, strategy
state and learned weights are gathered in :meth:`Trainer.stateful`.
"""
from __future__ import annotations

import json
import math
import signal
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from mtssl import checkpoint, run_state
from mtssl.assemble import Components, build_components, build_peer, build_tasks, build_weighting
from mtssl.augment import Augmenter
from mtssl.compile import compile_model
from mtssl.config import RunConfig, TaskData
from mtssl.data import placement
from mtssl.data.prepare import ProgressFactory, TaskArrays, prepare_task_data, task_seed
from mtssl.data.streams import BatchStream
from mtssl.grad_shares import gradient_shares
from mtssl.guard import DivergenceError, DivergenceGuard
from mtssl.interfaces import StrategyInputs, WeightedLoss
from mtssl.model import to_float
from mtssl.plugins import PluginHost
from mtssl.precision import Precision, resolve_precision
from mtssl.rundir import RunDir
from mtssl.seeding import pick_device, set_determinism
from mtssl.stopping import StopRequest, TrainingStopped, stop_on_signals
from mtssl.targets import TargetSpec
from mtssl.teacher import EMATeacher, requested_decay


@dataclass
class View:
    """One block of the concatenated batch: a task's view with its target (if any)."""

    task: str
    key: str
    images: torch.Tensor
    target: torch.Tensor | None = None
    grad: bool = True
    model: str = "student"


@dataclass
class StepResult:
    loss: torch.Tensor
    logs: dict[str, float | torch.Tensor] = field(default_factory=dict)
    problem: str | None = None  # why the divergence guard rejects this step (any rank), or None
    stop: bool = False  # a stop was requested on some rank (agreed by all under torchrun)
    task_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    combined: WeightedLoss | None = None


def fetch_logs(logs: dict[str, float | torch.Tensor]) -> dict[str, float]:
    """Log values as floats, with every tensor copied from the device in one transfer."""
    keys = [k for k, v in logs.items() if isinstance(v, torch.Tensor)]
    out = {k: float(v) for k, v in logs.items() if k not in set(keys)}
    if keys:
        values = torch.stack([logs[k].detach().float().reshape(()) for k in keys]).tolist()
        out.update(zip(keys, values))
    return {k: out[k] for k in logs}


SHARED_STATE = ("optimizer", "scheduler")  # identical on every rank under DDP: saved once, by rank 0


def image_channels(data: dict[str, TaskArrays], configured: int | None) -> int:
    """The channels every task's images share (a run has one backbone, so one input width)."""
    found = {f"{name} ({part})": arrays.channels for name, task in data.items()
             for part, arrays in (("train", task.train), ("val", task.val)) if len(arrays)}
    widths = set(found.values())
    if len(widths) > 1:
        raise ValueError("the run's sources declare different image channels: "
                         + ", ".join(f"{k} {v}" for k, v in found.items()) + "; one backbone needs one")
    width = widths.pop() if widths else (configured or 1)
    if configured is not None and configured != width:
        raise ValueError(f"the config says channels = {configured}, but the sources yield {width}-channel images")
    return width


class Trainer:
    """Builds a run from a config and trains it, writing everything into a run directory."""

    def __init__(self, config: RunConfig, host: PluginHost, run: RunDir,
                 progress: ProgressFactory | None = None, rank: int = 0, world: int = 1,
                 device: str | None = None):
        self.config, self.host, self.run = config, host, run
        self.rank, self.world = rank, world
        self.device = pick_device(device or config.device)  # torchrun: this process's own device
        set_determinism(config.seed, config.deterministic)
        task_set = build_tasks(config, host)
        tasks = task_set[0]
        self.data: dict[str, TaskArrays] = {}
        for name in tasks:
            settings = config.data.get(name, TaskData())
            self.data[name] = prepare_task_data(host, name, tasks[name], settings, config.size,
                                                task_seed(config.seed, name), progress, config.cache_dir,
                                                config.skip_bad)
        config.channels = image_channels(self.data, config.channels)
        self.parts: Components = build_components(config, host, task_set)
        self.model = self.parts.model.to(self.device)
        self.precision = Precision(self._resolve_precision(), self.device)
        if config.compile:
            compile_model(self.model, self.device)
        self.forward_model = self.model
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.forward_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            torch.manual_seed(config.seed + rank)  # same weights everywhere, different augmentations
        self.augmenter = Augmenter(config.size, config.strong_ops).to(self.device)
        if rank == 0:
            run.write_json(RunDir.CONFIG, config.to_dict())  # once, with what was resolved: channels, precision
        self._write_splits()
        self.labeled: dict[str, BatchStream] = {}
        self.unlabeled: dict[str, BatchStream] = {}
        self._build_streams()
        # an epoch is one pass over the longest stream (each rank walks its own shard of it)
        self.steps_per_epoch = max(math.ceil(len(s) / (config.batch_size * world))
                                   for s in [*self.labeled.values(), *self.unlabeled.values()])
        self.total_steps = self._total_steps()
        self._build_companions(config, host, world)
        groups = [{"params": [*self.model.parameters(), *(self.peer.parameters() if self.peer else ())]}]
        if self.weighting.parameters():
            groups.append({"params": self.weighting.parameters(),
                           **({"lr": self.weighting.lr} if self.weighting.lr else {})})
        self.optimizer = torch.optim.Adam(groups, lr=config.lr)
        step_size = max(1, round(config.lr_step_epochs * self.steps_per_epoch))
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size, gamma=config.lr_gamma)
        self.step = 0
        self.best_score = -math.inf
        self.guard = DivergenceGuard(config.max_loss, config.skip_nonfinite, world)
        self.stop = StopRequest()
        self._stop_agreed = False
        self.saved_step: int | None = None  # step of the committed 'last' checkpoint

    # -- setup -------------------------------------------------------------
    def _build_companions(self, config: RunConfig, host: PluginHost, world: int) -> None:
        """The EMA teacher and second network strategies ask for, and the task weighting."""
        strategies = [s for group in self.parts.strategies.values() for s in group]
        decay = requested_decay(strategies)
        self.teacher = EMATeacher(self.model, decay) if decay is not None else None
        self.peer = build_peer(config, host).to(self.device) if any(s.needs_peer() for s in strategies) else None
        self.weighting = build_weighting(config, host)
        self.weighting.setup(list(self.parts.tasks), self.device)
        if world > 1 and (self.peer is not None or self.weighting.needs_task_gradients):
            raise ValueError("a second network (cps) and gradient-based weightings (pcgrad) run in one process "
                             "only; drop torchrun or choose another strategy/weighting")

    def _total_steps(self) -> int:
        if self.config.steps is not None:
            return int(self.config.steps)
        if self.config.epochs is not None:
            return max(1, round(self.config.epochs * self.steps_per_epoch))
        raise ValueError("give --steps or --epochs")

    def _resolve_precision(self) -> str:
        """The concrete precision of this run; ``auto`` is resolved here and recorded with the config below."""
        requested = "bf16" if self.config.amp and self.config.precision == "auto" else self.config.precision
        self.config.precision = resolve_precision(requested, self.device)
        return self.config.precision

    @staticmethod
    def _tensor_targets(arrays, index: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(arrays.targets[index]))

    def _stream_rows(self, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        """A task's labeled rows and the rows its strategies see unlabeled (None without strategies)."""
        split = self.data[name].split
        if not self.parts.strategies[name]:
            return split.labeled, None
        # With every image labeled ('all'), the strategies still see the training images, without labels.
        return split.labeled, split.unlabeled if len(split.unlabeled) else split.labeled

    def _build_streams(self) -> None:
        """Device-resident streams, or host-streamed ones for tasks beyond the device-memory budget."""
        bs = self.config.batch_size
        sizes = {}
        for name, data in self.data.items():
            labeled, pool = self._stream_rows(name)
            per_image, per_target = data.train.images[:1].nbytes, data.train.targets[:1].nbytes
            sizes[name] = (len(labeled) + (0 if pool is None else len(pool))) * per_image + len(labeled) * per_target
        self.streamed = placement.streamed_tasks(
            sizes, placement.budget_bytes(self.device, self.config.device_memory_budget))
        for name, data in self.data.items():
            seed = task_seed(self.config.seed, name)
            labeled, pool = self._stream_rows(name)
            stream = dict(batch_size=bs, device=self.device, streamed=name in self.streamed,
                          rank=self.rank, world=self.world)
            self.labeled[name] = placement.make_stream(
                data.train.images, labeled, lambda rows, d=data.train: self._tensor_targets(d, rows),
                seed=seed, **stream)
            if pool is not None:
                self.unlabeled[name] = placement.make_stream(data.train.images, pool, None, seed=seed + 1, **stream)

    def _write_splits(self) -> None:
        if self.rank:
            return
        for name, data in self.data.items():
            keys = data.train.keys
            listing = {part: [keys[i] for i in getattr(data.split, part)] for part in ("labeled", "unlabeled")}
            listing["val"] = data.val.keys
            if len(data.split.excluded):
                listing["excluded"] = [keys[i] for i in data.split.excluded]
            if data.train.groups is not None:
                groups = data.train.groups
                listing["groups"] = {part: sorted({groups[i] for i in getattr(data.split, part)})
                                     for part in ("labeled", "unlabeled", "val")}
            listing["skipped"] = [s.as_dict() for s in data.skipped]
            self.run.write_json(f"splits/{name}.json", listing)

    # -- one step ----------------------------------------------------------
    def augment(self, images: torch.Tensor, kind: str, target: torch.Tensor | None,
                spec: TargetSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One view of ``images``; a spatial target moves with it and keeps its declared dtype."""
        if not spec.spatial or target is None:
            return self.augmenter(images, kind)[0], target
        moved_images, moved = self.augmenter(images, kind, target.float(), spec.resample)
        if torch.empty((), dtype=target.dtype).is_floating_point():
            return moved_images, moved.to(target.dtype)
        return moved_images, moved.round().to(target.dtype)

    def gather_views(self) -> list[View]:
        """Draw every stream once and build every requested view, grouped by task.

        A request with ``of=KEY`` augments the images of the strategy's view
        ``KEY`` instead of the stream's batch, so e.g. a strong photometric
        view keeps the geometry of the weak view its pseudo-labels come from.
        """
        views: list[View] = []
        for name, task in self.parts.tasks.items():
            spec = task.target
            images, target = self.labeled[name].next()
            labeled_images = to_float(images)
            x, t = self.augment(labeled_images, "weak", target, spec)
            views.append(View(name, "labeled", x, t))
            if not self.parts.strategies[name]:
                continue
            unlabeled_images = to_float(self.unlabeled[name].next()[0])
            for strategy in self.parts.strategies[name]:
                built: dict[str, View] = {}
                for request in strategy.plan():
                    if request.of is not None:
                        if request.of not in built:
                            raise ValueError(f"strategy '{strategy.name}': view '{request.key}' is made of view "
                                             f"'{request.of}', which it does not plan before it")
                        base = built[request.of]
                        xv, tv = self.augment(base.images, request.aug, base.target, spec)
                    elif request.stream == "labeled":
                        xv, tv = self.augment(labeled_images, request.aug, target, spec)
                    else:
                        xv, tv = self.augment(unlabeled_images, request.aug, None, spec)
                    built[request.key] = View(name, f"{strategy.name}/{request.key}", xv, tv,
                                              request.grad and request.model != "teacher", request.model)
                views.extend(built.values())
        return views

    def plan_passes(self, views: list[View]) -> list[list[View]]:
        """Group views into as few backbone passes as the gradients they need allow.

        Views that only make targets (``grad=False``) go through one pass
        without autograd. Rows that a bridge differentiates with respect to
        the input get a pass of their own, so that input-gradient backward
        covers only them. Everything else shares one pass. Instance norm
        keeps images independent, so grouping does not change any output.
        """
        differentiated = {b.target for b in self.parts.bridges if b.needs_input_grad}
        groups: dict[tuple[bool, bool, str], list[View]] = {}
        for view in views:  # the teacher and the peer are other networks: passes of their own
            groups.setdefault((view.grad, view.grad and view.task in differentiated, view.model), []).append(view)
        return list(groups.values())

    def autocast(self):
        """Autocast to the run's precision (a no-op in fp32); losses still reduce in float32."""
        return self.precision.autocast()

    def run_pass(self, views: list[View]) -> dict[tuple[str, str], torch.Tensor]:
        """One backbone pass over the concatenated views; each head runs on its own task's rows."""
        rows, start = {}, 0
        for view in views:  # a task's views are adjacent, so its rows form one slice
            first = rows.get(view.task, slice(start, start))
            rows[view.task] = slice(first.start, start + len(view.images))
            start += len(view.images)
        batch = torch.cat([v.images for v in views])
        network = {"student": self.forward_model, "teacher": self.teacher, "peer": self.peer}[views[0].model]
        if network is None:
            raise ValueError(f"a strategy planned '{views[0].model}' views without asking for that network "
                             "(teacher_decay() / needs_peer())")
        with nullcontext() if views[0].grad else torch.no_grad(), self.autocast():
            outputs = network(batch, rows)
        by_view, offsets = {}, {name: 0 for name in rows}
        for view in views:
            out = outputs[view.task][offsets[view.task]: offsets[view.task] + len(view.images)]
            offsets[view.task] += len(view.images)
            by_view[(view.task, view.key)] = out if view.grad else out.detach()
        return by_view

    def compute_loss(self, views: list[View]) -> StepResult:
        by_view: dict[tuple[str, str], torch.Tensor] = {}
        for group in self.plan_passes(views):
            by_view.update(self.run_pass(group))
        targets = {(v.task, v.key): v.target for v in views}
        images = {(v.task, v.key): v.images for v in views}

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
                    self.step, view_images={k[len(prefix):]: images[(t, k)] for t, k in mine},
                    view_targets={k[len(prefix):]: targets[(t, k)] for t, k in mine},
                    forward=self._head_forward(name)))
                total = total + result.loss
                terms[f"{name}/{strategy.name}"] = result.loss
                logs[f"{name}/{strategy.name}"] = math.nan
                logs.update({f"{name}/{strategy.name}/{k}": v for k, v in result.logs.items()})
            task_losses[name] = total
        loss_terms = dict(terms)
        combined = self.weighting.combine(task_losses, self.step)
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

    def _head_forward(self, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """Task ``name``'s output for new images: one more backbone pass, for strategies that need it."""
        def forward(x: torch.Tensor) -> torch.Tensor:
            with self.autocast():
                return self.forward_model(x, {name: slice(0, len(x))})[name]

        return forward

    def train_step(self) -> dict[str, float]:
        """One update; a step the divergence guard rejects updates nothing (or stops the run)."""
        for network in (self.model, self.teacher, self.peer):
            if network is not None:
                network.train()
        result = self.compute_loss(self.gather_views())
        shared = list(self.model.backbone.parameters())
        every = self.config.log_grad_shares
        if every and (self.step + 1) % every == 0:
            result.logs.update(gradient_shares(result.terms, shared))
        self.optimizer.zero_grad(set_to_none=True)
        problem = result.problem
        if problem is None:
            shared_ids = {id(p) for p in shared}
            others = [p for group in self.optimizer.param_groups for p in group["params"] if id(p) not in shared_ids]
            if self.weighting.needs_task_gradients:  # it backpropagates each task itself (no fp16 loss scaling)
                result.logs.update(self.weighting.backward(result.task_losses, result.combined, shared, others))
            else:
                self.precision.backward(result.loss)
            if (self.guard.skip_budget and self.precision.scaler is None
                    and not self.guard.gradients_finite(self.model.parameters())):
                problem = "the gradient is not finite"  # (in fp16 the gradient scaler skips such steps itself)
        if problem is None:
            self.precision.step(self.optimizer)
            self.scheduler.step()
            if self.teacher is not None:
                self.teacher.update(self.model)
        else:
            self.guard.bad_step(self.step + 1, problem, self._checkpoint_note())
            self.optimizer.zero_grad(set_to_none=True)
            result.logs["skipped"] = 1
            with warnings.catch_warnings():  # torch warns when the schedule steps before any update
                warnings.simplefilter("ignore", UserWarning)
                self.scheduler.step()
        self.step += 1
        self._stop_agreed = result.stop
        return result.logs

    # -- validation --------------------------------------------------------
    @torch.no_grad()
    def validate(self, batch_size: int = 32) -> dict[str, float]:
        self.model.eval()
        metrics: dict[str, float] = {}
        scores = []
        for name, task in self.parts.tasks.items():
            val = self.data[name].val
            if len(val) == 0:
                continue
            outputs = []
            for start in range(0, len(val), batch_size):
                x = to_float(torch.from_numpy(val.images[start:start + batch_size]).to(self.device))
                out = self.model(x, {name: slice(0, len(x))})[name]
                outputs.append(out.detach())
            index = np.arange(len(val))
            target = self._tensor_targets(val, index).to(self.device)
            task_metrics = task.metrics(torch.cat(outputs), target)
            metrics.update({f"{name}/{k}": v for k, v in task_metrics.items()})
            score = task.selection_score(task_metrics)
            if score is not None:
                scores.append(score)
        if self.config.select_by == "mean":
            metrics["score"] = float(np.mean(scores)) if scores else float("nan")
        else:
            if self.config.select_by not in metrics:
                raise ValueError(f"--select-by {self.config.select_by}: no such validation metric; "
                                 f"available: mean, {', '.join(sorted(metrics))}")
            metrics["score"] = metrics[self.config.select_by]
        return metrics

    # -- checkpoints -------------------------------------------------------
    def _model_metadata(self) -> dict:
        return {"config": self.config.to_dict(), "step": self.step,
                "class_names": {n: list(d.train.class_names) for n, d in self.data.items()}}

    def stateful(self) -> dict[str, Any]:
        """Everything besides the weights that a resume restores, by name (see :mod:`mtssl.run_state`).

        Strategies and bridges that keep state (an EMA teacher, an adaptive
        threshold) take part by defining ``state_dict``/``load_state_dict``.
        """
        parts: dict[str, Any] = {
            "trainer": run_state.Adapter(lambda: {"step": self.step, "best_score": self.best_score},
                                         self._load_progress),
            "optimizer": self.optimizer, "scheduler": self.scheduler, "guard": self.guard, "precision": self.precision,
            "rng": run_state.RngState(self.device)}
        for kind, streams in (("labeled", self.labeled), ("unlabeled", self.unlabeled)):
            for name, stream in streams.items():
                parts[f"stream/{kind}/{name}"] = run_state.Adapter(stream.state, stream.load_state)
        plugins = [(f"strategy/{task}/{s.name}", s) for task, group in self.parts.strategies.items() for s in group]
        plugins += [(f"bridge/{b.name}", b) for b in self.parts.bridges]
        for key, plugin in plugins:
            if callable(getattr(plugin, "state_dict", None)) and callable(getattr(plugin, "load_state_dict", None)):
                parts[key] = plugin
        if self.teacher is not None:  # what strategies asked the core for (see _build_companions)
            parts["teacher"] = self.teacher
        if self.peer is not None:
            parts["peer"] = self.peer
        parts["weighting"] = self.weighting
        return parts

    def _load_progress(self, state: dict) -> None:
        self.step, self.best_score = int(state["step"]), float(state["best_score"])

    def _checkpoint_note(self) -> str:
        if self.saved_step is None:
            return "No resumable checkpoint was written."
        return f"The last finite checkpoint is kept: {self.run.checkpoints / 'last.safetensors'} (step {self.saved_step})."

    def save(self, tag: str, with_state: bool) -> None:
        """Write ``tag`` (weights; with the run state when ``with_state``), never with non-finite weights."""
        weights = self.model.state_dict()
        if not run_state.all_finite(weights.values()):
            raise DivergenceError(f"training diverged: the weights are not finite after step {self.step} (its loss "
                                  f"was finite, so the update overflowed: is the learning rate too large?); "
                                  f"'{tag}' was not written. {self._checkpoint_note()}")
        if not with_state:
            if self.rank == 0:
                checkpoint.atomic_save(weights, self.run.checkpoints / f"{tag}.safetensors", self._model_metadata())
            return
        barrier = None
        if self.world > 1:
            import torch.distributed as dist

            barrier = dist.barrier
        run_state.save(self.run.checkpoints, tag, weights, self._model_metadata(), self.step, self.stateful(),
                       self.rank, self.world, SHARED_STATE, barrier)
        self.saved_step = self.step

    def resume(self, tag: str = "last") -> None:
        """Restore weights and every stateful component of this rank from the committed ``tag``."""
        if self.rank == 0:
            run_state.remove_leftovers(self.run.checkpoints)
        weights, _ = run_state.load(self.run.checkpoints, tag, self.stateful(), self.rank, self.world, SHARED_STATE)
        self.model.load_state_dict(weights)
        self.saved_step = self.step
        self._truncate_log()

    def _truncate_log(self) -> None:
        """Drop log lines written after the checkpoint, so a resumed run's log reads as one run.

        A line cut short by a crash (it can only be the last one) is dropped too.
        """
        file = self.run.path / RunDir.METRICS
        if self.rank or not file.exists():
            return
        kept = []
        for line in file.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= self.step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue
        file.write_text("".join(line + "\n" for line in kept))

    def improves(self, score: float) -> bool:
        """Whether a validation score beats the best so far (higher is better).

        A score that is not a number (no task reports one) never counts as
        better, but the first validation still writes ``best``, so the file
        always exists once a run has validated.
        """
        if math.isnan(score):
            return not (self.run.checkpoints / "best.safetensors").exists()
        return score > self.best_score

    # -- the loop ----------------------------------------------------------
    def fit(self, on_step: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, float]:
        """Train to ``total_steps``.

        SIGINT/SIGTERM (or :attr:`stop`) end the run after the current step
        with ``last`` saved, raising :class:`~mtssl.stopping.TrainingStopped`.
        A KeyboardInterrupt between steps (e.g. from ``on_step``) saves
        ``last`` too; one inside a step saves nothing, because the state is
        half-way between two steps, and the last committed checkpoint stays.
        """
        last_val: dict[str, float] = {}
        started, step_clock = time.perf_counter(), time.perf_counter()
        between_steps = True
        with stop_on_signals(self.stop):
            try:
                while self.step < self.total_steps:
                    between_steps = False
                    logs = self.train_step()
                    now = time.perf_counter()
                    logs.update(step=self.step, epoch=self.step / self.steps_per_epoch,
                                lr=self.scheduler.get_last_lr()[0], step_time=now - step_clock)
                    step_clock = now
                    if self.step % self.config.eval_every == 0 or self.step == self.total_steps:
                        last_val = self.validate()
                        logs.update({f"val/{k}": v for k, v in last_val.items()})
                        if self.improves(last_val["score"]):
                            self.best_score = max(self.best_score, last_val["score"])  # max() keeps -inf over NaN
                            self.save("best", with_state=False)
                    if self.rank == 0:
                        self.run.log(logs)
                    if self.step % self.config.save_every == 0 or self.step == self.total_steps:
                        self.save("last", with_state=True)
                    between_steps = True
                    if on_step:
                        on_step(self.step, logs)
                    if self._stop_agreed if self.world > 1 else self.stop.requested:
                        if self.saved_step != self.step:
                            self.save("last", with_state=True)
                        raise TrainingStopped(self.stop.signum or signal.SIGTERM, self.step, str(self.run.path))
            except KeyboardInterrupt:
                if between_steps and self.saved_step != self.step:
                    self.save("last", with_state=True)
                raise
        summary = {"steps": self.step, "wall_time_s": time.perf_counter() - started,
                   "best_score": self.best_score if math.isfinite(self.best_score) else None,
                   "skipped_steps": self.guard.skipped, **{f"val/{k}": v for k, v in last_val.items()}}
        if self.rank == 0:
            self.run.write_json("summary.json", summary)
        return summary
