"""The compile's input sets (fusionc.inputs) from the --cache: torch runs each trajectory once per cache.

Each role's set (calibration, selection, verification) is stored under its own key (fusionc.cache.inputs_key:
checkpoint, components, image size, prompts, seeds, steps), so variants of a fleet that need different roles
(an onnx build: verification; a QNN build: all three) share the ones they have in common. When the denoiser is
built the set records every component of the checkpoint (the denoising loop runs either way and each call is
the same call), so variants that build different components share it too; the caller gets its own components.
Arrays go through numpy's .npz (no pickle); the values a cache hit returns are the values a miss returns.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fusionc import cache as cache_keys
from fusionc.cache import ComponentCache
from fusionc.checkpoint import Checkpoint
from fusionc.core.numerics import Feeds
from fusionc.core.options import CompileOptions
from fusionc.core.progress import stage
from fusionc.export import image_size
from fusionc.inputs import InputSet, collect, role_spec, runs_loop


def recorded_components(checkpoint: Checkpoint, names: list[str]) -> list[str]:
    """The components a cached set records: all of them when the denoiser (a UNet or a transformer) is built (the
    loop runs either way), else exactly `names` (their inputs are examples, not a loop)."""
    return checkpoint.component_names() if runs_loop(checkpoint, names) else list(names)


def cached_input_sets(checkpoint: Checkpoint, options: CompileOptions, names: list[str], roles: tuple[str, ...],
                      cache: ComponentCache | None, timings: dict[str, float]) -> dict[str, InputSet]:
    """fusionc.inputs.input_sets, each role from the cache when it holds it (else run in torch and stored)."""
    if cache is None:
        with stage("reference trajectories (torch)", timings):
            return collect(checkpoint, options, names, {role: role_spec(options, role) for role in roles})
    every = recorded_components(checkpoint, names)
    image = image_size(checkpoint, options)
    sets, computed = {}, 0
    for role in roles:
        spec = role_spec(options, role)
        key = cache_keys.inputs_key(checkpoint.sha256, every, image, spec, options)
        arrays = cache.load_arrays(key)
        if arrays is None:
            with stage(f"reference trajectories (torch, {role})", timings):
                made = collect(checkpoint, options, every, {role: spec})[role]
            arrays = pack(made.feeds, made.outputs)
            cache.store_arrays(key, arrays, {"stage": "inputs", "role": role, "components": every})
            computed += 1
        else:
            timings[f"reference trajectories ({role}, from the cache)"] = 0.0
        feeds, outputs = unpack(arrays)  # the very arrays a cache hit gives
        sets[role] = InputSet(spec, {n: v for n, v in feeds.items() if n in names},
                              {n: v for n, v in outputs.items() if n in names}, examples=not runs_loop(checkpoint, every))
    return sets


def pack(feeds: dict[str, list[Feeds]], outputs: dict[str, list[Feeds]]) -> dict[str, np.ndarray]:
    arrays = {}
    for kind, table in (("feeds", feeds), ("outputs", outputs)):
        for name, items in table.items():
            for i, item in enumerate(items):
                for key, value in item.items():
                    arrays[f"{kind}|{name}|{i:05d}|{key}"] = np.asarray(value)
    return arrays


def unpack(arrays: dict[str, np.ndarray]) -> tuple[dict[str, list[Feeds]], dict[str, list[Feeds]]]:
    tables: dict[str, dict[str, list[Feeds]]] = {"feeds": {}, "outputs": {}}
    for path, value in arrays.items():
        kind, name, index, key = path.split("|", 3)
        items = tables[kind].setdefault(name, [])
        while len(items) <= int(index):
            items.append({})
        items[int(index)][key] = value
    return tables["feeds"], tables["outputs"]


def missing_sets(checkpoint: Checkpoint, options: CompileOptions, names: list[str], roles: tuple[str, ...],
                 cache: ComponentCache) -> list[Any]:
    """The roles whose set is not in the cache yet (a fleet's shared stage computes them)."""
    every = recorded_components(checkpoint, names)
    image = image_size(checkpoint, options)
    return [role for role in roles if cache.load_arrays(
        cache_keys.inputs_key(checkpoint.sha256, every, image, role_spec(options, role), options)) is None]
