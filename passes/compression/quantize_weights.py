"""Linear weight quantization: int8 per output channel, int8/int4 block-wise, symmetric or affine.

Each weight becomes a standard ONNX DequantizeLinear of a constant, so onnxruntime runs it and every target
reads the same encoding: Core ML lowers it to `constexpr_affine_dequantize` (per channel, iOS16) or
`constexpr_blockwise_shift_scale` (blocks, iOS18); the QNN target reads `weight_encodings` (scale and
zero point per tensor, per channel or per block) for its weight encodings.

    before                                  after (block-wise along the input channels, block B)
    W: float[Co,Ci,kh,kw] (initializer)     q: int4[Co,Ci,kh,kw]  s: float[Co,Ci/B,kh,kw]  z: int4[Co,Ci/B,kh,kw]
    Conv(x, W, b)                           W = DequantizeLinear<axis=1, block_size=B>(q, s, z)
                                            Conv(x, W, b)

Block-wise quantization and int4 need DequantizeLinear-21; the model (exported at opset 18) is then moved to
opset 21 as a whole (`upgrade_opset`), so the graph and its local functions keep one opset. Scales are rounded
to fp16 first, so the ONNX graph and the Core ML program dequantize to the same values.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from fusionc.passes.compression.palettize import record_compression
from fusionc.passes.compression.weights import Weight, find_weights, node_order, replace_weight, uses_through_casts

log = logging.getLogger(__name__)

DTYPES = {"int8": (8, ir.DataType.INT8), "int4": (4, ir.DataType.INT4)}
# Ops whose meaning changed between opsets 18 and 21 (the rest only gained types or defaulted attributes).
CHANGED_18_TO_21 = {"GroupNormalization", "GridSample", "DFT"}


@dataclass
class Encoding:
    """A linearly quantized tensor: dense = scale * (data - zero_point), scale repeated over blocks."""

    data: np.ndarray  # int8 values within the bit range
    scale: np.ndarray  # float, per channel [C] or per block (same rank as data)
    zero_point: np.ndarray  # int8, shape of scale
    bits: int
    axis: int  # the channel axis (per channel) or the blocked axis
    block_size: int | None  # None: per channel

    def dense(self, dtype: np.dtype = np.float32) -> np.ndarray:
        scale, zero = self.scale.astype(np.float32), self.zero_point.astype(np.float32)
        if self.block_size is None:
            shape = [1] * self.data.ndim
            shape[self.axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        else:
            scale = np.repeat(scale, self.block_size, axis=self.axis)
            zero = np.repeat(zero, self.block_size, axis=self.axis)
        return ((self.data.astype(np.float32) - zero) * scale).astype(dtype)


def quantize(weight: np.ndarray, bits: int, axis: int, block_size: int | None, symmetric: bool) -> Encoding:
    """Quantize per channel along `axis` (block_size None) or in blocks of `block_size` along `axis`."""
    w = np.asarray(weight, np.float32)
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if block_size is None:
        moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
        lo, hi = moved.min(axis=1), moved.max(axis=1)
    else:
        shape = list(w.shape)
        split = shape[:axis] + [shape[axis] // block_size, block_size] + shape[axis + 1:]
        blocks = w.reshape(split)
        lo, hi = blocks.min(axis=axis + 1), blocks.max(axis=axis + 1)
    if symmetric:
        scale = np.maximum(np.abs(lo), np.abs(hi)) / qmax
        zero = np.zeros(scale.shape, np.float32)
    else:
        lo, hi = np.minimum(lo, 0), np.maximum(hi, 0)  # keep 0 exact
        scale = (hi - lo) / (qmax - qmin)
        zero = np.zeros(scale.shape, np.float32)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float16)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, np.float16(6.1e-5)).astype(np.float32)
    if not symmetric:
        zero = np.clip(np.round(qmin - lo / scale), qmin, qmax)
    if block_size is None:
        bshape = [1] * w.ndim
        bshape[axis] = -1
        s_full, z_full = scale.reshape(bshape), zero.reshape(bshape)
    else:
        s_full, z_full = np.repeat(scale, block_size, axis=axis), np.repeat(zero, block_size, axis=axis)
    data = np.clip(np.round(w / s_full) + z_full, qmin, qmax).astype(np.int8)
    return Encoding(data, scale, zero.astype(np.int8), bits, axis, block_size)


def block_for(weight: Weight, block_size: int) -> int:
    """The block size used for `weight`: `block_size`, or the largest divisor of its input channels below it."""
    channels = weight.shape[weight.in_axis]
    size = min(block_size, channels)
    while channels % size:
        size -= 1
    return size


def upgrade_opset(model: ir.Model, version: int) -> bool:
    """Move the default-domain opset of the model and its local functions to `version` (>= current)."""
    current = model.opset_imports.get("", version)
    if current >= version:
        return False
    ops = {n.op_type for n in ir.traversal.RecursiveGraphIterator(model.graph) if n.domain in ("", "ai.onnx")}
    for function in model.functions.values():
        ops |= {n.op_type for n in function if n.domain in ("", "ai.onnx")}
    changed = ops & CHANGED_18_TO_21 if current >= 18 else {"(opset < 18)"}
    if changed:
        from onnxscript.version_converter import _version_converter

        _version_converter.convert_version(model, version)
        return True
    model.opset_imports[""] = version
    for function in model.functions.values():
        function.opset_imports[""] = version
    return True


class QuantizeWeightsPass(ir.passes.InPlacePass):
    """Replace each weight by DequantizeLinear(int8/int4 constant, scale, zero point).

    `block_size` None quantizes per output channel (int8 only); otherwise blocks run along the input channels.
    """

    def __init__(self, dtype: str = "int8", *, block_size: int | None = None, symmetric: bool = True,
                 min_elements: int = 2048, include_embeddings: bool = False,
                 op_types: frozenset[str] | None = None) -> None:
        super().__init__()
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype}")
        if block_size is None and dtype == "int4":
            raise ValueError("int4 weights are quantized block-wise: give a block size")
        if block_size is not None and block_size <= 0:
            raise ValueError(f"block size must be positive, got {block_size}")
        self.dtype = dtype
        self.block_size = block_size
        self.symmetric = symmetric
        self.min_elements = min_elements
        self.include_embeddings = include_embeddings
        self.op_types = op_types  # only weights every consumer of which has one of these op types (None: all)
        self.layers: list[dict[str, Any]] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        bits, onnx_dtype = DTYPES[self.dtype]
        weights = find_weights(model, self.min_elements, self.include_embeddings)
        if self.op_types is not None:
            weights = [w for w in weights if consumer_ops(w) <= self.op_types]
        order = node_order(model)
        self.layers = []
        if not weights:
            return ir.passes.PassResult(model, modified=False)
        needs = 21 if (self.block_size is not None or bits == 4) else (
            19 if any(w.value.dtype == ir.DataType.FLOAT16 for w in weights) else 13)
        upgraded = upgrade_opset(model, needs)
        for weight in weights:
            dense = weight.value.const_value.numpy()
            if self.block_size is None:
                enc = quantize(dense, bits, weight.out_axis, None, self.symmetric)
            else:
                enc = quantize(dense, bits, weight.in_axis, block_for(weight, self.block_size), self.symmetric)
            nodes, inits = dq_node(weight, enc, onnx_dtype)
            err = float(np.mean((dense.astype(np.float64) - enc.dense()) ** 2) / max(np.mean(np.square(dense, dtype=np.float64)), 1e-300))
            self.layers.append({"layer": weight.layer, "elements": weight.size, "bits": bits,
                                "block_size": enc.block_size, "rel_mse": err, "bytes_before": int(dense.nbytes),
                                "bytes_after": int(sum(v.const_value.nbytes for v in inits))})
            del dense
            replace_weight(model, weight, nodes, inits, order)
        record_compression(model, "quantize_weights", {
            "method": "linear", "dtype": self.dtype, "block_size": self.block_size,
            "mode": "symmetric" if self.symmetric else "affine", "layers": len(self.layers),
            "op_types": sorted(self.op_types) if self.op_types is not None else None,
            "bytes_before": sum(x["bytes_before"] for x in self.layers),
            "bytes_after": sum(x["bytes_after"] for x in self.layers),
            "opset": model.opset_imports.get(""),
        })
        return ir.passes.PassResult(model, modified=bool(self.layers) or upgraded)


def consumer_ops(weight: Weight) -> set[str]:
    """Op types that read `weight` (through Casts)."""
    return {node.op_type for node, _ in uses_through_casts(weight.value)}


def dq_node(weight: Weight, enc: Encoding, onnx_dtype: ir.DataType) -> tuple[list[ir.Node], list[ir.Value]]:
    """The DequantizeLinear node and its three initializers for one quantized weight."""
    base = weight.value.name
    float_np = weight.value.dtype.numpy()
    arrays = {"quantized": (enc.data, onnx_dtype), "scale": (enc.scale.astype(float_np), weight.value.dtype),
              "zero_point": (enc.zero_point, onnx_dtype)}
    inits = []
    for key, (arr, dtype) in arrays.items():
        name = f"{base}__{key}"
        inits.append(ir.Value(name=name, const_value=ir.Tensor(arr, dtype=dtype, name=name),
                              shape=ir.Shape(arr.shape), type=ir.TensorType(dtype)))
    attrs = [ir.AttrInt64("axis", enc.axis)]
    if enc.block_size is not None:
        attrs.append(ir.AttrInt64("block_size", enc.block_size))
    node = ir.Node("", "DequantizeLinear", inits, attrs, name=f"{base}__dequantize")
    return [node], inits


def read_dq_node(node: ir.Node) -> Encoding:
    """The Encoding stored by a DequantizeLinear of constants (for lowerings, QNN and tests)."""
    data, scale = node.inputs[0].const_value.numpy(), node.inputs[1].const_value.numpy()
    zp_value = node.inputs[2] if len(node.inputs) > 2 else None
    zero = zp_value.const_value.numpy() if zp_value is not None else np.zeros(scale.shape, np.int8)
    bits = 4 if node.inputs[0].dtype in (ir.DataType.INT4, ir.DataType.UINT4) else 8
    axis_attr, block_attr = node.attributes.get("axis"), node.attributes.get("block_size")
    axis = axis_attr.as_int() if axis_attr is not None else 1
    block = block_attr.as_int() if block_attr is not None and block_attr.as_int() > 0 else None
    axis = axis % data.ndim if data.ndim else 0
    return Encoding(np.asarray(data).astype(np.int8), np.asarray(scale), np.asarray(zero).astype(np.int8), bits,
                    axis, block)


def weight_encodings(model: ir.Model) -> dict[str, dict[str, Any]]:
    """{weight name: {bits, axis, block_size, symmetric, scale, zero_point}} of every constant DequantizeLinear.

    The simple form the QNN target takes for its weight encodings (scale/offset per tensor, channel or block).
    """
    out = {}
    for node in model.graph:
        if node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx"):
            continue
        if any(v is None or v.const_value is None for v in node.inputs[:2]):
            continue
        enc = read_dq_node(node)
        out[node.outputs[0].name] = {"bits": enc.bits, "axis": enc.axis, "block_size": enc.block_size,
                                     "symmetric": bool(np.all(enc.zero_point == 0)), "scale": enc.scale,
                                     "zero_point": enc.zero_point, "quantized": enc.data}
    return out
