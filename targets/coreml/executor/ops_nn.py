"""Executor ops: conv (im2col on BLAS, row-blocked to bound memory), matmul/linear, einsum, pooling,
upsampling and scaled_dot_product_attention. Weights are widened from fp16 per call, not cached in fp32,
so a 1.7 GB fp16 UNet stays 1.7 GB while it runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from fusionc.targets.coreml.executor.engine import register
from fusionc.targets.coreml.executor.ops_math import f32, scalar, softmax

_IM2COL_BUDGET = 32 << 20  # elements of one im2col block (128 MB in float32)


def _ints(a: Any, n: int, default: int) -> list[int]:
    if a is None:
        return [default] * n
    return [int(v) for v in np.asarray(a).reshape(-1)]


def _same_pads(size: list[int], kernel: list[int], strides: list[int], dilations: list[int], lower: bool) -> list[int]:
    pads = []
    for s, k, st, d in zip(size, kernel, strides, dilations):
        out = -(-s // st)
        total = max((out - 1) * st + (k - 1) * d + 1 - s, 0)
        small, big = total // 2, total - total // 2
        pads += [big, small] if lower else [small, big]
    return pads


def _pads(pad_type: Any, pad: Any, size: list[int], kernel: list[int], strides: list[int],
          dilations: list[int]) -> list[int]:
    kind = str(scalar(pad_type, "valid"))
    n = len(size)
    if kind == "custom":
        return _ints(pad, 2 * n, 0)
    if kind in ("same", "same_lower"):
        return _same_pads(size, kernel, strides, dilations, kind == "same_lower")
    return [0] * (2 * n)


def conv2d_nchw(x: np.ndarray, w: np.ndarray, strides: list[int], dilations: list[int], pads: list[int],
                groups: int) -> np.ndarray:
    """float32 conv2d, x [B, C, H, W], w [O, C/groups, kh, kw], pads [top, bottom, left, right]."""
    b, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    sh, sw = strides
    dh, dw = dilations
    if kh == kw == 1 and sh == sw == 1 and not any(pads) and groups == 1:
        y = np.matmul(w.reshape(o, c), x.reshape(b, c, h * wd))
        return y.reshape(b, o, h, wd)
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[1]), (pads[2], pads[3]))) if any(pads) else x
    xp = np.ascontiguousarray(xp)
    hp, wp = xp.shape[2:]
    ho = (hp - (kh - 1) * dh - 1) // sh + 1
    wo = (wp - (kw - 1) * dw - 1) // sw + 1
    s = xp.strides
    out = np.empty((b, o, ho, wo), np.float32)
    og = o // groups
    rows_per_block = max(1, _IM2COL_BUDGET // max(1, wo * cg * kh * kw * b))
    for g in range(groups):
        wg = w[g * og:(g + 1) * og].reshape(og, cg * kh * kw)
        xg = xp[:, g * cg:(g + 1) * cg]
        for r0 in range(0, ho, rows_per_block):
            r1 = min(ho, r0 + rows_per_block)
            view = as_strided(xg[:, :, r0 * sh:], shape=(b, r1 - r0, wo, cg, kh, kw),
                              strides=(s[0], s[2] * sh, s[3] * sw, s[1], s[2] * dh, s[3] * dw), writeable=False)
            cols = view.reshape(b * (r1 - r0) * wo, cg * kh * kw)
            y = cols @ wg.T  # [b*rows*wo, og]
            out[:, g * og:(g + 1) * og, r0:r1, :] = y.reshape(b, r1 - r0, wo, og).transpose(0, 3, 1, 2)
    return out


@register("conv")
def conv(op: Any, x: Any, weight: Any, bias: Any = None, strides: Any = None, pad_type: Any = "valid",
         pad: Any = None, dilations: Any = None, groups: Any = 1) -> np.ndarray:
    x, w = f32(x), f32(weight)
    spatial = x.ndim - 2
    if spatial == 1:
        x, w = x[:, :, None, :], w[:, :, None, :]
    elif spatial != 2:
        raise NotImplementedError("conv3d")
    st = _ints(strides, spatial, 1)
    dl = _ints(dilations, spatial, 1)
    if spatial == 1:
        st, dl = [1] + st, [1] + dl
    pads = _pads(pad_type, pad, list(x.shape[2:]), list(w.shape[2:]), st, dl)
    if spatial == 1:
        pads = [0, 0] + pads
    y = conv2d_nchw(x, w, st, dl, pads, int(scalar(groups, 1)))
    if bias is not None:
        y += f32(bias).reshape(1, -1, 1, 1)
    return y[:, :, 0, :] if spatial == 1 else y


@register("conv_transpose")
def conv_transpose(op: Any, x: Any, weight: Any, bias: Any = None, strides: Any = None, pad_type: Any = "valid",
                   pad: Any = None, dilations: Any = None, groups: Any = 1, output_shape: Any = None) -> np.ndarray:
    """Transposed conv as a conv over the zero-upsampled input with the flipped, transposed kernel."""
    x, w = f32(x), f32(weight)  # w [C_in, C_out/groups, kh, kw]
    if x.ndim != 4:
        raise NotImplementedError("conv_transpose other than 2-D")
    st, dl = _ints(strides, 2, 1), _ints(dilations, 2, 1)
    g = int(scalar(groups, 1))
    b, c, h, wd = x.shape
    kh, kw = w.shape[2:]
    up = np.zeros((b, c, (h - 1) * st[0] + 1, (wd - 1) * st[1] + 1), np.float32)
    up[:, :, ::st[0], ::st[1]] = x
    cin_g, cout_g = c // g, w.shape[1]
    wt = w.reshape(g, cin_g, cout_g, kh, kw).transpose(0, 2, 1, 3, 4).reshape(g * cout_g, cin_g, kh, kw)[:, :, ::-1, ::-1]
    p = _ints(pad, 4, 0) if str(scalar(pad_type, "valid")) == "custom" else [0, 0, 0, 0]
    full = [(kh - 1) * dl[0] - p[0], (kh - 1) * dl[0] - p[1], (kw - 1) * dl[1] - p[2], (kw - 1) * dl[1] - p[3]]
    y = conv2d_nchw(up, np.ascontiguousarray(wt), [1, 1], dl, full, g)
    if bias is not None:
        y += f32(bias).reshape(1, -1, 1, 1)
    return y


@register("linear")
def linear(op: Any, x: Any, weight: Any, bias: Any = None) -> np.ndarray:
    y = np.matmul(f32(x), f32(weight).T)
    if bias is not None:
        y += f32(bias)
    return y


@register("matmul")
def matmul(op: Any, x: Any, y: Any, transpose_x: Any = False, transpose_y: Any = False) -> np.ndarray:
    a, b = f32(x), f32(y)
    if scalar(transpose_x, False):
        a = np.swapaxes(a, -1, -2)
    if scalar(transpose_y, False):
        b = np.swapaxes(b, -1, -2)
    return np.matmul(a, b)


def einsum2(equation: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two-operand einsum as one batched BLAS matmul: [batch, free_a, k] @ [batch, k, free_b].

    np.einsum falls back to an unblocked C loop when a batch index is shared (Apple's "bchq,bkhc->bkhq"),
    which is ~50x slower than BLAS at SD scale.
    """
    lhs, out = equation.replace(" ", "").split("->")
    ia, ib = lhs.split(",")
    if len(set(ia)) != len(ia) or len(set(ib)) != len(ib):
        return np.einsum(equation, a, b, optimize=True)
    batch = [c for c in out if c in ia and c in ib]
    contract = [c for c in ia if c in ib and c not in out]
    free_a = [c for c in ia if c not in ib]
    free_b = [c for c in ib if c not in ia]
    if any(c not in out for c in free_a + free_b):  # an index summed away inside one operand
        return np.einsum(equation, a, b, optimize=True)
    size = {c: d for c, d in zip(ia, a.shape)} | {c: d for c, d in zip(ib, b.shape)}

    def prod(cs: list[str]) -> int:
        return int(np.prod([size[c] for c in cs])) if cs else 1

    rest = [c for c in out if c not in batch]
    if rest == free_b + free_a:  # the output wants b's free dims first: compute (b^T a^T)
        a, b, ia, ib, free_a, free_b = b, a, ib, ia, free_b, free_a
    am = a.transpose([ia.index(c) for c in batch + free_a + contract]).reshape(prod(batch), prod(free_a), prod(contract))
    bm = b.transpose([ib.index(c) for c in batch + contract + free_b]).reshape(prod(batch), prod(contract), prod(free_b))
    y = np.matmul(am, bm).reshape([size[c] for c in batch + free_a + free_b])
    order = batch + free_a + free_b
    if order == list(out):
        return y
    return np.ascontiguousarray(y.transpose([order.index(c) for c in out]))


