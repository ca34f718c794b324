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

import math

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern
from onnxscript.rewriter.rules.fusion import _layer_norm

from fusionc.passes.generic import fused_ops
from fusionc.passes.generic._match import apply_rules, const_array, dim_tokens, reshape_target_is, root_filtered, shape_value
from fusionc.passes.generic.cleanup import RemoveDeadCodePass


class FuseGroupNorm(pattern.RewriteRuleClassBase):
    def pattern(self, op, x, grouped_shape, ones, zeros, restore_shape, gamma, beta):
        grouped = op.Reshape(x, grouped_shape, _outputs=["grouped"])
        normalized = op.InstanceNormalization(grouped, ones, zeros, _outputs=["normalized"])
        restored = op.Reshape(normalized, restore_shape, _outputs=["restored"])
        return op.Add(op.Mul(restored, gamma), beta)

    def check(self, context, x: ir.Value, grouped: ir.Value, ones: ir.Value, zeros: ir.Value,
              restored: ir.Value, gamma: ir.Value, beta: ir.Value, **_) -> pattern.MatchResult:
        result = pattern.MatchResult()
        layout = _layout(x, grouped, ones, zeros, restored)
        if isinstance(layout, str):
            return result.fail(layout, restored)
        _, channels, rank = layout
        if _per_channel(gamma, channels, rank) is None or _per_channel(beta, channels, rank) is None:
            return result.fail("gamma/beta are not per-channel constants", gamma)
        return result

    def rewrite(self, op, x: ir.Value, ones: ir.Value, zeros: ir.Value, normalized: ir.Value,
                restored: ir.Value, gamma: ir.Value, beta: ir.Value, **_):
        layout = _layout(x, restored=restored, grouped=normalized.producer().inputs[0], ones=ones, zeros=zeros)
        assert not isinstance(layout, str)
        mode, channels, rank = layout
        restore = restored.producer()
        if mode == "reshape_input":
            x = op.Reshape(x, restore.inputs[1], allowzero=_allowzero(restore))
        epsilon = normalized.producer().attributes.get("epsilon")
        y = getattr(op, fused_ops.GROUP_NORM)(
            x,
            _channel_vector(op, gamma, channels, rank),
            _channel_vector(op, beta, channels, rank),
            num_groups=_groups(ones, zeros),
            epsilon=1e-5 if epsilon is None else epsilon.as_float(),
            _domain=fused_ops.DOMAIN,
        )
        if mode == "reshape_output":  # GroupNorm on x itself (rank 4 stays rank 4), then the view
            y = op.Reshape(y, restore.inputs[1], allowzero=_allowzero(restore))
        return y


def _allowzero(node: ir.Node) -> int:
    attr = node.attributes.get("allowzero")
    return 0 if attr is None else attr.as_int()


def _layout(x: ir.Value, grouped: ir.Value, ones: ir.Value, zeros: ir.Value,
            restored: ir.Value) -> tuple[str, int, int] | str:
    """(mode, channels C, rank of the normalized tensor), or why it is no GroupNorm.

    Usually the second Reshape restores x's shape (mode "same"). The exporter may also have merged a
    preceding view into the first Reshape (VAE attention: x [B,C,H,W], normalized as [B,C,HW]); then
    the second Reshape's target is the tensor GroupNorm really sees, which must keep x's batch. If it
    also keeps x's channels, GroupNorm of x followed by that view is the same computation (groups are
    contiguous channel ranges over all positions): mode "reshape_output", so the fused op keeps x's
    rank 4; otherwise x is reshaped first ("reshape_input").
    """
    dims = dim_tokens(x)
    groups = _groups(ones, zeros)
    if dims is None or len(dims) < 2:
        return "x needs a known rank"
    if groups is None:
        return "InstanceNormalization scale/bias are not ones/zeros"
    static = all(isinstance(d, int) for d in dims[1:])
    per_group = math.prod(dims[1:]) // groups if static else None  # type: ignore[arg-type]
    if not reshape_target_is(grouped.producer(), [dims[0], groups, per_group]):
        return "first Reshape is not [N, G, -1]"
    restore = restored.producer()
    if len(dims) >= 3 and isinstance(dims[1], int) and reshape_target_is(restore, dims):
        channels, rank, mode = dims[1], len(dims), "same"
    else:
        target = shape_value(restore.inputs[1])
        if target is None or len(target) < 3 or not all(isinstance(d, int) and d > 0 for d in target[1:]):
            return "second Reshape is neither x's shape nor a static [N, C, ...]"
        if not static or math.prod(target[1:]) != math.prod(dims[1:]):  # type: ignore[arg-type]
            return "second Reshape changes the batch axis"
        first = target[0]
        if not (first == -1 or first == dims[0] or (first == 0 and not _allowzero(restore))):
            return "second Reshape changes the batch axis"
        channels, rank = int(target[1]), len(target)  # type: ignore[arg-type]
        mode = "reshape_output" if len(dims) >= 3 and dims[1] == channels else "reshape_input"
    if channels % groups:
        return f"{groups} groups do not divide {channels} channels"
    return mode, channels, rank


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


_GROUP_NORM_RULES = root_filtered(pattern.RewriteRuleSet([FuseGroupNorm.rule()], commute=True))  # Mul/Add orders


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


_LAYER_NORM_RULES = root_filtered(pattern.RewriteRuleSet(_layer_norm.layer_normalization_rules))


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
