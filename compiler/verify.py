"""Verification: every compiled component against the fp32 torch module, PSNR per component.

Inputs are the ones each component sees along real denoising trajectories (the verification set of
fusionc.inputs by default: prompts, seeds and timesteps no quantizer or search saw), produced by the torch
reference itself.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

import numpy as np

from fusionc.core.numerics import Feeds, psnr
from fusionc.inputs import reference_runners, trajectory_samples, trajectory_steps  # noqa: F401  (their old home)


def reference_outputs(reference: Callable[[Feeds], Feeds], feeds_list: list[Feeds]) -> list[Feeds]:
    """The fp32 torch outputs for each feed (small: computed once, before the torch module is freed)."""
    return [reference(feeds) for feeds in feeds_list]


def compare(runner: Callable[[Feeds], Feeds], expected: list[Feeds], feeds_list: list[Feeds]) -> dict[str, float]:
    """PSNR per output over all feeds (outputs concatenated), and `psnr_db`: the worst output."""
    got: dict[str, list[np.ndarray]] = defaultdict(list)
    want: dict[str, list[np.ndarray]] = defaultdict(list)
    for feeds, ref in zip(feeds_list, expected):
        out = runner(feeds)
        for name, value in ref.items():
            want[name].append(value.ravel())
            got[name].append(np.asarray(out[name], np.float32).ravel())
    result = {name: round(psnr(np.concatenate(want[name]), np.concatenate(got[name])), 2) for name in want}
    result["psnr_db"] = min(result.values())
    return result
