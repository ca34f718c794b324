"""Lowerings of compressed weights into Core ML's native storage: constexpr_* ops, never dense fp16.

In the ONNX graph a compressed weight stays runnable (DequantizeLinear with constant inputs, or a LUT
local function from the compression passes) so onnxruntime can measure its fidelity. Here it becomes:
- DequantizeLinear, per-tensor or per-channel int8/uint8 -> constexpr_affine_dequantize (iOS16+), or
  constexpr_blockwise_shift_scale (iOS18+, which also takes int4 and block-wise scales);
- palettized weights -> constexpr_lut_to_dense (iOS16 packed form; iOS18 per-group form).
`weight_var` is what weight consumers (Conv, MatMul, Gemm) call: it emits the constexpr in the layout the
consumer needs (for `linear`, [out, in]), so no run-time transpose sits after the decompression.
"""

from __future__ import annotations

from typing import Any

import coremltools as ct
import numpy as np
import onnx_ir as ir
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import Var, types

from fusionc.passes.compression import lut as lutlib
from fusionc.targets.coreml.lowering.table import Deferred, LoweringContext, mil_name, register

def weight_var(ctx: LoweringContext, value: ir.Value, transpose: bool = False) -> Var:
    """A constant (or constexpr-compressed) weight as a MIL var, 2-D weights optionally transposed."""
    key = (id(value), "T" if transpose else "v")
    cached = ctx._const_vars.get(key)
    if cached is not None:
        return cached
    arr = ctx.const(value)
    if arr is not None:
        out = mb.const(val=ctx.np_const(arr.T if transpose else arr), name=mil_name(value.name or "w") + ("_t" if transpose else ""))
    else:
        producer = value.producer()
        if producer is not None and producer.op_type == "DequantizeLinear" and producer.domain in ("", "ai.onnx"):
            out = dequantize_constexpr(ctx, producer, transpose)
        elif producer is not None and (producer.domain, producer.op_type) == ("fusionc", "LutToDense"):
            out = lut_to_dense_constexpr(ctx, producer, transpose)
        else:
            out = ctx.var(value)
            if transpose:
                out = mb.transpose(x=out, perm=[1, 0])
    ctx._const_vars[key] = out
    return out


def _dtype_of(data: np.ndarray, value: ir.Value) -> np.dtype:
    if value.dtype == ir.DataType.INT4:
        return types.np_int4_dtype
    if value.dtype == ir.DataType.UINT4:
        return types.np_uint4_dtype
    return data.dtype


def dequantize_constexpr(ctx: LoweringContext, node: ir.Node, transpose: bool = False) -> Var:
    """constexpr op for DequantizeLinear(x, scale, zero_point) with constant inputs."""
    data = ctx.require_const(node.inputs[0], "quantized weight")
    scale = ctx.require_const(node.inputs[1], "scale").astype(np.float32)
    zp_value = ctx.input(node, 2)
    zero = ctx.const(zp_value)
    axis = int(ctx.attr(node, "axis", 1))
    block = int(ctx.attr(node, "block_size", 0))
    rank = data.ndim
    axis = axis + rank if axis < 0 else axis
    # Scale/offset to the same rank as data (blockwise form): per-tensor -> all ones, per-axis -> along axis.
    full_shape = [1] * rank
    if scale.size > 1:
        if block:
            full_shape = list(data.shape)
            full_shape[axis] = data.shape[axis] // block
        else:
            full_shape[axis] = data.shape[axis]
    scale_full = scale.reshape(full_shape)
    zero_full = None if zero is None else zero.astype(np.int64).reshape(full_shape)
    src_dtype = _dtype_of(data, node.inputs[0])
    data_int = data.astype(np.int8 if np.issubdtype(data.dtype, np.signedinteger) or src_dtype == types.np_int4_dtype
                           else np.uint8)
    if transpose:
        data_int, scale_full = data_int.T, scale_full.T
        zero_full = None if zero_full is None else zero_full.T
        axis = 1 - axis
    float_dtype = np.float16 if ctx.float_dtype == "fp16" else np.float32
    name = mil_name(node.outputs[0].name) + ("_t" if transpose else "")
    ios18 = ctx.opset >= ct.target.iOS18
    narrow = src_dtype in (np.int8, np.uint8) and scale.size in (1, data.shape[axis if not transpose else 1 - axis]) and not block
    if not ios18:
        if not narrow:
            raise ctx.unsupported("stores block-wise or 4-bit weights, which need --deployment-target iOS18")
        zp = np.zeros((), data_int.dtype) if zero_full is None else zero_full.astype(data_int.dtype)
        sc = scale_full.astype(float_dtype)
        if scale.size > 1:
            zp = zp.reshape(-1) if zp.ndim else zp
            sc = sc.reshape(-1)
        else:
            zp, sc = zp.reshape(()), sc.reshape(())
        return mb.constexpr_affine_dequantize(quantized_data=np.ascontiguousarray(data_int), zero_point=zp, scale=sc,
                                              axis=axis if scale.size > 1 else 0, name=name)
    kwargs = {}
    if zero_full is not None and np.any(zero_full != 0):
        kwargs["offset"] = np.ascontiguousarray(zero_full.astype(data_int.dtype).astype(src_dtype))
    return mb.constexpr_blockwise_shift_scale(
        data=np.ascontiguousarray(data_int).astype(src_dtype), scale=np.ascontiguousarray(scale_full.astype(float_dtype)),
        name=name, **kwargs)


