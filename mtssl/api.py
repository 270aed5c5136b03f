"""Everything a plugin author imports: interfaces, the hook marker, small helpers, strategy building blocks.

Plugins import from this module only; the rest of :mod:`mtssl` may change.

What it promises: every name in ``__all__`` keeps its meaning and its call signature within a major
version of :data:`__version__`. A minor version only adds (names, optional arguments, methods with a
default) or deprecates: a deprecated name warns (``DeprecationWarning``) for at least one whole minor
version before a later one removes it. CHANGELOG.md lists every change. A plugin that needs something
added in, say, 1.1 checks ``__version__`` when it is imported.
"""
from __future__ import annotations

import importlib
import warnings

import torch
import torch.nn.functional as F

from mtssl.data.decode import check_mask_size, read_image, read_mask
from mtssl.data.errors import DataError
from mtssl.hookspecs import hookimpl
from pydantic import Field

from mtssl.functional import (
    Reduce,
    align_distribution,
    binary_pseudo_labels,
    dense_pseudo_label_loss,
    ema_update,
    fixmatch_loss,
    flexmatch_thresholds,
    flexmatch_update,
    freematch_fairness,
    freematch_mask,
    freematch_thresholds,
    freematch_update,
    gather_rows,
    guess_labels,
    linear_rampup,
    mixup,
    mixup_lambda,
    pooled_means,
    pseudo_labels,
    sharpen,
    sigmoid_rampup,
    softmatch_update,
    softmatch_weights,
    soft_cross_entropy,
    weighted_cross_entropy,
)
from mtssl.options import Options, read_options
from mtssl.interfaces import (
    Architecture,
    AugName,
    Backbone,
    Bridge,
    BridgeInputs,
    EvaluatedSet,
    HeadInputs,
    Logger,
    ModelName,
    PredictionWriter,
    ReportFigure,
    Sample,
    Source,
    SSLStrategy,
    StrategyContext,
    StrategyInputs,
    StrategyLoss,
    Task,
    TaskEvaluation,
    ValidationImages,
    ViewRequest,
    WeightedLoss,
    Weighting,
)
from mtssl.targets import Resample, TargetSpec, UnservedTarget, known_mask, masked_binary_cross_entropy

__version__ = "1.1"
"""The plugin API's version, ``MAJOR.MINOR``: a major step may break plugins, a minor one only adds."""


def resize_like(extra: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bring a bridge's full-resolution extras to a feature map's size (area average when shrinking)."""
    if extra.shape[-2:] == like.shape[-2:]:
        return extra
    shrinking = extra.shape[-2] >= like.shape[-2] and extra.shape[-1] >= like.shape[-1]
    return F.interpolate(extra, size=like.shape[-2:], mode="area" if shrinking else "bilinear")


class MissingDependency(ValueError):
    """A component needs an optional package that is not installed; the message names the extra to install."""


def require(module: str, extra: str, component: str):
    """Import an optional package for a component, or fail with one line naming the ``mtssl[extra]`` to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(f"{component} needs the '{module}' package: pip install 'mtssl[{extra}]' "
                                f"({exc})") from exc


def check_options(component: str, options: dict, allowed: set[str]) -> None:
    """Reject option names a component does not know, listing the ones it does.

    Deprecated since 1.1 (removed in 1.2 at the earliest): it checks names only, so ``weight=nan``
    passes. Declare an :class:`Options` model with typed, ranged fields (``Field(1.0, ge=0)``) and read
    it with :func:`read_options`.
    """
    warnings.warn(f"{component}: check_options is deprecated since mtssl.api 1.1 (removed in 1.2 at the "
                  "earliest); declare an mtssl.api.Options model and read it with read_options (typed, "
                  "range-checked)", DeprecationWarning, stacklevel=2)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"{component}: unknown option(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(allowed)) or 'none'}")


__all__ = [
    "AugName", "Backbone", "Bridge", "BridgeInputs", "HeadInputs", "Sample", "Source", "SSLStrategy",
    "StrategyInputs", "StrategyLoss", "TargetSpec", "Task", "ViewRequest", "hookimpl", "resize_like",
    "check_options", "DataError", "read_image", "read_mask", "check_mask_size",
    "EvaluatedSet", "PredictionWriter", "ReportFigure", "TaskEvaluation", "Options", "read_options",
    "Logger", "ValidationImages", "MissingDependency", "require", "Weighting", "WeightedLoss", "Architecture",
    "UnservedTarget", "known_mask", "masked_binary_cross_entropy",
    "Field", "StrategyContext", "ModelName", "Resample", "Reduce",
    # building blocks (mtssl/functional.py)
    "pseudo_labels", "fixmatch_loss", "binary_pseudo_labels", "dense_pseudo_label_loss", "sigmoid_rampup",
    "linear_rampup", "sharpen", "guess_labels", "mixup_lambda", "mixup", "soft_cross_entropy", "ema_update",
    "freematch_update", "freematch_thresholds", "freematch_mask", "freematch_fairness", "pooled_means",
    "weighted_cross_entropy", "align_distribution", "softmatch_update", "softmatch_weights", "flexmatch_update",
    "flexmatch_thresholds", "gather_rows",
]
