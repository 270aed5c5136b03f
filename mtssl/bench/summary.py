"""Grid results -> mean ± std over seeds (CSV, Markdown) and paired t-tests against a reference model.

Rows are (model, label budgets); seeds are the repeats. The std is the
sample standard deviation (ddof=1) over seeds, as papers report repeats. The
t-test pairs a reference row with a baseline row that has the same budgets
on the tasks both models share, seed by seed (``scipy.stats.ttest_rel``).
"""
from __future__ import annotations

import csv
import fnmatch
import io
import math
import warnings
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from scipy import stats

Row = tuple[str, tuple[tuple[str, object], ...]]
VAL_NOTE = ("`{val}` is each run's held-out validation split: images from its own training data, so the scores "
            "measure the training distribution, not an independent test set (give `--TASK-test SPEC` for one).")


@dataclass
class MetricSeries:
    """One metric of one row on one test set, across seeds (None: not defined on that seed's run)."""

    model: str
    budgets: tuple[tuple[str, object], ...]
    task: str
    test: str
    metric: str
    by_seed: dict[int, float | None]

    @property
    def values(self) -> list[float]:
        return [v for _, v in sorted(self.by_seed.items()) if v is not None and math.isfinite(v)]

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.values)) if self.values else None

    @property
    def std(self) -> float | None:
        v = self.values
        return float(np.std(v, ddof=1)) if len(v) > 1 else None  # one seed has no spread to report


@dataclass
class PairedTest:
    reference_budgets: tuple[tuple[str, object], ...]
    baseline: str
    baseline_budgets: tuple[tuple[str, object], ...]
    task: str
    test: str
    metric: str
    n: int
    mean_difference: float | None
    p_value: float | None


def budgets_text(budgets: Iterable[tuple[str, object]]) -> str:
    return ";".join(f"{t}={b}" for t, b in budgets)


def _as_float(value) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def collect(records: Iterable[dict]) -> list[MetricSeries]:
    """Every (row, task, test, metric) series of the finished cells, in first-seen order."""
    series: dict[tuple, MetricSeries] = {}
    for record in records:
        if record.get("status") != "ok":
            continue
        budgets = tuple((t, b) for t, b in record["budgets"].items())
        for task, tests in record.get("metrics", {}).items():
            for test, entry in tests.items():
                for metric, agg in (entry.get("aggregate") or {}).items():
                    value = _as_float(agg.get("mean") if isinstance(agg, dict) else agg)
                    key = (record["model"], budgets, task, test, metric)
                    if key not in series:
                        series[key] = MetricSeries(record["model"], budgets, task, test, metric, {})
                    series[key].by_seed[int(record["seed"])] = value
    return list(series.values())


def wanted(metric: str, patterns: list[str] | None) -> bool:
    return patterns is None or any(fnmatch.fnmatchcase(metric.lower(), p.lower()) for p in patterns)


def paired_tests(series: list[MetricSeries], reference: str,
                 main_metrics: dict[str, list[str]] | None = None) -> list[PairedTest]:
    """Reference vs every other model on their shared tasks, same budgets on those tasks, paired by seed."""
    main_metrics = main_metrics or {}
    results = []
    for ref in (s for s in series if s.model == reference):
        if not wanted(ref.metric, main_metrics.get(ref.task)):
            continue
        ref_budget = dict(ref.budgets).get(ref.task)
        for other in series:
            if other.model == reference or (other.task, other.test, other.metric) != (ref.task, ref.test, ref.metric):
                continue
            shared = {t for t, _ in other.budgets} & {t for t, _ in ref.budgets}
            if any(dict(other.budgets)[t] != dict(ref.budgets)[t] for t in shared):
                continue
            if dict(other.budgets).get(ref.task) != ref_budget:
                continue
            seeds = sorted(s for s in set(ref.by_seed) & set(other.by_seed)
                           if ref.by_seed[s] is not None and other.by_seed[s] is not None)
            a = np.array([ref.by_seed[s] for s in seeds], float)
            b = np.array([other.by_seed[s] for s in seeds], float)
            results.append(PairedTest(ref.budgets, other.model, other.budgets, ref.task, ref.test, ref.metric,
                                      len(seeds), float(np.mean(a - b)) if seeds else None, paired_p(a, b)))
    return results


def paired_p(a: np.ndarray, b: np.ndarray) -> float | None:
    """Two-sided paired t-test p-value; None when it is undefined (fewer than 2 pairs, or no spread)."""
    if len(a) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = stats.ttest_rel(a, b).pvalue
    return float(p) if math.isfinite(p) else None


def fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def to_csv(series: list[MetricSeries]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["model", "budgets", "task", "test", "metric", "n_seeds", "mean", "std", "values"])
    for s in series:
        writer.writerow([s.model, budgets_text(s.budgets), s.task, s.test, s.metric, len(s.values),
                         "" if s.mean is None else f"{s.mean:.6g}", "" if s.std is None else f"{s.std:.6g}",
                         " ".join(f"{v:.6g}" for v in s.values)])
    return buffer.getvalue()


def tests_to_csv(tests: list[PairedTest]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["reference_budgets", "baseline", "baseline_budgets", "task", "test", "metric", "n",
                     "mean_difference", "p_value"])
    for t in tests:
        writer.writerow([budgets_text(t.reference_budgets), t.baseline, budgets_text(t.baseline_budgets), t.task,
                         t.test, t.metric, t.n, "" if t.mean_difference is None else f"{t.mean_difference:.6g}",
                         "" if t.p_value is None else f"{t.p_value:.6g}"])
    return buffer.getvalue()


def _ordered(items: Iterable) -> list:
    return list(dict.fromkeys(items))


def to_markdown(series: list[MetricSeries], failed: list[dict] | None = None, tests: list[PairedTest] | None = None,
                reference: str | None = None, show_metrics: dict[str, list[str]] | None = None) -> str:
    """Table-2-style tables (one per test-set position: in-domain first, then cross-domain), then p-values."""
    from mtssl.evaluation.evaluate import VAL

    tasks = _ordered(s.task for s in series)
    tests_of = {t: _ordered(s.test for s in series if s.task == t) for t in tasks}
    metrics_of = {t: [m for m in _ordered(s.metric for s in series if s.task == t)
                      if wanted(m, (show_metrics or {}).get(t))] for t in tasks}
    rows = _ordered((s.model, s.budgets) for s in series)
    index = {(s.model, s.budgets, s.task, s.test, s.metric): s for s in series}
    lines: list[str] = []
    for position in range(max((len(v) for v in tests_of.values()), default=0)):
        shown = {t: tests_of[t][position] if position < len(tests_of[t]) else None for t in tasks}
        lines.append("Test sets: " + ", ".join(f"{t} on `{v}`" for t, v in shown.items() if v) + "\n")
        if VAL in shown.values():
            lines.append(VAL_NOTE.format(val=VAL) + "\n")
        header = ["Model"]
        for t in tasks:
            header += [f"{t} labels"] + [f"{t} {m}" for m in metrics_of[t]]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for model, budgets in rows:
            cells = [model]
            for t in tasks:
                budget = dict(budgets).get(t)
                cells.append("—" if budget is None else str(budget))
                for m in metrics_of[t]:
                    s = index.get((model, budgets, t, shown[t], m)) if budget is not None else None
                    if s is None or s.mean is None:
                        cells.append("—")
                        continue
                    seeds = len(s.by_seed)
                    note = f" (n={len(s.values)}/{seeds})" if len(s.values) < seeds else ""
                    spread = "" if s.std is None else f" ± {fmt(s.std)}"
                    cells.append(f"{fmt(s.mean)}{spread}{note}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if tests:
        lines.append(f"Paired t-tests (scipy.stats.ttest_rel over seeds), {reference} minus baseline; "
                     "p < 0.05 in bold:\n")
        lines.append("| task | test | metric | " + f"{reference} labels | baseline | baseline labels | n | "
                     "mean diff | p |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for t in tests:
            p = fmt(t.p_value, 4)
            if t.p_value is not None and t.p_value < 0.05:
                p = f"**{p}**"
            lines.append(f"| {t.task} | `{t.test}` | {t.metric} | {budgets_text(t.reference_budgets)} | {t.baseline} | "
                         f"{budgets_text(t.baseline_budgets)} | {t.n} | {fmt(t.mean_difference, 4)} | {p} |")
        lines.append("")
    if failed:
        lines.append("Failed cells:\n")
        lines += [f"* `{r['cell']}`: {r.get('error', 'unknown error')}" for r in failed]
        lines.append("")
    return "\n".join(lines)


def write_outputs(out, records: list[dict], reference: str | None = None,
                  main_metrics: dict[str, list[str]] | None = None,
                  show_metrics: dict[str, list[str]] | None = None) -> dict[str, str]:
    """Write ``results.md``, ``results.csv`` and (with a reference) ``pvalues.csv`` into ``out``; return their paths."""
    from pathlib import Path

    out = Path(out)
    series = collect(records)
    failed = [r for r in records if r.get("status") != "ok"]
    tests = paired_tests(series, reference, main_metrics) if reference else []
    paths = {"markdown": out / "results.md", "csv": out / "results.csv"}
    paths["markdown"].write_text(to_markdown(series, failed, tests, reference, show_metrics))
    paths["csv"].write_text(to_csv(series))
    if reference:
        paths["pvalues"] = out / "pvalues.csv"
        paths["pvalues"].write_text(tests_to_csv(tests))
    return {k: str(v) for k, v in paths.items()}