@register("einsum")
def einsum(op: Any, values: list[Any], equation: Any) -> np.ndarray:
    arrays = [f32(v) for v in values]
    equation = str(scalar(equation))
    if len(arrays) == 2 and "..." not in equation:
        return einsum2(equation, *arrays)
    return np.einsum(equation, *arrays, optimize=True)


@register("scaled_dot_product_attention")
def sdpa(op: Any, query: Any, key: Any, value: Any, attn_mask: Any = None) -> np.ndarray:
    q, k, v = f32(query), f32(key), f32(value)
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) / np.sqrt(np.float32(q.shape[-1]))
    if attn_mask is not None:
        mask = np.asarray(attn_mask)
        scores = np.where(mask, scores, -np.inf) if mask.dtype == np.bool_ else scores + f32(mask)
    return np.matmul(softmax(None, scores, -1), v)


def _pool(x: np.ndarray, kernel: list[int], strides: list[int], pads: list[int], reduce: str,
          exclude_pad: bool, ceil_mode: bool) -> np.ndarray:
    b, c, h, w = x.shape
    kh, kw = kernel
    fill = -np.inf if reduce == "max" else 0.0
    hp, wp = h + pads[0] + pads[1], w + pads[2] + pads[3]
    ho = (hp - kh + (strides[0] - 1 if ceil_mode else 0)) // strides[0] + 1
    wo = (wp - kw + (strides[1] - 1 if ceil_mode else 0)) // strides[1] + 1
    extra_h = max(0, (ho - 1) * strides[0] + kh - hp)
    extra_w = max(0, (wo - 1) * strides[1] + kw - wp)
    widths = ((0, 0), (0, 0), (pads[0], pads[1] + extra_h), (pads[2], pads[3] + extra_w))
    xp = np.pad(x, widths, constant_values=fill)
    ones = np.pad(np.ones((1, 1, h, w), np.float32), widths)
    s = xp.strides
    win = as_strided(xp, (b, c, ho, wo, kh, kw), (s[0], s[1], s[2] * strides[0], s[3] * strides[1], s[2], s[3]))
    if reduce == "max":
        return win.max(axis=(4, 5))
    total = win.sum(axis=(4, 5))
    if exclude_pad:
        so = ones.strides
        cnt = as_strided(ones, (1, 1, ho, wo, kh, kw), (so[0], so[1], so[2] * strides[0], so[3] * strides[1], so[2], so[3]))
        return total / cnt.sum(axis=(4, 5))
    return total / (kh * kw)


