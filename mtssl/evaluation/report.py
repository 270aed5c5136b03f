"""A run's visual report: PNG figures plus one self-contained HTML page in ``RUN/report/``.

The core draws what every run has (training curves from ``metrics.jsonl``)
and asks each task for its own figures (:meth:`Task.report_figures`) on the
sets it is evaluated on, with the bridge maps computed on those images.
Figures are plain :class:`matplotlib.figure.Figure` objects rendered by the
Agg canvas, so no display is needed.
"""
from __future__ import annotations

import base64
import html
import io
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mtssl.evaluation.evaluate import as_json, collect_sets, score_sets
from mtssl.data.prepare import ProgressFactory, open_source, task_seed, training_spec
from mtssl.evaluation.inference import LoadedModel, load_model
from mtssl.export.write import mtssl_version
from mtssl.interfaces import ReportFigure
from mtssl.plugins import PluginHost
from mtssl.run.config import TaskData
from mtssl.run.rundir import RunDir, read_json

DPI = 110
SMOOTH_AFTER = 20
"""Curves with more points than this get an exponential moving average drawn over the raw values."""


@dataclass
class SavedFigure:
    title: str
    caption: str
    path: Path
    png: bytes


def _ema(values: np.ndarray, alpha: float = 0.1) -> np.ndarray:
    out = np.empty_like(values)
    level = values[0]
    for i, v in enumerate(values):
        level = v if np.isnan(level) else (level if np.isnan(v) else (1 - alpha) * level + alpha * v)
        out[i] = level
    return out


def _series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    points = [(r["step"], r[key]) for r in records if key in r and r[key] is not None and "step" in r]
    if not points:
        return np.array([]), np.array([])
    steps, values = zip(*points)
    return np.asarray(steps, float), np.asarray(values, float)


