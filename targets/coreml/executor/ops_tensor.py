"""Executor ops: shape, layout and indexing (reshape, transpose, slice, gather, concat, split, tile, pad, ...)."""

from __future__ import annotations

from typing import Any

import numpy as np

from fusionc.targets.coreml.executor.engine import register
from fusionc.targets.coreml.executor.ops_math import scalar


def _ints(a: Any) -> list[int]:
    return [int(v) for v in np.asarray(a).reshape(-1)]


@register("reshape")
def reshape(op: Any, x: Any, shape: Any) -> np.ndarray:
    target = _ints(shape)
    x = np.asarray(x)
    target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return x.reshape(target)


@register("reshape_like")
def reshape_like(op: Any, x: Any, **_: Any) -> np.ndarray:
    return np.asarray(x).reshape(op.outputs[0].shape)


@register("transpose")
def transpose(op: Any, x: Any, perm: Any) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(np.asarray(x), _ints(perm)))


@register("expand_dims")
def expand_dims(op: Any, x: Any, axes: Any) -> np.ndarray:
    x = np.asarray(x)
    rank = x.ndim + len(_ints(axes))
    return np.expand_dims(x, tuple(sorted(a % rank for a in _ints(axes))))


@register("squeeze")
def squeeze(op: Any, x: Any, axes: Any = None) -> np.ndarray:
    x = np.asarray(x)
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, tuple(a % x.ndim for a in _ints(axes)))


@register("concat")
def concat(op: Any, values: list[Any], axis: Any, interleave: Any = False) -> np.ndarray:
    arrays = [np.asarray(v) for v in values]
    axis = int(scalar(axis))
    if scalar(interleave, False):
        stacked = np.stack(arrays, axis=axis + 1 if axis >= 0 else axis)
        shape = list(arrays[0].shape)
        shape[axis] *= len(arrays)
        return stacked.reshape(shape)
    return np.concatenate(arrays, axis=axis)


@register("split")
def split(op: Any, x: Any, axis: Any, num_splits: Any = None, split_sizes: Any = None) -> list[np.ndarray]:
    x = np.asarray(x)
    axis = int(scalar(axis)) % x.ndim
    if split_sizes is not None:
        bounds = np.cumsum(_ints(split_sizes))[:-1]
    else:
        n = int(scalar(num_splits))
        size = -(-x.shape[axis] // n)
        bounds = [size * i for i in range(1, n)]
    return [np.ascontiguousarray(p) for p in np.split(x, bounds, axis=axis)]


@register("slice_by_index")
def slice_by_index(op: Any, x: Any, begin: Any, end: Any, stride: Any = None, begin_mask: Any = None,
                   end_mask: Any = None, squeeze_mask: Any = None) -> np.ndarray:
    x = np.asarray(x)
    rank = x.ndim
    begin, end = _ints(begin), _ints(end)
    stride = _ints(stride) if stride is not None else [1] * rank
    bm = [bool(b) for b in np.asarray(begin_mask).reshape(-1)] if begin_mask is not None else [False] * rank
    em = [bool(b) for b in np.asarray(end_mask).reshape(-1)] if end_mask is not None else [False] * rank
    sm = [bool(b) for b in np.asarray(squeeze_mask).reshape(-1)] if squeeze_mask is not None else [False] * rank
    index = []
    for i in range(rank):
        b = None if bm[i] else begin[i]
        e = None if em[i] else end[i]
        if sm[i]:
            index.append(begin[i])
        else:
            index.append(slice(b, e, stride[i]))
    return np.ascontiguousarray(x[tuple(index)])


@register("slice_by_size")
def slice_by_size(op: Any, x: Any, begin: Any, size: Any) -> np.ndarray:
    x = np.asarray(x)
    index = []
    for b, s, dim in zip(_ints(begin), _ints(size), x.shape):
        index.append(slice(b, dim if s == -1 else b + s))
    return np.ascontiguousarray(x[tuple(index)])


@register("gather")
def gather(op: Any, x: Any, indices: Any, axis: Any = 0, batch_dims: Any = 0, validate_indices: Any = None) -> np.ndarray:
    x = np.asarray(x)
    axis = int(scalar(axis, 0)) % x.ndim
    idx = np.asarray(indices).astype(np.int64)
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    bd = int(scalar(batch_dims, 0))
    if bd == 0:
        return np.take(x, idx, axis=axis)
    out = [gather(op, x[b], idx[b], axis - 1, bd - 1) for b in range(x.shape[0])]
    return np.stack(out)


@register("gather_along_axis")
def gather_along_axis(op: Any, x: Any, indices: Any, axis: Any = 0, validate_indices: Any = None) -> np.ndarray:
    x = np.asarray(x)
    axis = int(scalar(axis, 0)) % x.ndim
    idx = np.asarray(indices).astype(np.int64)
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    return np.take_along_axis(x, idx, axis=axis)


@register("gather_nd")
def gather_nd(op: Any, x: Any, indices: Any, batch_dims: Any = 0, validate_indices: Any = None) -> np.ndarray:
    x = np.asarray(x)
    idx = np.asarray(indices).astype(np.int64)
    bd = int(scalar(batch_dims, 0))
    if bd:
        return np.stack([gather_nd(op, x[b], idx[b], bd - 1) for b in range(x.shape[0])])
    k = idx.shape[-1]
    flat = idx.reshape(-1, k)
    flat = np.where(flat < 0, flat + np.array(x.shape[:k]), flat)
    out = x[tuple(flat.T)]
    return out.reshape(idx.shape[:-1] + x.shape[k:])


@register("scatter_nd")
def scatter_nd(op: Any, data: Any, indices: Any, updates: Any, mode: Any = "update", validate_indices: Any = None) -> np.ndarray:
    out = np.array(data, copy=True)
    idx = np.asarray(indices).astype(np.int64)
    k = idx.shape[-1]
    flat = idx.reshape(-1, k)
    upd = np.asarray(updates).reshape((flat.shape[0],) + out.shape[k:])
    for row, u in zip(flat, upd):
        if str(scalar(mode, "update")) == "add":
            out[tuple(row)] += u
        else:
            out[tuple(row)] = u
    return out


@register("tile")
def tile(op: Any, x: Any, reps: Any) -> np.ndarray:
    return np.tile(np.asarray(x), _ints(reps))


@register("pad")
def pad(op: Any, x: Any, pad: Any, mode: Any = "constant", constant_val: Any = 0.0) -> np.ndarray:
    x = np.asarray(x)
    p = _ints(pad)
    n = len(p) // 2
    widths = [(0, 0)] * (x.ndim - n) + [(p[2 * i], p[2 * i + 1]) for i in range(n)]
    mode = str(scalar(mode, "constant"))
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=scalar(constant_val, 0.0))
    return np.pad(x, widths, mode={"replicate": "edge", "reflect": "reflect"}[mode])


