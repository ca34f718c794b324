"""PropagateChannelsFirstPass: grow (B, C, 1, S) regions until the layout wrappers between ops disappear.

The local ANE rewrites (ane_linear, ane_attention) leave each new op inside layout wrappers
(ane_graph.to_bc1s / from_bc1s). This pass applies four rules to a fixpoint:

  cancel   to_bc1s(from_bc1s(y))                       -> y
  sink     N(from_bc1s(y), ...)  (N elementwise, Split/Slice on C)  -> from_bc1s(N'(y, ...))
           other operands: from_bc1s(y2) -> y2; constants [.., S?, C] -> [.., C, 1, S?];
           per-channel rows [B,1,C] (AdaLN-Zero's shift, scale, gate) -> Reshape to [B,C,1,1]
  enter    Reshape(Transpose(x[B,C,H,W], [0,2,3,1]), [B,H*W,C])   -> from_bc1s(Reshape(x, [B,C,1,H*W]))
  exit     Transpose(Reshape(from_bc1s(y), [B,H,W,C]), [0,3,1,2])  -> Reshape(y, [B,C,H,W])
  source   x (rank 3) feeding to_bc1s and other ops: the other ops read from_bc1s(to_bc1s(x)) instead

    before (one transformer block edge)            after
    a = from_bc1s(conv_out)                        r = Add(conv_out, h4)
    r = Add(a, from_bc1s(h4))                      n = LayerNorm-over-C(r)   (no transposes between)
    n = to_bc1s(r) -> LayerNorm-over-C

Every rewrite keeps values numerically identical (only layouts move), so onnxruntime checks it exactly.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from fusionc.passes.ane.graph import Emitter, is_from_bc1s, is_to_bc1s, replace, static_shape

UNARY = {"Sigmoid", "Tanh", "Relu", "Erf", "Exp", "Sqrt", "Abs", "Neg", "Cos", "Sin", "Softplus", "Identity",
         "Reciprocal", "Floor", "Ceil", "Sign", "LeakyRelu", "Elu", "HardSigmoid", "Cast", "Log", "Not", "IsNaN"}
BINARY = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Equal", "Less", "Greater", "And", "Or"}
FUSED_UNARY = {("fusionc", "Gelu")}
MAX_CONST = 1 << 22  # constants reshaped for the new layout (bias, positional tables); weights are never here


def _const_bc1s(arr: np.ndarray) -> np.ndarray | None:
    """A constant broadcastable against [B,S,C] in the (B,C,1,S) layout, or None."""
    if arr.ndim > 3 or arr.size > MAX_CONST:
        return None
    if arr.size == 1:
        return arr.reshape(())
    a = arr.reshape((1,) * (3 - arr.ndim) + arr.shape)
    return np.ascontiguousarray(a.transpose(0, 2, 1)[:, :, None, :])


def _per_channel_row(value: ir.Value, bsc: list[int]) -> bool:
    """A non-constant [B|1, 1, C] operand broadcast over the S tokens of a [B,S,C] value (adaptive norms' modulation):
    in the (B,C,1,S) layout it is the same memory as [B|1, C, 1, 1], a Reshape away."""
    shape = static_shape(value)
    return (shape is not None and len(shape) == 3 and shape[1] == 1 and shape[2] == bsc[2] and shape[0] in (1, bsc[0])
            and bsc[1] != 1)


def _is_default_op(node: ir.Node) -> bool:
    return node.domain in ("", "ai.onnx")


class PropagateChannelsFirstPass(ir.passes.InPlacePass):
    """Cancel, sink, enter, exit and source rules to a fixpoint (see module docstring)."""

    def __init__(self, max_rounds: int = 50) -> None:
        super().__init__()
        self.max_rounds = max_rounds

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for _ in range(self.max_rounds):
            changed = False
            for node in list(graph):
                if node.graph is None:  # removed earlier in this sweep
                    continue
                changed |= self._visit(graph, node)
            if not changed:
                break
            modified = True
            _remove_dead(graph)
            graph.sort()
        return ir.passes.PassResult(model, modified=modified)

    def _visit(self, graph: ir.Graph, node: ir.Node) -> bool:
        if not node.outputs:
            return False
        out = node.outputs[0]
        if node.op_type == "Unsqueeze" and _is_default_op(node):
            x = is_to_bc1s(out)
            if x is not None:
                y = is_from_bc1s(x)
                if y is not None and static_shape(y) == static_shape(out):
                    replace(out, y)
                    return True
                return self._source(graph, x, node)
        if node.op_type == "Reshape" and _is_default_op(node):
            return self._enter(graph, node) or self._exit(graph, node)
        return self._sink(graph, node)

    def _source(self, graph: ir.Graph, x: ir.Value, unsqueeze: ir.Node) -> bool:
        """x feeds this to_bc1s and other ops: route the other ops through the 4-D value."""
        transpose = unsqueeze.inputs[0].producer()
        others = [u for u in x.uses() if u.node is not transpose]
        if not others or x.is_graph_output() or is_from_bc1s(x) is not None:
            return False
        if not any(self._sinkable(u.node) for u in others):
            return False
        emit = Emitter(graph, others[0].node)
        back = emit.from_bc1s(unsqueeze.outputs[0])
        _insert_after(graph, unsqueeze, emit.nodes)
        for use in others:
            use.node.replace_input_with(use.idx, back)
        return True

    def _sinkable(self, node: ir.Node) -> bool:
        key = (node.domain, node.op_type)
        return (_is_default_op(node) and node.op_type in UNARY | BINARY | {"Split", "Slice"}) or key in FUSED_UNARY

    def _sink(self, graph: ir.Graph, node: ir.Node) -> bool:
        if not self._sinkable(node):
            return False
        inputs = list(node.inputs)
        wrapped = [is_from_bc1s(v) if v is not None else None for v in inputs]
        if not any(w is not None for w in wrapped):
            return False
        first = next(i for i, w in enumerate(wrapped) if w is not None)
        bsc = static_shape(inputs[first])
        emit = Emitter(graph, node)
        new_inputs: list[ir.Value | None] = []
        if node.op_type in ("Split", "Slice"):
            if first != 0:
                return False
            return self._sink_split_slice(graph, node, wrapped[0], bsc, emit)
        for value, y in zip(inputs, wrapped):
            if value is None:
                new_inputs.append(None)
            elif y is not None:
                if static_shape(value) != bsc:
                    return False
                new_inputs.append(y)
            elif value.const_value is not None:
                arr = _const_bc1s(value.const_value.numpy())
                if arr is None:
                    return False
                new_inputs.append(emit.const(arr.astype(value.const_value.numpy().dtype), "bc1s"))
            elif _per_channel_row(value, bsc):  # a [B,1,C] activation (AdaLN-Zero's shift/scale/gate) -> [B,C,1,1]
                b0, _, c0 = static_shape(value)
                new_inputs.append(emit.op("Reshape", [value, emit.ints([b0, c0, 1, 1])], None, [b0, c0, 1, 1],
                                          value.dtype))
            else:
                return False
        if any(static_shape(o) != bsc for o in node.outputs):
            return False
        b, s, c = bsc
        attrs = {k: a.value for k, a in node.attributes.items()}
        new = emit.op(node.op_type, new_inputs, attrs, [b, c, 1, s], node.outputs[0].dtype, domain=node.domain)
        new.producer().overload = node.overload
        replace(node.outputs[0], emit.from_bc1s(new))
        emit.commit()
        return True

    def _sink_split_slice(self, graph: ir.Graph, node: ir.Node, y: ir.Value, bsc: list[int], emit: Emitter) -> bool:
        b, s, c = bsc
        if node.op_type == "Split":
            axis = node.attributes["axis"].as_int() if "axis" in node.attributes else 0
            if axis not in (2, -1):
                return False
            shapes = [static_shape(o) for o in node.outputs]
            if any(sh is None for sh in shapes):
                return False
            attrs = {k: a.value for k, a in node.attributes.items()}
            attrs["axis"] = 1
            outs = emit.multi("Split", [y] + list(node.inputs[1:]), attrs, [[b, sh[2], 1, s] for sh in shapes], y.dtype)
        else:
            axes = node.inputs[3].const_value if len(node.inputs) > 3 and node.inputs[3] is not None else None
            if axes is None or [int(a) % 3 for a in axes.numpy().reshape(-1)] != [2]:
                return False
            sh = static_shape(node.outputs[0])
            if sh is None:
                return False
            outs = [emit.op("Slice", [y, node.inputs[1], node.inputs[2], emit.ints([1])] + list(node.inputs[4:5]),
                            None, [b, sh[2], 1, s], y.dtype)]
        backs = [emit.from_bc1s(o) for o in outs]
        emit.commit()
        for old, new in zip(node.outputs, backs):
            replace(old, new)
        return True

    def _enter(self, graph: ir.Graph, node: ir.Node) -> bool:
        """Reshape(Transpose(x4, [0,2,3,1]), [B,HW,C]) -> from_bc1s(Reshape(x4, [B,C,1,HW]))."""
        t = node.inputs[0].producer() if node.inputs[0] is not None else None
        if t is None or t.op_type != "Transpose" or list(t.attributes["perm"].value) != [0, 2, 3, 1]:
            return False
        x4, out = t.inputs[0], node.outputs[0]
        xs, os_ = static_shape(x4), static_shape(out)
        if xs is None or os_ is None or len(xs) != 4 or os_ != [xs[0], xs[2] * xs[3], xs[1]]:
            return False
        b, c, h, w = xs
        emit = Emitter(graph, node)
        r = emit.op("Reshape", [x4, emit.ints([b, c, 1, h * w])], None, [b, c, 1, h * w], x4.dtype)
        replace(out, emit.from_bc1s(r))
        emit.commit()
        return True

    def _exit(self, graph: ir.Graph, node: ir.Node) -> bool:
        """Transpose(Reshape(from_bc1s(y), [B,H,W,C]), [0,3,1,2]) -> Reshape(y, [B,C,H,W])."""
        y = is_from_bc1s(node.inputs[0]) if node.inputs[0] is not None else None
        shape = static_shape(node.outputs[0])
        if y is None or shape is None or len(shape) != 4:
            return False
        uses = list(node.outputs[0].uses())
        if len(uses) != 1 or uses[0].node.op_type != "Transpose" or list(uses[0].node.attributes["perm"].value) != [0, 3, 1, 2]:
            return False
        b, h, w, c = shape
        if static_shape(y) != [b, c, 1, h * w]:
            return False
        t = uses[0].node
        emit = Emitter(graph, t)
        r = emit.op("Reshape", [y, emit.ints([b, c, h, w])], None, [b, c, h, w], y.dtype)
        emit.commit()
        replace(t.outputs[0], r)
        return True


def _insert_after(graph: ir.Graph, anchor: ir.Node, nodes: list[ir.Node]) -> None:
    if nodes:
        graph.insert_after(anchor, nodes)
        nodes.clear()


def _remove_dead(graph: ir.Graph) -> None:
    """Drop nodes whose outputs nobody reads (the wrappers this pass orphaned)."""
    changed = True
    while changed:
        changed = False
        for node in reversed(list(graph)):
            if all(not o.uses() and not o.is_graph_output() for o in node.outputs):
                graph.remove(node, safe=True)
                changed = True
