"""Look-up-table (palettization) numerics in numpy: weighted 1-D k-means over fp16 values, index packing.

Why our own instead of coremltools' `palettize_weights` or scikit-learn: weights ship in fp16, so a tensor
has at most 65,536 distinct values. We histogram the fp16 bit patterns (one `bincount`), run weighted 1-D
Lloyd iterations on the distinct values only (prefix sums make one iteration O(K log U)), and assign every
weight with one 65,536-entry table look-up. That is one pass over the weights instead of k-means over
millions of points, and it is deterministic (a recipe re-applies to the same bytes).

Packing follows Core ML's LUT layout: a little-endian bit stream, the first index in the least significant
bits of the first byte. Every supported width (1, 2, 3, 4, 6, 8) divides 24, so 3 bytes always hold a whole
number of indices; packed buffers are padded to a multiple of 3 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NBITS = (1, 2, 3, 4, 6, 8)
_ALL_FP16 = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float64)


@dataclass
class Palette:
    """A palettized tensor: `lut[g][indices]` per group g of `group_size` channels along `axis`."""

    indices: np.ndarray  # uint8, the tensor's shape
    lut: np.ndarray  # float16 [G, 2**nbits]
    nbits: int
    axis: int  # the grouped (output channel) axis
    group_size: int  # channels per LUT along `axis`; == shape[axis] for one LUT per tensor
    # mean((w - dense)^2) / mean(w^2) against the fp16 weight it was fitted on (`palettize`), from its histograms
    # (no pass over the weight: the float32 weight's own rounding to fp16, ~1e-7, is left out); None for a palette
    # read back from a graph
    relative_error: float | None = None

    @property
    def groups(self) -> int:
        return self.lut.shape[0]

    def dense(self, dtype: np.dtype = np.float32) -> np.ndarray:
        """The decompressed tensor."""
        moved = np.moveaxis(self.indices, self.axis, 0)
        grouped = moved.reshape(self.groups, -1)
        out = np.take_along_axis(self.lut.astype(dtype), grouped.astype(np.intp), axis=1)
        return np.moveaxis(out.reshape(moved.shape), 0, self.axis)


def fp16_bits(weight: np.ndarray) -> np.ndarray:
    """The fp16 bit patterns (uint16) of a float tensor, rounding to nearest (torch converts ~2x faster)."""
    if weight.dtype == np.float16:
        return weight.view(np.uint16)
    if weight.dtype == np.float32 and weight.size >= _CHUNK:
        import torch

        return torch.from_numpy(np.ascontiguousarray(weight)).half().numpy().view(np.uint16)
    return weight.astype(np.float16).view(np.uint16)


def kmeans_1d(values: np.ndarray, counts: np.ndarray, k: int, max_iter: int = 300) -> np.ndarray:
    """Weighted 1-D k-means (Lloyd) on sorted distinct `values`; returns k sorted centroids (float64).

    Three initialisations run to convergence and the lowest weighted squared error wins: weighted quantiles,
    an even split of the range, and quantiles of density^(1/3) (the high-rate optimum of Panter and Dite,
    which Lloyd alone reaches only slowly at 6-8 bits on bell-shaped weights). With at most k distinct values
    the result is exact.
    """
    if len(values) <= k:
        return np.concatenate([values, np.full(k - len(values), values[-1] if len(values) else 0.0)])
    w = counts.astype(np.float64)
    cw, cwx, cwxx = (np.concatenate([[0.0], np.cumsum(a)]) for a in (w, w * values, w * values * values))

    def cluster_sums(c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        cuts = np.concatenate([[0], np.searchsorted(values, (c[:-1] + c[1:]) * 0.5), [len(values)]])
        return cuts, *(a[cuts[1:]] - a[cuts[:-1]] for a in (cw, cwx, cwxx))

    def lloyd(centroids: np.ndarray) -> tuple[np.ndarray, float]:
        c = np.sort(centroids)
        for _ in range(max_iter):
            _, weight, total, _ = cluster_sums(c)
            new = np.where(weight > 0, total / np.maximum(weight, 1e-300), c)
            empty = weight <= 0
            if empty.any():  # move empty clusters onto the values with the largest error
                new[empty] = _spread(values, new, int(empty.sum()))
                new = np.sort(new)
            if np.array_equal(new, c):
                break
            c = new
        _, sw, sx, sxx = cluster_sums(c)
        return c, float(np.sum(sxx - 2 * c * sx + c * c * sw))

    def merge_split(c: np.ndarray, sse: float, tries: int = 24) -> tuple[np.ndarray, float]:
        """Escape Lloyd's local optima: merge the cheapest adjacent pair, split the costliest cluster at its
        mean, re-run Lloyd; keep it while the error drops."""
        for _ in range(tries):
            cuts, sw, sx, sxx = cluster_sums(c)
            own = sxx - sx * sx / np.maximum(sw, 1e-300)
            mw, mx, mxx = sw[:-1] + sw[1:], sx[:-1] + sx[1:], sxx[:-1] + sxx[1:]
            merge_cost = mxx - mx * mx / np.maximum(mw, 1e-300) - own[:-1] - own[1:]
            j = int(np.argmax(own))
            lo, hi = cuts[j], cuts[j + 1]
            mid = lo + int(np.searchsorted(values[lo:hi], c[j]))
            if hi - lo < 2 or mid in (lo, hi):
                break
            i = int(np.argmin(np.where((np.arange(len(c) - 1) == j) | (np.arange(len(c) - 1) == j - 1),
                                       np.inf, merge_cost)))
            halves = [(cwx[mid] - cwx[lo]) / max(cw[mid] - cw[lo], 1e-300),
                      (cwx[hi] - cwx[mid]) / max(cw[hi] - cw[mid], 1e-300)]
            merged = mx[i] / max(mw[i], 1e-300)
            trial = np.concatenate([np.delete(c, [i, i + 1, j]), [merged], halves])
            trial_c, trial_sse = lloyd(trial)
            if trial_sse >= sse * (1 - 1e-9):
                break
            c, sse = trial_c, trial_sse
        return c, sse

    quantiles = (np.arange(k) + 0.5) / k * cw[-1]
    by_mass = values[np.minimum(np.searchsorted(cw[1:], quantiles), len(values) - 1)]
    by_range = np.linspace(values[0], values[-1], k)
    gaps = np.diff(values)
    width = np.concatenate([[gaps[0]], (gaps[:-1] + gaps[1:]) * 0.5, [gaps[-1]]])
    companded = np.cumsum(np.cbrt(w / width) * width)
    targets = (np.arange(k) + 0.5) / k * companded[-1]
    by_density = values[np.minimum(np.searchsorted(companded, targets), len(values) - 1)]
    best = min((lloyd(init) for init in (by_density, by_mass, by_range)), key=lambda r: r[1])
    return merge_split(*best)[0]


def _spread(values: np.ndarray, centroids: np.ndarray, n: int) -> np.ndarray:
    """n new centroid positions: the distinct values farthest from every current centroid."""
    c = np.sort(centroids)
    pos = np.clip(np.searchsorted(c, values), 1, len(c) - 1)
    dist = np.minimum(np.abs(values - c[pos - 1]), np.abs(values - c[pos]))
    return values[np.argsort(dist)[-n:]]


_CHUNK = 1 << 18  # elements per bincount call: its intp copy of the chunk stays in cache


def histogram(bits: np.ndarray) -> np.ndarray:
    """Counts of each of the 65,536 fp16 bit patterns (int64 [65536])."""
    flat = bits.reshape(-1)
    hist = np.zeros(65536, np.int64)
    for start in range(0, flat.size, _CHUNK):
        hist += np.bincount(flat[start:start + _CHUNK], minlength=65536)
    return hist


def distinct(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bit patterns, values, counts) of the present fp16 values, sorted by value."""
    present = np.flatnonzero(hist)
    vals = _ALL_FP16[present]
    if not np.all(np.isfinite(vals)):
        raise ValueError("weights hold inf or NaN")
    order = np.argsort(vals, kind="stable")
    present = present[order]
    return present, vals[order], hist[present]