@register("range_1d")
def range_1d(op: Any, start: Any, end: Any, step: Any) -> np.ndarray:
    return np.arange(scalar(start), scalar(end), scalar(step))


@register("fill")
def fill(op: Any, shape: Any, value: Any = 0.0) -> np.ndarray:
    return np.full(_ints(shape), scalar(value, 0.0))


@register("fill_like")
def fill_like(op: Any, ref_tensor: Any, value: Any = 0.0) -> np.ndarray:
    return np.full(np.asarray(ref_tensor).shape, scalar(value, 0.0))


@register("shape")
def shape(op: Any, x: Any) -> np.ndarray:
    return np.array(np.asarray(x).shape, dtype=np.int32)


@register("cumsum")
def cumsum(op: Any, x: Any, axis: Any = 0, exclusive: Any = False, reverse: Any = False) -> np.ndarray:
    x = np.asarray(x)
    axis = int(scalar(axis, 0))
    if scalar(reverse, False):
        x = np.flip(x, axis)
    out = np.cumsum(x, axis=axis)
    if scalar(exclusive, False):
        out = out - x
    return np.flip(out, axis) if scalar(reverse, False) else out


@register("band_part")
def band_part(op: Any, x: Any, lower: Any = -1, upper: Any = -1) -> np.ndarray:
    x = np.asarray(x)
    rows, cols = x.shape[-2:]
    i, j = np.arange(rows)[:, None], np.arange(cols)[None, :]
    lo, up = int(scalar(lower, -1)), int(scalar(upper, -1))
    keep = ((lo < 0) | (i - j <= lo)) & ((up < 0) | (j - i <= up))
    return np.where(keep, x, np.zeros((), x.dtype))


@register("depth_to_space")
def depth_to_space(op: Any, x: Any, block_size: Any) -> np.ndarray:
    x = np.asarray(x)
    b, c, h, w = x.shape
    s = int(scalar(block_size))
    y = x.reshape(b, s, s, c // (s * s), h, w).transpose(0, 3, 4, 1, 5, 2)
    return y.reshape(b, c // (s * s), h * s, w * s)


@register("pixel_shuffle")
def pixel_shuffle(op: Any, x: Any, upscale_factor: Any) -> np.ndarray:
    x = np.asarray(x)
    b, c, h, w = x.shape
    s = int(scalar(upscale_factor))
    y = x.reshape(b, c // (s * s), s, s, h, w).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(b, c // (s * s), h * s, w * s)


@register("space_to_depth")
def space_to_depth(op: Any, x: Any, block_size: Any) -> np.ndarray:
    x = np.asarray(x)
    b, c, h, w = x.shape
    s = int(scalar(block_size))
    y = x.reshape(b, c, h // s, s, w // s, s).transpose(0, 3, 5, 1, 2, 4)
    return y.reshape(b, c * s * s, h // s, w // s)
