"""The denoising loop of diffusion-transformer pipelines (SD3, PixArt-Sigma) over component runners.

The counterpart of fusionc.trajectory.denoise (the UNet loop), following diffusers' pipelines step by step, so
that verification records the real inputs each component sees and `fusionc generate` runs a build:

- SD3 (StableDiffusion3Pipeline): both CLIP encoders' penultimate states side by side, zero-padded to the T5
  width and followed by the T5 tokens (joint attention runs over CLIP + T5 tokens); pooled projections are
  both CLIPs' projected pooled outputs; flow matching (FlowMatchEulerDiscreteScheduler): the transformer
  predicts a velocity at timestep sigma x 1000, guidance mixes [uncond, cond], and the VAE decodes
  latents / scaling_factor + shift_factor. Without a T5 (text_encoder_3 dropped) its tokens are zeros.
- PixArt (PixArtSigmaPipeline): T5 with its attention mask, the mask also keys the transformer's
  cross-attention; the scheduler's own loop (DPM-Solver++); learned sigma: the first `in_channels` of the
  output are the noise.

Runners take and return numpy dicts under the names of fusionc.dit.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from fusionc.core.numerics import Feeds
from fusionc.dit import T5_COMPONENT, T5_TOKENIZER, DitGeometry
from fusionc.trajectory import Runner, tokenize


def load_any_tokenizer(folder: Path) -> Any:
    """A CLIP tokenizer (vocab.json + merges.txt) or any tokenizer transformers loads offline (T5: tokenizer.json)."""
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        from fusionc.trajectory import load_tokenizer

        return load_tokenizer(folder)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def tokenize_t5(tokenizer: Any, prompts: list[str], length: int) -> Feeds:
    """input_ids and attention_mask int32 [len(prompts), length], padded to `length` (a warning when cut)."""
    ids, masks = [], []
    for prompt in prompts:
        full = tokenizer(prompt, truncation=False).input_ids
        if len(full) > length:
            warnings.warn(f"prompt truncated to {length} T5 tokens: '{prompt[:40]}...'", stacklevel=2)
        out = tokenizer(prompt, padding="max_length", max_length=length, truncation=True)
        ids.append(out.input_ids)
        masks.append(out.attention_mask)
    return {"input_ids": np.asarray(ids, np.int32), "attention_mask": np.asarray(masks, np.int32)}


def encode_prompt_sd3(runners: dict[str, Runner], tokenizers: dict[str, Any], prompts: list[str], geo: DitGeometry,
                      record: Callable[[str, Feeds], None]) -> tuple[np.ndarray, np.ndarray]:
    """(encoder_hidden_states [B, 77 + L, joint_dim], pooled_projections [B, 2 x projection]) as SD3's pipeline."""
    states, pooled = [], []
    for name, tok in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
        feeds = {"input_ids": tokenize(tokenizers[tok], prompts, geo.clip_length)}
        record(name, feeds)
        out = runners[name](feeds)
        states.append(out["hidden_states_penultimate"])
        pooled.append(out["text_embeds"])
    clip = np.concatenate(states, axis=-1).astype(np.float32)
    if "text_encoder_3" in runners:
        # SD3 runs T5 unmasked (a mask of ones is the same computation)
        feeds = tokenize_t5(tokenizers["tokenizer_3"], prompts, geo.t5_length)
        feeds["attention_mask"] = np.ones_like(feeds["attention_mask"])
        record("text_encoder_3", feeds)
        t5 = runners["text_encoder_3"](feeds)["last_hidden_state"].astype(np.float32)
    else:
        t5 = np.zeros((len(prompts), geo.t5_length, geo.joint_dim), np.float32)
    clip = np.pad(clip, ((0, 0), (0, 0), (0, t5.shape[-1] - clip.shape[-1])))
    return np.concatenate([clip, t5], axis=1), np.concatenate(pooled, axis=-1).astype(np.float32)


def encode_prompt_pixart(runners: dict[str, Runner], tokenizers: dict[str, Any], prompts: list[str], geo: DitGeometry,
                         record: Callable[[str, Feeds], None]) -> tuple[np.ndarray, np.ndarray]:
    """(encoder_hidden_states [B, L, d_model], encoder_attention_mask float [B, L]) as PixArt-Sigma's pipeline."""
    feeds = tokenize_t5(tokenizers["tokenizer"], prompts, geo.t5_length)
    record("text_encoder", feeds)
    states = runners["text_encoder"](feeds)["last_hidden_state"].astype(np.float32)
    return states, feeds["attention_mask"].astype(np.float32)


