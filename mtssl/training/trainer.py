"""The training loop (MultiMix Algorithm 1, for any tasks, strategies and bridges).

:class:`Trainer` wires a run together from its config and runs the loop
(:meth:`Trainer.fit`). The pieces it wires live beside it: the step's views
(:mod:`.views`), the step itself (:mod:`.step`), the batches
(:mod:`.batches`), validation (:mod:`.validation`) and checkpoints
(:mod:`.checkpointing`).
"""
from __future__ import annotations

import math
import signal
import time
from typing import Any, Callable

import torch

from mtssl.model.assemble import (Components, build_components, build_peer, build_strategy_modules, build_tasks,
                                   build_weighting)
from mtssl.training.augment import Augmenter
from mtssl.model.compile import compile_model
from mtssl.run.config import RunConfig, TaskData
from mtssl.data.prepare import ProgressFactory, TaskArrays, prepare_task_data, task_seed
from mtssl.training.guard import DivergenceGuard
from mtssl.plugins import PluginHost
from mtssl.training.precision import Precision, resolve_precision
from mtssl.run.rundir import RunDir
from mtssl.run.seeding import pick_device, set_determinism
from mtssl.run.threads import apply_threads
from mtssl.training.stopping import StopRequest, TrainingStopped, stop_on_signals
from mtssl.training.teacher import EMATeacher, requested_decay
from mtssl.training.batches import build_batches, image_channels, introduce_labels, write_splits
from mtssl.training.checkpointing import Checkpointer, resumable_parts
from mtssl.training.distributed import check_processes, strategy_context
from mtssl.training.step import Networks, StepResult, TrainingStep
from mtssl.training.validation import validate
from mtssl.training.views import View, ViewBuilder


