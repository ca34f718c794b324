"""FuseMultiHeadAttentionPass: fusionc attention between its head split and merge -> ORT's MultiHeadAttention.

The generic FuseAttentionPass leaves attention as a fusionc::ScaledDotProductAttention local function, which
onnxruntime inlines back into MatMul/Softmax/MatMul over a materialized [B,H,S,S] score tensor (512 MB per
64x64 self-attention of SD-1.5). com.microsoft::MultiHeadAttention has a CPU kernel that takes the projections
in [B,S,H*D] directly (no head transposes) and computes the scores in tiles:

    xq ─Reshape[B,S,H,D]─Transpose(0,2,1,3)─┐
    xk ─Reshape─────────Transpose(0,2,1,3)──SDPA<scale>─Transpose(0,2,1,3)─Reshape[B,S,H*D]─ y
    xv ─Reshape─────────Transpose(0,2,1,3)─┘
                                       =>   MultiHeadAttention<num_heads=H, scale>(xq, xk, xv) ─ y

Only unmasked attention is rewritten (the text encoder's causal mask stays in the function). The op is ORT's
own: graphs with it run on onnxruntime only, which is what the onnx target ships for.
"""

from __future__ import annotations

import math

import onnx_ir as ir

from fusionc.passes.generic import fused_ops

FUSED_DOMAIN = "fusionc"
MS_DOMAIN = "com.microsoft"
HEAD_PERM = [0, 2, 1, 3]


def _perm(node: ir.Node | None) -> list[int] | None:
    if node is None or node.op_type != "Transpose" or node.domain not in ("", "ai.onnx"):
        return None
    attr = node.attributes.get("perm")
    return list(attr.as_ints()) if attr is not None else None


def _split_heads(value: ir.Value) -> tuple[ir.Value, int] | None:
    """(x [B,S,H*D], H) when `value` is Transpose(0,2,1,3)(Reshape(x, [B,S,H,D])), else None."""
    transpose = value.producer()
    if _perm(transpose) != HEAD_PERM:
        return None
    reshape = transpose.inputs[0].producer()
    if reshape is None or reshape.op_type != "Reshape":
        return None
    x, shape = reshape.inputs[0], reshape.outputs[0].shape  # [B,S,H,D]
    if x is None or x.shape is None or len(x.shape) != 3 or shape is None or len(shape) != 4:
        return None
    heads = shape[2]
    return (x, heads) if isinstance(heads, int) else None


def _merge_heads(value: ir.Value) -> ir.Node | None:
    """The Reshape to [B,S,H*D] after Transpose(0,2,1,3) that is the only use of `value`."""
    uses = list(value.uses())
    if len(uses) != 1 or _perm(uses[0].node) != HEAD_PERM:
        return None
    after = list(uses[0].node.outputs[0].uses())
    if len(after) != 1 or after[0].node.op_type != "Reshape":
        return None
    reshape = after[0].node
    shape = reshape.outputs[0].shape
    return reshape if shape is not None and len(shape) == 3 else None


class FuseMultiHeadAttentionPass(ir.passes.InPlacePass):
    """Rewrite unmasked fusionc attention with its head split/merge into MultiHeadAttention (module docstring)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        count = 0
        for node in list(graph):
            if node.domain != FUSED_DOMAIN or node.op_type != "ScaledDotProductAttention" or len(node.inputs) != 3:
                continue
            parts = [_split_heads(v) for v in node.inputs]
            merge = _merge_heads(node.outputs[0])
            if merge is None or any(p is None for p in parts) or len({p[1] for p in parts}) != 1:
                continue
            (xq, heads), (xk, _), (xv, _) = parts
            q_shape = node.inputs[0].producer().inputs[0].shape  # [B,S,H,D]
            depth = q_shape[3] if q_shape is not None else None
            attr = node.attributes.get("scale")
            scale = attr.as_float() if attr is not None else (1.0 / math.sqrt(depth) if isinstance(depth, int) else None)
            if scale is None:
                continue
            mha = ir.Node(MS_DOMAIN, "MultiHeadAttention", [xq, xk, xv], name=f"{node.name}_mha",
                          attributes=[ir.AttrInt64("num_heads", heads), ir.AttrFloat32("scale", float(scale))])
            out = merge.outputs[0]
            mha.outputs[0].shape, mha.outputs[0].dtype = out.shape, out.dtype
            graph.insert_before(merge, mha)
            is_output = any(v is out for v in graph.outputs)
            out.replace_all_uses_with(mha.outputs[0], replace_graph_outputs=True)
            if is_output:
                name = out.name
                out.name, mha.outputs[0].name = f"{name}_merged", name
            count += 1
        if count:
            model.opset_imports.setdefault(MS_DOMAIN, 1)
            ir.passes.common.RemoveUnusedNodesPass()(model)
            fused_ops.drop_unused_functions(model)
        return ir.passes.PassResult(model, count > 0)
