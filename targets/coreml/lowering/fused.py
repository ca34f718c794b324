"""Lowerings of fusionc's fused local functions (domain "fusionc"), produced by the fusion passes.

A fused unit lowers to the MIL form Core ML runs best, instead of its ONNX function body:
- ScaledDotProductAttention(q, k, v[, mask]) on [B, H, S, D]: MIL `scaled_dot_product_attention` from iOS18
  (when the scale is the default one), else matmul -> softmax -> matmul (the `original` attention);
- GroupNorm(x, gamma, beta): rank-4 reductions (nn.group_norm_ane), the form the ANE runs;
- Gelu: MIL `gelu` (EXACT or TANH_APPROXIMATION); GeGLU(x): split in half along the last axis, a * gelu(b).
A fusionc function without an entry here is inlined and its body lowered op by op.
"""

from __future__ import annotations

import math

import coremltools as ct
import numpy as np
import onnx_ir as ir
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import Var

from fusionc.targets.coreml.lowering.table import LoweringContext, register
from fusionc.targets.coreml.lowering.nn import group_norm_ane

DOMAIN = "fusionc"


@register("ScaledDotProductAttention", domain=DOMAIN)
def sdpa(ctx: LoweringContext, node: ir.Node) -> Var:
    q, k, v = (ctx.var(x) for x in node.inputs[:3])
    mask_value = ctx.input(node, 3)
    mask = ctx.var(mask_value) if mask_value is not None else None
    d = q.shape[-1]
    scale = float(ctx.attr(node, "scale", 1.0 / math.sqrt(d)))
    if ctx.opset >= ct.target.iOS18 and q.rank >= 3 and math.isclose(scale, 1.0 / math.sqrt(d), rel_tol=1e-6):
        kwargs = {"attn_mask": mask} if mask is not None else {}
        return mb.scaled_dot_product_attention(query=q, key=k, value=v, **kwargs)
    q = mb.mul(x=q, y=ctx.var(np.array(scale), like=q))
    scores = mb.matmul(x=q, y=k, transpose_y=True)
    if mask is not None:
        scores = mb.add(x=scores, y=mask) if mask.dtype != ct.converters.mil.mil.types.bool else mb.select(
            cond=mask, a=scores, b=ctx.var(np.array(-1e4), like=scores))
    return mb.matmul(x=mb.softmax(x=scores, axis=-1), y=v)


@register("GroupNorm", domain=DOMAIN)
def group_norm(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    gamma = ctx.const(ctx.input(node, 1))
    beta = ctx.const(ctx.input(node, 2))
    if gamma is None and ctx.input(node, 1) is not None:
        gamma = ctx.var(node.inputs[1])
    if beta is None and ctx.input(node, 2) is not None:
        beta = ctx.var(node.inputs[2])
    return group_norm_ane(ctx, x, int(ctx.attr(node, "num_groups")), gamma, beta,
                          float(ctx.attr(node, "epsilon", 1e-5)))


@register("Gelu", domain=DOMAIN)
def gelu(ctx: LoweringContext, node: ir.Node) -> Var:
    mode = "TANH_APPROXIMATION" if ctx.attr(node, "approximate", "none") == "tanh" else "EXACT"
    return mb.gelu(x=ctx.var(node.inputs[0]), mode=mode)


@register("GeGLU", domain=DOMAIN)
def geglu(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    axis = int(ctx.attr(node, "axis", -1))
    axis = axis + x.rank if axis < 0 else axis
    half = x.shape[axis] // 2
    a, b = mb.split(x=x, split_sizes=np.array([half, half], dtype=np.int32), axis=axis)
    mode = "TANH_APPROXIMATION" if ctx.attr(node, "approximate", "none") == "tanh" else "EXACT"
    return mb.mul(x=a, y=mb.gelu(x=b, mode=mode))
