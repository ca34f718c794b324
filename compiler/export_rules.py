"""Hooks into the exporter's optimizer (onnxscript 0.7): without its one quadratic rewrite rule; folded constants.

torch.onnx.export and fusionc.export.export_structure run onnxscript's optimizer with its default rewrite rules.
One of them, SlicesSplit (two Slices of a tensor's halves -> one Split), has two output nodes, and onnxscript
matches such patterns by brute force: for every Slice it indexes the whole graph and tries every pair, so the rule
costs O(slices x nodes). On an SDXL UNet's export (5,578 nodes, 424 Slices) that was about half of the export's time
and the largest part of a `fusionc estimate` (measured in benchmarks/estimate_speed.py). `linear_time_rules` runs
the optimizer without it, and `slices_to_split` then makes the same rewrite in one pass over the graph, under the
same conditions (onnxscript.rewriter.rules.common._basic_rules.SlicesSplit.check), so the graph is the one the
stock optimizer gives.

`on_folded_initializer` lets a caller replace a constant the optimizer folds (onnxscript has no option for it):
streaming keeps folded Transposes of checkpoint weights lazy, a meta export keeps folded stand-ins lazy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import onnx_ir as ir
import onnxscript.rewriter

QUADRATIC_RULES = frozenset({"SlicesSplit"})


@contextlib.contextmanager
def linear_time_rules() -> Iterator[None]:
    """While the exporter optimizes: onnxscript's default rules without QUADRATIC_RULES (the optimizer reads the
    module attribute on every call; there is no parameter for it)."""
    original = onnxscript.rewriter._DEFAULT_REWRITE_RULES
    onnxscript.rewriter._DEFAULT_REWRITE_RULES = tuple(
        rule for rule in original if getattr(rule, "name", None) not in QUADRATIC_RULES)
    try:
        yield
    finally:
        onnxscript.rewriter._DEFAULT_REWRITE_RULES = original


@contextlib.contextmanager
def on_folded_initializer(hook: Callable[[ir.Node, ir.Value], None]) -> Iterator[None]:
    """While the optimizer folds: `hook(node, value)` sees each constant it folds (the new initializer `value`
    holding `node`'s result) and may replace `value.const_value`; the value's name, checks and provenance stay the
    optimizer's own."""
    from onnxscript.optimizer import _constant_folding

    original = _constant_folding.FoldConstantsPass.new_initializer

    def new_initializer(self: Any, node: ir.Node, array: Any) -> Any:
        value = original(self, node, array)
        if value is not None and value.const_value is not None:
            hook(node, value)
        return value

    _constant_folding.FoldConstantsPass.new_initializer = new_initializer
    try:
        yield
    finally:
        _constant_folding.FoldConstantsPass.new_initializer = original


def _ints(value: ir.Value | None) -> list[int] | None:
    tensor = ir.convenience.get_const_tensor(value) if value is not None else None
    return None if tensor is None else [int(v) for v in tensor.numpy().ravel()]


def _halves(node: ir.Node) -> tuple[ir.Value, int, int, int] | None:
    """(x, begin, end, axis) when `node` is Slice(x, begin, end, axes) over the last axis of a static last dim."""
    if node.op_type != "Slice" or node.domain not in ("", "ai.onnx") or len(node.inputs) != 4:
        return None
    x, begin, end, axes = node.inputs
    if x is None or x.shape is None or not len(x.shape) or not isinstance(x.shape[-1], int):
        return None
    axes_v, begin_v, end_v = _ints(axes), _ints(begin), _ints(end)
    if axes_v is None or len(axes_v) != 1 or axes_v[0] not in (-1, len(x.shape) - 1) or begin_v is None \
            or end_v is None or len(begin_v) != 1 or len(end_v) != 1:
        return None
    return x, begin_v[0], end_v[0], axes_v[0]


def slices_to_split(model: ir.Model) -> int:
    """Replace Slice(x, [0], [d/2], [a]) and Slice(x, [d/2], [d], [a]) (a the last axis, d x's static last dim)
    by one Split(x, num_outputs=2, axis=-1), in every graph; returns how many pairs were replaced."""
    replaced = 0
    for graph in (model.graph, *model.graph.subgraphs()):
        order: dict[int, int] = {}
        halves: dict[tuple[int, int], list[ir.Node | None]] = {}
        for index, node in enumerate(graph):
            order[id(node)] = index
            found = _halves(node)
            if found is None:
                continue
            x, begin, end, axis = found
            pair = halves.setdefault((id(x), axis), [None, None])
            last = x.shape[-1]
            if begin == 0 and end == last // 2 and pair[0] is None:
                pair[0] = node
            elif begin == last // 2 and end == last and pair[1] is None:
                pair[1] = node
        for head, tail in halves.values():
            if head is None or tail is None:
                continue
            split = ir.node("Split", [head.inputs[0]], attributes={"axis": -1, "num_outputs": 2}, num_outputs=2)
            graph.insert_before(min(head, tail, key=lambda n: order[id(n)]), split)
            olds = (head.outputs[0], tail.outputs[0])
            for old, new in zip(olds, split.outputs):
                new.shape, new.type = old.shape, old.type
                ir.convenience.replace_all_uses_with(old, new)
                if old in graph.outputs:
                    graph.outputs[graph.outputs.index(old)] = new
            names = [old.name for old in olds]
            graph.remove([head, tail], safe=True)
            for new, name in zip(split.outputs, names):
                new.name = name
            replaced += 1
    return replaced