class Trainer:
    """Builds a run from a config and trains it, writing everything into a run directory.

    Building is a sequence of named steps, in the order :meth:`__init__` calls them (each uses what the
    ones before made, and the random generators are drawn in this order): :meth:`load_data`,
    :meth:`build_model`, :meth:`distribute`, :meth:`write_run_files`, :meth:`build_streams`,
    :meth:`build_companions`, :meth:`build_optimizer` and :meth:`build_loop`.
    """

    def __init__(self, config: RunConfig, host: PluginHost, run: RunDir,
                 progress: ProgressFactory | None = None, rank: int = 0, world: int = 1,
                 device: str | None = None):
        self.config, self.host = config, host
        self.rank, self.world = rank, world
        self.checkpoints = Checkpointer(run, rank, world)
        self.device = pick_device(device or config.device)  # torchrun: this process's own device
        set_determinism(config.seed, config.deterministic)
        apply_threads(config.threads)
        task_set = build_tasks(config, host)
        self.load_data(task_set[0], progress)
        self.build_model(task_set)
        self.distribute()
        self.write_run_files()
        self.build_streams()
        self.build_companions()
        self.build_optimizer()
        self.build_loop()

    # -- setup -------------------------------------------------------------
    def load_data(self, tasks: dict, progress: ProgressFactory | None = None) -> None:
        """Decode every task's sources into arrays with their splits; the image channels follow from them."""
        config = self.config
        self.data: dict[str, TaskArrays] = {
            name: prepare_task_data(self.host, name, task, config.data.get(name, TaskData()), config.size,
                                    task_seed(config.seed, name), progress, config.cache_dir, config.skip_bad)
            for name, task in tasks.items()}
        config.channels = image_channels(self.data, config.channels)

    def build_model(self, task_set) -> None:
        """The components and the multi-task network on the device, its precision resolved, compiled if asked."""
        self.parts: Components = build_components(self.config, self.host, task_set)
        self.model = self.parts.model.to(self.device)
        self.precision = Precision(self._resolve_precision(), self.device)
        if self.config.compile:
            compile_model(self.model, self.device)

    def distribute(self) -> None:
        """Under several processes, the DistributedDataParallel wrapper the forward passes go through."""
        self.forward_model = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.forward_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            torch.manual_seed(self.config.seed + self.rank)  # same weights everywhere, different augmentations

    def write_run_files(self) -> None:
        """``config.json`` (with what was resolved: channels, precision) and the splits, once, by rank 0."""
        if self.rank == 0:
            self.run.write_json(RunDir.CONFIG, self.config.to_dict())
            write_splits(self.run, self.data)

    def build_streams(self) -> None:
        """The augmentations, the labeled and unlabeled streams, the views of a step and the step count."""
        config = self.config
        self.augmenter = Augmenter(config.size, config.strong_ops).to(self.device)
        batches = build_batches(self.data, self.parts.strategies, config.batch_size, config.seed, self.device,
                                config.device_memory_budget, self.rank, self.world,
                                introduce_labels(self.parts.tasks, self.data))
        self.labeled, self.unlabeled, self.streamed = batches.labeled, batches.unlabeled, batches.streamed
        self.views = ViewBuilder(self.parts.tasks, self.parts.strategies, self.augmenter, self.labeled, self.unlabeled)
        # an epoch is one pass over the longest stream (each rank walks its own shard of it)
        self.steps_per_epoch = max(math.ceil(len(s) / (config.batch_size * self.world))
                                   for s in [*self.labeled.values(), *self.unlabeled.values()])
        self.total_steps = self._total_steps()

    def build_companions(self) -> None:
        """The EMA teacher, second network and modules strategies ask for, and the task weighting."""
        strategies = [s for group in self.parts.strategies.values() for s in group]
        decay = requested_decay(strategies)
        self.teacher = EMATeacher(self.model, decay) if decay is not None else None
        self.peer = (build_peer(self.config, self.host).to(self.device) if any(s.needs_peer() for s in strategies)
                     else None)
        self.weighting = build_weighting(self.config, self.host)
        context = strategy_context(self.rank, self.world, self.device, self.config.seed)
        for component in (*strategies, self.weighting):
            component.bind(context)
        self.weighting.setup(list(self.parts.tasks), self.device)
        check_processes(strategies, self.weighting, self.world)
        self.strategy_modules = build_strategy_modules(self.parts, self.device)

    def build_optimizer(self) -> None:
        """Adam over every trained parameter (the weighting's own group at its own rate) and the step schedule."""
        groups = [{"params": [*self.model.parameters(), *(self.peer.parameters() if self.peer else ()),
                              *(p for module in self.strategy_modules.values() for p in module.parameters())]}]
        if self.weighting.parameters():
            groups.append({"params": self.weighting.parameters(),
                           **({"lr": self.weighting.lr} if self.weighting.lr else {})})
        self.optimizer = torch.optim.Adam(groups, lr=self.config.lr)
        step_size = max(1, round(self.config.lr_step_epochs * self.steps_per_epoch))
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size, gamma=self.config.lr_gamma)

    def build_loop(self) -> None:
        """The loop's state at step 0: the divergence guard, the stop request and the step itself."""
        self.step = 0
        self.validation_warnings: list[str] = []  # from the latest validation (see validate)
        self.best_score = -math.inf
        self.guard = DivergenceGuard(self.config.max_loss, self.config.skip_nonfinite, self.world)
        self.stop = StopRequest()
        self._stop_agreed = False
        self.stepper = TrainingStep(Networks(self.model, self.forward_model, self.teacher, self.peer), self.parts,
                                    self.weighting, self.precision, self.guard, self.stop, self.optimizer,
                                    self.scheduler, self.device, self.config.log_grad_shares)

    def _total_steps(self) -> int:
        if self.config.steps is not None:
            return int(self.config.steps)
        if self.config.epochs is not None:
            return max(1, round(self.config.epochs * self.steps_per_epoch))
        raise ValueError("give --steps or --epochs")

    def _resolve_precision(self) -> str:
        """The concrete precision of this run; ``auto`` is resolved here and recorded with the config."""
        requested = "bf16" if self.config.amp and self.config.precision == "auto" else self.config.precision
        self.config.precision = resolve_precision(requested, self.device)
        return self.config.precision

    # -- one step ----------------------------------------------------------
    def gather_views(self) -> list[View]:
        """Draw every stream once and build every view the tasks and strategies ask for."""
        return self.views.gather()

    def compute_loss(self, views: list[View]) -> StepResult:
        """The current step's losses for ``views``, without updating anything."""
        return self.stepper.compute_loss(views, self.step)

    def train_step(self) -> dict[str, float]:
        """One update; a step the divergence guard rejects updates nothing (or stops the run)."""
        result = self.stepper.update(self.gather_views(), self.step, self.checkpoints.note)
        self.step += 1
        self._stop_agreed = result.stop
        return result.logs

    def validate(self, batch_size: int = 32) -> dict[str, float]:
        """Validation metrics; problems the tasks see in the predictions go to :attr:`validation_warnings`."""
        self.validation_warnings = []
        return validate(self.model, self.parts.tasks, self.data, self.device, self.config.select_by, batch_size,
                        self.validation_warnings)

    # -- checkpoints -------------------------------------------------------
    @property
    def run(self) -> RunDir:
        """The run directory (held by the checkpointer, which writes into it)."""
        return self.checkpoints.run

    @run.setter
    def run(self, run: RunDir) -> None:
        self.checkpoints.run = run

    @property
    def saved_step(self) -> int | None:
        """The step of the committed ``last`` checkpoint (None before the first)."""
        return self.checkpoints.saved_step

    def stateful(self) -> dict[str, Any]:
        """Everything besides the weights that a resume restores, by name."""
        return resumable_parts(self)

    def load_progress(self, state: dict) -> None:
        self.step, self.best_score = int(state["step"]), float(state["best_score"])

    def save(self, tag: str, with_state: bool) -> None:
        """Write ``tag``: the weights, with the run state when ``with_state``."""
        metadata = {"config": self.config.to_dict(), "step": self.step,
                    "class_names": {n: list(d.train.class_names) for n, d in self.data.items()}}
        self.checkpoints.save(tag, self.model.state_dict(), metadata, self.step,
                              self.stateful() if with_state else None)

    def resume(self, tag: str = "last") -> None:
        """Restore weights and every stateful component of this rank from the committed ``tag``."""
        self.model.load_state_dict(self.checkpoints.load(tag, self.stateful()))
        self.checkpoints.resumed_at(self.step)

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
        with ``last`` saved, raising :class:`~mtssl.training.stopping.TrainingStopped`.
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
