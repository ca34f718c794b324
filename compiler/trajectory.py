"""The text-to-image denoising loop over component runners (torch reference or any compiled target).

One loop serves verification (it records the real inputs each component sees), calibration and
`fusionc generate`: tokenizer -> text encoder(s) -> N scheduler steps with classifier-free guidance ->
VAE decoder. Runners take and return numpy dicts under the canonical names (targets/base.py).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from fusionc.core.numerics import Feeds
import torch

Runner = Callable[[Feeds], Feeds]


@dataclass
class Conditioning:
    """What the UNet is conditioned on, stacked [uncond, cond] when guidance is on."""

    encoder_hidden_states: np.ndarray
    text_embeds: np.ndarray | None = None
    text_feeds: dict[str, list[Feeds]] = field(default_factory=dict)


def load_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder))


def load_scheduler(folder: Path | None, name: str = "dpmsolver++"):
    """The checkpoint's scheduler config, run as DPM-Solver++ (default) or the scheduler it names."""
    from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler, PNDMScheduler

    config = DPMSolverMultistepScheduler.load_config(str(folder)) if folder else {}
    if name == "dpmsolver++":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++")
    return {"euler": EulerDiscreteScheduler, "pndm": PNDMScheduler}[name].from_config(config)


def tokenize(tokenizer, prompts: list[str], length: int) -> np.ndarray:
    """input_ids int32 [len(prompts), length], truncated like CLIP (with a warning when cut)."""
    ids = []
    for prompt in prompts:
        full = tokenizer(prompt, truncation=False).input_ids
        if len(full) > length:
            warnings.warn(f"prompt truncated to {length} tokens: '{prompt[:40]}...'", stacklevel=2)
        ids.append(tokenizer(prompt, padding="max_length", max_length=length, truncation=True).input_ids)
    return np.asarray(ids, dtype=np.int32)


def encode_prompt(runners: dict[str, Runner], tokenizers: dict, prompt: str, guidance: bool, length: int,
                  sdxl: bool) -> Conditioning:
    prompts = ["", prompt] if guidance else [prompt]
    hidden, pooled, text_feeds = [], None, {}
    for name, tok_name in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
        if name not in runners:
            continue
        feeds = {"input_ids": tokenize(tokenizers.get(tok_name) or tokenizers["tokenizer"], prompts, length)}
        text_feeds[name] = [feeds]
        out = runners[name](feeds)
        hidden.append(out["hidden_states_penultimate"] if sdxl else out["last_hidden_state"])
        pooled = out.get("text_embeds", out.get("pooler_output"))
    return Conditioning(np.concatenate(hidden, axis=-1).astype(np.float32), pooled if sdxl else None, text_feeds)


def denoise(runners: dict[str, Runner], tokenizers: dict, scheduler, prompt: str, *, steps: int = 8,
            seed: int = 0, guidance: float = 7.5, latent_shape: tuple[int, int, int], scaling_factor: float,
            text_length: int, sdxl: bool = False, image_size: tuple[int, int] | None = None,
            record: Callable[[str, Feeds], None] | None = None, decode: bool = True,
            control_image: np.ndarray | None = None, control_scale: float = 1.0) -> np.ndarray:
    """Run the loop; returns the decoded image float32 [1, 3, H, W] in [-1, 1] (the final latents when
    `decode` is False). `record(name, feeds)` sees every component call's inputs (verification, calibration).
    With a `controlnet` runner, `control_image` [1, 3, H, W] in [0, 1] conditions every step (its residuals,
    times `control_scale`, feed the UNet: fusionc.controlnet)."""
    record = record or (lambda name, feeds: None)
    use_cfg = guidance > 1.0
    cond = encode_prompt(runners, tokenizers, prompt, use_cfg, text_length, sdxl)
    for name, feeds_list in cond.text_feeds.items():
        for feeds in feeds_list:
            record(name, feeds)
    rng = np.random.default_rng(seed)
    latents = rng.standard_normal((1, *latent_shape)).astype(np.float32)
    scheduler.set_timesteps(steps)
    latents = latents * float(scheduler.init_noise_sigma)
    batch = 2 if use_cfg else 1
    extra: Feeds = {}
    if sdxl:
        h, w = image_size or (latent_shape[1] * 8, latent_shape[2] * 8)
        extra = {"text_embeds": cond.text_embeds.astype(np.float32),
                 "time_ids": np.tile(np.array([[h, w, 0, 0, h, w]], np.float32), (batch, 1))}
    for t in scheduler.timesteps:
        model_in = np.concatenate([latents] * batch)
        model_in = scheduler.scale_model_input(torch.from_numpy(model_in), t).numpy()
        feeds = {"sample": model_in.astype(np.float32), "timestep": np.array([float(t)], np.float32),
                 "encoder_hidden_states": cond.encoder_hidden_states, **extra}
        if "controlnet" in runners:
            feeds.update(control_residuals(runners["controlnet"], feeds, control_image, control_scale, record))
        record("unet", feeds)
        noise = runners["unet"](feeds)["out_sample"]
        if use_cfg:
            noise = noise[:1] + guidance * (noise[1:] - noise[:1])
        latents = scheduler.step(torch.from_numpy(noise), t, torch.from_numpy(latents)).prev_sample.numpy()
    if not decode:
        return latents
    feeds = {"latent_sample": (latents / scaling_factor).astype(np.float32)}
    record("vae_decoder", feeds)
    image = runners["vae_decoder"](feeds)["sample"]
    record("vae_encoder", {"sample": np.clip(image, -1, 1).astype(np.float32)})
    return image


def control_residuals(controlnet: Runner, unet_feeds: Feeds, control_image: np.ndarray | None, scale: float,
                      record: Callable[[str, Feeds], None]) -> Feeds:
    """One ControlNet call on the step's UNet inputs and the control image (repeated over the guidance batch):
    the additional_residual_* the UNet adds, scaled as diffusers' controlnet_conditioning_scale does."""
    if control_image is None:
        raise ValueError("a ControlNet pipeline needs a control image")
    batch = unet_feeds["sample"].shape[0]
    feeds = {**unet_feeds, "controlnet_cond": np.repeat(control_image.astype(np.float32), batch, axis=0)}
    record("controlnet", feeds)
    residuals = controlnet(feeds)
    return {k: (v * np.float32(scale)).astype(np.float32) if scale != 1.0 else v for k, v in residuals.items()}


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[1, 3, H, W] in [-1, 1] -> uint8 HxWx3."""
    return (np.clip(image[0].transpose(1, 2, 0) / 2 + 0.5, 0, 1) * 255).round().astype(np.uint8)