@register("DequantizeLinear", fold=False)
def dequantize_linear(ctx: LoweringContext, node: ir.Node) -> Deferred:
    if ctx.const(node.inputs[0]) is not None and ctx.const(node.inputs[1]) is not None:
        return Deferred(lambda: weight_var(ctx, node.outputs[0]))
    raise ctx.unsupported("dequantizes a run-time tensor (activation quantization is not lowered)")


def lut_constexpr(ctx: LoweringContext, indices: np.ndarray, lut: np.ndarray, axis: int, name: str,
                  transpose: bool = False) -> Var:
    """constexpr_lut_to_dense for `lut[g][indices]`, one LUT per group of channels along `axis`.

    lut is [G, K]; indices (uint8, < K) have the weight's shape. iOS18 takes grouped LUTs directly; iOS16/17
    take one LUT per tensor (G == 1) with indices packed LSB-first.
    """
    if transpose:
        indices, axis = indices.T, 1 - axis
    k = lut.shape[-1]
    nbits = int(np.ceil(np.log2(k)))
    float_dtype = np.float16 if ctx.float_dtype == "fp16" else np.float32
    if ctx.opset >= ct.target.iOS18:
        lut_shape = [1] * indices.ndim + [k, 1]
        lut_shape[axis] = lut.shape[0]
        sub = {1: types.np_uint1_dtype, 2: types.np_uint2_dtype, 3: types.np_uint3_dtype, 4: types.np_uint4_dtype,
               6: types.np_uint6_dtype, 8: np.uint8}[nbits]
        return mb.constexpr_lut_to_dense(indices=np.ascontiguousarray(indices.astype(np.uint8)).astype(sub),
                                         lut=lut.astype(float_dtype).reshape(lut_shape), name=name)
    if lut.shape[0] != 1:
        raise ctx.unsupported("uses grouped palettes, which need --deployment-target iOS18")
    return _ios16_lut(ctx, lutlib.packed_indices(indices, nbits), lut, indices.shape, name)


def _ios16_lut(ctx: LoweringContext, packed: np.ndarray, lut: np.ndarray, shape: Any, name: str) -> Var:
    """iOS16's constexpr_lut_to_dense: one LUT, indices packed LSB-first into exactly the bytes they need."""
    float_dtype = np.float16 if ctx.float_dtype == "fp16" else np.float32
    return mb.constexpr_lut_to_dense(indices=packed, lut=lut.reshape(-1).astype(float_dtype),
                                     shape=np.asarray(shape, dtype=np.uint32), name=name)


def lut_to_dense_constexpr(ctx: LoweringContext, node: ir.Node, transpose: bool = False) -> Var:
    """constexpr_lut_to_dense for a fusionc::LutToDense call (passes/compression/palettize.py) with constant inputs."""
    from fusionc.passes.compression.palettize import read_lut_node

    if any(ctx.const(v) is None for v in node.inputs):
        raise ctx.unsupported("needs constant LUT inputs")
    name = mil_name(node.outputs[0].name) + ("_t" if transpose else "")
    lut = node.inputs[1].const_value.numpy()
    if not transpose and lut.shape[0] == 1 and ctx.opset < ct.target.iOS18:
        # inputs (packed, lut, shape, offsets): the graph stores the indices as Core ML's iOS16 stream (lut.pack:
        # LSB-first, padded to 3 bytes); pass it on trimmed instead of unpacking and packing again (75 of T5-XXL's
        # 77 s of lowering)
        nbits = node.attributes["nbits"].as_int()
        shape = node.inputs[2].const_value.numpy()
        stream = node.inputs[0].const_value.numpy()[:-(-int(np.prod(shape, dtype=np.int64)) * nbits // 8)]
        return _ios16_lut(ctx, stream, lut, shape, name)
    palette = read_lut_node(node)
    return lut_constexpr(ctx, palette.indices, palette.lut, palette.axis, name, transpose)


@register("LutToDense", domain="fusionc", fold=False)
def lut_to_dense(ctx: LoweringContext, node: ir.Node) -> Deferred:
    return Deferred(lambda: weight_var(ctx, node.outputs[0]))
