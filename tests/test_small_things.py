"""Small things a user trips on: config files, option messages, flags, and where `eval` saves its results."""
from __future__ import annotations

import json
import time
import tracemalloc

import pytest

from conftest import flat, invoke, spaced, train_run
from mtssl.options import Options, read_options

# 282 bytes of YAML that expand to 9**7 strings (a "billion laughs" alias bomb).
ALIAS_BOMB = "a: &a [" + ",".join(['"lol"'] * 9) + "]\n" + "".join(
    f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]\n" for prev, name in zip("abcdef", "bcdefg")) + "tasks: *g\n"


def check(tmp_path, name: str, text: str, *extra: str):
    config = tmp_path / name
    config.write_text(text)
    return invoke(["train", "--config", str(config), "--check", *extra])


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    started = time.perf_counter()
    result = check(tmp_path, "bomb.yaml", ALIAS_BOMB)
    assert result.exit_code == 2
    assert "YAML aliases (*name) are not allowed" in result.stderr and "bomb.yaml: line 2" in result.stderr
    assert time.perf_counter() - started < 30  # before: minutes and gigabytes


def test_an_option_error_does_not_repr_a_huge_value():
    class Small(Options):
        size: int = 1

    nested = ["lol"] * 9
    for _ in range(6):
        nested = [nested] * 9  # 9**7 leaves, shared: cheap to hold, a 33 MB repr
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"component: option size: .*got \[\[\[") as info:
            read_options("component", {"size": nested}, Small)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(str(info.value)) < 200 and peak < 2**20


@pytest.mark.parametrize("name, text, line", [
    ("dup.yaml", "size: 32\nsteps: 3\nsteps: 5\n", "dup.yaml: line 3: key 'steps' is given twice"),
    ("dup.yaml", "data:\n  cls:\n    labels: 4\n    labels: 8\n", "dup.yaml: line 4: key 'labels' is given twice"),
    ("dup.json", '{"steps": 3, "steps": 5}', "dup.json: key 'steps' is given twice"),
])
def test_a_duplicate_key_is_refused_naming_key_and_file(tmp_path, name, text, line):
    result = check(tmp_path, name, text, "--task", "cls")
    assert result.exit_code == 2
    assert line in spaced(result.stderr)


def test_an_unknown_config_key_suggests_the_closest(tmp_path):
    result = check(tmp_path, "typo.toml", "step = 3\n[data.cls]\nlabel = 4\n", "--task", "cls")
    assert result.exit_code == 2
    text = spaced(result.stderr)
    assert "step: Did you mean 'steps'?" in text and "data.cls.label: Did you mean 'labels'?" in text


@pytest.mark.parametrize("where", ["flags", "file"])
def test_steps_and_epochs_together_are_refused(tmp_path, where):
    if where == "flags":
        result = invoke(["train", "--task", "cls", "--steps", "3", "--epochs", "2", "--check"])
    else:
        result = check(tmp_path, "both.toml", "steps = 3\nepochs = 2.0\n", "--task", "cls")
    assert result.exit_code == 2
    assert "steps (3) and epochs (2.0) are both given; give one" in spaced(result.stderr)


def test_deterministic_has_a_flag():
    for args, expected in (([], False), (["--deterministic"], True)):
        result = invoke(["train", "--task", "cls", "--check", *args])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["deterministic"] is expected


def test_eval_on_other_test_sets_keeps_each_result(tmp_path):
    run = train_run("cls", out=tmp_path, steps=1)
    first = invoke(["eval", str(run), "--cls-test", "synthetic:n=6"])
    second = invoke(["eval", str(run), "--cls-test", "synthetic:n=8,domain=2"])
    own = invoke(["eval", str(run)])
    assert first.exit_code == second.exit_code == own.exit_code == 0
    saved = {p.name: json.loads(p.read_text()) for p in run.glob("eval*.json")}
    assert set(saved) == {"eval.json", "eval-cls-synthetic_n=6.json", "eval-cls-synthetic_n=8_domain=2.json"}
    assert set(saved["eval-cls-synthetic_n=6.json"]["results"]["cls"]) == {"synthetic:n=6"}
    assert set(saved["eval-cls-synthetic_n=8_domain=2.json"]["results"]["cls"]) == {"synthetic:n=8,domain=2"}
    assert set(saved["eval.json"]["results"]["cls"]) == {"val"}
    assert flat(f"Saved {run / 'eval-cls-synthetic_n=6.json'}") in flat(first.output)


def test_a_long_test_spec_gives_a_bounded_file_name():
    from mtssl.evaluation.evaluate import eval_file_name

    long = {"seg": [f"pairs:/data/{'x' * 100}/{i},/masks" for i in range(3)]}
    name = eval_file_name(long)
    assert name.startswith("eval-seg-pairs_data_xxx") and name.endswith(".json") and len(name) <= 130
    assert name != eval_file_name({"seg": long["seg"][:2]})


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory):
    """A local file of resnet18's (ImageNet-shaped, 3-channel) weights, as timm's own download would give."""
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False)
    file = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(model.state_dict(), file)
    return file, model.state_dict()


