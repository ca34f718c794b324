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


def ran_on(runner: Callable[[Feeds], Feeds]) -> dict[str, str]:
    """`{"verified_on": ...}` for a runner that says what it runs on (`runs_on`), else nothing."""
    runs_on = getattr(runner, "runs_on", None)
    return {"verified_on": runs_on} if runs_on else {}


def record(entry: dict, scores: dict[str, float], where: dict[str, str]) -> None:
    """A component's verification in its manifest entry: the worst output's PSNR, each output's, where it ran."""
    entry.pop("verified_on", None)
    entry.update(psnr_db=scores.pop("psnr_db"), psnr_by_output=scores, **where)
