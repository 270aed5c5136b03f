"""The trained model as one plain graph, with bridge input gradients unrolled into ordinary operators.

A bridge such as saliency differentiates a head's output with respect to the
input image inside ``forward``. Neither ``torch.jit.trace`` nor the ONNX
exporters record ``torch.autograd.grad``, so the model is traced with
``make_fx``: it runs the real forward (autograd included) on symbolic batch
sizes and records every operator autograd executes, backward ones too. A few
backward operators have no ONNX or TorchScript form; they are rewritten here
as forward operators (a transposed convolution, a scatter, group norm's
gradient from plain reductions), and in-place activations run out of place.
Forward operators stay the kernels eager mode runs: the saliency is a
gradient through max pooling, which routes each window's gradient to its
largest activation, so a forward that rounds differently (group norm spelled
out as reductions differs in the last bits) can pick the other of two nearly
equal activations and move gradient to another pixel, and through the
per-image normalisation change the whole map. The result takes
``[B, C, S, S]`` float images and returns each task's probabilities and each
bridge map, for any batch size.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.fx.experimental.proxy_tensor import make_fx
from torch.overrides import TorchFunctionMode

from mtssl.model.network import MultiTaskModel

aten = torch.ops.aten

TRACING_MODE = "symbolic"
ALL_ROWS = slice(0, sys.maxsize)
"""Every row, without reading the batch size (which would freeze it into the graph)."""


class ExportError(ValueError):
    """The model cannot be turned into a portable graph; the message names the operator or output."""


@dataclass(frozen=True)
class GraphOutputs:
    """Names of the graph's outputs, in order: task probabilities first, then bridge maps."""

    tasks: tuple[str, ...]
    maps: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return self.tasks + self.maps


def _conv_backward(grad_out, input, weight, bias_sizes, stride, padding, dilation, transposed, output_padding,
                   groups, output_mask):
    """Input gradient of a convolution as a transposed convolution (weight/bias gradients are never asked for)."""
    if transposed or output_mask[1] or output_mask[2]:
        raise ExportError("export supports input gradients of plain convolutions only")
    spatial = input.dim() - 2
    extra = [input.shape[2 + i] - ((grad_out.shape[2 + i] - 1) * stride[i] - 2 * padding[i]
                                   + dilation[i] * (weight.shape[2 + i] - 1) + 1) for i in range(spatial)]
    transpose = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[spatial]
    return transpose(grad_out, weight, None, stride, padding, extra, groups, dilation), None, None


def _max_pool_backward(grad, input, kernel_size, stride, padding, dilation, ceil_mode, indices):
    """Route each pooled gradient back to the input position its maximum came from."""
    n, c = input.shape[0], input.shape[1]
    flat = grad.new_zeros((n, c, input.shape[2] * input.shape[3]))
    return flat.scatter_add(2, indices.reshape(n, c, -1), grad.reshape(n, c, -1)).reshape(input.shape)


def _slice_backward(grad, input_sizes, dim, start, end, step):
    if step != 1:
        raise ExportError("export supports input gradients through contiguous slices only")
    size = input_sizes[dim]
    start = max(0, min(size, start + size if start < 0 else start))
    end = max(start, min(size, end + size if end < 0 else end))
    parts = []
    for width in (start, None, size - end):
        if width is None:
            parts.append(grad)
        elif width > 0:
            shape = list(input_sizes)
            shape[dim] = width
            parts.append(grad.new_zeros(shape))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim)


def _leaky_relu_backward(grad, self, slope, self_is_result):
    return torch.where(self > 0, grad, grad * slope)


def _threshold_backward(grad, self, threshold):
    return torch.where(self > threshold, grad, torch.zeros_like(grad))


def _group_norm_backward(grad_out, input, mean, rstd, weight, n, c, hxw, group, output_mask):
    """Group norm's gradients from plain reductions, with the forward's own ``mean`` and ``rstd`` ([N, G])."""
    spatial = (1,) * (input.dim() - 2)
    grouped = input.unflatten(1, (group, -1)).flatten(2)
    normalised = (grouped - mean.unsqueeze(-1)) * rstd.unsqueeze(-1)
    upstream = grad_out if weight is None else grad_out * weight.reshape(1, -1, *spatial)
    upstream = upstream.unflatten(1, (group, -1)).flatten(2)
    grad_input = rstd.unsqueeze(-1) * (upstream - upstream.mean(-1, keepdim=True)
                                       - normalised * (upstream * normalised).mean(-1, keepdim=True))
    dims = [0, *range(2, input.dim())]
    grad_weight = (grad_out * normalised.reshape_as(input)).sum(dims) if output_mask[1] else None
    grad_bias = grad_out.sum(dims) if output_mask[2] else None
    return grad_input.reshape_as(input), grad_weight, grad_bias


def _sigmoid_backward(grad, output):
    return grad * output * (1 - output)


def _softmax_backward(grad, output, dim, input_dtype):
    return (output * (grad - (grad * output).sum(dim, keepdim=True))).to(input_dtype)


