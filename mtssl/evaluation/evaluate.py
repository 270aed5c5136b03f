"""Evaluate a trained run on its validation split and on any number of test sources.

``evaluate_run`` is the entry point for scripts (the benchmark grid uses
it); ``mtssl eval`` prints its result as tables and saves it as
``RUN/eval.json``, or, scored on given test sets, as a file named after them
(:func:`eval_file_name`), so one evaluation does not overwrite another. Each task scores its own outputs through
:meth:`Task.evaluate`; the core only decodes the sets, runs the model and
collects the records.

Images are decoded at the run's training size, so segmentation distances
are in pixels at that size.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


from mtssl.evaluation.class_map import map_class_names, split_class_map
from mtssl.run.config import TaskData
from mtssl.run.rundir import RunDir, read_json
from mtssl.data.arrays import SourceArrays
from mtssl.data.prepare import ProgressFactory, load_arrays, open_source, subset, task_seed, training_spec
from mtssl.evaluation.inference import LoadedModel, load_model, predict
from mtssl.interfaces import EvaluatedSet
from mtssl.plugins import PluginHost

VAL = "val"
"""Label of the run's own validation split in results."""
TEST_SEED_OFFSET = 500_000
"""Seed offset for test sources, so a generated test set never repeats the training images."""


EVAL_FILE = "eval.json"
NAME_LIMIT = 120  # characters of a results file name before the rest is replaced by a digest


def eval_file_name(tests: Mapping[str, list[str]] | None) -> str:
    """``eval.json`` for the run's own sets; ``eval-seg-synthetic_n_6+cls-nih_...json`` for given test sets."""
    if not tests:
        return EVAL_FILE
    parts = [f"{task}-{spec}" for task, specs in tests.items() for spec in dict.fromkeys(specs)]
    name = re.sub(r"[^A-Za-z0-9.=+-]+", "_", "+".join(parts)).strip("._") or "tests"
    if len(name) > NAME_LIMIT:
        digest = hashlib.sha1("\n".join(parts).encode()).hexdigest()[:10]
        name = f"{name[:NAME_LIMIT - 11]}-{digest}"
    return f"eval-{name}.json"


@dataclass
class TestSet:
    label: str
    arrays: SourceArrays
    notes: list[str] = field(default_factory=list)


def validation_arrays(loaded: LoadedModel, run_dir: Path, task: str, host: PluginHost,
                      progress: ProgressFactory | None = None) -> SourceArrays:
    """The images the run validated on, found by the keys in ``RUN/splits/TASK.json``."""
    listing_file = run_dir / "splits" / f"{task}.json"
    if not listing_file.is_file():
        raise FileNotFoundError(f"{listing_file}: missing; the run's validation split is unknown "
                                f"(give test sources with --{task}-test SPEC)")
    keys = read_json(listing_file).get("val", [])
    settings = loaded.config.data.get(task, TaskData())
    seed = task_seed(loaded.config.seed, task)
    target_task = loaded.parts.tasks[task]
    if settings.val:
        spec, seed = settings.val, seed + 1
    else:
        spec = training_spec(host, task, target_task, settings)
    source = open_source(host, spec, target_task.target, seed, skip_bad=True)
    arrays = load_arrays(source, loaded.size, progress, f"{task} {VAL}: {spec}", loaded.config.cache_dir,
                         skip_bad=True)
    position = {key: i for i, key in enumerate(arrays.keys)}
    missing = [k for k in keys if k not in position]
    if missing:
        raise ValueError(f"{listing_file}: {len(missing)} validation item(s) are no longer in source "
                         f"'{spec}' (e.g. {missing[0]})")
    return subset(arrays, [position[k] for k in keys])


def test_arrays(loaded: LoadedModel, task: str, spec: str, host: PluginHost,
                progress: ProgressFactory | None = None) -> SourceArrays:
    """A test source decoded at the run's size, its class names mapped onto the trained ones."""
    seed = task_seed(loaded.config.seed, task) + TEST_SEED_OFFSET
    text, names_map = split_class_map(spec)
    source = open_source(host, text, loaded.parts.tasks[task].target, seed)
    arrays = load_arrays(source, loaded.size, progress, f"{task} test: {text}", loaded.config.cache_dir)
    arrays = map_class_names(arrays, loaded.class_names.get(task, ()), names_map, spec)
    unlabeled = int((~arrays.labeled).sum())
    if unlabeled:
        raise ValueError(f"test source '{spec}' has {unlabeled} image(s) without a target; a test set needs a "
                         "target for every image")
    return arrays


