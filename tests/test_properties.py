"""Property-based: any spec string, option value or config mapping gives a valid run configuration or a
one-line error of a known type; never a traceback, never a hang."""
from __future__ import annotations

import json
import math
import signal
from contextlib import contextmanager

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import invoke
from mtssl.run.config import ConfigError, RunConfig, load_config_file
from mtssl.registry import RegistryError
from mtssl.spec import SpecError, parse_bridge, parse_source, parse_task

FAST = settings(max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])
CLI = settings(max_examples=30, deadline=5000, suppress_health_check=[HealthCheck.too_slow,
                                                                     HealthCheck.function_scoped_fixture])

SPEC_ALPHABET = "abcfgiklmnstx01279.:+=,->/ _[]\\\n"
spec_text = st.text(alphabet=SPEC_ALPHABET, max_size=40)
word = st.sampled_from(["cls", "seg", "fixmatch", "kl", "mixmatch", "saliency", "synthetic", "unet", "nosuch", ""])
key = st.sampled_from(["threshold", "weight", "alpha", "pairing", "n", "prevalence", "domain", "T", "K", "x", ""])
value = st.one_of(st.sampled_from(["nan", "inf", "-inf", "-1", "0", "0.5", "1", "1.5", "2", "true", "none", "mean",
                                   "abc", "", "1e400"]), st.integers(-5, 5).map(str))
option = st.builds(lambda k, v: f"{k}={v}", key, value)
options = st.lists(option, max_size=3).map(",".join)
structured_spec = st.builds(lambda parts: ":".join(parts),
                            st.lists(st.one_of(word, options, st.lists(word, min_size=1, max_size=3).map("+".join)),
                                     min_size=1, max_size=4))


@contextmanager
def no_hang(seconds: int = 20):
    """Fail (instead of hanging the suite) when the block runs longer than ``seconds``."""
    def expire(*_):
        raise TimeoutError(f"took longer than {seconds}s: a hang")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@FAST
@given(st.one_of(spec_text, structured_spec))
def test_spec_grammar_parses_or_raises_a_spec_error(text):
    with no_hang():
        for parse in (parse_task, parse_bridge, parse_source):
            try:
                parsed = parse(text)
            except SpecError as exc:
                assert str(exc).strip()
            else:
                assert parsed.name.strip()


@FAST
@given(structured_spec)
def test_any_task_spec_builds_or_gives_a_one_line_error(host, text):
    """From spec to live components: parsing plus every component's option checks."""
    from mtssl.model.assemble import build_components

    config = RunConfig(tasks=[text], size=32)
    with no_hang():
        try:
            parts = build_components(config, host)
        except (SpecError, RegistryError, ValueError) as exc:
            assert str(exc).strip()
        else:
            for strategies in parts.strategies.values():
                for strategy in strategies:
                    weight = getattr(strategy, "weight", 0.0)
                    assert math.isfinite(weight) and weight >= 0


def assert_outcome(result) -> RunConfig | None:
    """exit 0 with a config that validates again, or exit 2 with exactly one error line; never a traceback."""
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        config = RunConfig.from_dict(json.loads(result.stdout), origin="--check")
        config.check()
        return config
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    return None


OPTIONS = ["--size", "--batch-size", "--steps", "--epochs", "--lr", "--lr-step-epochs", "--seed", "--device",
           "--strong-ops", "--eval-every", "--save-every", "--name", "--select-by", "--cls-val-fraction",
           "--cls-labels", "--cls-data", "--cls-test", "--backbone"]
option_value = st.one_of(value, st.sampled_from(["32", "64", "cpu", "cuda:0", "tpu", "../x", "/abs", "a/b", "cls/acc",
                                                 "synthetic:n=8", "synthetic:prevalence=2", "timm:model=nosuch",
                                                 "unet:dropout=1", "all", "x[/b]", "1e-4"]),
                         st.text(alphabet="0123456789.-e+infa:/=", max_size=8))