def _value_selecting_reduction_backward(grad, dim, indices, sizes, keepdim):
    if not keepdim:
        grad, indices = grad.unsqueeze(dim), indices.unsqueeze(dim)
    return grad.new_zeros(sizes).scatter(dim, indices, grad)


REWRITES = {
    aten.convolution_backward.default: _conv_backward,
    aten.max_pool2d_with_indices_backward.default: _max_pool_backward,
    aten.slice_backward.default: _slice_backward,
    aten.leaky_relu_backward.default: _leaky_relu_backward,
    aten.threshold_backward.default: _threshold_backward,
    aten.value_selecting_reduction_backward.default: _value_selecting_reduction_backward,
    aten.native_group_norm_backward.default: _group_norm_backward,
    aten.sigmoid_backward.default: _sigmoid_backward,
    aten._softmax_backward_data.default: _softmax_backward,
}


def _instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                   momentum=0.1, eps=1e-5):
    """Instance norm as a group norm with a group per channel: a tensor of its own, where ``F.instance_norm``
    returns a view of a reshaped batch norm whose backward has no portable form."""
    if not use_input_stats:
        return F.batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps)
    return F.group_norm(input, input.shape[1], weight, bias, eps)


class _Portable(TorchFunctionMode):
    """Out-of-place activations and instance norm as group norm, so the recorded backward has no aliasing."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is F.instance_norm:
            return _instance_norm(*args, **kwargs)
        if kwargs.get("inplace"):
            kwargs["inplace"] = False
        return func(*args, **kwargs)


def output_names(model: MultiTaskModel, example: torch.Tensor) -> GraphOutputs:
    """Run the model once to learn which bridge maps it produces (their names are the bridges' business)."""
    maps: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        model(example, {name: ALL_ROWS for name in model.tasks}, maps=maps)
    tasks = tuple(model.tasks)
    clash = sorted(set(tasks) & set(maps))
    if clash:
        raise ExportError(f"bridge map(s) {', '.join(clash)} share a name with a task; the outputs would collide")
    return GraphOutputs(tasks, tuple(maps))


def inference_function(model: MultiTaskModel, outputs: GraphOutputs,
                       probabilities: Callable[[str, torch.Tensor], torch.Tensor]) -> Callable:
    """``images -> (task probabilities..., bridge maps...)``, the same computation as ``mtssl predict``."""

    def run(images: torch.Tensor):
        maps: dict[str, torch.Tensor] = {}
        raw = model(images, {name: ALL_ROWS for name in outputs.tasks}, maps=maps)
        return (*(probabilities(name, raw[name]).float() for name in outputs.tasks),
                *(maps[name].float() for name in outputs.maps))

    return run


def trace_graph(function: Callable, example: torch.Tensor) -> torch.fx.GraphModule:
    """Record ``function`` as an FX graph with a symbolic batch size and no backward operators."""
    def portable(images):
        with _Portable():
            return function(images)

    with torch.no_grad():
        graph = make_fx(portable, decomposition_table=REWRITES, tracing_mode=TRACING_MODE,
                        _allow_non_fake_inputs=True)(example)
    left = sorted({str(n.target) for n in graph.graph.nodes
                   if n.op == "call_function" and "backward" in str(n.target)})
    if left:
        raise ExportError(f"cannot export the input gradient through {', '.join(left)}: no rewrite for it yet")
    return graph


def scriptable(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Make a traced graph TorchScript-compatible: sizes read with ``.size()``, ops called by overload packet."""
    for node in list(graph.graph.nodes):
        if node.op != "call_function":
            continue
        if node.target is aten.sym_size.int:
            with graph.graph.inserting_after(node):
                replacement = graph.graph.call_method("size", node.args)
            node.replace_all_uses_with(replacement)
            graph.graph.erase_node(node)
        elif node.target is aten._to_copy.default and set(node.kwargs) <= {"dtype"}:
            with graph.graph.inserting_after(node):  # the ONNX TorchScript exporter knows .to, not _to_copy
                replacement = graph.graph.call_method("to", (node.args[0], node.kwargs["dtype"])) \
                    if "dtype" in node.kwargs else node.args[0]
            node.replace_all_uses_with(replacement)
            graph.graph.erase_node(node)
        elif isinstance(node.target, torch._ops.OpOverload):
            node.target = node.target.overloadpacket
    graph.recompile()
    return graph


def portable_graph(model: MultiTaskModel, probabilities: Callable[[str, torch.Tensor], torch.Tensor],
                   channels: int, size: int, batch: Sequence[int] = (2,)) -> tuple[torch.fx.GraphModule, GraphOutputs]:
    """The model in eval mode as a backward-free graph plus the names of its outputs."""
    model.eval()
    example = torch.rand(batch[0], channels, size, size, generator=torch.Generator().manual_seed(0))
    outputs = output_names(model, example)
    graph = trace_graph(inference_function(model, outputs, probabilities), example)
    return graph, outputs
