"""ConvertLinearToConvPass and NormalizeLayerNormOverChannelsPass: the transformer block in (B, C, 1, S).

Apple's ANE guidance (apple/ml-ane-transformers) keeps activations as (B, C, 1, S): the last axis is the
long one, channels sit on axis 1, and a linear layer is a 1x1 convolution. These two passes rewrite each
op locally inside layout wrappers (passes/ane/graph.py); PropagateChannelsFirstPass then removes the
wrappers between neighbouring ops.

ConvertLinearToConvPass (W constant, a following Add of a constant [Cout] bias is folded in):

    before                           after
    y = MatMul(x[B,S,Cin], W)        y = from_bc1s(Conv(to_bc1s(x), W^T[Cout,Cin,1,1], bias))
    z = Add(y, bias[Cout])
    g = Gemm(x[B,Cin], W, b)         g = Squeeze(Conv(Unsqueeze(x, [2,3]), W'[Cout,Cin,1,1], b), [2,3])

NormalizeLayerNormOverChannelsPass:

    before                                   after (x4 = to_bc1s(x))
    y = LayerNormalization<axis=-1>(x,g,b)   m = ReduceMean(x4, [1]); d = x4 - m
        x [B,S,C]                            n = d / Sqrt(ReduceMean(d*d, [1]) + eps)
                                             y = from_bc1s(n * g[C,1,1] + b[C,1,1])

Weights are transposed lazily (an onnx_ir LazyTensor), so an SD-scale UNet does not hold two copies.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from fusionc.passes.ane.graph import Emitter, fresh, replace, static_shape


def _lazy_weight(graph: ir.Graph, source: ir.Value, transpose: bool, shape: list[int]) -> ir.Value:
    """A new initializer = source weight (optionally transposed) reshaped to `shape`, computed on access."""
    tensor = source.const_value
    dtype = tensor.dtype

    def build() -> ir.TensorProtocol:
        arr = tensor.numpy()
        arr = arr.T if transpose else arr
        return ir.tensor(np.ascontiguousarray(arr).reshape(shape), dtype=dtype)

    name = fresh((source.name or "w") + "_conv")
    lazy = ir.LazyTensor(build, dtype=dtype, shape=ir.Shape(shape), name=name)
    value = ir.Value(name=name, shape=ir.Shape(shape), type=ir.TensorType(dtype), const_value=lazy)
    graph.register_initializer(value)
    return value


def _const(value: ir.Value | None) -> ir.TensorProtocol | None:
    return None if value is None else value.const_value


def _bias_add(node_output: ir.Value, cout: int) -> tuple[ir.Node, ir.Value] | None:
    """The single Add(node_output, const bias [Cout]) consumer, if that is the output's only use."""
    uses = list(node_output.uses())
    if len(uses) != 1 or node_output.is_graph_output():
        return None
    add = uses[0].node
    if add.op_type != "Add" or add.domain not in ("", "ai.onnx"):
        return None
    other = add.inputs[1 - uses[0].idx]
    tensor = _const(other)
    if tensor is None or tuple(tensor.shape) not in ((cout,), (1, cout), (1, 1, cout)):
        return None
    return add, other