valid_task = st.sampled_from(["cls", "seg", "cls:fixmatch", "seg:kl", "cls:fixmatch:threshold=0.9", "cls:mixmatch"])
valid_pair = st.sampled_from([("--size", "32"), ("--size", "64"), ("--batch-size", "2"), ("--steps", "5"),
                              ("--epochs", "0.5"), ("--lr", "1e-3"), ("--seed", "3"), ("--device", "cpu"),
                              ("--strong-ops", "3"), ("--name", "run1"), ("--cls-val-fraction", "0.2"),
                              ("--cls-labels", "all"), ("--cls-data", "synthetic:n=30"), ("--select-by", "mean")])


@CLI
@given(st.lists(st.one_of(valid_pair, valid_pair, st.tuples(st.sampled_from(OPTIONS), option_value)), max_size=3),
       st.one_of(valid_task, valid_task, structured_spec))
def test_any_command_line_gives_a_config_or_one_error_line(tmp_path, pairs, task):
    args = ["train", "--check", "--out", str(tmp_path / "runs"), "--task", task]
    for name, text in pairs:
        args += [name, text]
    with no_hang():
        config = assert_outcome(invoke(args))
    if config is not None:
        assert config.size >= 1 and config.batch_size >= 1 and (config.steps or 1) >= 1
        assert math.isfinite(config.lr) and config.lr > 0
        assert config.name is None or "/" not in config.name
    assert not (tmp_path / "runs").exists()  # --check never writes


json_value = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-3, 200), st.floats(allow_nan=True),
                                    st.text(max_size=8)),
                          lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                  st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                          max_leaves=6)
config_key = st.one_of(st.sampled_from(sorted(RunConfig.__dataclass_fields__)), st.text(max_size=6))
data_entry = st.dictionaries(st.sampled_from(["train", "labels", "val_fraction", "val", "test", "tset"]), json_value,
                             max_size=3)
raw_config = st.dictionaries(config_key, json_value, max_size=5) | st.builds(
    lambda base, data: {**base, "data": {"cls": data}}, st.dictionaries(config_key, json_value, max_size=3), data_entry)


typed_value = {
    "size": st.integers(-4, 300), "batch_size": st.integers(-2, 40), "steps": st.none() | st.integers(-2, 500),
    "epochs": st.none() | st.floats(-1, 10), "lr": st.floats(allow_nan=True), "seed": st.integers(-3, 2**64),
    "device": st.sampled_from(["auto", "cpu", "cuda", "cuda:1", "mps", "tpu", ""]),
    "strong_ops": st.integers(-1, 20), "eval_every": st.integers(-1, 500), "name": st.none() | st.text(max_size=5),
    "skip_bad": st.booleans(), "tasks": st.lists(st.sampled_from(["cls", "seg:kl"]), max_size=2),
    "select_by": st.sampled_from(["mean", "seg/dice", "dice", ""]),
    "data": st.dictionaries(st.sampled_from(["cls", "seg"]), st.fixed_dictionaries(
        {}, optional={"train": st.sampled_from(["synthetic", "synthetic:n=20", ""]),
                      "labels": st.sampled_from([None, 0, 5, "all", "ALL", "x", True]),
                      "val_fraction": st.floats(-0.5, 1.5), "test": st.lists(st.just("synthetic"), max_size=2)}),
        max_size=2),
}
typed_config = st.fixed_dictionaries({}, optional=typed_value)


@FAST
@given(raw_config | typed_config)
def test_any_config_mapping_is_a_valid_config_or_a_config_error(raw):
    with no_hang():
        try:
            config = RunConfig.from_dict(raw, origin="run.toml")
        except ConfigError as exc:
            text = str(exc)
            assert text.startswith("run.toml: ") and "\n" not in text
        else:
            config.check()
            assert RunConfig.from_dict(json.loads(config.to_json())) == config  # config.json round trip


@FAST
@given(st.one_of(st.binary(max_size=60), st.text(max_size=60).map(str.encode)),
       st.sampled_from([".toml", ".yaml", ".json"]))
def test_any_config_file_content_loads_or_gives_a_config_error(tmp_path, content, suffix):
    file = tmp_path / f"run{suffix}"
    file.write_bytes(content)
    with no_hang():
        try:
            RunConfig.from_dict(load_config_file(file), origin=str(file))
        except ConfigError as exc:
            assert str(exc).startswith(str(file)) and "\n" not in str(exc)
