"""Tiny diffusion pipelines with the real topologies, for the built-in model, the tests and the benchmarks.

`write_pipeline(out_dir, family)` writes a complete diffusers pipeline folder (model_index.json, unet/,
vae/, text_encoder/, tokenizer/, scheduler/; SDXL adds text_encoder_2/ + tokenizer_2/) with seeded random
weights in safetensors. The families cover what the spine must load: SD-1.x, SD-2.x (per-block heads,
linear projections), a UNet without mid block, several transformer layers per block, SDXL (`text_time`
added conditioning, two text encoders), AutoencoderTiny, and a ControlNet pipeline (sd15 + ControlNetModel).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, DPMSolverMultistepScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from fusionc.models.tokenizer import vocab_size, write_clip_tokenizer

FAMILIES = ("sd15", "sd21", "no_mid", "deep_transformer", "sdxl", "taesd", "controlnet")

PROMPT_WORDS = [
    "a", "an", "the", "on", "at", "in", "of", "and", "left", "right", "top", "bottom", "center", "middle",
    "red", "green", "blue", "yellow", "purple", "orange", "white", "black", "cyan", "magenta",
    "circle", "square", "triangle", "cross", "ring", "background", "plain", "striped", "textured", "small", "large",
]


def sd15_unet_config(sample_size: int = 8, cross_dim: int = 32) -> dict[str, Any]:
    return dict(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64, 64), norm_num_groups=8, cross_attention_dim=cross_dim, attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )


def unet_config(family: str, sample_size: int = 8) -> dict[str, Any]:
    config = sd15_unet_config(sample_size)
    if family == "sd21":
        config.update(attention_head_dim=(2, 4, 4), use_linear_projection=True)
    elif family == "no_mid":
        config.update(mid_block_type=None)
    elif family == "deep_transformer":
        config.update(transformer_layers_per_block=(1, 2, 1), use_linear_projection=True)
    elif family == "sdxl":
        config.update(
            block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
            transformer_layers_per_block=(1, 2), cross_attention_dim=64, use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=32 + 6 * 8,
        )
    return config


def vae_config(sample_size: int = 64) -> dict[str, Any]:
    return dict(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(16, 32, 32, 32), sample_size=sample_size, scaling_factor=0.18215,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )


def taesd_config() -> dict[str, Any]:
    return dict(encoder_block_out_channels=(16, 16, 16, 16), decoder_block_out_channels=(16, 16, 16, 16),
                num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1), latent_channels=4)


def text_config(vocab: int, hidden: int = 32, projection: int | None = None, max_length: int = 77) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=max_length, hidden_act="quick_gelu",
        projection_dim=projection or hidden, bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1,
    )


def write_controlnet(folder: Path, unet: UNet2DConditionModel, seed: int = 0, conditioning_channels: int = 3) -> Path:
    """A ControlNetModel made from `unet` (diffusers' from_unet) whose zero convolutions get small random
    weights, so its residuals are not all zero (a freshly made ControlNet adds nothing: nothing to verify)."""
    from diffusers import ControlNetModel

    # one conditioning-embedding block per VAE downsampling: (8, 8, 16, 16) brings 64x64 pixels to 8x8 latents
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16),
                                           conditioning_channels=conditioning_channels)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.1)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen) * 0.01)
    controlnet.save_pretrained(folder)
    return folder


def write_pipeline(out_dir: Path, family: str = "sd15", seed: int = 0, sample_size: int = 8) -> Path:
    """Write a tiny diffusers pipeline of `family` with seeded random weights; returns out_dir."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family}; choose from {FAMILIES}")
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_clip_tokenizer(out_dir / "tokenizer", PROMPT_WORDS)
    vocab = vocab_size(out_dir / "tokenizer")
    is_xl = family == "sdxl"
    unet = UNet2DConditionModel(**unet_config(family, sample_size))
    unet.save_pretrained(out_dir / "unet")
    if family == "taesd":
        AutoencoderTiny(**taesd_config()).save_pretrained(out_dir / "vae")
        vae_class = "AutoencoderTiny"
    else:
        AutoencoderKL(**vae_config(sample_size * 8)).save_pretrained(out_dir / "vae")
        vae_class = "AutoencoderKL"
    CLIPTextModel(text_config(vocab)).save_pretrained(out_dir / "text_encoder")
    index: dict[str, Any] = {
        "_class_name": "StableDiffusionXLPipeline" if is_xl else "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", vae_class],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
    }
    if is_xl:
        write_clip_tokenizer(out_dir / "tokenizer_2", PROMPT_WORDS)
        CLIPTextModelWithProjection(text_config(vocab, hidden=32, projection=32)).save_pretrained(out_dir / "text_encoder_2")
        index.update(text_encoder_2=["transformers", "CLIPTextModelWithProjection"],
                     tokenizer_2=["transformers", "CLIPTokenizer"])
    else:
        index.update(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
    if family == "controlnet":
        write_controlnet(out_dir / "controlnet", unet, seed)
        index.update(_class_name="StableDiffusionControlNetPipeline", controlnet=["diffusers", "ControlNetModel"])
    DPMSolverMultistepScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        algorithm_type="dpmsolver++", solver_order=2, steps_offset=1,
    ).save_pretrained(out_dir / "scheduler")
    (out_dir / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return out_dir
