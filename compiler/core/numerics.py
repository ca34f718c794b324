"""The one PSNR of fusionc and the feed type every component speaks (canonical input name -> array)."""

from __future__ import annotations

import math

import numpy as np

Feeds = dict[str, np.ndarray]
PSNR_CAP_DB = 200.0  # reported for an exact match (RMSE 0), so manifests stay finite JSON


def psnr_from_mse(peak: float, mse: float) -> float:
    """20*log10(peak / sqrt(mse)) in dB, capped at PSNR_CAP_DB."""
    return PSNR_CAP_DB if mse <= 0 else min(PSNR_CAP_DB, 20 * math.log10((peak or 1.0) / math.sqrt(mse)))


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """20*log10(max|ref| / RMSE) in dB; NaN or Inf in `test` gives -inf; shapes must hold the same elements."""
    reference = np.asarray(reference, np.float64)
    test = np.asarray(test, np.float64)
    if reference.size != test.size:
        raise ValueError(f"shape mismatch {reference.shape} vs {test.shape}")
    test = test.reshape(reference.shape)
    if not np.isfinite(test).all():
        return -math.inf
    mse = float(np.mean((reference - test) ** 2))
    return psnr_from_mse(float(np.max(np.abs(reference))), mse)


def outputs_psnr(reference: list[Feeds], test: list[Feeds]) -> float:
    """The worst output's PSNR over all samples (each output concatenated over samples), like `fusionc verify`."""
    return min(psnr(np.concatenate([r[k].ravel() for r in reference]), np.concatenate([t[k].ravel() for t in test]))
               for k in reference[0])