def overlap_notes(run_dir: Path, task: str, arrays: SourceArrays) -> list[str]:
    """Warnings when a test set shares images or patients with the run's training data."""
    listing_file = run_dir / "splits" / f"{task}.json"
    if not listing_file.is_file():
        return []
    listing = read_json(listing_file)
    trained = set(listing.get("labeled", [])) | set(listing.get("unlabeled", []))
    notes = []
    shared = sum(1 for key in arrays.keys if key in trained)
    if shared:
        notes.append(f"{shared} test image(s) were training images of this run: the scores are optimistic")
    groups = listing.get("groups", {})
    trained_groups = set(groups.get("labeled", [])) | set(groups.get("unlabeled", []))
    if arrays.groups is not None and trained_groups:
        patients = {g for g in arrays.groups if g in trained_groups}
        if patients:
            notes.append(f"{len(patients)} test patient(s) also appear in this run's training data: "
                         "the scores are optimistic")
    return notes
def collect_sets(loaded: LoadedModel, run_dir: Path, tests: Mapping[str, list[str]] | None,
                 host: PluginHost, progress: ProgressFactory | None = None) -> dict[str, list[TestSet]]:
    """Which sets each task is scored on: the given test specs, or (none given) val plus the config's tests."""
    tasks = loaded.parts.tasks
    if tests:
        stray = sorted(set(tests) - set(tasks))
        if stray:
            raise ValueError(f"test data given for task(s) {', '.join(stray)} that are not in this run "
                             f"(tasks: {', '.join(tasks)})")
        plan = {task: list(specs) for task, specs in tests.items() if specs}
    else:
        plan = {task: [VAL, *loaded.config.data.get(task, TaskData()).test] for task in tasks}
    sets: dict[str, list[TestSet]] = {}
    for task, specs in plan.items():
        for spec in dict.fromkeys(specs):
            arrays = (validation_arrays(loaded, run_dir, task, host, progress) if spec == VAL
                      else test_arrays(loaded, task, spec, host, progress))
            if len(arrays):
                notes = overlap_notes(run_dir, task, arrays) if spec != VAL else []
                sets.setdefault(task, []).append(TestSet(spec, arrays, notes))
    return sets


def score_sets(loaded: LoadedModel, sets: Mapping[str, list[TestSet]], batch_size: int = 32,
               with_maps: bool = False) -> dict[str, list[EvaluatedSet]]:
    """Run the model on every set and let each task score its outputs."""
    results: dict[str, list[EvaluatedSet]] = {}
    for task_name, task_sets in sets.items():
        task = loaded.parts.tasks[task_name]
        for test in task_sets:
            arrays = test.arrays
            out = predict(loaded, arrays.images, [task_name], batch_size, with_maps)
            probabilities = out.probabilities[task_name]
            names = loaded.class_names.get(task_name, ()) or arrays.class_names
            evaluation = task.evaluate(probabilities, arrays.targets, names)
            evaluation.notes[:0] = test.notes
            for key, record in zip(arrays.keys, evaluation.per_image):
                record["key"] = key
            results.setdefault(task_name, []).append(EvaluatedSet(
                test.label, arrays.images, probabilities, arrays.targets, list(arrays.keys), tuple(names),
                evaluation, out.maps))
    return results


def as_json(results: Mapping[str, list[EvaluatedSet]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{task: {set: {n, aggregate, per_image, extra, notes}}}``."""
    return {task: {s.label: {"n": len(s.keys), "aggregate": s.evaluation.aggregate,
                             "per_image": s.evaluation.per_image, "extra": s.evaluation.extra,
                             "notes": s.evaluation.notes}
                   for s in task_sets}
            for task, task_sets in results.items()}


def save_evaluation(run_dir: str | Path, tests: Mapping[str, list[str]] | None, checkpoint: str, results: dict) -> Path:
    """Write ``results`` into the run directory, one file per choice of test sets (none overwrites another)."""
    name = eval_file_name(tests)
    RunDir(run_dir).write_text(name, json.dumps({"checkpoint": checkpoint, "results": results}, indent=2))
    return Path(run_dir) / name


def evaluate_run(run_dir, tests: dict[str, list[str]] | None = None, checkpoint: str = "best", host=None,
                 batch_size: int = 32, progress: ProgressFactory | None = None, device: str = "auto") -> dict:
    """Score a run's checkpoint: ``{task: {spec or "val": {"n", "aggregate", "per_image", ...}}}``.

    ``tests`` maps a task to source specs (``synthetic:n=50,domain=2``,
    ``pairs:IMGS,MASKS``); without it each task is scored on the run's
    validation split and the ``test`` specs stored in its config.
    ``aggregate`` maps a metric to ``{"mean", "std"}``; None marks a value
    the set cannot define, explained in ``notes``. ``device`` is where to run ("auto": CUDA when
    available, else CPU), independent of the device the run trained on.
    """
    host = host or PluginHost()
    run_dir = Path(run_dir)
    loaded = load_model(run_dir, checkpoint, host, device)
    sets = collect_sets(loaded, run_dir, tests, host, progress)
    return as_json(score_sets(loaded, sets, batch_size))
