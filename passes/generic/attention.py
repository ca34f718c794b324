"""Fuse scaled-dot-product attention into one fusionc::ScaledDotProductAttention call.

torch.onnx.export (dynamo, opset 18) decomposes F.scaled_dot_product_attention as

    q [B,H,S,D] --Mul(sqrt s)--------------------------.
    k [B,H,Skv,D] --(k^T, see below)--Mul(sqrt s)-- MatMul --[Add mask]-- Softmax --[IsNaN/Where]-- MatMul -- out
    v [B,H,Skv,Dv] ---------------------------------------------------------------------------------'

where k^T is Transpose(k, [0,1,3,2]) once cleanup's CollapseBatchedTranspose has simplified the
exporter's Reshape/Transpose/Reshape (the rule is also applied here so the pass stands alone). The
scale may also sit on q only, on the scores (Mul or Div), or be absent; the rule accepts each form
and stores the product as the `scale` attribute. A key produced as Transpose(x, [0,2,3,1]) from a
[B,S,H,D] tensor is accepted too (a Transpose to [B,H,S,D] is inserted). UNet self/cross attention
and the VAE mid-block attention are unmasked; CLIP's causal mask makes the "masked" overload, and so do
T5's relative position bias + padding mask (GroupScoreBiases adds the two first) and PixArt's caption mask.
SD3's joint (MMDiT) attention is one SDPA over the concatenated image and text tokens and fuses as is.

onnxscript's ort_fusions.sdpa has a similar pattern but emits an onnxruntime-internal op and keeps
state on `self`; this rule emits the fusionc function and keeps state in the match bindings.
"""

from __future__ import annotations

import math

import onnx_ir as ir
from onnxscript.rewriter import pattern

from fusionc.passes.generic import fused_ops, simplify_rules
from fusionc.passes.generic._match import apply_rules, dim_tokens, root_filtered, scalar
from fusionc.passes.generic.cleanup import RemoveDeadCodePass

_SCALINGS = ("query_scaling", "key_scaling", "score_scaling")


class FuseScaledDotProductAttention(pattern.RewriteRuleClassBase):
    def pattern(self, op, query, key, value, mask, query_scale, key_scale, score_scale):
        key_t = pattern.OrValue(
            [op.Transpose(key, perm=[0, 1, 3, 2]), op.Transpose(key, perm=[0, 2, 3, 1])],
            tag_var="key_layout",
            tag_values=["BHSD", "BSHD"],
        )
        query = _scaled(op, query, query_scale, "query_scaling")
        key_t = _scaled(op, key_t, key_scale, "key_scaling")
        scores = _scaled(op, op.MatMul(query, key_t), score_scale, "score_scaling")
        scores = pattern.OrValue([op.Add(scores, mask), scores], tag_var="masked", tag_values=[True, False])
        weights = pattern.OrValue(
            [op.Softmax(scores, axis=-1), op.Softmax(scores, axis=3)], tag_var="softmax", tag_values=[-1, 3]
        )
        guarded = op.Where(op.IsNaN(weights), 0.0, weights)
        weights = pattern.OrValue([guarded, weights], tag_var="guarded", tag_values=[True, False])
        return op.MatMul(weights, value)

    def check(self, context, query: ir.Value, key: ir.Value, value: ir.Value, masked: bool, guarded: bool,
              key_layout: str, **bindings) -> pattern.MatchResult:
        result = pattern.MatchResult()
        if guarded and not masked:
            return result.fail("NaN guard without a mask: not torch's SDPA decomposition")
        q, k, v = dim_tokens(query), dim_tokens(key), dim_tokens(value)
        if q is None or k is None or v is None or not len(q) == len(k) == len(v) == 4:
            return result.fail("query, key and value must have known rank 4", query)
        if key_layout == "BSHD":
            k = [k[0], k[2], k[1], k[3]]
        if q[3] != k[3] or k[2] != v[2]:
            return result.fail("head dims of query/key or sequence dims of key/value differ", key)
        if _scale(bindings) is None:
            return result.fail("a scale is not a scalar constant")
        return result

    def rewrite(self, op, query: ir.Value, key: ir.Value, value: ir.Value, mask: ir.Value | None, masked: bool,
                key_layout: str, **bindings):
        if key_layout == "BSHD":
            key = op.Transpose(key, perm=[0, 2, 1, 3])
        inputs = [query, key, value] + ([mask] if masked else [])
        output = getattr(op, fused_ops.SDPA)(*inputs, scale=float(_scale(bindings)), _domain=fused_ops.DOMAIN)
        output.producer().overload = fused_ops.MASKED if masked else ""
        return output


class GroupScoreBiases(pattern.RewriteRuleClassBase):
    """(q @ k^T + bias) + mask -> q @ k^T + (bias + mask): T5 adds its relative position bias and then its padding
    mask to the scores; grouped, the two are one additive mask and the attention fuses (as "masked")."""

    def pattern(self, op, query, key_t, bias, mask):
        return op.Add(op.Add(op.MatMul(query, key_t), bias), mask)

    def check(self, context, query: ir.Value, key_t: ir.Value, bias: ir.Value, mask: ir.Value, **_) -> pattern.MatchResult:
        result = pattern.MatchResult()
        producer = key_t.producer()
        if producer is None or producer.op_type != "Transpose":
            return result.fail("the key is not transposed: not attention scores", key_t)
        scores = query.uses()[0].node.outputs[0] if query.uses() else None
        if scores is None or len(scores.uses()) != 1 or len(scores.uses()[0].node.outputs[0].uses()) != 1:
            return result.fail("the scores or the biased scores have other uses")
        for value in (query, bias, mask):
            if value.shape is None or len(value.shape) != 4:
                return result.fail("scores, bias and mask must have rank 4", value)
        return result

    def rewrite(self, op, query: ir.Value, key_t: ir.Value, bias: ir.Value, mask: ir.Value, **_):
        return op.Add(op.MatMul(query, key_t), op.Add(bias, mask))


def _scaled(op, x, scale, tag: str):
    return pattern.OrValue([op.Mul(x, scale), op.Div(x, scale), x], tag_var=tag, tag_values=["Mul", "Div", "None"])


def _scale(bindings: dict) -> float | None:
    """The product of every scaling in the match (None if one of them is not a scalar constant)."""
    total = 1.0
    for tag, name in zip(_SCALINGS, ("query_scale", "key_scale", "score_scale")):
        kind = bindings.get(tag, "None")
        if kind == "None":
            continue
        factor = scalar(bindings.get(name))
        if factor is None or factor == 0 or not math.isfinite(factor):
            return None
        total *= factor if kind == "Mul" else 1.0 / factor
    return total if total > 0 else None  # sqrt(scale) in the body needs scale > 0


_RULES = root_filtered(
    pattern.RewriteRuleSet([simplify_rules.CollapseBatchedTranspose.rule(), GroupScoreBiases.rule(),
                            FuseScaledDotProductAttention.rule()])
)


class FuseAttentionPass(ir.passes.InPlacePass):
    """Replace each scaled-dot-product attention subgraph by fusionc::ScaledDotProductAttention.

        q --Mul--.                                              q --.
        k --Transpose(0,1,3,2)--Mul-- MatMul -- Softmax -- MatMul    k ---- fusionc::ScaledDotProductAttention
        v ------------------------------------------------'          v --'     <scale = s_q * s_k>
        (with CLIP's additive causal mask: overload "masked", 4th input = mask)
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = apply_rules(model, _RULES)
        if count:
            RemoveDeadCodePass()(model)  # the scale constants
        return ir.passes.PassResult(model, bool(count))
