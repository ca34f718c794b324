"""Executor ops: Core ML's compressed-weight ops, decompressed once at load time as Core ML does.

- constexpr_affine_dequantize (iOS16): (data - zero_point) * scale, per tensor or along `axis`.
- constexpr_blockwise_shift_scale (iOS18): scale * (data - offset), scale/offset repeated over blocks.
- constexpr_lut_to_dense: iOS16 form (one LUT, indices packed LSB-first into bytes, explicit shape) and
  iOS18 form (indices unpacked, LUT [*groups, K, vector_size] per block of the output).
- constexpr_cast (iOS16/18): a dtype change of a stored constant.
Decompression is computed in float32 and rounded once to the output dtype (the engine's cast).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fusionc.targets.coreml.executor.engine import register
from fusionc.targets.coreml.executor.ops_math import scalar


def _repeat_to(block_values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Expand per-block values (each dim divides `shape`) to the full shape."""
    out = block_values
    for axis, (n, full) in enumerate(zip(block_values.shape, shape)):
        if n != full:
            out = np.repeat(out, full // n, axis=axis)
    return out


@register("constexpr_affine_dequantize")
def affine_dequantize(op: Any, quantized_data: Any, zero_point: Any, scale: Any, axis: Any = 0) -> np.ndarray:
    data = np.asarray(quantized_data).astype(np.float32)
    zp = np.asarray(zero_point).astype(np.float32)
    sc = np.asarray(scale).astype(np.float32)
    axis = int(scalar(axis, 0)) % data.ndim
    shape = [1] * data.ndim
    if sc.ndim == 1 and sc.size > 1:
        shape[axis] = -1
        sc = sc.reshape(shape)
    if zp.ndim == 1 and zp.size > 1:
        shape[axis] = -1
        zp = zp.reshape(shape)
    return (data - zp) * sc


@register("constexpr_blockwise_shift_scale")
def blockwise_shift_scale(op: Any, data: Any, scale: Any, offset: Any = None) -> np.ndarray:
    d = np.asarray(data).astype(np.float32)
    sc = _repeat_to(np.asarray(scale).astype(np.float32), d.shape)
    if offset is not None:
        d = d - _repeat_to(np.asarray(offset).astype(np.float32), d.shape)
    return d * sc


def unpack_bits(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """LSB-first bit unpacking: element i occupies bits [i*nbits, (i+1)*nbits) of the byte stream.

    Every LUT width (1, 2, 3, 4, 6, 8) divides 24, so the stream is read 3 bytes (a whole number of elements)
    at a time (passes.compression.lut.unpack); spreading it into single bits (np.unpackbits) took 275 s of
    T5-XXL's verification and a temporary of 4 bytes per bit."""
    from fusionc.passes.compression.lut import unpack

    return unpack(np.asarray(packed, dtype=np.uint8).reshape(-1), nbits, count)


@register("constexpr_lut_to_dense")
def lut_to_dense(op: Any, lut: Any, indices: Any, shape: Any = None, vector_axis: Any = None) -> np.ndarray:
    lut = np.asarray(lut)
    idx = np.asarray(indices)
    if shape is not None:  # iOS16: one LUT [K], indices packed into bytes
        out_shape = tuple(int(s) for s in np.asarray(shape).reshape(-1))
        count = int(np.prod(out_shape))
        nbits = int(np.log2(lut.shape[-1]))
        flat = idx.reshape(-1) if idx.size == count else unpack_bits(idx, nbits, count)
        return lut.reshape(-1)[flat].reshape(out_shape)  # gathered in the LUT's dtype; widening it later is exact
    # iOS18: lut [*G (rank of indices), K, V]
    rank = idx.ndim
    groups = lut.shape[:rank]
    k, vsize = lut.shape[rank], lut.shape[rank + 1]
    block = [s // g for s, g in zip(idx.shape, groups)]
    idx64 = idx.astype(np.int64)
    # group id of every index element -> flat LUT row
    group_index = np.zeros(idx.shape, np.int64)
    stride = 1
    for axis in reversed(range(rank)):
        coord = np.arange(idx.shape[axis]) // block[axis]
        view = [1] * rank
        view[axis] = -1
        group_index = group_index + coord.reshape(view) * stride
        stride *= groups[axis]
    table = lut.astype(np.float32).reshape(-1, k, vsize)
    values = table[group_index, idx64]  # [*idx.shape, V]
    if vsize == 1:
        return values[..., 0]
    axis = int(scalar(vector_axis, 0)) % rank
    values = np.moveaxis(values, -1, axis + 1)  # [..., idx_axis, V, ...]
    shape_out = list(idx.shape)
    shape_out[axis] *= vsize
    return values.reshape(shape_out)


@register("constexpr_cast")
def constexpr_cast(op: Any, source_val: Any, output_dtype: Any = None) -> np.ndarray:
    return np.asarray(source_val)
