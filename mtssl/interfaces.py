"""The kinds of component a plugin can contribute.

The core trains whatever these describe and knows none of them by name: a
task, strategy, bridge, backbone, data source or task weighting is found in the plugin
registry and talks to the trainer only through the methods below.
"""
from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Mapping, Sequence

from mtssl.options import Options, read_options
from mtssl.targets import TargetSpec

import numpy as np
import torch
from torch import nn

AugName = Literal["none", "weak", "strong", "strong_photometric"]
"""How a view's images are augmented: not at all, flip and padded crop, operations drawn from the strong
pool, or that pool's intensity operations only (geometry kept, for a strong view of a weak view)."""

ModelName = Literal["student", "teacher", "peer"]
"""Which network runs a view: the trained model, its EMA teacher (no autograd), or a second trained network."""


class Backbone(nn.Module, ABC):
    """Shared encoder: image batch in, feature pyramid out (shallow to deep).

    Heads are built from ``channels`` and ``strides``, so any backbone fits any
    task head.
    """

    in_channels: int = 1
    channels: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()

    @abstractmethod
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return one feature map per level; level i has ``channels[i]`` channels at ``strides[i]``."""

    def check_input_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` naming a usable size when the encoder cannot take this one."""
        step = max(self.strides)
        for dim in (height, width):
            if dim < step:
                raise ValueError(f"{type(self).__name__} needs image sides of at least {step} (a multiple of "
                                 f"{step}); got {height}x{width}. Use --size {step} or larger.")
            if dim % step:
                lower, upper = (dim // step) * step, (dim // step + 1) * step
                suggestion = f"{upper}" if lower == 0 else f"{lower} or {upper}"
                raise ValueError(
                    f"{type(self).__name__} needs image sides divisible by {step}; "
                    f"got {height}x{width}. Use --size {suggestion}."
                )


@dataclass(frozen=True)
class HeadInputs:
    """What a task head is built from: the backbone's report plus bridge extras.

    ``extras`` maps a stride to the number of extra channels the bridges into
    this head will inject at that stride (several bridges at one stride:
    their channels in ``--bridge`` order); ``image_channels`` is the
    channels of the model's input images.
    """

    channels: tuple[int, ...]
    strides: tuple[int, ...]
    extras: Mapping[int, int] = field(default_factory=dict)
    image_channels: int = 1


@dataclass
class TaskEvaluation:
    """A task's scores on one test set.

    ``per_image`` holds one JSON-able record per image (the core adds its
    ``key``); ``aggregate`` maps a metric to ``{"mean": ..., "std": ...}``
    (None where undefined; std None for set-level metrics such as AUC);
    ``extra`` carries anything else worth saving (a confusion matrix);
    ``notes`` explain every None.
    """

    per_image: list[dict[str, Any]]
    aggregate: dict[str, dict[str, float | None]]
    extra: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class EvaluatedSet:
    """One test set as a task's report figures see it: images, predictions, targets, scores.

    ``images`` are uint8 ``[N, C, S, S]`` at the evaluation size; ``probabilities``
    and ``targets`` are what :meth:`Task.evaluate` received; ``maps`` holds
    the bridge maps (:meth:`Bridge.maps`) computed on these images, ``[N, S, S]``, and
    ``map_labels`` what to call each in a figure: its route, so a map fed into
    another task is not mistaken for an explanation of this one.
    """

    label: str
    images: np.ndarray
    probabilities: np.ndarray
    targets: np.ndarray
    keys: list[str]
    class_names: tuple[str, ...]
    evaluation: TaskEvaluation
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    map_labels: dict[str, str] = field(default_factory=dict)

    def map_label(self, name: str) -> str:
        """What to call bridge map ``name`` in a figure (its route when known, else its name)."""
        return self.map_labels.get(name, name)


@dataclass
class ReportFigure:
    """A finished matplotlib figure with the title and caption the report shows next to it."""

    title: str
    figure: Any
    caption: str = ""


class PredictionWriter(ABC):
    """Writes one task's predictions for new images (a CSV row, a mask file), one image at a time."""

    @abstractmethod
    def write(self, name: str, probability: np.ndarray, original_size: tuple[int, int]) -> None:
        """Store the prediction for the image called ``name`` (a file stem); ``original_size`` is (H, W)."""

    def source(self, name: str, path: Path) -> None:
        """The input file that output ``name`` stands for, given just before its :meth:`write`; a writer that
        lists images records it (names are stems made unique, so only the path tells two ``x.png`` apart)."""

    def close(self) -> list[Path]:
        """Finish writing; return the files written."""
        return []


class Task(ABC):
    """One supervised objective: builds its head, scores labeled outputs, reports metrics.

    ``target`` declares what its labeled samples carry (set it as a class
    attribute, or in ``__init__`` when options change it, e.g. the number of
    channels); the core checks every source against it and handles targets
    only through it. Items without a target never reach :meth:`supervised_loss`,
    :meth:`metrics` or :meth:`evaluate`; when ``target.missing`` is declared,
    targets there may still hold it in some elements (a finding nobody read):
    weigh those out with :func:`mtssl.api.known_mask`.
    """

    target: TargetSpec
    needs_decoder: ClassVar[bool] = False
    """True when the head is expensive (a decoder): the model runs it only on rows that need it."""
    default_labels: ClassVar[int | None] = None
    """Label budget when the user names none (None: every training image is labeled)."""
    default_source: ClassVar[str | None] = None
    """Training data spec when the user gives no ``--TASK-data`` (e.g. ``"synthetic"``); None: the user
    must name one, and the error lists the installed sources that serve :attr:`target`."""

    def __init__(self, name: str, **options: Any) -> None:
        self.name = name
        self.options = options

    @abstractmethod
    def build_head(self, inputs: HeadInputs) -> nn.Module:
        """Return a module called as ``head(features, extras)`` where extras maps stride -> tensor."""

    @abstractmethod
    def supervised_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Weighted supervised loss on labeled outputs (float32 scalar)."""

    @abstractmethod
    def probabilities(self, output: torch.Tensor) -> torch.Tensor:
        """Turn raw head output into probabilities (softmax over classes, sigmoid per pixel)."""

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """Cheap validation metrics on a batch; larger evaluations live in the eval command."""
        return {}

    def selection_score(self, metrics: Mapping[str, float]) -> float | None:
        """The one number (higher is better) this task contributes to model selection."""
        return None

    def evaluate(self, probabilities: np.ndarray, targets: np.ndarray,
                 class_names: Sequence[str] = ()) -> TaskEvaluation:
        """Full test-set evaluation of :meth:`probabilities` outputs against targets (numpy arrays).

        ``class_names`` are the names of the target's classes or channels, as the training source gave them.
        """
        return TaskEvaluation([{} for _ in range(len(targets))], {},
                              notes=[f"task '{self.name}' defines no evaluation"])

    def prediction_writer(self, out_dir: Path, class_names: Sequence[str] = ()) -> PredictionWriter | None:
        """How ``predict`` stores this task's outputs in ``out_dir``; None: the task is not exported."""
        return None

    def report_figures(self, sets: Sequence[EvaluatedSet]) -> list[ReportFigure]:
        """Figures for the run report, one or more per evaluated test set."""
        return []

    def output_info(self, class_names: Sequence[str] = ()) -> dict[str, Any]:
        """How to read :meth:`probabilities` outside mtssl (shape, meaning, decision rule), for exported models."""
        return {}

    def observe_labels(self, targets: np.ndarray) -> None:
        """Called once before training (again on ``--resume``) with the targets of the labeled split,
        e.g. to count its classes for class-balanced loss weights. The default ignores them."""

    def draw_weights(self, targets: np.ndarray) -> np.ndarray | None:
        """How likely each labeled image (``targets`` as in :meth:`observe_labels`) is to be drawn into a
        labeled batch, relative to the others, drawn with replacement; None (the default): shuffled passes."""
        return None

    def validation_warnings(self, output: torch.Tensor, target: torch.Tensor,
                            class_names: Sequence[str] = ()) -> list[str]:
        """Problems with the validation predictions that the metrics hide (every image put in one class),
        one line each; printed whenever the run validates. Arguments as in :meth:`metrics`."""
        return []


_RESERVED_OPTION_NAMES = frozenset({"name", "options", "settings", "context"})
"""Attributes the base classes set themselves, which a declared option may not replace."""


def _read_declared_options(component: Any, kind: str, name: str, options: Mapping[str, Any]) -> None:
    """Read ``options`` with ``type(component).options_model`` (when set) and set each field on ``component``.

    Every field becomes an attribute of the same name and the validated model becomes ``settings``; a bad
    option is the one-line ``ValueError`` of :func:`read_options`, naming ``KIND 'NAME'``. A field that would
    hide a method or property of the class, or an attribute the base class sets, is refused (``TypeError``).
    """
    cls = type(component)
    model = cls.options_model
    if model is None:
        return
    for option in model.model_fields:
        existing = inspect.getattr_static(cls, option, None)
        if option in _RESERVED_OPTION_NAMES or hasattr(type(existing), "__get__"):
            raise TypeError(f"{kind} '{name}': option '{option}' of {model.__name__} would replace "
                            f"{cls.__name__}.{option}; give the option another name")
    settings = read_options(f"{kind} '{name}'", options, model)
    for option in model.model_fields:
        setattr(component, option, getattr(settings, option))
    component.settings = settings


def _single_process_sum(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.clone()


@dataclass(frozen=True)
class StrategyContext:
    """Where a strategy or weighting runs: this process's ``rank`` among ``world_size`` and a collective sum.

    Under torchrun every process draws its own shard of each stream, so
    statistics a component keeps (class-wise thresholds, moving averages)
    drift apart between processes unless it reduces what it learns from a
    batch: pass the batch's sums through :meth:`all_reduce_sum` (or means
    through :meth:`all_reduce_mean`) and every rank gets the same bits back.
    Every rank must make the same calls in the same order (as the trainer
    calls every strategy's ``loss`` on every rank). In one process both
    return a copy of their input. The core hands the context over through
    ``bind`` before training starts.
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    reduce_sum: Callable[[torch.Tensor], torch.Tensor] = _single_process_sum
    """The collective behind :meth:`all_reduce_sum`: returns a new tensor, its input is left alone."""
    seed: int = 0
    """The run's ``--seed`` (the same on every rank), for a component that draws from a generator of its own:
    seeding that from it keeps the run's other random streams where they were."""

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The elementwise sum of ``tensor`` over every process (a new tensor; all ranks get the same)."""
        return self.reduce_sum(tensor)

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The elementwise mean of ``tensor`` over every process (a new tensor; all ranks get the same)."""
        return self.reduce_sum(tensor) / self.world_size


SINGLE_PROCESS = StrategyContext()
"""The context a strategy or weighting has until the core binds the run's own (one process, CPU)."""


@dataclass(frozen=True)
class ViewRequest:
    """A strategy's request for one view of one of its task's streams.

    The trainer gathers every request of every strategy, augments on the
    device, and runs all of them through the backbone together.
    """

    key: str
    stream: Literal["labeled", "unlabeled"] = "unlabeled"
    aug: AugName = "none"
    grad: bool = True
    """False for views that only make targets (pseudo-labels): their outputs are detached."""
    of: str | None = None
    """Key of an earlier view of the same strategy to augment instead of the stream's batch (``stream`` is
    then ignored): a strong view of the weak view shares its geometry, and spatial targets follow both."""
    model: ModelName = "student"
    """``teacher``: run through the EMA teacher (the strategy must return a decay from
    :meth:`SSLStrategy.teacher_decay`); ``peer``: through the second network
    (:meth:`SSLStrategy.needs_peer`)."""
    features: bool = False
    """True: :attr:`StrategyInputs.view_features` carries the backbone's feature maps of this view (shallow to
    deep, as its head saw them, with the view's gradient), for feature-level methods (feature perturbation,
    auxiliary decoders, embeddings). Free: they come out of the pass that computes the view's outputs."""


@dataclass
class StrategyInputs:
    """What a strategy scores: outputs of the views it asked for and of its task's labeled batch.

    ``view_images`` and ``view_targets`` hold the augmented input images of
    each planned view and, for views of the labeled stream, their targets
    (None for unlabeled views), for strategies that build new inputs from
    them (e.g. mixup). ``forward`` runs the task's head on new images: it
    costs an extra backbone pass over those images, so use it only when the
    inputs cannot be planned as views (they depend on this step's outputs).
    """

    task: Task
    views: Mapping[str, torch.Tensor]
    labeled_output: torch.Tensor | None
    labeled_target: torch.Tensor | None
    step: int
    view_images: Mapping[str, torch.Tensor] = field(default_factory=dict)
    view_targets: Mapping[str, torch.Tensor | None] = field(default_factory=dict)
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None
    view_features: Mapping[str, list[torch.Tensor]] = field(default_factory=dict)
    """For each view planned with ``features=True``: the backbone's feature maps of that view's images
    (one per level, ``[len(view), channels[i], H / strides[i], W / strides[i]]``, in the autocast dtype)."""
    head: Callable[..., torch.Tensor] | None = None
    """``head(view, features, module=None)``: the task's head (of the network that ran ``view``) on
    ``features`` in place of the backbone features of ``view``, a view planned with ``features=True``, with
    the bridge extras that view's head got. For feature perturbation (UniMatch, CCT): no backbone pass, only
    the head runs again. ``module``: run that head of the strategy's own (:meth:`SSLStrategy.modules`)
    instead of the task's, called as the task's head is, ``module(features, extras)``."""


@dataclass
class StrategyLoss:
    """A weighted SSL term plus the numbers worth logging (e.g. the pseudo-label mask rate).

    Log values may be floats or 0-d tensors; the trainer fetches tensors from
    the device in one transfer per step, so leave them as tensors (detached).
    """

    loss: torch.Tensor
    logs: dict[str, float | torch.Tensor] = field(default_factory=dict)


class SSLStrategy(ABC):
    """Turns unlabeled data into a loss for one task without running the model itself.

    What the core offers beyond views, each asked for declaratively:

    * an EMA teacher: return its decay from :meth:`teacher_decay` and plan views with
      ``model="teacher"``; the trainer updates it after every optimizer step and checkpoints it;
    * a second network (cross pseudo supervision): return True from :meth:`needs_peer` and plan
      views with ``model="peer"``; it is trained with the model and checkpointed;
    * state that persists across steps and ``--resume`` (class-wise statistics, adaptive
      thresholds): keep it in tensors returned by :meth:`state_dict` and restored by
      :meth:`load_state_dict`. :meth:`loss` only *proposes* the step's update of that state;
      :meth:`commit` applies it once the step's update is applied, so a step the divergence
      guard rejects (``--skip-nonfinite``) leaves it as it was;
    * the process it runs in (:class:`StrategyContext`, in :attr:`context`): under torchrun,
      reduce statistics with ``context.all_reduce_sum`` so that every rank keeps the same state;
    * the backbone's features of a view: ``ViewRequest(..., features=True)``, and the task's head on
      changed features of such a view: :attr:`StrategyInputs.head`;
    * trainable modules of its own (auxiliary decoders): return them from :meth:`modules`; the core moves
      them to the device, trains them with the model's optimizer and saves them with the run state.
    """

    context: StrategyContext = SINGLE_PROCESS
    """The run's processes and collectives; :meth:`bind` replaces the single-process default."""
    options_model: ClassVar[type[Options] | None] = None
    """The strategy's options, declared: an ``Options`` model. When a subclass sets it, ``__init__`` reads
    the options with it (a bad one is refused in one line naming ``strategy 'NAME'``), sets each field as an
    attribute of the same name and keeps the validated model as ``self.settings``, so the subclass needs no
    constructor of its own. None (the default): the subclass reads its options itself (``read_options``)."""

    def __init__(self, name: str, **options: Any) -> None:
        _read_declared_options(self, "strategy", name, options)
        self.name = name
        self.options = options

    def bind(self, context: StrategyContext) -> None:
        """Called once by the core before training starts (and before any state is restored)."""
        self.context = context

    def commit(self) -> None:
        """Apply the state update the last :meth:`loss` proposed; called only when that step updates the model.

        The default does nothing (a stateless strategy). A step that is skipped never commits, and the
        next :meth:`loss` proposes afresh from the committed state.
        """

    def serves(self, target: TargetSpec) -> bool:
        """Whether this strategy can train a task with these targets (checked before training starts)."""
        return True

    def teacher_decay(self) -> float | None:
        """EMA decay of the teacher this strategy reads (None: it needs no teacher)."""
        return None

    def needs_peer(self) -> bool:
        """True when the strategy trains a second, independently initialised network."""
        return False

    def modules(self, task: Task, inputs: HeadInputs) -> nn.Module | None:
        """Trainable modules this strategy owns, built once before training (None: it owns none).

        ``inputs`` is what the task's head was built from, so ``task.build_head(inputs)`` builds a head that
        takes the same features and bridge extras (an auxiliary decoder). The strategy keeps the module it
        returns and calls it in :meth:`loss` (e.g. through :attr:`StrategyInputs.head`); the core moves it to
        the device, adds its parameters to the optimizer and saves it with the run state, so ``--resume``
        restores it. Validation, evaluation and export never see it. One process only (like the peer).
        """
        return None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors that must survive a checkpoint (empty for stateless strategies)."""
        return {}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state:
            raise ValueError(f"strategy '{self.name}' keeps no state, but the checkpoint holds {sorted(state)}")

    @abstractmethod
    def plan(self) -> Sequence[ViewRequest]:
        """The views this strategy needs each step."""

    @abstractmethod
    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        """Score the planned views (already run by the trainer)."""


@dataclass
class WeightedLoss:
    """The total of the per-task losses and the weight each task got (logged as ``weight/TASK``).

    Weights and logs may be 0-d tensors: the trainer fetches them with the step's other logs in one
    transfer, so a weighting need not synchronise with the device.
    """

    loss: torch.Tensor
    weights: dict[str, float | torch.Tensor] = field(default_factory=dict)
    logs: dict[str, float | torch.Tensor] = field(default_factory=dict)


class Weighting(ABC):
    """How per-task losses become one training signal (equal sum, learned weights, gradient surgery).

    The trainer calls :meth:`setup` once with the task names and device, adds
    :meth:`parameters` (learned weights) to the optimizer, calls :meth:`combine`
    every step and then :meth:`backward`, which must leave gradients in every
    parameter's ``.grad``. Learned values and any other state go through
    :meth:`state_dict`, so ``--resume`` restores them. Before :meth:`setup` the core binds the
    run's :class:`StrategyContext` (:meth:`bind`); as for strategies, state that is not an optimised
    parameter is proposed in :meth:`combine` and applied in :meth:`commit`, which only an applied step calls.
    """

    lr: float | None = None
    """Learning rate for :meth:`parameters` (None: the run's ``--lr``)."""
    needs_task_gradients: ClassVar[bool] = False
    """True for gradient-based methods: :meth:`backward` differentiates each task separately
    (not supported with several processes, where DistributedDataParallel owns the backward).
    In float16 the losses :meth:`backward` gets are multiplied by the gradient scaler's factor,
    which the core divides out of every ``.grad`` before the optimizer step: the method must be
    linear in the scale of the losses (projections and sums of per-task gradients are)."""
    needs_representation: bool = False
    """True (for a gradient-based method, as a class or instance attribute): :meth:`backward` also gets
    ``representation=``, the shared encoder's outputs of this step's passes that carry a gradient
    (``Architecture.encode``), to differentiate the tasks with respect to them instead of the encoder's
    parameters, as MGDA-UB does."""
    context: StrategyContext = SINGLE_PROCESS
    """The run's processes and collectives; :meth:`bind` replaces the single-process default."""
    options_model: ClassVar[type[Options] | None] = None
    """The weighting's options, declared: an ``Options`` model (``Options`` itself: it takes none). When a
    subclass sets it, ``__init__`` reads the options with it (a bad one is refused in one line naming
    ``weighting 'NAME'``), sets each field as an attribute of the same name and keeps the validated model as
    ``self.settings``. None (the default): the subclass reads its options itself (``read_options``)."""

    def __init__(self, name: str, **options: Any) -> None:
        _read_declared_options(self, "weighting", name, options)
        self.name = name
        self.options = options

    def bind(self, context: StrategyContext) -> None:
        """Called once by the core before :meth:`setup`."""
        self.context = context

    def commit(self) -> None:
        """Apply the state update the last :meth:`combine` proposed; called only when the step is applied."""

    def setup(self, tasks: Sequence[str], device: torch.device) -> None:
        """Called once before training with the run's task names."""

    def parameters(self) -> list[nn.Parameter]:
        """Learned weighting parameters the optimizer should train (none by default)."""
        return []

    @abstractmethod
    def combine(self, losses: Mapping[str, torch.Tensor], step: int) -> WeightedLoss:
        """The weighted total of ``{task: loss}`` (float32 scalars)."""

    def backward(self, losses: Mapping[str, torch.Tensor], combined: WeightedLoss,
                 shared: Sequence[nn.Parameter], others: Sequence[nn.Parameter]) -> dict[str, float]:
        """Fill ``.grad`` of ``shared`` (the encoder's parameters) and ``others`` (every other trained
        parameter); the default backpropagates the combined loss. Returns numbers to log: floats or 0-d
        tensors, which the core fetches in one transfer after the update (so the weights a gradient-based
        method derives here can be logged as ``weight/TASK`` without a synchronisation of its own)."""
        combined.loss.backward()
        return {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors that must survive a checkpoint, the learned :meth:`parameters` included (empty by default)."""
        return {}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned (on ``--resume``, after :meth:`setup`)."""
        if state:
            raise ValueError(f"weighting '{self.name}' keeps no state, but the checkpoint holds {sorted(state)}")


@dataclass
class BridgeInputs:
    """What a bridge sees for the rows its target task decodes.

    ``images`` is the whole batch that went through the backbone (it requires
    grad when the bridge asked for it); ``rows`` picks the target's rows out of
    it; ``source_output`` is the source head's raw output on those rows (run
    with the source's own bridge extras when bridges are chained) and
    ``source_probabilities`` the same through the source's
    :meth:`Task.probabilities`, so a bridge need not know sigmoid from softmax.
    Both stay differentiable with respect to ``images``.
    """

    images: torch.Tensor
    rows: slice
    source_output: torch.Tensor
    source_probabilities: torch.Tensor


class Bridge(ABC):
    """Carries something from one task's output into another task's head.

    Bridges form a graph over the run's tasks: a task may be the target of
    one bridge and the source of another (``cls -> seg -> cls2``); the model
    runs the heads in topological order and refuses a cycle when it is built.
    Each bridge may appear once per run (its state, maps and prediction files
    are keyed by its name).

    The model calls :meth:`setup` once with the route's tasks before it reads
    :attr:`stride` or :attr:`extra_channels`, so both may depend on them.
    """

    needs_input_grad: ClassVar[bool] = False
    image_channels: int = 1
    """Channels of the model's input images, set by the default :meth:`setup` (read it after setup)."""

    def __init__(self, name: str, source: str, target: str, **options: Any) -> None:
        self.name = name
        self.source = source
        self.target = target
        self.options = options

    def setup(self, source: Task, target: Task, head_inputs: HeadInputs) -> None:
        """Learn the route before the model reads :attr:`stride` and :attr:`extra_channels`.

        ``source`` and ``target`` are the run's tasks at the ends of this
        bridge; ``head_inputs`` describes the backbone (feature channels and
        strides, ``image_channels``; its ``extras`` are empty). Raise
        ``ValueError`` naming the bridge when the route cannot work (e.g. a
        source without classes). The default records ``image_channels``;
        call it from an override.
        """
        self.image_channels = head_inputs.image_channels

    @property
    @abstractmethod
    def extra_channels(self) -> int:
        """Channels this bridge adds to the target head's input (read after :meth:`setup`)."""

    @property
    @abstractmethod
    def stride(self) -> int:
        """Backbone stride at which the extras are injected into the target head (read after :meth:`setup`)."""

    @abstractmethod
    def compute(self, inputs: BridgeInputs) -> torch.Tensor:
        """Return ``[len(rows), extra_channels, H, W]`` at full input resolution, detached."""

    def maps(self, extra: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named ``[N, 1, H, W]`` maps of :meth:`compute`'s output worth showing a person (e.g. saliency)."""
        return {}

    @staticmethod
    def infer_route(tasks: Mapping[str, Task]) -> tuple[str, str]:
        """Source and target when the user gave no ``SRC->DST``; override to pick a sensible default."""
        raise ValueError("this bridge needs an explicit route: NAME:SRC->DST")


@dataclass
class Sample:
    """One decoded item of a source: an image (HxW or HxWxC, any depth) and its target.

    A per-image target is a number or an array of the declared shape; a
    spatial target is an array at the image's resolution, HxW for one
    channel or HxWxC. None marks an unlabeled item: the source's
    ``target.missing`` must then be declared; the item is stored as all
    missing and trains only as unlabeled data. Unknown elements of a
    target (some findings unread) hold ``target.missing``.
    """

    image: np.ndarray
    target: Any


class Source(ABC):
    """A collection of images and their targets for one task.

    Sources are random-access: ``keys`` names each item (a file path or a
    generated id), ``load(i)`` decodes it. ``target`` declares what the
    items carry (the core checks it agrees with the task's), ``channels``
    how many channels the model gets per image (1 for radiographs, 3 for
    colour), ``class_names`` the names of the target's classes or channels.
    ``class_labels()``, ``labeled()`` and ``groups()`` must be cheap, so label
    budgets can be stratified, checked and split by patient without decoding
    images. A source that cannot yield the target it is created for raises
    :class:`mtssl.api.UnservedTarget` from its factory.
    """

    target: TargetSpec
    channels: int = 1
    class_names: tuple[str, ...] = ()

    @property
    @abstractmethod
    def keys(self) -> Sequence[str]:
        """Stable identifier per item (source path for files)."""

    @abstractmethod
    def load(self, index: int) -> Sample:
        """Decode one item (image as uint8/uint16 ndarray, HxW or HxWxC)."""

    def class_labels(self) -> Sequence[int | None] | None:
        """Class of every item without decoding, for stratified splits (None: not categorical).

        An item without a label holds None or the target's ``missing`` value.
        """
        return None

    def labeled(self) -> Sequence[bool] | None:
        """Whether each item carries a target, without decoding, so ``--check`` can count label budgets.

        The default reads :meth:`class_labels`; None: every item does, or only
        decoding tells (override it when some items have no target and no
        class labels, e.g. multi-label findings). Training trusts what it
        decodes: an item whose every element is missing is unlabeled.
        """
        labels = self.class_labels()
        missing = self.target.missing
        if labels is None or missing is None:
            return None
        return [label is not None and label != missing for label in labels]

    def groups(self) -> Sequence[str] | None:
        """The patient (or other group) of every item, so splits never put one patient on two sides.

        None: every item is its own group.
        """
        return None

    def fingerprint(self, index: int) -> str:
        """What makes a cached copy stale (path, size, mtime for files)."""
        return self.keys[index]

    def problems(self) -> Sequence[Exception]:
        """Bad files found while listing and left out of ``keys`` (DataErrors naming each).

        The core raises the first unless the run skips bad input, so a source
        never has to know that setting.
        """
        return ()

    def remarks(self) -> Sequence[str]:
        """What listing left out on purpose (e.g. rows matching no class), for summaries."""
        return ()

    def __len__(self) -> int:
        return len(self.keys)

    def load_resized(self, index: int, size: int) -> Sample | None:
        """Optional fast path: produce the item directly at ``size`` (synthetic data)."""
        return None


@dataclass
class ValidationImages:
    """A few validation images of one task with what the model made of them, for loggers to draw.

    ``images`` are uint8 ``[N, C, S, S]``; ``probabilities`` is the task's
    :meth:`Task.probabilities` output (numpy, first axis = image); ``maps``
    holds the bridge maps on these images (:meth:`Bridge.maps`), ``[N, S, S]``.
    """

    task: str
    images: np.ndarray
    probabilities: np.ndarray
    maps: dict[str, np.ndarray] = field(default_factory=dict)


class Logger(ABC):
    """Sends a run's numbers (and a few images) to a tracking tool; only the main process calls it.

    The core calls ``start`` once, ``log_step`` after every optimizer step,
    ``log_validation`` after every validation, and ``close`` at the end, even
    when training fails or is interrupted.
    """

    wants_images: ClassVar[bool] = False
    """True when :meth:`log_validation` should receive :class:`ValidationImages` (they cost a forward pass)."""

    def __init__(self, name: str, **options: Any) -> None:
        self.name = name
        self.options = options

    @abstractmethod
    def start(self, run_dir: Path, config: Mapping[str, Any]) -> None:
        """Open the destination; ``config`` is the run's resolved configuration as a plain dict."""

    @abstractmethod
    def log_step(self, step: int, scalars: Mapping[str, float]) -> None:
        """Every loss term, the pseudo-label mask rates, the learning rate, ... of one step."""

    def log_validation(self, step: int, metrics: Mapping[str, float],
                       images: Sequence[ValidationImages] = ()) -> None:
        """Validation metrics (``TASK/METRIC``, ``score``) and, when :attr:`wants_images`, sample images."""

    def close(self) -> None:
        """Flush and release the destination (upload the run directory, ...)."""


class Architecture(nn.Module, ABC):
    """How the tasks share the encoder: each task's feature pyramid, from one pass over the batch.

    Every task gets a pyramid with the backbone's ``channels`` and ``strides``, so heads and bridges
    built for hard sharing fit any architecture. The backbone stays the model's own (``model.backbone``,
    checkpointed under that name); an architecture registers only what it adds (attention modules,
    further experts, gates). The core calls :meth:`setup` once, before the heads are built, then per
    forward :meth:`encode` over the whole batch and :meth:`task_features` for each task's rows.
    """

    def __init__(self, name: str, **options: Any) -> None:
        super().__init__()
        self.name = name
        self.options = options

    def setup(self, backbone: Backbone, tasks: Sequence[str], build_backbone: Callable[[], Backbone]) -> None:
        """Build what the architecture adds; ``build_backbone()`` returns another, independently
        initialised encoder of the run's backbone spec."""

    @abstractmethod
    def encode(self, backbone: Backbone, images: torch.Tensor) -> Any:
        """The pass all tasks share, over the whole batch (the backbone's pyramid, or every expert's)."""

    @abstractmethod
    def task_features(self, task: str, encoded: Any, images: torch.Tensor, rows: slice) -> list[torch.Tensor]:
        """Task ``task``'s pyramid on ``rows`` of ``images``, the batch :meth:`encode` gave ``encoded`` for."""

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every task's loss reaches besides the backbone's; gradient weightings treat them as the
        shared encoder's (task-specific modules such as attention masks or gates are not among them)."""
        return []
