"""Which initializers are compressible weights, what layer they belong to, and along which axis their channels run.

Shared by the compression passes (palettize, quantize_weights) and the mixed-bit search. A weight is an
initializer of float dtype with at least `min_elements` elements whose every use (possibly through a Cast) is
the weight input of Conv, ConvTranspose, Gemm or MatMul, or the table of a Gather (an embedding, only when
asked). Biases, norm scales and shape constants never qualify.

The layer name is the torch parameter name when the exporter kept it (`model.down_blocks.0...conv1.weight`),
or the one recorded by onnxscript's constant folder when it transposed a Linear weight into a new
initializer (`pkg.onnxscript.optimizer.folded_from`), so recipes name layers the way users know them.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

import onnx_ir as ir

FLOAT_TYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16)
FOLDED_FROM = "pkg.onnxscript.optimizer.folded_from"


@dataclass
class Weight:
    """A compressible initializer."""

    value: ir.Value
    layer: str  # stable name for recipes and reports
    out_axis: int  # output-channel axis (LUT groups, per-channel scales)
    in_axis: int  # input-channel axis (quantization blocks)
    kind: str  # conv | linear | embedding

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.value.shape)

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def layer_name(value: ir.Value) -> str:
    """The torch parameter name behind an initializer, else its ONNX name."""
    origin = value.metadata_props.get(FOLDED_FROM)
    if origin:
        try:
            names = ast.literal_eval(origin)
            if isinstance(names, (list, tuple)) and len(names) == 1 and isinstance(names[0], str):
                return names[0]
        except (ValueError, SyntaxError):
            pass
    return value.name or ""


def _slot(node: ir.Node, index: int, rank: int) -> tuple[str, int, int] | None:
    """(kind, out_axis, in_axis) when input `index` of `node` is a weight slot, else None."""
    if node.domain not in ("", "ai.onnx"):
        return None
    op = node.op_type
    if op == "Conv" and index == 1 and rank >= 3:
        return "conv", 0, 1
    if op == "ConvTranspose" and index == 1 and rank >= 3:
        return "conv", 1, 0
    if op == "Gemm" and index == 1 and rank == 2:
        trans_b = node.attributes.get("transB")
        return ("linear", 0, 1) if trans_b is not None and trans_b.as_int() else ("linear", 1, 0)
    if op == "MatMul" and index == 1 and rank == 2:
        return "linear", 1, 0
    if op == "Gather" and index == 0 and rank == 2:
        return "embedding", 0, 1
    return None


def uses_through_casts(value: ir.Value) -> list[tuple[ir.Node, int]]:
    """Uses of `value`, looking through Cast nodes."""
    out = []
    for node, index in value.uses():
        if node.op_type == "Cast" and node.domain in ("", "ai.onnx"):
            out += uses_through_casts(node.outputs[0]) or [(node, index)]
        else:
            out.append((node, index))
    return out


def find_weights(model: ir.Model, min_elements: int = 2048, include_embeddings: bool = False) -> list[Weight]:
    """Compressible weights of the main graph, in initializer order."""
    graph_inputs = {v.name for v in model.graph.inputs}
    found = []
    for name, value in model.graph.initializers.items():
        tensor = value.const_value
        if tensor is None or name in graph_inputs or value.dtype not in FLOAT_TYPES or value.shape is None:
            continue
        shape = tuple(value.shape)
        if not all(isinstance(d, int) for d in shape):
            continue
        size = 1
        for d in shape:
            size *= d
        if size < max(min_elements, 1):
            continue
        slots = {_slot(node, index, len(shape)) for node, index in uses_through_casts(value)}
        if not slots or None in slots or len(slots) != 1:
            continue
        kind, out_axis, in_axis = slots.pop()
        if kind == "embedding" and not include_embeddings:
            continue
        found.append(Weight(value, layer_name(value), out_axis, in_axis, kind))
    return found


def node_order(model: ir.Model) -> dict[ir.Node, int]:
    """Position of each main-graph node (stays valid for comparisons while nodes are inserted)."""
    return {node: i for i, node in enumerate(model.graph)}


def replace_weight(model: ir.Model, weight: Weight, nodes: list[ir.Node], initializers: list[ir.Value],
                   order: dict[ir.Node, int] | None = None) -> None:
    """Swap an initializer for a decompression subgraph whose last node's output carries the same name.

    The subgraph goes right before the weight's first consumer, so a chunker that cuts the node list keeps
    each decompression with the layer that uses it.
    """
    graph = model.graph
    old = weight.value
    name = old.name
    new_out = nodes[-1].outputs[0]
    order = order if order is not None else node_order(model)
    consumers = [node for node, _ in old.uses() if node.graph is graph]
    first = min(consumers, key=lambda n: order.get(n, len(order)), default=None)
    old.replace_all_uses_with(new_out)
    graph.initializers.pop(name)
    old.name = f"{name}__dense"
    new_out.name = name
    new_out.shape = ir.Shape(weight.shape)
    new_out.dtype = old.dtype
    for key, val in old.metadata_props.items():
        new_out.metadata_props[key] = val
    for init in initializers:
        graph.register_initializer(init)
    first = first or next(iter(graph), None)
    if first is None:
        graph.extend(nodes)
    else:
        graph.insert_before(first, nodes)
    if isinstance(old.const_value, ir.ExternalTensor):
        old.const_value.release()
