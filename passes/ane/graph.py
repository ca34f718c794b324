"""Small graph-building helpers shared by the ANE passes (passes/ane/).

The ANE passes move transformer blocks into Apple's (B, C, 1, S) layout. They all speak in two wrappers:

    to_bc1s(x):   x[B,S,C] -> Transpose(0,2,1) -> Unsqueeze(axes=[2]) -> [B,C,1,S]
    from_bc1s(y): y[B,C,1,S] -> Squeeze(axes=[2]) -> Transpose(0,2,1) -> [B,S,C]

A rewrite wraps its new 4-D ops in these; PropagateChannelsFirstPass then cancels `to_bc1s(from_bc1s(y))`
pairs and pushes the wrappers through elementwise ops, so whole transformer blocks end up in (B,C,1,S).
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import numpy as np
import onnx_ir as ir

_counter = itertools.count()


def reset_fresh_names() -> None:
    """Restart the `fresh` counter: the first ANE pass on a model calls it, so a model's names do not depend on
    what was compiled before it in the same process."""
    global _counter
    _counter = itertools.count()


def fresh(prefix: str) -> str:
    return f"{prefix}__ane{next(_counter)}"


def const(graph: ir.Graph, array: np.ndarray, prefix: str = "ane_const") -> ir.Value:
    """A new initializer holding `array`."""
    array = np.asarray(array)
    name = fresh(prefix)
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                     const_value=ir.tensor(array, name=name))
    graph.register_initializer(value)
    return value


def ints(graph: ir.Graph, values: Sequence[int]) -> ir.Value:
    return const(graph, np.asarray(values, dtype=np.int64), "ane_ints")


def make(op_type: str, inputs: Sequence[ir.Value | None], attrs: dict[str, Any] | None = None,
         num_outputs: int = 1, domain: str = "", name: str | None = None) -> ir.Node:
    return ir.node(op_type, list(inputs), attrs or {}, domain=domain, num_outputs=num_outputs,
                   name=name or fresh(op_type.lower()))


def set_info(value: ir.Value, shape: Sequence[int] | None, dtype: ir.DataType | None) -> ir.Value:
    if shape is not None:
        value.shape = ir.Shape(list(shape))
    if dtype is not None:
        value.type = ir.TensorType(dtype)
    return value


def static_shape(value: ir.Value | None) -> list[int] | None:
    if value is None or value.shape is None:
        return None
    dims = list(value.shape)
    return [int(d) for d in dims] if all(isinstance(d, int) for d in dims) else None


class Emitter:
    """Collects new nodes to insert before `anchor` (keeps the graph topologically sorted)."""

    def __init__(self, graph: ir.Graph, anchor: ir.Node) -> None:
        self.graph = graph
        self.anchor = anchor
        self.nodes: list[ir.Node] = []

    def op(self, op_type: str, inputs: Sequence[ir.Value | None], attrs: dict[str, Any] | None = None,
           shape: Sequence[int] | None = None, dtype: ir.DataType | None = None, num_outputs: int = 1,
           domain: str = "") -> ir.Value:
        node = make(op_type, inputs, attrs, num_outputs, domain)
        self.nodes.append(node)
        out = node.outputs[0]
        return set_info(out, shape, dtype)

    def multi(self, op_type: str, inputs: Sequence[ir.Value | None], attrs: dict[str, Any] | None,
              shapes: Sequence[Sequence[int]], dtype: ir.DataType | None) -> list[ir.Value]:
        node = make(op_type, inputs, attrs, len(shapes))
        self.nodes.append(node)
        return [set_info(o, s, dtype) for o, s in zip(node.outputs, shapes)]

    def ints(self, values: Sequence[int]) -> ir.Value:
        return ints(self.graph, values)

    def const(self, array: np.ndarray, prefix: str = "ane_const") -> ir.Value:
        return const(self.graph, array, prefix)

    def to_bc1s(self, x: ir.Value) -> ir.Value:
        b, s, c = static_shape(x)
        t = self.op("Transpose", [x], {"perm": [0, 2, 1]}, [b, c, s], x.dtype)
        return self.op("Unsqueeze", [t, self.ints([2])], None, [b, c, 1, s], x.dtype)

    def from_bc1s(self, y: ir.Value) -> ir.Value:
        b, c, _, s = static_shape(y)
        q = self.op("Squeeze", [y, self.ints([2])], None, [b, c, s], y.dtype)
        return self.op("Transpose", [q], {"perm": [0, 2, 1]}, [b, s, c], y.dtype)

    def commit(self) -> None:
        if self.nodes:
            precision = self.anchor.metadata_props.get("fusionc.precision")  # passes/precision/fp16_safety.py: keep fp32
            for node in self.nodes if precision else []:
                node.metadata_props["fusionc.precision"] = precision
            self.graph.insert_before(self.anchor, self.nodes)
            self.nodes = []


def replace(old: ir.Value, new: ir.Value) -> None:
    """Point every use (and graph output) of `old` at `new`, keeping the graph output name."""
    graph_output = old.is_graph_output()
    name = old.name
    old.replace_all_uses_with(new, replace_graph_outputs=True)
    if graph_output:
        old.name = fresh(name or "old")
        new.name = name


def is_to_bc1s(value: ir.Value) -> ir.Value | None:
    """If `value` = Unsqueeze(Transpose(x, [0,2,1]), [2]) return x (rank 3), else None."""
    u = value.producer()
    if u is None or u.op_type != "Unsqueeze" or u.domain not in ("", "ai.onnx") or len(u.inputs) < 2:
        return None
    axes = u.inputs[1].const_value
    if axes is None or list(axes.numpy().reshape(-1)) != [2]:
        return None
    t = u.inputs[0].producer() if u.inputs[0] is not None else None
    if t is None or t.op_type != "Transpose" or list(t.attributes.get("perm").value) != [0, 2, 1]:
        return None
    return t.inputs[0]


def is_from_bc1s(value: ir.Value) -> ir.Value | None:
    """If `value` = Transpose(Squeeze(y, [2]), [0,2,1]) with y rank 4, return y, else None."""
    t = value.producer()
    if t is None or t.op_type != "Transpose" or t.domain not in ("", "ai.onnx"):
        return None
    perm = t.attributes.get("perm")
    if perm is None or list(perm.value) != [0, 2, 1]:
        return None
    q = t.inputs[0].producer() if t.inputs[0] is not None else None
    if q is None or q.op_type != "Squeeze" or len(q.inputs) < 2 or q.inputs[1] is None:
        return None
    axes = q.inputs[1].const_value
    if axes is None or list(axes.numpy().reshape(-1)) != [2]:
        return None
    y = q.inputs[0]
    return y if y is not None and y.shape is not None and len(y.shape) == 4 else None
