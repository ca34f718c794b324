"""Architecture of the built-in pipeline (`fusionc/models/tiny_sd`) and the folder writer shared by training.

The topology is SD-1.5's at a width this machine's CPU can train in minutes: a CLIP text encoder (2 layers,
width 64, 77 positions), an AutoencoderKL with four blocks (8x spatial downsampling, 4 latent channels) and a
UNet2DConditionModel with cross-attention at the 8x8 and 4x4 latent levels and in the mid block, scheduled by
DPM-Solver++ (v-prediction, zero terminal SNR). Images are 64x64, latents 8x8. GroupNorm groups follow `fusionc.models.tiny` (divide every width).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from fusionc.models.shapes_dataset import SIZE, WORDS
from fusionc.models.tiny import PROMPT_WORDS
from fusionc.models.tokenizer import vocab_size, write_clip_tokenizer, write_sd_model_index

LATENT = SIZE // 8
TEXT_WIDTH = 64
TOKENIZER_WORDS = sorted(set(WORDS) | set(PROMPT_WORDS))


def unet_config() -> dict[str, Any]:
    return dict(
        sample_size=LATENT, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(64, 96, 96), norm_num_groups=16, cross_attention_dim=TEXT_WIDTH, attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )


def vae_config(scaling_factor: float = 0.18215) -> dict[str, Any]:
    return dict(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(16, 32, 64, 64), sample_size=SIZE, scaling_factor=scaling_factor,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )


def text_config(vocab: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=vocab, hidden_size=TEXT_WIDTH, intermediate_size=TEXT_WIDTH * 4, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=TEXT_WIDTH,
        bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1,
    )


def scheduler(prediction_type: str = "v_prediction") -> DPMSolverMultistepScheduler:
    return DPMSolverMultistepScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        algorithm_type="dpmsolver++", solver_order=2, steps_offset=1, prediction_type=prediction_type,
        # Zero terminal SNR (Lin et al. 2024): at t=999 the latent is pure noise in training as at inference, so
        # the layout must come from the prompt; with SD's schedule an 8x8 latent leaks it and positions follow
        # the seed. Needs v-prediction and trailing timesteps.
        rescale_betas_zero_snr=True, timestep_spacing="trailing",
    )


def write_tokenizer(out_dir: Path) -> int:
    """Write the CLIP tokenizer into out_dir/tokenizer; returns its vocabulary size."""
    write_clip_tokenizer(Path(out_dir) / "tokenizer", TOKENIZER_WORDS)
    return vocab_size(Path(out_dir) / "tokenizer")


def new_modules(vocab: int) -> tuple[CLIPTextModel, AutoencoderKL, UNet2DConditionModel]:
    """Randomly initialised text encoder, VAE and UNet (seed torch first for reproducibility)."""
    return CLIPTextModel(text_config(vocab)), AutoencoderKL(**vae_config()), UNet2DConditionModel(**unet_config())


def save_pipeline(out_dir: Path, text_encoder: CLIPTextModel, vae: AutoencoderKL,
                  unet: UNet2DConditionModel, prediction_type: str = "v_prediction") -> Path:
    """Write a StableDiffusionPipeline folder (safetensors) with these modules; returns out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_tokenizer(out_dir)
    text_encoder.save_pretrained(out_dir / "text_encoder")
    vae.save_pretrained(out_dir / "vae")
    unet.save_pretrained(out_dir / "unet")
    scheduler(prediction_type).save_pretrained(out_dir / "scheduler")
    write_sd_model_index(out_dir)
    return out_dir
