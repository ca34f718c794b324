"""Helpers shared by the rewrite rules: reading small constants and shape tensors, applying rule sets.

The exporter computes reshape targets either as constants ([1, 4, 64, 8]) or, with a dynamic batch
axis, from Shape/Slice/Concat chains. `shape_value` evaluates both to a list of dims so a rule's
`check` can prove that, say, a Reshape restores exactly the shape of some tensor. A dim is an int or
an opaque token (a named symbolic dim, or "dim i of value v"): equal tokens mean provably equal
sizes. onnxscript's constant folder tracks similar symbolic shapes, but only inside its own pass, so
the rules (which run in other passes) re-derive what they need here; it is a few lines.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Union

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import _pattern_ir, pattern

from fusionc.passes.generic import fused_ops

Dim = Union[int, tuple[Any, ...]]
_INT64_MAX = 2**63 - 1


def dim_tokens(value: ir.Value | None) -> list[Dim] | None:
    """The dims of `value` as ints or comparable tokens; None if the rank is unknown."""
    if value is None or value.shape is None:
        return None
    out: list[Dim] = []
    for axis, d in enumerate(value.shape):
        if isinstance(d, int):
            out.append(d)
        elif getattr(d, "value", None) is not None:
            out.append(("sym", d.value))
        else:
            out.append(("dim", id(value), axis))
    return out


def const_array(value: ir.Value | None, max_size: int = 1 << 16) -> np.ndarray | None:
    """The numpy value of a small constant/initializer, else None (never reads big weights)."""
    if value is None:
        return None
    tensor = value.const_value
    if tensor is None or tensor.size > max_size:
        return None
    try:
        return tensor.numpy()
    except Exception:  # noqa: BLE001 - missing external data: treat as non-constant
        return None


def scalar(value: ir.Value | None) -> float | None:
    """The value of a one-element constant, else None."""
    array = const_array(value, max_size=1)
    if array is None or array.size != 1:
        return None
    return float(array.reshape(()))


def _int_attr(node: ir.Node, name: str, default: int | None) -> int | None:
    attr = node.attributes.get(name)
    return default if attr is None else attr.as_int()


def shape_value(value: ir.Value | None, depth: int = 0) -> list[Dim] | None:
    """Evaluate a 1-D int64 shape tensor to dims/tokens, or None if it cannot be proven."""
    if value is None or depth > 8:
        return None
    array = const_array(value, max_size=64)
    if array is not None:
        return [int(v) for v in array.reshape(-1)] if array.dtype.kind in "iu" else None
    node = value.producer()
    if node is None or node.domain not in ("", "ai.onnx"):
        return None
    op = node.op_type
    if op == "Shape":
        dims = dim_tokens(node.inputs[0])
        if dims is None:
            return None
        start, end = _int_attr(node, "start", 0), _int_attr(node, "end", None)
        return dims[start:end]
    if op == "Concat":
        parts = [shape_value(x, depth + 1) for x in node.inputs]
        return None if any(p is None for p in parts) else [d for p in parts for d in p]  # type: ignore[union-attr]
    if op == "Slice":
        data = shape_value(node.inputs[0], depth + 1)
        starts, ends = const_array(node.inputs[1], 1), const_array(node.inputs[2], 1)
        axes = const_array(node.inputs[3], 1) if len(node.inputs) > 3 else None
        steps = const_array(node.inputs[4], 1) if len(node.inputs) > 4 else None
        if data is None or starts is None or ends is None:
            return None
        if (axes is not None and int(axes.reshape(-1)[0]) not in (0, -1)) or (
            steps is not None and int(steps.reshape(-1)[0]) != 1
        ):
            return None
        return data[int(starts.reshape(-1)[0]) : min(int(ends.reshape(-1)[0]), _INT64_MAX)]
    if op == "Gather" and _int_attr(node, "axis", 0) == 0:
        data, index = shape_value(node.inputs[0], depth + 1), const_array(node.inputs[1], 16)
        if data is None or index is None or index.ndim > 1:
            return None
        try:
            return [data[int(i)] for i in index.reshape(-1)]
        except IndexError:
            return None
    if op in ("Cast", "Identity"):
        return shape_value(node.inputs[0], depth + 1)
    return None


def reshape_target_is(reshape: ir.Node, expected: Sequence[Dim | None]) -> bool:
    """Whether Reshape `reshape` provably produces `expected` dims (None: any size there).

    A -1 in the target is proven only when every other position is (element count is preserved,
    so the -1 then equals the remaining expected dim); a -1 next to a None proves nothing.
    """
    target = shape_value(reshape.inputs[1])
    if target is None or len(target) != len(expected):
        return False
    allowzero = _int_attr(reshape, "allowzero", 0)
    source = dim_tokens(reshape.inputs[0]) or []
    resolved: list[Dim] = []
    for axis, got in enumerate(target):
        if got == 0 and not allowzero:
            if axis >= len(source):
                return False
            got = source[axis]
        resolved.append(got)
    wildcards = [axis for axis, got in enumerate(resolved) if got == -1]
    if len(wildcards) > 1:
        return False
    for axis, (got, want) in enumerate(zip(resolved, expected)):
        if axis in wildcards:
            continue
        if want is None:
            if wildcards:
                return False  # the -1 could absorb a wrong size here
            continue
        if got != want:
            return False
    return True


@contextlib.contextmanager
def fused_functions_hidden(model: ir.Model) -> Iterator[None]:
    """Temporarily remove the fusionc functions so rules and folding never rewrite their bodies
    (a Gelu body matches the Gelu pattern: rewriting it would make the function call itself)."""
    hidden = {k: f for k, f in model.functions.items() if k[0] == fused_ops.DOMAIN}
    for key in hidden:
        del model.functions[key]
    try:
        yield
    finally:
        model.functions.update(hidden)


def root_filtered(rules: pattern.RewriteRuleSet) -> pattern.RewriteRuleSet:
    """Make each rule skip nodes whose op differs from its pattern's root op, before matching.

    onnxscript tries every rule on every node and builds a match state even when the root op type
    differs; with ~30 rules that dominated the cleanup's time (linear, but ~70 us per attempt).
    The guard only returns early where the matcher would fail anyway. Rules are shallow-copied, so
    onnxscript's shared rule objects are left as they are.
    """
    guarded_rules = []
    for rule in rules.rules:
        rule = copy.copy(rule)
        root = rule._target_pattern.output_nodes[0]  # noqa: SLF001 - onnxscript has no public accessor
        if isinstance(root.op, _pattern_ir.StringConstantPattern):
            rule.try_rewrite = _guarded(rule.try_rewrite, root.op_type, str(root.domain))
        guarded_rules.append(rule)
    return pattern.RewriteRuleSet(guarded_rules)


def _guarded(try_rewrite, op_type: str, domain: str):
    def guarded(model, graph_or_function, node, **kwargs):
        if node.op_type != op_type or (node.domain or "") not in (domain, "ai.onnx" if domain == "" else domain):
            return None
        return try_rewrite(model, graph_or_function, node, **kwargs)

    return guarded


def apply_rules(model: ir.Model, rules: pattern.RewriteRuleSet) -> int:
    """Apply `rules` to the main graph and non-fusionc functions; returns the number of rewrites."""
    try:
        with fused_functions_hidden(model):
            count = rules.apply_to_model(model)
    finally:
        forget_last_match(rules)
    if count:
        fused_ops.ensure_functions_for_calls(model)
    return count


MATCH_STATE = ("_graph", "_match", "_current_node", "_tracer")  # set again by every SimplePatternMatcher.match()


def forget_last_match(rules: pattern.RewriteRuleSet | Iterable[pattern.RewriteRule]) -> None:
    """Drop the graph, node and partial match that onnxscript's matchers keep from their last attempt.

    Our rule sets are module-level, so that state kept the last model a pass saw alive after the compile had
    deleted it: at SD-1.5 scale the exported UNet's 3.4 GB of weights stayed resident through verification
    (peak RSS 9.8 GB instead of ~6). torch.onnx.export's optimizer leaves the same state in onnxscript's default
    rules: `compiler/export.py` clears those.
    """
    for rule in rules.rules if isinstance(rules, pattern.RewriteRuleSet) else rules:
        matcher = getattr(rule, "_matcher", None)
        for attr in MATCH_STATE:
            if matcher is not None and hasattr(matcher, attr):
                setattr(matcher, attr, None)