class ConvertLinearToConvPass(ir.passes.InPlacePass):
    """MatMul/Gemm with a constant 2-D weight -> 1x1 Conv in (B,C,1,S) (rank-3 x) or (B,C,1,1) (rank-2 x)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        cache: dict[tuple[int, bool], ir.Value] = {}
        for node in list(graph):
            if node.domain not in ("", "ai.onnx") or node.op_type not in ("MatMul", "Gemm"):
                continue
            x = node.inputs[0]
            w = node.inputs[1]
            w_t = _const(w)
            x_shape = static_shape(x)
            if w_t is None or len(w_t.shape) != 2 or x_shape is None or len(x_shape) not in (2, 3):
                continue
            bias, absorbed = None, None
            if node.op_type == "Gemm":
                attrs = {k: a.value for k, a in node.attributes.items()}
                if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or len(x_shape) != 2:
                    continue
                trans_b = bool(attrs.get("transB", 0))
                c = node.inputs[2] if len(node.inputs) > 2 else None
                if c is not None and (_const(c) is None or len(c.shape or ()) > 1 or attrs.get("beta", 1.0) != 1.0):
                    continue
                bias = c
            else:
                trans_b = False
            cin, cout = (w_t.shape[1], w_t.shape[0]) if trans_b else (w_t.shape[0], w_t.shape[1])
            if x_shape[-1] != cin:
                continue
            out = node.outputs[0]
            if bias is None:
                found = _bias_add(out, cout)
                if found is not None:
                    absorbed, bias_value = found
                    bias = bias_value
            key = (id(w), trans_b)
            if key not in cache:
                cache[key] = _lazy_weight(graph, w, transpose=not trans_b, shape=[cout, cin, 1, 1])
            weight = cache[key]
            if bias is not None and tuple(bias.shape or ()) != (cout,):
                bias = _reshaped_bias(graph, bias, cout)
            emit = Emitter(graph, node)
            dtype = x.dtype
            if len(x_shape) == 3:
                b, s, _ = x_shape
                y4 = emit.op("Conv", [emit.to_bc1s(x), weight] + ([bias] if bias is not None else []),
                             {"kernel_shape": [1, 1]}, [b, cout, 1, s], dtype)
                y = emit.from_bc1s(y4)
            else:
                b = x_shape[0]
                x4 = emit.op("Unsqueeze", [x, emit.ints([2, 3])], None, [b, cin, 1, 1], dtype)
                y4 = emit.op("Conv", [x4, weight] + ([bias] if bias is not None else []), {"kernel_shape": [1, 1]},
                             [b, cout, 1, 1], dtype)
                y = emit.op("Squeeze", [y4, emit.ints([2, 3])], None, [b, cout], dtype)
            emit.commit()
            final = absorbed.outputs[0] if absorbed is not None else out
            replace(final, y)
            if absorbed is not None:
                graph.remove(absorbed, safe=True)
            graph.remove(node, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified=modified)


def _reshaped_bias(graph: ir.Graph, bias: ir.Value, cout: int) -> ir.Value:
    arr = bias.const_value.numpy().reshape(cout)
    name = fresh((bias.name or "b") + "_conv")
    value = ir.Value(name=name, shape=ir.Shape([cout]), type=ir.TensorType(bias.dtype),
                     const_value=ir.tensor(arr, name=name))
    graph.register_initializer(value)
    return value


class NormalizeLayerNormOverChannelsPass(ir.passes.InPlacePass):
    """LayerNormalization over the last axis of [B,S,C] -> reductions over axis 1 of (B,C,1,S)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if node.domain not in ("", "ai.onnx") or node.op_type != "LayerNormalization":
                continue
            x = node.inputs[0]
            shape = static_shape(x)
            axis = node.attributes["axis"].as_int() if "axis" in node.attributes else -1
            if shape is None or len(shape) != 3 or axis not in (-1, 2):
                continue
            if any(o is not None and o.uses() for o in node.outputs[1:]):
                continue
            eps = node.attributes["epsilon"].as_float() if "epsilon" in node.attributes else 1e-5
            b, s, c = shape
            dtype = x.dtype
            emit = Emitter(graph, node)
            x4 = emit.to_bc1s(x)
            full, stats = [b, c, 1, s], [b, 1, 1, s]
            mean = emit.op("ReduceMean", [x4, emit.ints([1])], {"keepdims": 1}, stats, dtype)
            centered = emit.op("Sub", [x4, mean], None, full, dtype)
            var = emit.op("ReduceMean", [emit.op("Mul", [centered, centered], None, full, dtype), emit.ints([1])],
                          {"keepdims": 1}, stats, dtype)
            eps_v = emit.const(np.array(eps, dtype=dtype.numpy()), "ln_eps")
            std = emit.op("Sqrt", [emit.op("Add", [var, eps_v], None, stats, dtype)], None, stats, dtype)
            y4 = emit.op("Div", [centered, std], None, full, dtype)
            for index, op_type in ((1, "Mul"), (2, "Add")):
                param = node.inputs[index] if len(node.inputs) > index else None
                if param is None:
                    continue
                if param.const_value is not None:
                    arr = np.broadcast_to(param.const_value.numpy().reshape(-1), (c,)).reshape(c, 1, 1)
                    p4 = emit.const(arr.astype(dtype.numpy()), "ln_affine")
                else:
                    p4 = emit.op("Reshape", [param, emit.ints([c, 1, 1])], None, [c, 1, 1], dtype)
                y4 = emit.op(op_type, [y4, p4], None, full, dtype)
            y = emit.from_bc1s(y4)
            emit.commit()
            replace(node.outputs[0], y)
            graph.remove(node, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified=modified)