def fit(vals: np.ndarray, counts: np.ndarray, nbits: int) -> tuple[np.ndarray, np.ndarray]:
    """fp16 LUT (sorted, 2**nbits entries) for sorted distinct values, and each value's nearest entry."""
    lut64 = np.sort(kmeans_1d(vals, counts, 1 << nbits).astype(np.float16).astype(np.float64))
    # a value exactly on a midpoint goes to the lower entry
    nearest = np.searchsorted((lut64[:-1] + lut64[1:]) * 0.5, vals, side="left")
    return lut64.astype(np.float16), nearest


def _group_palette(bits: np.ndarray, nbits: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """LUT (float16 [2**nbits]), uint8 indices, and the squared error and energy (sums over the fp16 values) of
    one group."""
    present, vals, counts = distinct(histogram(bits))
    lut, nearest = fit(vals, counts, nbits)
    sse = float(np.sum(counts * (vals - lut.astype(np.float64)[nearest]) ** 2))
    energy = float(np.sum(counts * vals * vals))
    table = np.zeros(65536, dtype=np.uint8)
    table[present] = nearest.astype(np.uint8)
    out = np.empty(bits.size, np.uint8)
    flat = bits.reshape(-1)
    for start in range(0, flat.size, _CHUNK):
        np.take(table, flat[start:start + _CHUNK], out=out[start:start + _CHUNK])
    return lut, out.reshape(bits.shape), sse, energy


def _groups(bits: np.ndarray, axis: int, group_size: int | None) -> tuple[np.ndarray, int]:
    """The fp16 bit patterns as [groups, -1] (grouped axis first) and the channels per group."""
    channels = bits.shape[axis] if bits.ndim else 1
    group = channels if not group_size or group_size >= channels else group_size
    if channels % group:
        raise ValueError(f"group size {group} does not divide {channels} channels")
    if group == channels:
        return bits.reshape(1, -1), group
    return np.moveaxis(bits, axis, 0).reshape(channels // group, -1), group


def palette_errors(weight: np.ndarray, nbits: tuple[int, ...], axis: int = 0,
                   group_size: int | None = None) -> dict[int, float]:
    """Relative squared error (vs the weight) of palettizing at each width in `nbits`, from histograms only.

    Key 16 is the error of plain fp16 storage. Costs one histogram per group, no dense decompression.
    """
    w = np.asarray(weight)
    bits = fp16_bits(w)
    energy = float(np.sum(np.square(w, dtype=np.float64)))
    rounding = 0.0 if w.dtype == np.float16 else float(
        np.sum(np.square(w.astype(np.float64) - bits.view(np.float16).astype(np.float64))))
    grouped, _ = _groups(bits, axis, group_size)
    errors = dict.fromkeys(nbits, rounding)
    for g in range(grouped.shape[0]):
        _, vals, counts = distinct(histogram(grouped[g]))
        for n in nbits:
            lut, nearest = fit(vals, counts, n)
            errors[n] += float(np.sum(counts * (vals - lut.astype(np.float64)[nearest]) ** 2))
    errors[16] = rounding
    return {n: e / max(energy, 1e-300) for n, e in errors.items()}


def palettize(weight: np.ndarray, nbits: int, axis: int = 0, group_size: int | None = None) -> Palette:
    """k-means palettization of `weight` with one LUT per `group_size` channels along `axis` (None: per tensor)."""
    if nbits not in NBITS:
        raise ValueError(f"nbits must be one of {NBITS}, got {nbits}")
    bits = fp16_bits(np.asarray(weight))
    grouped, group = _groups(bits, axis, group_size)
    if grouped.shape[0] == 1:
        lut, idx, sse, energy = _group_palette(bits, nbits)
        return Palette(idx, lut[None], nbits, axis, group, sse / max(energy, 1e-300))
    luts = np.empty((grouped.shape[0], 1 << nbits), np.float16)
    out = np.empty(grouped.shape, np.uint8)
    sse = energy = 0.0
    for g in range(grouped.shape[0]):
        luts[g], out[g], group_sse, group_energy = _group_palette(grouped[g], nbits)
        sse, energy = sse + group_sse, energy + group_energy
    moved_shape = (bits.shape[axis],) + tuple(d for i, d in enumerate(bits.shape) if i != axis)
    indices = np.moveaxis(out.reshape(moved_shape), 0, axis)
    return Palette(np.ascontiguousarray(indices), luts, nbits, axis, group, sse / max(energy, 1e-300))


def pack(indices: np.ndarray, nbits: int) -> np.ndarray:
    """LSB-first bit stream of the flattened indices, padded to a multiple of 3 bytes (uint8 [M])."""
    per_word = 24 // nbits
    flat = indices.ravel()
    pad = (-flat.size) % per_word
    if pad:
        flat = np.concatenate([flat, np.zeros(pad, np.uint8)])
    if nbits == 8:
        return np.ascontiguousarray(flat)
    cols = flat.reshape(-1, per_word)
    word = np.zeros(cols.shape[0], np.uint32)
    for j in range(per_word):
        word |= cols[:, j].astype(np.uint32) << np.uint32(nbits * j)
    return np.ascontiguousarray(word.view(np.uint8).reshape(-1, 4)[:, :3]).ravel()


def packed_indices(indices: np.ndarray, nbits: int) -> np.ndarray:
    """`pack` without the padding: ceil(count * nbits / 8) bytes, Core ML's iOS16 constexpr_lut_to_dense indices
    (the bytes coremltools' own packer writes, which spreads every index over 8 bytes on the way: 7x slower)."""
    if indices.size and int(indices.max()) >> nbits:
        raise ValueError(f"an index exceeds {nbits} bits: {int(indices.max())}")
    return pack(indices, nbits)[:-(-indices.size * nbits // 8)]


def unpack(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """Inverse of `pack`: the first `count` indices (uint8). The stream is read 3 bytes (a whole number of indices
    for every width) at a time; a stream cut inside its last word (Core ML's: ceil(count * nbits / 8) bytes) is
    zero-padded inside the widening copy every word needs anyway, not copied first."""
    if nbits == 8:
        return packed[:count].copy()
    per_word = 24 // nbits
    b = np.zeros((-(-packed.size // 3), 3), np.uint32)
    b.reshape(-1)[: packed.size] = packed.reshape(-1)
    word = b[:, 0] | (b[:, 1] << np.uint32(8)) | (b[:, 2] << np.uint32(16))
    shifts = (np.arange(per_word, dtype=np.uint32) * np.uint32(nbits))[None, :]
    out = ((word[:, None] >> shifts) & np.uint32((1 << nbits) - 1)).astype(np.uint8)
    return out.ravel()[:count]


def relative_mse(weight: np.ndarray, approx: np.ndarray) -> float:
    """mean((w - w')^2) / mean(w^2), in float64."""
    w = np.asarray(weight, np.float64)
    return float(np.mean((w - approx) ** 2) / max(np.mean(w * w), 1e-300))
