"""Lowerings of ONNX neural-network ops: Conv, MatMul/Gemm, normalizations, Softmax, Resize, pooling, reductions.

MatMul and Gemm with a constant 2-D weight become MIL `linear` (weight stored [out, in], the layout Core ML
keeps for fully connected layers); compressed weights come through `quant.weight_var`, which emits the
`constexpr_*` op in the layout its consumer needs instead of transposing at run time.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import Var

from fusionc.targets.coreml.lowering.table import LoweringContext, register
from fusionc.targets.coreml.lowering.quant import weight_var


def _conv_pad(ctx: LoweringContext, node: ir.Node, spatial: int) -> dict:
    auto_pad = ctx.attr(node, "auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return {"pad_type": "same" if auto_pad == "SAME_UPPER" else "same_lower"}
    if auto_pad == "VALID":
        return {"pad_type": "valid"}
    pads = ctx.attr(node, "pads", [0] * (2 * spatial))
    mil_pad = []
    for i in range(spatial):
        mil_pad += [int(pads[i]), int(pads[i + spatial])]
    return {"pad_type": "custom", "pad": np.array(mil_pad, dtype=np.int32)}


@register("Conv")
def conv(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    w = weight_var(ctx, node.inputs[1])
    spatial = x.rank - 2
    kwargs = _conv_pad(ctx, node, spatial)
    bias = ctx.input(node, 2)
    late_bias = None
    if bias is not None:
        if ctx.const(bias) is None and not is_compressed_weight(ctx, bias):
            late_bias = ctx.var(bias)  # a run-time bias: MIL conv wants a constant one
        else:
            kwargs["bias"] = weight_var(ctx, bias)
    y = mb.conv(
        x=x, weight=w, strides=np.array(ctx.attr(node, "strides", [1] * spatial), dtype=np.int32),
        dilations=np.array(ctx.attr(node, "dilations", [1] * spatial), dtype=np.int32),
        groups=int(ctx.attr(node, "group", 1)), **kwargs,
    )
    if late_bias is not None:
        y = mb.add(x=y, y=mb.reshape(x=late_bias, shape=np.array([1, -1] + [1] * spatial, dtype=np.int32)))
    return y


@register("ConvTranspose")
def conv_transpose(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    if ctx.const(node.inputs[1]) is None and not is_compressed_weight(ctx, node.inputs[1]):
        raise ctx.unsupported("has a run-time weight (Core ML needs a constant transposed-conv weight)")
    w = weight_var(ctx, node.inputs[1])
    spatial = x.rank - 2
    if ctx.attr(node, "output_shape") is not None or any(ctx.attr(node, "output_padding", [0]) ):
        raise ctx.unsupported("uses output_shape/output_padding")
    kwargs = _conv_pad(ctx, node, spatial)
    bias = ctx.input(node, 2)
    if bias is not None:
        kwargs["bias"] = weight_var(ctx, bias)
    return mb.conv_transpose(
        x=x, weight=w, strides=np.array(ctx.attr(node, "strides", [1] * spatial), dtype=np.int32),
        dilations=np.array(ctx.attr(node, "dilations", [1] * spatial), dtype=np.int32),
        groups=int(ctx.attr(node, "group", 1)), **kwargs,
    )


@register("MatMul")
def matmul(ctx: LoweringContext, node: ir.Node) -> Var:
    a_val, b_val = node.inputs
    x = ctx.var(a_val)
    b_const = ctx.const(b_val)
    if b_const is not None or is_compressed_weight(ctx, b_val):
        b_rank = b_const.ndim if b_const is not None else len(b_val.shape or ())
        if b_rank == 2 and 1 <= x.rank <= 3:
            return mb.linear(x=x, weight=weight_var(ctx, b_val, transpose=True))
        return mb.matmul(x=x, y=weight_var(ctx, b_val))
    return mb.matmul(x=x, y=ctx.var(b_val))


def is_compressed_weight(ctx: LoweringContext, value: ir.Value) -> bool:
    """A weight stored compressed: DequantizeLinear or fusionc::LutToDense of constants."""
    producer = value.producer()
    if producer is None or (producer.domain, producer.op_type) not in (("", "DequantizeLinear"), ("fusionc", "LutToDense")):
        return False
    return all(v is None or ctx.const(v) is not None for v in producer.inputs)


@register("Gemm")
def gemm(ctx: LoweringContext, node: ir.Node) -> Var:
    a = ctx.var(node.inputs[0])
    alpha, beta = float(ctx.attr(node, "alpha", 1.0)), float(ctx.attr(node, "beta", 1.0))
    if ctx.attr(node, "transA", 0):
        a = mb.transpose(x=a, perm=[1, 0])
    trans_b = bool(ctx.attr(node, "transB", 0))
    c_val = ctx.input(node, 2)
    b_const = ctx.const(node.inputs[1])
    c_const = ctx.const(c_val)
    if alpha == 1.0 and (b_const is not None or is_compressed_weight(ctx, node.inputs[1])) and (
            c_val is None or (c_const is not None and c_const.ndim <= 1 and beta == 1.0)):
        kwargs = {}
        if c_const is not None:
            n = (b_const.shape[0] if trans_b else b_const.shape[1]) if b_const is not None else None
            kwargs["bias"] = ctx.var(np.broadcast_to(c_const, (n,)) if n else c_const)
        return mb.linear(x=a, weight=weight_var(ctx, node.inputs[1], transpose=not trans_b), **kwargs)
    y = mb.matmul(x=a, y=ctx.var(node.inputs[1]), transpose_y=trans_b)
    if alpha != 1.0:
        y = mb.mul(x=y, y=ctx.var(np.array(alpha), like=y))
    if c_val is not None:
        c = ctx.var(c_val)
        if beta != 1.0:
            c = mb.mul(x=c, y=ctx.var(np.array(beta), like=c))
        y = mb.add(x=y, y=c)
    return y


def _affine(ctx: LoweringContext, y: Var, gamma: ir.Value | None, beta: ir.Value | None, shape: list[int]) -> Var:
    """y * gamma + beta for run-time (non-constant) gamma/beta reshaped to `shape`."""
    if gamma is not None:
        y = mb.mul(x=y, y=mb.reshape(x=ctx.var(gamma), shape=np.array(shape, dtype=np.int32)))
    if beta is not None:
        y = mb.add(x=y, y=mb.reshape(x=ctx.var(beta), shape=np.array(shape, dtype=np.int32)))
    return y


@register("InstanceNormalization")
def instance_norm(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    eps = ctx.scalar(x, ctx.attr(node, "epsilon", 1e-5))
    gamma, beta = ctx.const(node.inputs[1]), ctx.const(node.inputs[2])
    if gamma is not None and beta is not None:
        return mb.instance_norm(x=x, gamma=ctx.var(gamma), beta=ctx.var(beta), epsilon=eps)
    return _affine(ctx, mb.instance_norm(x=x, epsilon=eps), node.inputs[1], node.inputs[2], [1, -1] + [1] * (x.rank - 2))


@register("LayerNormalization")
def layer_norm(ctx: LoweringContext, node: ir.Node) -> Var:
    if len([o for o in node.outputs[1:] if o is not None and o.uses()]) > 0:
        raise ctx.unsupported("uses the Mean/InvStdDev outputs")
    x = ctx.var(node.inputs[0])
    axis = ctx.attr(node, "axis", -1)
    axis = axis + x.rank if axis < 0 else axis
    axes = list(range(axis, x.rank))
    norm_shape = tuple(x.shape[axis:])
    eps = ctx.scalar(x, ctx.attr(node, "epsilon", 1e-5))
    gamma_v, beta_v = ctx.input(node, 1), ctx.input(node, 2)
    gamma, beta = ctx.const(gamma_v), ctx.const(beta_v)
    if (gamma_v is None or gamma is not None) and (beta_v is None or beta is not None):
        kwargs = {}
        if gamma is not None:
            kwargs["gamma"] = ctx.var(np.broadcast_to(gamma, norm_shape).copy())
        if beta is not None:
            kwargs["beta"] = ctx.var(np.broadcast_to(beta, norm_shape).copy())
        return mb.layer_norm(x=x, axes=axes, epsilon=eps, **kwargs)
    y = mb.layer_norm(x=x, axes=axes, epsilon=eps)
    return _affine(ctx, y, gamma_v, beta_v, [1] * axis + list(norm_shape))


@register("BatchNormalization")
def batch_norm(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    eps = float(ctx.attr(node, "epsilon", 1e-5))
    consts = [ctx.const(v) for v in node.inputs[1:5]]
    if all(c is not None for c in consts):
        scale, bias, mean, var = (ctx.var(c) for c in consts)
        return mb.batch_norm(x=x, mean=mean, variance=var, gamma=scale, beta=bias, epsilon=ctx.scalar(x, eps))
    shape = np.array([1, -1] + [1] * (x.rank - 2), dtype=np.int32)
    scale, bias, mean, var = (mb.reshape(x=ctx.var(v), shape=shape) for v in node.inputs[1:5])
    denom = mb.rsqrt(x=mb.add(x=var, y=ctx.var(np.array(eps), like=var)), epsilon=ctx.scalar(var, 0.0))
    return mb.add(x=mb.mul(x=mb.mul(x=mb.sub(x=x, y=mean), y=denom), y=scale), y=bias)


def group_norm_ane(ctx: LoweringContext, x: Var, groups: int, gamma: np.ndarray | Var | None,
                   beta: np.ndarray | Var | None, eps: float) -> Var:
    """GroupNorm on (B, C, *spatial) as rank-4 reductions: reshape (B, G, C/G, S), mean/var over (2, 3)."""
    b, c = x.shape[0], x.shape[1]
    spatial = int(np.prod(x.shape[2:])) if x.rank > 2 else 1
    y = mb.reshape(x=x, shape=np.array([b, groups, c // groups, spatial], dtype=np.int32))
    mean = mb.reduce_mean(x=y, axes=[2, 3], keep_dims=True)
    centered = mb.sub(x=y, y=mean)
    var = mb.reduce_mean(x=mb.mul(x=centered, y=centered), axes=[2, 3], keep_dims=True)
    denom = mb.rsqrt(x=mb.add(x=var, y=ctx.var(np.array(eps), like=var)), epsilon=ctx.scalar(var, 0.0))
    y = mb.reshape(x=mb.mul(x=centered, y=denom), shape=np.array(x.shape, dtype=np.int32))
    affine_shape = [1, c] + [1] * (x.rank - 2)
    if gamma is not None:
        g = ctx.var(np.asarray(gamma).reshape(affine_shape)) if isinstance(gamma, np.ndarray) else mb.reshape(
            x=gamma, shape=np.array(affine_shape, dtype=np.int32))
        y = mb.mul(x=y, y=g)
    if beta is not None:
        bt = ctx.var(np.asarray(beta).reshape(affine_shape)) if isinstance(beta, np.ndarray) else mb.reshape(
            x=beta, shape=np.array(affine_shape, dtype=np.int32))
        y = mb.add(x=y, y=bt)
    return y


@register("GroupNormalization")
def group_normalization(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    groups = int(ctx.attr(node, "num_groups"))
    scale, bias = ctx.require_const(node.inputs[1], "scale"), ctx.require_const(node.inputs[2], "bias")
    c = x.shape[1]
    if scale.size == groups and groups != c:  # opset 18 semantics: one scale per group
        scale, bias = np.repeat(scale, c // groups), np.repeat(bias, c // groups)
    return group_norm_ane(ctx, x, groups, scale, bias, float(ctx.attr(node, "epsilon", 1e-5)))


@register("Softmax")
def softmax(ctx: LoweringContext, node: ir.Node) -> Var:
    return mb.softmax(x=ctx.var(node.inputs[0]), axis=int(ctx.attr(node, "axis", -1)))


@register("LogSoftmax")
def log_softmax(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    axis = int(ctx.attr(node, "axis", -1))
    return mb.sub(x=x, y=mb.reduce_log_sum_exp(x=x, axes=[axis], keep_dims=True))


@register("Resize")
def resize(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    scales = ctx.const(ctx.input(node, 2))
    sizes = ctx.const(ctx.input(node, 3))
    if scales is None or scales.size == 0:
        if sizes is None:
            raise ctx.unsupported("needs constant scales or sizes")
        scales = np.array(sizes, dtype=np.float64) / np.array(x.shape, dtype=np.float64)
    scales = [float(s) for s in scales]
    if x.rank != 4 or scales[0] != 1 or scales[1] != 1:
        raise ctx.unsupported("resizes other than the two spatial axes of a rank-4 tensor")
    mode = ctx.attr(node, "mode", "nearest")
    transform = ctx.attr(node, "coordinate_transformation_mode", "half_pixel")
    sh, sw = scales[2], scales[3]
    if mode == "nearest":
        if sh.is_integer() and sw.is_integer() and transform in ("asymmetric", "half_pixel", "pytorch_half_pixel"):
            return mb.upsample_nearest_neighbor(x=x, scale_factor_height=int(sh), scale_factor_width=int(sw))
        raise ctx.unsupported(f"nearest resize with scales {sh}x{sw} and '{transform}'")
    if mode == "linear":
        if transform == "align_corners":
            return mb.upsample_bilinear(x=x, scale_factor_height=sh, scale_factor_width=sw, align_corners=True)
        if transform in ("half_pixel", "pytorch_half_pixel"):
            return mb.upsample_bilinear(x=x, scale_factor_height=sh, scale_factor_width=sw,
                                        align_corners=False, half_pixel_centers=True)
        if transform == "asymmetric":
            return mb.upsample_bilinear(x=x, scale_factor_height=sh, scale_factor_width=sw,
                                        align_corners=False, half_pixel_centers=False)
    raise ctx.unsupported(f"resize mode '{mode}' with '{transform}'")


def _pool_kwargs(ctx: LoweringContext, node: ir.Node, spatial: int) -> dict:
    kwargs = _conv_pad(ctx, node, spatial)
    kwargs["kernel_sizes"] = [int(k) for k in ctx.attr(node, "kernel_shape")]
    kwargs["strides"] = [int(s) for s in ctx.attr(node, "strides", [1] * spatial)]
    if ctx.attr(node, "ceil_mode", 0):
        kwargs["ceil_mode"] = True
    return kwargs


@register("MaxPool")
def max_pool(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    return mb.max_pool(x=x, **_pool_kwargs(ctx, node, x.rank - 2))


@register("AveragePool")
def avg_pool(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    return mb.avg_pool(x=x, exclude_padding_from_average=not ctx.attr(node, "count_include_pad", 0),
                       **_pool_kwargs(ctx, node, x.rank - 2))


@register("GlobalAveragePool")
def global_avg_pool(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    return mb.reduce_mean(x=x, axes=list(range(2, x.rank)), keep_dims=True)


_REDUCE = {"ReduceMean": "reduce_mean", "ReduceSum": "reduce_sum", "ReduceMax": "reduce_max",
           "ReduceMin": "reduce_min", "ReduceProd": "reduce_prod", "ReduceL2": "reduce_l2_norm",
           "ReduceL1": "reduce_l1_norm", "ReduceSumSquare": "reduce_sum_square",
           "ReduceLogSumExp": "reduce_log_sum_exp"}


def _reduce(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    axes = ctx.attr(node, "axes")
    if axes is None:
        arr = ctx.const(ctx.input(node, 1))
        axes = None if arr is None or arr.size == 0 else [int(a) for a in arr.reshape(-1)]
    if axes is None:
        if ctx.attr(node, "noop_with_empty_axes", 0):
            return x
        axes = list(range(x.rank))
    return getattr(mb, _REDUCE[node.op_type])(x=x, axes=axes, keep_dims=bool(ctx.attr(node, "keepdims", 1)))


for _op in _REDUCE:
    register(_op)(_reduce)


@register("ArgMax", "ArgMin")
def arg_reduce(ctx: LoweringContext, node: ir.Node) -> Var:
    if ctx.attr(node, "select_last_index", 0):
        raise ctx.unsupported("uses select_last_index=1")
    x = ctx.var(node.inputs[0])
    fn = mb.reduce_argmax if node.op_type == "ArgMax" else mb.reduce_argmin
    return fn(x=x, axis=int(ctx.attr(node, "axis", 0)), keep_dims=bool(ctx.attr(node, "keepdims", 1)))
