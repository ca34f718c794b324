"""Fuse GroupNorm into fusionc::GroupNorm and LayerNorm decompositions into ONNX LayerNormalization.

torch.onnx.export (dynamo, opset 18) lowers nn.GroupNorm (UNet resnets and transformer proj_in, VAE
resnets and the VAE mid-block attention, which normalizes a [B,C,HW] tensor) as

    x [N,C,...] -> Reshape [0,G,-1] -> InstanceNormalization(ones[G], zeros[G], eps)
                -> Reshape back to x's shape (constant, or Shape(x) with a dynamic batch)
                -> Mul(gamma [C,1,..]) -> Add(beta [C,1,..])

(also with affine=False: gamma/beta are then constant ones/zeros). The rule proves each piece
(G divides C, the second Reshape restores x's shape, per-channel gamma/beta) and calls
fusionc::GroupNorm(x, gamma[C], beta[C]) with num_groups and epsilon.

nn.LayerNorm is already exported as ONNX LayerNormalization; hand-written decompositions
(ReduceMean/Sub/Pow/Sqrt/Div/Mul/Add) are fused by onnxscript's own layer-norm rules, wrapped here.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern
from onnxscript.rewriter.rules.fusion import _layer_norm

from fusionc.passes import fused_ops
from fusionc.passes._match import apply_rules, const_array, dim_tokens, reshape_target_is
from fusionc.passes.cleanup import RemoveDeadCodePass


class FuseGroupNorm(pattern.RewriteRuleClassBase):
    def pattern(self, op, x, grouped_shape, ones, zeros, restore_shape, gamma, beta):
        grouped = op.Reshape(x, grouped_shape, _outputs=["grouped"])
        normalized = op.InstanceNormalization(grouped, ones, zeros, _outputs=["normalized"])
        restored = op.Reshape(normalized, restore_shape, _outputs=["restored"])
        return op.Add(op.Mul(restored, gamma), beta)

    def check(self, context, x: ir.Value, grouped: ir.Value, ones: ir.Value, zeros: ir.Value,
              restored: ir.Value, gamma: ir.Value, beta: ir.Value, **_) -> pattern.MatchResult:
        result = pattern.MatchResult()
        dims = dim_tokens(x)
        if dims is None or len(dims) < 3 or not isinstance(dims[1], int):
            return result.fail("x needs a known rank >= 3 and a static channel axis", x)
        groups = _groups(ones, zeros)
        if groups is None or dims[1] % groups:
            return result.fail("InstanceNormalization scale/bias are not ones/zeros of G | C", ones)
        if not reshape_target_is(grouped.producer(), [dims[0], groups, None]):
            return result.fail("first Reshape is not [N, G, -1]", grouped)
        if not reshape_target_is(restored.producer(), dims):
            return result.fail("second Reshape does not restore x's shape", restored)
        if _per_channel(gamma, dims[1], len(dims)) is None or _per_channel(beta, dims[1], len(dims)) is None:
            return result.fail("gamma/beta are not per-channel constants", gamma)
        return result

    def rewrite(self, op, x: ir.Value, ones: ir.Value, zeros: ir.Value, normalized: ir.Value,
                gamma: ir.Value, beta: ir.Value, **_):
        channels, rank = x.shape[1], len(x.shape)
        epsilon = normalized.producer().attributes.get("epsilon")
        return getattr(op, fused_ops.GROUP_NORM)(
            x,
            _channel_vector(op, gamma, channels, rank),
            _channel_vector(op, beta, channels, rank),
            num_groups=_groups(ones, zeros),
            epsilon=1e-5 if epsilon is None else epsilon.as_float(),
            _domain=fused_ops.DOMAIN,
        )


def _groups(ones: ir.Value, zeros: ir.Value) -> int | None:
    scale, bias = const_array(ones), const_array(zeros)
    if scale is None or bias is None or scale.ndim != 1 or scale.shape != bias.shape:
        return None
    if not (np.all(scale == 1) and np.all(bias == 0)):
        return None
    return int(scale.shape[0])


def _per_channel(value: ir.Value, channels: int, rank: int) -> np.ndarray | None:
    """The [C] vector of a constant broadcast along the channel axis of a rank-`rank` tensor."""
    array = const_array(value)
    if array is None or array.ndim > rank:
        return None
    shape = (1,) * (rank - array.ndim) + array.shape
    if shape[0] != 1 or any(d != 1 for d in shape[2:]) or shape[1] not in (1, channels):
        return None
    return np.broadcast_to(array.reshape(-1), (channels,))


def _channel_vector(op, value: ir.Value, channels: int, rank: int) -> ir.Value:
    """`value` itself if already [C], else a new (or already created) [C] initializer."""
    if value.shape is not None and list(value.shape) == [channels]:
        return value
    name = f"{value.name}_c{channels}"
    graph = value.graph
    if graph is not None and name in graph.initializers:
        return graph.initializers[name]
    vector = np.ascontiguousarray(_per_channel(value, channels, rank))
    return op.initializer(ir.tensor(vector, name=name), name=name)


_GROUP_NORM_RULES = pattern.RewriteRuleSet([FuseGroupNorm.rule()], commute=True)  # Mul/Add operand order


class FuseGroupNormPass(ir.passes.InPlacePass):
    """Replace the exporter's GroupNorm decomposition by fusionc::GroupNorm.

        x -- Reshape[0,G,-1] -- InstanceNormalization -- Reshape(Shape(x)) -- Mul(gamma) -- Add(beta)
        becomes
        x -- fusionc::GroupNorm(x, gamma[C], beta[C]) <num_groups = G, epsilon>
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = apply_rules(model, _GROUP_NORM_RULES)
        if count:
            RemoveDeadCodePass()(model)
        return ir.passes.PassResult(model, bool(count))


_LAYER_NORM_RULES = pattern.RewriteRuleSet(_layer_norm.layer_normalization_rules)


class FuseLayerNormPass(ir.passes.InPlacePass):
    """Fuse LayerNorm decompositions into ONNX LayerNormalization (onnxscript's rules).

        d = x - ReduceMean(x); v = ReduceMean(d*d); y = d / Sqrt(v + eps) * scale + bias
        becomes
        y = LayerNormalization(x, scale, bias) <axis = -1, epsilon = eps>
    (torch.onnx.export already emits LayerNormalization for nn.LayerNorm: this is then a no-op.)
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = apply_rules(model, _LAYER_NORM_RULES)
        if count:
            RemoveDeadCodePass()(model)
        return ir.passes.PassResult(model, bool(count))