def test_timm_pretrained_weights_from_a_local_file_are_loaded_and_adapted(resnet_weights):
    from mtssl_plugins.backbones.timm_backbone import build

    file, reference = resnet_weights
    loaded = build("timm", 1, model="resnet18", pretrained_file=str(file)).net.state_dict()
    assert loaded["layer1.0.conv1.weight"].equal(reference["layer1.0.conv1.weight"])
    # one grey channel: timm folds the RGB filters of the first convolution into one
    assert loaded["conv1.weight"].allclose(reference["conv1.weight"].sum(1, keepdim=True))
    result = invoke(["train", "--task", "cls", "--size", "32", "--check",
                     "--backbone", f"timm:model=resnet18,pretrained_file={file}"])
    assert result.exit_code == 0, result.output


def test_timm_pretrained_without_network_is_one_line(monkeypatch):
    import huggingface_hub.constants

    from mtssl_plugins.backbones.timm_backbone import build

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as on a machine with no network
    with pytest.raises(ValueError) as info:
        build("timm", 1, model="resnet18", pretrained=True)
    message = str(info.value)
    assert message.startswith("backbone 'timm': cannot load the pretrained weights of 'resnet18' through timm")
    assert "give pretrained_file=PATH" in message and "\n" not in message


def whole_image_gray(array):
    """The conversion as one whole-image computation (float64 copies of everything): the reference."""
    import numpy as np

    original = array
    if array.ndim == 3:
        array = array[..., :-1] if array.shape[2] in (2, 4) else array
        array = array.mean(axis=2) if array.shape[2] > 1 else array[..., 0]
    array = array.astype(np.float64)
    if np.issubdtype(original.dtype, np.integer) and array.max() > 255:
        array = (array - array.min()) / max(array.max() - array.min(), 1) * 255
    elif array.max() <= 1.0:
        array = array * 255
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("kind", ["uint16", "rgba16", "float", "rgb8", "narrow16"])
def test_strip_conversion_equals_the_whole_image_one(monkeypatch, kind):
    import numpy as np

    from mtssl.data import decode

    rng = np.random.default_rng(0)
    arrays = {"uint16": rng.integers(100, 60000, (97, 61)).astype(np.uint16),
              "rgba16": rng.integers(0, 65535, (97, 61, 4)).astype(np.uint16),
              "float": rng.random((97, 61)).astype(np.float32),
              "rgb8": rng.integers(0, 255, (97, 61, 3)).astype(np.uint8),
              "narrow16": rng.integers(3, 200, (97, 61)).astype(np.uint16)}
    monkeypatch.setattr(decode, "STRIP_PIXELS", 500)  # 8 rows per strip: 13 strips
    array = arrays[kind]
    assert len(decode.row_strips(*array.shape[:2])) == 13
    assert np.array_equal(decode.to_gray_uint8(array), whole_image_gray(array))


def test_a_large_16_bit_scan_decodes_in_a_few_bytes_per_pixel(tmp_path):
    import numpy as np
    from PIL import Image

    from mtssl.data.decode import read_image, resize_channels, to_channels_uint8

    side = 2400
    ramp = (np.add.outer(np.arange(side), np.arange(side)) * 13 % 65536).astype(np.uint16)
    path = tmp_path / "scan.png"
    Image.fromarray(ramp).save(path)
    tracemalloc.start()
    try:
        image = read_image(path)
        gray = to_channels_uint8(image, 1)
        del image
        small = resize_channels(gray, 64)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak / side**2 < 5  # whole-image float64 temporaries took about 26 bytes per pixel
    assert np.array_equal(gray[0], whole_image_gray(ramp)) and small.shape == (1, 64, 64)


def test_the_export_guide_onnxruntime_snippet_preprocesses_as_mtssl_predict(tmp_path, monkeypatch):
    """The export guide's lines that turn a scan into the model input, run as written, against mtssl's own."""
    import re
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from mtssl.data.decode import read_image, resize_channels, to_channels_uint8

    guide = (Path(__file__).resolve().parents[1] / "docs" / "guide" / "export.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", guide, re.S) if "onnxruntime" in b]
    lines = [line for line in block.splitlines() if line.startswith(("image", "x ="))]
    assert len(lines) >= 2
    rng = np.random.default_rng(0)
    scan = (np.add.outer(np.arange(300), np.arange(217)) % 256 + rng.integers(0, 40, (300, 217))) % 256
    Image.fromarray(scan.astype(np.uint8)).save(tmp_path / "scan.png")
    monkeypatch.chdir(tmp_path)
    namespace = {"np": np, "Image": Image, "size": 64}
    exec("\n".join(lines), namespace)  # noqa: S102 - the guide's own code
    ours = resize_channels(to_channels_uint8(read_image(tmp_path / "scan.png"), 1), 64)[None] / 255
    assert np.array_equal(namespace["x"], ours.astype(np.float32))
