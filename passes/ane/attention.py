"""SplitEinsumAttentionPass: fusionc::ScaledDotProductAttention in Apple's split-einsum form for the ANE.

Apple's Neural Engine transformer recipe (ml-stable-diffusion, SPLIT_EINSUM and SPLIT_EINSUM_V2) keeps
q, k, v in (B, C, 1, S) and computes one small attention per head, so no tensor exceeds rank 4 and the
softmax runs over axis 1 (the keys). v2 additionally splits the queries into chunks of 512, which keeps the
[B, Sk, 1, chunk] score tensors small at 64x64 latents (S = 4096).

    before                                      after (per head h; k^T = Transpose(k4, [0,3,2,1]) once)
    q = Transpose(Reshape(xq, [B,S,H,D]))       q4 = to_bc1s(xq) * scale;  k4, v4 likewise (no scale)
    o = fusionc::SDPA<scale>(q, k, v)           w_h = Softmax<axis=1>(Einsum("bchq,bkhc->bkhq",
    y = Reshape(Transpose(o), [B,S,C])                  Slice(q4, h*D..), Slice(k^T, h*D..)) [+ mask])
                                                o_h = Einsum("bkhq,bchk->bchq", w_h, Slice(v4, h*D..))
                                                y = from_bc1s(Concat(o_1..o_H, axis=1))

q/k/v that are not the usual head-split of a [B,S,C] tensor are converted from [B,H,S,D] with one
Transpose + Reshape; an output not followed by the head merge gets the inverse. The wrappers cancel
against the 1x1-conv projections in PropagateChannelsFirstPass. Softmax count = sum of heads (x chunks).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from fusionc.passes.ane.graph import Emitter, replace, static_shape



def _head_split_source(value: ir.Value) -> ir.Value | None:
    """xq [B,S,C] if value = Transpose(Reshape(xq, [B,S,H,D]), [0,2,1,3]), else None."""
    t = value.producer()
    if t is None or t.op_type != "Transpose" or list(t.attributes["perm"].value) != [0, 2, 1, 3]:
        return None
    r = t.inputs[0].producer()
    if r is None or r.op_type != "Reshape":
        return None
    src = r.inputs[0]
    shape, out = static_shape(src), static_shape(r.outputs[0])
    if shape is None or out is None or len(shape) != 3 or len(out) != 4:
        return None
    if shape[:2] != out[:2] or shape[2] != out[2] * out[3]:
        return None
    return src


def _head_merge_target(value: ir.Value) -> ir.Value | None:
    """y [B,S,C] if the only use of value is Reshape(Transpose(value, [0,2,1,3]), [B,S,C]), else None."""
    uses = list(value.uses())
    if len(uses) != 1 or value.is_graph_output():
        return None
    t = uses[0].node
    if t.op_type != "Transpose" or list(t.attributes["perm"].value) != [0, 2, 1, 3]:
        return None
    t_uses = list(t.outputs[0].uses())
    if len(t_uses) != 1 or t_uses[0].node.op_type != "Reshape":
        return None
    y = t_uses[0].node.outputs[0]
    shape = static_shape(y)
    if shape is None or len(shape) != 3:
        return None
    return y


class SplitEinsumAttentionPass(ir.passes.InPlacePass):
    """fusionc::ScaledDotProductAttention -> per-head einsum attention on (B,C,1,S); v2: query_chunk=512."""

    def __init__(self, query_chunk: int | None = None) -> None:
        super().__init__()
        self.query_chunk = query_chunk
        self.heads_split = 0  # heads rewritten in the last run (tests compare it with the Softmax count)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        self.heads_split = 0
        modified = False
        for node in list(graph):
            if node.domain != "fusionc" or node.op_type != "ScaledDotProductAttention":
                continue
            if self._rewrite(graph, node):
                modified = True
        return ir.passes.PassResult(model, modified=modified)

    def _to_bc1s(self, emit: Emitter, value: ir.Value) -> ir.Value | None:
        """[B,H,S,D] attention operand as (B, H*D, 1, S)."""
        src = _head_split_source(value)
        if src is not None:
            return emit.to_bc1s(src)
        shape = static_shape(value)
        if shape is None or len(shape) != 4:
            return None
        b, h, s, d = shape
        t = emit.op("Transpose", [value], {"perm": [0, 1, 3, 2]}, [b, h, d, s], value.dtype)
        return emit.op("Reshape", [t, emit.ints([b, h * d, 1, s])], None, [b, h * d, 1, s], value.dtype)

    def _rewrite(self, graph: ir.Graph, node: ir.Node) -> bool:
        q, k, v = node.inputs[:3]
        mask = node.inputs[3] if len(node.inputs) > 3 else None
        qs, ks, vs = static_shape(q), static_shape(k), static_shape(v)
        if qs is None or ks is None or vs is None or len(qs) != 4 or qs[3] != ks[3] or vs[3] != qs[3]:
            return False
        b, heads, sq, d = qs
        sk = ks[2]
        scale = node.attributes["scale"].as_float() if "scale" in node.attributes else 1.0 / np.sqrt(d)
        dtype = q.dtype
        emit = Emitter(graph, node)
        mask4 = None
        if mask is not None:
            mask4 = self._mask(emit, mask, sq, sk)
            if mask4 is None:
                return False
        q4, k4, v4 = self._to_bc1s(emit, q), self._to_bc1s(emit, k), self._to_bc1s(emit, v)
        if q4 is None or k4 is None or v4 is None:
            return False
        c = heads * d
        q4 = emit.op("Mul", [q4, emit.const(np.array(scale, dtype=dtype.numpy()), "attn_scale")], None, [b, c, 1, sq], dtype)
        kt = emit.op("Transpose", [k4], {"perm": [0, 3, 2, 1]}, [b, sk, 1, c], dtype)
        chunk = self.query_chunk if self.query_chunk and sq > self.query_chunk else sq
        outs = []
        for h in range(heads):
            lo, hi = h * d, (h + 1) * d
            k_h = emit.op("Slice", [kt, emit.ints([lo]), emit.ints([hi]), emit.ints([3])], None, [b, sk, 1, d], dtype)
            v_h = emit.op("Slice", [v4, emit.ints([lo]), emit.ints([hi]), emit.ints([1])], None, [b, d, 1, sk], dtype)
            pieces = []
            for start in range(0, sq, chunk):
                stop = min(sq, start + chunk)
                q_h = emit.op("Slice", [q4, emit.ints([lo, start]), emit.ints([hi, stop]), emit.ints([1, 3])], None,
                              [b, d, 1, stop - start], dtype)
                w = emit.op("Einsum", [q_h, k_h], {"equation": "bchq,bkhc->bkhq"}, [b, sk, 1, stop - start], dtype)
                if mask4 is not None:
                    m = mask4 if (start, stop) == (0, sq) else emit.op(
                        "Slice", [mask4, emit.ints([start]), emit.ints([stop]), emit.ints([3])], None, None, dtype)
                    w = emit.op("Add", [w, m], None, [b, sk, 1, stop - start], dtype)
                w = emit.op("Softmax", [w], {"axis": 1}, [b, sk, 1, stop - start], dtype)
                pieces.append(emit.op("Einsum", [w, v_h], {"equation": "bkhq,bchk->bchq"}, [b, d, 1, stop - start], dtype))
            outs.append(pieces[0] if len(pieces) == 1 else emit.op("Concat", pieces, {"axis": 3}, [b, d, 1, sq], dtype))
        out4 = outs[0] if heads == 1 else emit.op("Concat", outs, {"axis": 1}, [b, c, 1, sq], dtype)
        merged = _head_merge_target(node.outputs[0])
        if merged is not None:
            replace(merged, emit.from_bc1s(out4))
        else:
            r = emit.op("Reshape", [out4, emit.ints([b, heads, d, sq])], None, [b, heads, d, sq], dtype)
            replace(node.outputs[0], emit.op("Transpose", [r], {"perm": [0, 1, 3, 2]}, [b, heads, sq, d], dtype))
        emit.commit()
        if merged is None:
            graph.remove(node, safe=True)
        self.heads_split += heads
        return True

    def _mask(self, emit: Emitter, mask: ir.Value, sq: int, sk: int) -> ir.Value | None:
        """An additive mask broadcastable to [B,H,Sq,Sk] (H broadcast) as [B|1, Sk, 1, Sq]."""
        shape = static_shape(mask)
        if shape is None or len(shape) > 4:
            return None
        shape = [1] * (4 - len(shape)) + shape
        if shape[1] != 1:
            return None
        if mask.const_value is not None:
            arr = mask.const_value.numpy().reshape(shape)
            arr = np.broadcast_to(arr, (shape[0], 1, sq, sk)).transpose(0, 3, 1, 2)
            return emit.const(np.ascontiguousarray(arr), "attn_mask")
        m = emit.op("Reshape", [mask, emit.ints(shape)], None, shape, mask.dtype) if len(static_shape(mask)) != 4 else mask
        m = emit.op("Expand", [m, emit.ints([shape[0], 1, sq, sk])], None, [shape[0], 1, sq, sk], mask.dtype)
        return emit.op("Transpose", [m], {"perm": [0, 3, 1, 2]}, [shape[0], sk, 1, sq], mask.dtype)
