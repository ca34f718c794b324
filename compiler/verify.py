"""Verification: every compiled component against the fp32 torch module, PSNR per component.

Inputs are the ones each component sees along real denoising trajectories (the verification set of
fusionc.inputs by default: prompts, seeds and timesteps no quantizer or search saw), produced by the torch
reference itself.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Callable

import numpy as np

from fusionc.checkpoint import Checkpoint
from fusionc.controlnet import outline_image
from fusionc.export import component_spec, image_size, latent_scale, text_length
from fusionc.core.options import CompileOptions
from fusionc.core.numerics import Feeds, psnr
from fusionc.trajectory import denoise, load_scheduler, load_tokenizer

def reference_runners(checkpoint: Checkpoint, options: CompileOptions) -> dict[str, Callable[[Feeds], Feeds]]:
    return {name: component_spec(checkpoint, name, options).reference for name in checkpoint.component_names()}


def trajectory_steps(options: CompileOptions) -> int:
    """Steps of the verification trajectory: --verify-steps, or the generation length when a mixed-bit search
    (`--palettize auto:DB`) chooses its recipe (fusionc.inputs.role_steps)."""
    from fusionc.inputs import VERIFICATION, role_steps

    return role_steps(options, VERIFICATION)


def trajectory_samples(checkpoint: Checkpoint, options: CompileOptions, components: list[str] | None = None,
                       prompts: tuple[str, ...] | None = None, seeds: tuple[int, ...] | None = None,
                       steps: int | None = None) -> tuple[dict[str, list[Feeds]], dict[str, list[Feeds]]]:
    """(inputs, torch outputs) of every component call along denoising runs (guidance on), one per prompt
    with its seed. Defaults: the verification set of `options` (fusionc.inputs). Components the loop does not
    call (vae_encoder, or every component of a checkpoint that is not a full pipeline) get inputs only: the
    component's example inputs drawn from `seeds[0]`."""
    if prompts is None:
        from fusionc.inputs import VERIFICATION, role_spec

        spec = role_spec(options, VERIFICATION)
        prompts, seeds, steps = spec.prompts, spec.seeds, spec.steps
    seeds = tuple(seeds) if seeds is not None else tuple(options.seed + i for i in range(len(prompts)))
    steps = steps if steps is not None else trajectory_steps(options)
    feeds: dict[str, list[Feeds]] = defaultdict(list)
    outputs: dict[str, list[Feeds]] = defaultdict(list)
    names = components or checkpoint.component_names()
    tokenizers = {k: load_tokenizer(v) for k, v in checkpoint.tokenizer_dirs.items()}
    if "unet" not in names or "vae" not in checkpoint.models or not tokenizers:
        example_options = replace(options, seed=seeds[0]) if seeds else options
        for name in names:
            spec = component_spec(checkpoint, name, example_options)
            feeds[name].append({k: v.numpy() for k, v in spec.example.items()})
        return dict(feeds), {}

    def recording(name: str, run: Callable[[Feeds], Feeds]) -> Callable[[Feeds], Feeds]:
        def call(f: Feeds) -> Feeds:
            out = run(f)
            if name in names:
                feeds[name].append(f)
                outputs[name].append(out)
            return out
        return call

    runners = {name: recording(name, run) for name, run in reference_runners(checkpoint, options).items()}
    height, width = image_size(checkpoint, options)
    scale = latent_scale(checkpoint)
    unet = checkpoint.models["unet"]
    vae = checkpoint.models["vae"]
    for prompt, seed in zip(prompts, seeds):
        denoise(runners, tokenizers, load_scheduler(checkpoint.scheduler_dir), prompt, steps=steps,
                seed=seed, guidance=7.5, latent_shape=(unet.config.in_channels, height // scale, width // scale),
                scaling_factor=float(getattr(vae.config, "scaling_factor", 1.0) or 1.0),
                text_length=text_length(checkpoint), sdxl=checkpoint.is_sdxl, image_size=(height, width),
                record=lambda name, f: feeds[name].append(f) if name == "vae_encoder" and name in names else None,
                decode=bool({"vae_decoder", "vae_encoder"} & set(names)),
                control_image=outline_image(prompt, height, width) if checkpoint.has_controlnet else None)
    return dict(feeds), dict(outputs)


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
