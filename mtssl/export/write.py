"""``mtssl export``: a trained run as TorchScript and/or ONNX files plus ``metadata.json``.

Both files hold the same graph (:mod:`mtssl.export.graph`): float images
``[B, C, S, S]`` in [0, 1] in; each task's probabilities and each bridge map
out, the saliency gradient computed inside. Every written file is run on
check images and compared with :func:`mtssl.evaluation.inference.predict` before the
export counts as done; the largest difference is recorded in the metadata. Files are
written into a temporary folder beside the destination and moved into place only when
every check passed, so a failed export leaves the destination as it was.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mtssl.export import TOLERANCE
from mtssl.export.graph import ExportError, GraphOutputs, portable_graph, scriptable
from mtssl.evaluation.inference import LoadedModel, predict
from mtssl.model.network import to_float
from mtssl.run.staging import staging_beside

METADATA = "metadata.json"
FORMAT = "mtssl-export-1"
FILES = {"torchscript": "model.pt", "onnx": "model.onnx"}
FORMATS = ("torchscript", "onnx", "both")
INPUT_NAME = "image"
ONNX_OPSET = 18
EXTRA_HINT = "pip install 'mtssl[export]'"


def mtssl_version() -> str:
    try:
        return version("mtssl")
    except PackageNotFoundError:
        return "unknown"


def require_onnx() -> None:
    """One line naming the extra when the ONNX packages are missing."""
    missing = []
    for module in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}: {EXTRA_HINT}")


def scan_like(size: int, seed: int = 1) -> np.ndarray:
    """A uint8 image with what real scans have and noise lacks: a flat black border, a saturated (255) area and
    blocks of constant value where letters are burned in; flat regions give max-pooling windows with (near-)ties."""
    image = np.random.default_rng(seed).integers(60, 200, (size, size)).astype(np.uint8)
    edge = max(1, size // 8)
    image[:edge], image[:, :edge] = 0, 0
    image[size // 2: size // 2 + size // 4, size // 2:] = 255
    image[edge: 2 * edge, size - 3 * edge: size - edge] = 255  # a "letter" in the corner
    return image


def check_images(loaded: LoadedModel, count: int = 4) -> np.ndarray:
    """Deterministic uint8 check images: a gradient, noise, a bright disc and a scan-like image (not all-flat, so
    maps are defined)."""
    size = loaded.size
    yy, xx = np.mgrid[0:size, 0:size]
    ramp = (255 * (xx + yy) / (2 * size - 2)).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (size, size), dtype=np.uint8)
    disc = np.where((yy - size / 2) ** 2 + (xx - size / 3) ** 2 < (size / 4) ** 2, 220, 40).astype(np.uint8)
    planes = np.stack([ramp, noise, disc, scan_like(size)][:count])[:, None]  # [N, 1, S, S]
    channels = loaded.parts.backbone.in_channels
    return np.concatenate([np.roll(planes, shift, axis=-1) for shift in range(channels)], axis=1)


def reference_outputs(loaded: LoadedModel, images: np.ndarray, outputs: GraphOutputs) -> dict[str, np.ndarray]:
    """What ``mtssl predict`` gives for these images, keyed like the exported graph's outputs."""
    result = predict(loaded, images, outputs.tasks, with_maps=True)
    found = dict(result.probabilities)
    found.update({name: result.maps[name][:, None] for name in outputs.maps})
    return found


def open_torchscript(path: Path) -> Callable[[np.ndarray], list[np.ndarray]]:
    module = torch.jit.load(str(path), map_location="cpu")

    def run(images: np.ndarray) -> list[np.ndarray]:
        x = to_float(torch.from_numpy(np.ascontiguousarray(images)))
        return [t.detach().numpy() for t in module(x)]

    return run


def open_onnx(path: Path) -> Callable[[np.ndarray], list[np.ndarray]]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(images: np.ndarray) -> list[np.ndarray]:
        x = to_float(torch.from_numpy(np.ascontiguousarray(images))).numpy()
        return session.run(None, {INPUT_NAME: x})

    return run


