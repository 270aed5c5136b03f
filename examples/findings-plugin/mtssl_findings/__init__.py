"""Multi-label findings with unread labels, a phantom that draws them, and SoftMatch for multi-label targets.

This package adds

* the task ``findings`` (:mod:`mtssl_findings.task`): three findings per
  image, sigmoid and binary cross-entropy over the findings that were read,
  scored by accuracy and per-finding AUC over those alone; its head takes
  bridge extras, so ``--bridge mask:seg->findings`` can chain after saliency;
* the source ``findings-phantom`` (:mod:`mtssl_findings.phantom`), its default
  source: phantoms whose findings are visible, some findings unread (NaN),
  some items without any target, two studies per patient;
* the strategy ``softmatch-ml`` (:mod:`mtssl_findings.softmatch`): SoftMatch's
  truncated-Gaussian weighting of per-finding pseudo-labels, its statistics
  reduced over processes and committed only by applied steps.

It imports only :mod:`mtssl.api`.
"""
from __future__ import annotations

from mtssl.api import hookimpl

from mtssl_findings.phantom import build_phantom
from mtssl_findings.softmatch import MultiLabelSoftMatch
from mtssl_findings.task import Findings


@hookimpl
def register_tasks(register):
    register("findings", Findings, description="multi-label findings, masked BCE over read findings; option weight")


@hookimpl
def register_sources(register):
    register("findings-phantom", build_phantom,
             description="phantoms with visible findings, some unread or unlabeled; options n, start, unlabeled, "
                         "unread, prevalence")


@hookimpl
def register_strategies(register):
    register("softmatch-ml", MultiLabelSoftMatch,
             description="SoftMatch for multi-label targets, statistics shared across processes; options weight, "
                         "momentum, n_sigma")
