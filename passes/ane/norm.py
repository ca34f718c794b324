"""DecomposeGroupNormPass: fusionc::GroupNorm as rank-4 reductions, the GroupNorm form the Neural Engine runs.

The exporter's GroupNorm goes through a rank-3 InstanceNormalization over [B, G, C/G*H*W], and torch's
Core ML frontend through a rank-5 reshape; neither maps well onto the ANE, which wants rank <= 4 and
reductions over trailing axes. We keep every tensor rank 4:

    before                                   after
    y = fusionc::GroupNorm<G, eps>(x, g, b)  r = Reshape(x, [B, G, C/G, H*W])
        x [B,C,H,W]                          m = ReduceMean(r, axes=[2,3]);  d = r - m
                                             v = ReduceMean(d*d, axes=[2,3])
                                             n = d / Sqrt(v + eps)
                                             y = Reshape(n, [B,C,H,W]) * g[C,1,1] + b[C,1,1]

Needs static shapes (the Core ML pipeline fixes the batch first). Near misses (unknown rank or a channel
count the groups do not divide) are left alone.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from fusionc.passes.ane.graph import Emitter, replace, static_shape


def _affine_shape(value: ir.Value, rank: int, emit: Emitter) -> ir.Value:
    """gamma/beta [C] as [C, 1, ...] (broadcast against [B, C, *spatial])."""
    tail = [1] * (rank - 2)
    if value.const_value is not None:
        arr = value.const_value.numpy()
        return emit.const(arr.reshape([-1] + tail), "gn_affine")
    return emit.op("Reshape", [value, emit.ints([-1] + tail)], None, None, value.dtype)


class DecomposeGroupNormPass(ir.passes.InPlacePass):
    """fusionc::GroupNorm -> Reshape / ReduceMean / Sub / Mul / Sqrt / Div / Reshape / Mul / Add, all rank <= 4."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if node.domain != "fusionc" or node.op_type != "GroupNorm":
                continue
            x = node.inputs[0]
            shape = static_shape(x)
            groups = node.attributes["num_groups"].as_int()
            if shape is None or len(shape) < 3 or shape[1] % groups:
                continue
            eps = node.attributes["epsilon"].as_float() if "epsilon" in node.attributes else 1e-5
            b, c = shape[0], shape[1]
            spatial = int(np.prod(shape[2:]))
            grouped = [b, groups, c // groups, spatial]
            dtype = x.dtype
            emit = Emitter(graph, node)
            r = emit.op("Reshape", [x, emit.ints(grouped)], None, grouped, dtype)
            stats = [b, groups, 1, 1]
            mean = emit.op("ReduceMean", [r, emit.ints([2, 3])], {"keepdims": 1}, stats, dtype)
            centered = emit.op("Sub", [r, mean], None, grouped, dtype)
            square = emit.op("Mul", [centered, centered], None, grouped, dtype)
            var = emit.op("ReduceMean", [square, emit.ints([2, 3])], {"keepdims": 1}, stats, dtype)
            eps_value = emit.const(np.array(eps, dtype=dtype.numpy()), "gn_eps")
            std = emit.op("Sqrt", [emit.op("Add", [var, eps_value], None, stats, dtype)], None, stats, dtype)
            normed = emit.op("Div", [centered, std], None, grouped, dtype)
            y = emit.op("Reshape", [normed, emit.ints(shape)], None, shape, dtype)
            if len(node.inputs) > 1 and node.inputs[1] is not None:
                y = emit.op("Mul", [y, _affine_shape(node.inputs[1], len(shape), emit)], None, shape, dtype)
            if len(node.inputs) > 2 and node.inputs[2] is not None:
                y = emit.op("Add", [y, _affine_shape(node.inputs[2], len(shape), emit)], None, shape, dtype)
            emit.commit()
            replace(node.outputs[0], y)
            graph.remove(node, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified=modified)