RUNNERS: dict[str, Callable[[Path], Callable[[np.ndarray], list[np.ndarray]]]] = {
    "torchscript": open_torchscript, "onnx": open_onnx}
"""Open an exported file once; the returned function maps uint8 ``[N, C, S, S]`` images to the graph's outputs."""


def max_difference(got: list[np.ndarray], want: dict[str, np.ndarray], outputs: GraphOutputs) -> dict[str, float]:
    if len(got) != len(outputs.names):
        raise ExportError(f"exported graph returned {len(got)} outputs, expected {len(outputs.names)}")
    diffs = {}
    for name, value in zip(outputs.names, got):
        if value.shape != want[name].shape:
            raise ExportError(f"exported output '{name}' has shape {value.shape}, predict gives {want[name].shape}")
        diffs[name] = float(np.abs(value - want[name]).max())
    return diffs


def write_torchscript(graph: torch.fx.GraphModule, path: Path) -> None:
    torch.jit.script(scriptable(graph)).save(str(path))


def write_onnx(graph: torch.fx.GraphModule, outputs: GraphOutputs, example: torch.Tensor, path: Path) -> None:
    """The dynamo exporter (onnxscript): the TorchScript-based one (``dynamo=False``) has no ONNX form for the
    index arithmetic that bilinear upsampling becomes under a symbolic batch size (``aten::_unsafe_index``)."""
    batch = torch.export.Dim("batch", min=1, max=65536)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress to stdout
        program = torch.onnx.export(_Wrapped(graph).eval(), (example,), input_names=[INPUT_NAME],
                                    output_names=list(outputs.names), dynamic_shapes=({0: batch},),
                                    opset_version=ONNX_OPSET, dynamo=True, verbose=False)
    program.save(str(path))


class _Wrapped(torch.nn.Module):
    def __init__(self, graph):
        super().__init__()
        self.graph_module = graph

    def forward(self, images):
        return self.graph_module(images)


def output_descriptions(loaded: LoadedModel, outputs: GraphOutputs, host) -> list[dict]:
    """Name, shape and meaning of each output: from the task (``Task.output_info``) or the bridge's description."""
    size, described = loaded.size, []
    for name in outputs.tasks:
        info = {"name": name, "task": name, "values": "probabilities"}
        info.update(loaded.parts.tasks[name].output_info(loaded.class_names.get(name, ())))
        if "shape" in info:
            info["shape"] = [size if dim == "size" else dim for dim in info["shape"]]
        described.append(info)
    bridges = {b.name: b for b in loaded.parts.bridges}
    for name in outputs.maps:
        bridge_name = name.split(".", 1)[0]
        bridge = bridges.get(bridge_name)
        entry = host.registry("bridge").get(bridge_name) if bridge_name in host.registry("bridge") else None
        described.append({"name": name, "bridge": bridge_name,
                          "route": f"{bridge.source}->{bridge.target}" if bridge else None,
                          "shape": ["batch", 1, size, size],
                          "values": "displayable map in [0, 1], computed inside the graph",
                          "meaning": entry.description if entry else ""})
    return described


def metadata(loaded: LoadedModel, outputs: GraphOutputs, files: dict[str, str], checkpoint: str,
             differences: dict[str, dict[str, float]], host, tolerance: float = TOLERANCE) -> dict:
    channels = loaded.parts.backbone.in_channels
    return {
        "format": FORMAT,
        "mtssl_version": mtssl_version(),
        "files": files,
        "input": {"name": INPUT_NAME, "shape": ["batch", channels, loaded.size, loaded.size], "dtype": "float32",
                  "size": loaded.size, "channels": channels,
                  "scaling": "uint8 pixels / 255, so values lie in [0, 1]",
                  "preprocessing": "8 bits per channel (grayscale when channels is 1), resized to size x size "
                                   "(bilinear), as mtssl predict does"},
        "outputs": output_descriptions(loaded, outputs, host),
        "class_names": {name: list(names) for name, names in loaded.class_names.items()},
        "checkpoint": {"tag": checkpoint, "step": loaded.step},
        "verified": {"tolerance": tolerance, "onnx_map_tolerance": max(tolerance, ONNX_MAP_TOLERANCE),
                     "max_abs_difference": differences},
        "config": loaded.config.to_dict(),
    }