@register("max_pool", "avg_pool")
def pool(op: Any, x: Any, kernel_sizes: Any, strides: Any = None, pad_type: Any = "valid", pad: Any = None,
         ceil_mode: Any = False, exclude_padding_from_average: Any = False) -> np.ndarray:
    x = f32(x)
    kernel = _ints(kernel_sizes, 2, 1)
    st = _ints(strides, 2, 1)
    pads = _pads(pad_type, pad, list(x.shape[2:]), kernel, st, [1, 1])
    return _pool(x, kernel, st, pads, "max" if op.op_type == "max_pool" else "avg",
                 bool(scalar(exclude_padding_from_average, False)), bool(scalar(ceil_mode, False)))


@register("upsample_nearest_neighbor")
def upsample_nearest(op: Any, x: Any, scale_factor_height: Any = 1, scale_factor_width: Any = 1) -> np.ndarray:
    x = np.asarray(x)
    sh, sw = float(scalar(scale_factor_height, 1)), float(scalar(scale_factor_width, 1))
    if sh.is_integer() and sw.is_integer():
        return np.repeat(np.repeat(x, int(sh), axis=-2), int(sw), axis=-1)
    h, w = x.shape[-2:]
    rows = np.minimum((np.arange(int(h * sh)) / sh).astype(np.int64), h - 1)
    cols = np.minimum((np.arange(int(w * sw)) / sw).astype(np.int64), w - 1)
    return x[..., rows, :][..., cols]


def _linear_coords(out_size: int, in_size: int, scale: float, align_corners: bool, half_pixel: bool) -> np.ndarray:
    i = np.arange(out_size, dtype=np.float64)
    if align_corners:
        return i * (in_size - 1) / max(out_size - 1, 1)
    if half_pixel:
        return np.clip((i + 0.5) / scale - 0.5, 0, in_size - 1)
    return np.clip(i / scale, 0, in_size - 1)


def _interp_axis(x: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    lo = np.floor(coords).astype(np.int64)
    hi = np.minimum(lo + 1, x.shape[axis] - 1)
    frac = (coords - lo).astype(np.float32)
    shape = [1] * x.ndim
    shape[axis] = -1
    return np.take(x, lo, axis=axis) * (1 - frac.reshape(shape)) + np.take(x, hi, axis=axis) * frac.reshape(shape)


@register("upsample_bilinear")
def upsample_bilinear(op: Any, x: Any, scale_factor_height: Any = 1, scale_factor_width: Any = 1,
                      align_corners: Any = False, half_pixel_centers: Any = None) -> np.ndarray:
    x = f32(x)
    sh, sw = float(scalar(scale_factor_height, 1)), float(scalar(scale_factor_width, 1))
    ac = bool(scalar(align_corners, False))
    hp = (not ac) if half_pixel_centers is None else bool(scalar(half_pixel_centers))
    h, w = x.shape[-2:]
    y = _interp_axis(x, _linear_coords(int(h * sh), h, sh, ac, hp), x.ndim - 2)
    return _interp_axis(y, _linear_coords(int(w * sw), w, sw, ac, hp), x.ndim - 1)