def denoise_dit(runners: dict[str, Runner], tokenizers: dict[str, Any], scheduler: Any, prompt: str, geo: DitGeometry,
                *, steps: int = 8, seed: int = 0, guidance: float = 4.5, latent_hw: tuple[int, int],
                record: Callable[[str, Feeds], None] | None = None, decode: bool = True) -> np.ndarray:
    """Run the loop; returns the decoded image float32 [1, 3, H, W] in [-1, 1] (the final latents when `decode` is
    False). `record(name, feeds)` sees every component call's inputs (verification, calibration)."""
    record = record or (lambda name, feeds: None)
    use_cfg = guidance > 1.0
    prompts = ["", prompt] if use_cfg else [prompt]
    if geo.family == "sd3":
        context, extra = encode_prompt_sd3(runners, tokenizers, prompts, geo, record)
        extra_feeds = {"encoder_hidden_states": context, "pooled_projections": extra}
    else:
        context, mask = encode_prompt_pixart(runners, tokenizers, prompts, geo, record)
        extra_feeds = {"encoder_hidden_states": context, "encoder_attention_mask": mask}
    rng = np.random.default_rng(seed)
    latents = rng.standard_normal((1, geo.latent_channels, *latent_hw)).astype(np.float32)
    scheduler.set_timesteps(steps)
    latents = latents * float(getattr(scheduler, "init_noise_sigma", 1.0))
    batch = len(prompts)
    for t in scheduler.timesteps:
        model_in = np.concatenate([latents] * batch)
        if hasattr(scheduler, "scale_model_input"):
            model_in = scheduler.scale_model_input(torch.from_numpy(model_in), t).numpy()
        feeds = {"hidden_states": model_in.astype(np.float32), "timestep": np.array([float(t)], np.float32),
                 **extra_feeds}
        record("transformer", feeds)
        pred = runners["transformer"](feeds)["out_hidden_states"]
        if use_cfg:
            pred = pred[:1] + guidance * (pred[1:] - pred[:1])
        pred = pred[:, : geo.latent_channels]  # learned sigma (PixArt): the variance channels are not used
        latents = scheduler.step(torch.from_numpy(np.ascontiguousarray(pred)), t,
                                 torch.from_numpy(latents)).prev_sample.numpy().astype(np.float32)
    if not decode:
        return latents
    feeds = {"latent_sample": (latents / geo.scaling_factor + geo.shift_factor).astype(np.float32)}
    record("vae_decoder", feeds)
    image = runners["vae_decoder"](feeds)["sample"]
    record("vae_encoder", {"sample": np.clip(image, -1, 1).astype(np.float32)})
    return image


def load_dit_scheduler(folder: Path | None) -> Any:
    """The checkpoint's scheduler: FlowMatchEulerDiscreteScheduler as configured (SD3), else DPM-Solver++."""
    import json

    from fusionc.trajectory import load_scheduler

    config_file = folder / "scheduler_config.json" if folder is not None else None
    if config_file is not None and config_file.is_file():
        if json.loads(config_file.read_text(encoding="utf-8")).get("_class_name") == "FlowMatchEulerDiscreteScheduler":
            from diffusers import FlowMatchEulerDiscreteScheduler

            return FlowMatchEulerDiscreteScheduler.from_config(FlowMatchEulerDiscreteScheduler.load_config(str(folder)))
    return load_scheduler(folder)


def load_dit_tokenizers(folders: dict[str, Path]) -> dict[str, Any]:
    return {name: load_any_tokenizer(folder) for name, folder in folders.items()}


def required_components(family: str) -> tuple[str, ...]:
    """What the loop calls (SD3 runs without its T5 when text_encoder_3 is absent)."""
    if family == "sd3":
        return ("text_encoder", "text_encoder_2", "transformer", "vae_decoder")
    return (T5_COMPONENT[family], "transformer", "vae_decoder")


def required_tokenizers(family: str) -> tuple[str, ...]:
    return ("tokenizer", "tokenizer_2") if family == "sd3" else (T5_TOKENIZER[family],)