def export_run(loaded: LoadedModel, out_dir: str | Path, fmt: str, host, checkpoint: str = "best",
               tolerance: float = TOLERANCE) -> Path:
    """Write the chosen formats and ``metadata.json`` into ``out_dir``; return the metadata path.

    Nothing in ``out_dir`` changes unless every file passed the check against ``predict`` within ``tolerance``.
    """
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if not tolerance > 0:
        raise ExportError(f"--tolerance {tolerance}: expected a positive number")
    chosen = ["torchscript", "onnx"] if fmt == "both" else [fmt]
    if "onnx" in chosen:
        require_onnx()
    if loaded.device.type != "cpu":
        loaded.model.to("cpu")
        loaded.device = torch.device("cpu")
    out = Path(out_dir)
    with staging_beside(out) as staging:
        files, differences, outputs = write_checked(loaded, chosen, staging, out, tolerance)
        meta = metadata(loaded, outputs, files, checkpoint, differences, host, tolerance)
        (staging / METADATA).write_text(json.dumps(meta, indent=2))
        move_into_place(staging, out)
    return out / METADATA


ONNX_MAP_TOLERANCE = 0.1
"""Bound on an ONNX file's bridge maps. A map that is an input gradient through max pooling follows each
window's largest activation; onnxruntime's kernels round differently from torch's, so on some images it
picks the other of two nearly equal activations and the (per-image scaled) map moves by a few 1e-2 (up to
0.06 measured on real 64 px scans); a broken rewrite moves it by far more. TorchScript runs torch's kernels
and is held to the tolerance itself."""


def bound(kind: str, output: str, outputs: GraphOutputs, tolerance: float) -> float:
    """The largest difference from ``predict`` allowed for one output of one exported format."""
    if kind == "onnx" and output in outputs.maps:
        return max(tolerance, ONNX_MAP_TOLERANCE)
    return tolerance


def write_checked(loaded: LoadedModel, chosen: list[str], folder: Path, destination: Path,
                  tolerance: float) -> tuple[dict[str, str], dict[str, dict[str, float]], GraphOutputs]:
    """Write each chosen format into ``folder`` and check it against ``predict``; errors name ``destination``."""
    tasks = loaded.parts.tasks
    channels = loaded.parts.backbone.in_channels
    graph, outputs = portable_graph(loaded.model, lambda name, raw: tasks[name].probabilities(raw), channels,
                                    loaded.size)
    images = check_images(loaded)
    want = reference_outputs(loaded, images, outputs)
    example = to_float(torch.from_numpy(images[:2]))
    files, differences = {}, {}
    for kind in chosen:
        path = folder / FILES[kind]
        if kind == "torchscript":
            write_torchscript(copy.deepcopy(graph), path)
        else:
            write_onnx(graph, outputs, example, path)
        differences[kind] = max_difference(RUNNERS[kind](path)(images), want, outputs)
        over = {name: value for name, value in differences[kind].items()
                if not value <= bound(kind, name, outputs, tolerance)}
        if over:
            name = max(over, key=over.get)
            raise ExportError(f"{destination / FILES[kind]}: '{name}' differs from mtssl predict by {over[name]:.2e} "
                              f"(tolerance {bound(kind, name, outputs, tolerance):g}, --tolerance): "
                              f"{differences[kind]}; nothing was written")
        files[kind] = FILES[kind]
    return files, differences, outputs


def move_into_place(staging: Path, out: Path) -> None:
    """Replace the export in ``out`` by the checked files in ``staging``.

    A new folder is one rename. Into an existing folder, the old ``metadata.json`` goes first (a folder
    without it is not an export), then each model file is replaced or, when this export lacks it, removed,
    and the new ``metadata.json`` comes last; other files in the folder are left alone.
    """
    if not out.exists():
        os.replace(staging, out)
        return
    (out / METADATA).unlink(missing_ok=True)
    for name in FILES.values():
        if (staging / name).exists():
            os.replace(staging / name, out / name)
        else:
            (out / name).unlink(missing_ok=True)
    os.replace(staging / METADATA, out / METADATA)