def curve_panels(keys: Sequence[str], tasks: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Which logged series go on which panel, empty panels left out.

    Losses are ``loss`` and each task's terms (``TASK/TERM``); task weights (``weight/TASK``) and strategy
    statistics (``TASK/STRATEGY/STAT``: thresholds, raw divergences) are not losses and get panels of their
    own, the pseudo-label mask rate (a fraction) one more.
    """
    series = [k for k in keys if k not in {"step", "epoch", "lr", "step_time"} and not k.startswith("val/")]
    losses = [k for k in series if k == "loss" or (k.count("/") == 1 and k.split("/")[0] in tasks)]
    weights = [k for k in series if k.startswith("weight/")]
    rates = [k for k in series if k.endswith("/mask_rate")]
    statistics = [k for k in series if k not in {*losses, *weights, *rates} and "/" in k]
    panels = [("loss terms", losses), ("task weights", weights), ("pseudo-label mask rate", rates),
              ("strategy statistics", statistics), ("validation", [k for k in keys if k.startswith("val/")])]
    return [(title, ks) for title, ks in panels if ks]


def training_curves(records: Sequence[Mapping[str, Any]], tasks: Sequence[str]) -> ReportFigure | None:
    """Loss terms, task weights, strategy logs (pseudo-label mask rate, ...) and validation metrics against steps."""
    if not records:
        return None
    panels = curve_panels(list(dict.fromkeys(k for r in records for k in r)), tasks)
    if not panels:
        return None
    fig = Figure(figsize=(4.6 * len(panels), 3.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, ks) in zip(axes, panels):
        positive = True
        for i, key in enumerate(ks):
            steps, values = _series(records, key)
            if not len(steps):
                continue
            positive &= bool(np.all(values[np.isfinite(values)] > 0))
            colour = f"C{i % 10}"
            if title == "validation":
                ax.plot(steps, values, marker="o", ms=3, color=colour, label=key[4:])
            elif len(steps) > SMOOTH_AFTER:
                ax.plot(steps, values, color=colour, alpha=0.25, lw=0.8)
                ax.plot(steps, _ema(values), color=colour, lw=1.6, label=key)
            else:
                ax.plot(steps, values, marker=".", color=colour, label=key)
        if title in ("loss terms", "strategy statistics"):
            # symlog keeps terms that start at exactly zero (no pseudo-label passed yet) on the chart
            if positive:
                ax.set_yscale("log")
            else:
                ax.set_yscale("symlog", linthresh=1e-3)
        if title == "pseudo-label mask rate":
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    listing = "; ".join(f"{title}: {', '.join(ks)}" for title, ks in panels)
    return ReportFigure("Training curves", fig, "Log scale for losses and strategy statistics (symmetric-log where "
                        "a series is zero; smoothed lines over raw values for long runs). Panels: " + listing + ".")


def render_png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "figure"


def _fmt(entry: Mapping[str, float | None]) -> str:
    mean, std = entry.get("mean"), entry.get("std")
    if mean is None:
        return "n/a"
    return f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "")


def results_html(results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    parts = []
    for task, sets in results.items():
        metrics = list(dict.fromkeys(m for s in sets.values() for m in s["aggregate"]))
        head = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
        rows = "".join(
            f"<tr><td>{html.escape(label)}</td><td>{s['n']}</td>"
            + "".join(f"<td>{_fmt(s['aggregate'].get(m, {}))}</td>" for m in metrics) + "</tr>"
            for label, s in sets.items())
        notes = "".join(f"<li>{html.escape(label)}: {html.escape(note)}</li>"
                        for label, s in sets.items() for note in s.get("notes", []))
        parts.append(f"<h3>{html.escape(task)}</h3><table><tr><th>set</th><th>n</th>{head}</tr>{rows}</table>"
                     + (f"<ul class='notes'>{notes}</ul>" if notes else ""))
    return "\n".join(parts)


STYLE = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#f3f3f3}figure{margin:1.5em 0}img{max-width:100%;border:1px solid #eee}
figcaption{font-size:13px;color:#555}.notes{font-size:13px;color:#a55}"""


def write_html(path: Path, title: str, summary: str, results_block: str, figures: Sequence[SavedFigure]) -> None:
    blocks = "\n".join(
        f"<figure><h3>{html.escape(f.title)}</h3>"
        f"<img alt=\"{html.escape(f.title)}\" src=\"data:image/png;base64,{base64.b64encode(f.png).decode()}\">"
        f"<figcaption>{html.escape(f.caption)}</figcaption></figure>" for f in figures)
    path.write_text(f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
                    f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{summary}"
                    f"<h2>Evaluation</h2>{results_block}<h2>Figures</h2>{blocks}</body></html>\n")


def map_label(loaded: LoadedModel, name: str) -> str:
    """A bridge map's name with its route, ``saliency (cls→seg, fed to seg)``: the task it feeds says what the map
    is for (a map into another task is not an explanation of its source's decision). Maps are named after their
    bridge, ``BRIDGE`` or ``BRIDGE.MAP`` (see ``MultiTaskModel``)."""
    for bridge in loaded.parts.bridges:
        if name == bridge.name or name.startswith(f"{bridge.name}."):
            return f"{name} ({bridge.source}→{bridge.target}, fed to {bridge.target})"
    return name


def labeled_class_counts(loaded: LoadedModel, task: str, keys: Sequence[str], host: PluginHost) -> dict[str, int] | None:
    """Labeled training images per class (None when the task has no classes or its source cannot say
    without decoding): read from the training source's listing, not from the images."""
    names = loaded.class_names.get(task, ())
    target = loaded.parts.tasks[task]
    if not names or not target.target.categorical:
        return None
    settings = loaded.config.data.get(task, TaskData())
    source = open_source(host, training_spec(host, task, target, settings), target.target,
                         task_seed(loaded.config.seed, task), skip_bad=True)
    labels = source.class_labels()
    if labels is None:
        return None
    by_key = dict(zip(source.keys, labels))
    counts = Counter(by_key.get(key) for key in keys)
    return {name: counts.get(i, 0) for i, name in enumerate(names)}


def data_rows(loaded: LoadedModel, run: RunDir, host: PluginHost) -> str:
    """One table row per task: its sources, label budget and the split the run actually used."""
    rows = []
    for task in loaded.parts.tasks:
        settings = loaded.config.data.get(task, TaskData())
        listing_file = run.path / "splits" / f"{task}.json"
        listing = read_json(listing_file) if listing_file.is_file() else {}
        labeled = listing.get("labeled", [])
        per_class = labeled_class_counts(loaded, task, labeled, host) if labeled else None
        counts = (f"{len(labeled)} labeled" + (" (" + ", ".join(f"{n} {c}" for c, n in per_class.items()) + ")"
                                                if per_class else "")
                  + f", {len(listing.get('unlabeled', []))} unlabeled, {len(listing.get('val', []))} validation"
                  if listing else "split not recorded")
        validation = settings.val or f"{settings.val_fraction:g} of the training data"
        cells = [task, settings.train or "(task default)", "task default" if settings.labels is None else str(settings.labels),
                 validation, ", ".join(settings.test) or "none", counts]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return ("<table class='data'><tr><th>task</th><th>training data</th><th>label budget</th><th>validation</th>"
            "<th>test sets</th><th>images used</th></tr>" + "".join(rows) + "</table>")


def run_header(loaded: LoadedModel, run: RunDir, checkpoint: str, host: PluginHost) -> str:
    """What a reader needs to judge the numbers below: which run, model, data, seed, length and precision."""
    config = loaded.config
    length = f"{config.steps} steps" if config.steps else f"{config.epochs} epochs"
    bridges = ", ".join(f"{b.name} ({b.source}→{b.target})" for b in loaded.parts.bridges)
    facts = [("run", str(run.path)), ("checkpoint", f"{checkpoint} (step {loaded.step})"),
             ("tasks", ", ".join(config.tasks)), ("bridges", bridges or "none"), ("backbone", config.backbone),
             ("size", f"{config.size} px"), ("training", f"{length}, batch size {config.batch_size}"),
             ("seed", str(config.seed)), ("precision", config.precision), ("mtssl version", mtssl_version())]
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    return f"<table class='run'>{table}</table>\n<h2>Data</h2>{data_rows(loaded, run, host)}"


def build_report(run_dir: str | Path, checkpoint: str = "best", tests: dict[str, list[str]] | None = None,
                 host: PluginHost | None = None, batch_size: int = 32,
                 progress: ProgressFactory | None = None, device: str = "auto") -> Path:
    """Evaluate the run (as ``mtssl eval`` does), draw every figure, write ``RUN/report/index.html``."""
    run = RunDir(run_dir)
    host = host or PluginHost()
    loaded = load_model(run.path, checkpoint, host, device)
    evaluated = score_sets(loaded, collect_sets(loaded, run.path, tests, host, progress), batch_size,
                           with_maps=True)
    for sets in evaluated.values():
        for data in sets:
            data.map_labels = {name: map_label(loaded, name) for name in data.maps}
    figures: list[ReportFigure] = []
    curves = training_curves(run.metrics(), list(loaded.parts.tasks))
    if curves:
        figures.append(curves)
    for task_name, sets in evaluated.items():
        figures += loaded.parts.tasks[task_name].report_figures(sets)
    folder = run.path / "report"
    folder.mkdir(exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    saved = []
    for number, item in enumerate(figures, start=1):
        png = render_png(item.figure)
        path = folder / f"{number:02d}-{_slug(item.title)}.png"
        path.write_bytes(png)
        saved.append(SavedFigure(item.title, item.caption, path, png))
    summary = run_header(loaded, run, checkpoint, host)
    index = folder / "index.html"
    write_html(index, f"mtssl report: {run.path.name}", summary, results_html(as_json(evaluated)), saved)
    return index
