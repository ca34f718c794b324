"""Real-scale pipelines with random weights, from the public configs (../shared/reference-models.md).

For benchmarks only (compile time, memory, size): SD-1.5 and a SnapFusion-shaped efficient UNet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fusionc.models.tiny import PROMPT_WORDS
from fusionc.models.tokenizer import write_clip_tokenizer, write_sd_model_index

SD15_UNET: dict[str, Any] = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8, cross_attention_dim=768, norm_num_groups=32,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)
# SnapFusion (arXiv 2306.00980): no transformer blocks at the 64x64 stage; fewer ResNets. diffusers can
# express the first part exactly; per-stage block counts are approximated with layers_per_block 1.
SNAPFUSION_UNET: dict[str, Any] = dict(
    SD15_UNET, layers_per_block=1,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
)
SD15_VAE: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
    block_out_channels=(128, 256, 512, 512), sample_size=512, scaling_factor=0.18215,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
SD15_TEXT: dict[str, Any] = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, bos_token_id=49406, eos_token_id=49407,
)
# SD-1.5's topology at 2/5 of its width (~140M parameters): develops CPU benchmarks in minutes, not hours
MID_UNET: dict[str, Any] = dict(SD15_UNET, block_out_channels=(128, 256, 512, 512))
# at 1/5 of its width (~36M parameters): the ORT CPU benchmark's quick development scale
SMALL_UNET: dict[str, Any] = dict(SD15_UNET, block_out_channels=(64, 128, 256, 256))
UNETS = {"sd15": SD15_UNET, "snapfusion": SNAPFUSION_UNET, "mid": MID_UNET, "small": SMALL_UNET}


def write_reference_pipeline(out_dir: Path, unet: str = "sd15", seed: int = 0) -> Path:
    """An SD-1.5-sized pipeline (or one with the SnapFusion-shaped UNet) with seeded random weights."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    UNet2DConditionModel(**UNETS[unet]).save_pretrained(out_dir / "unet")
    AutoencoderKL(**SD15_VAE).save_pretrained(out_dir / "vae")
    CLIPTextModel(CLIPTextConfig(**SD15_TEXT)).save_pretrained(out_dir / "text_encoder")
    write_clip_tokenizer(out_dir / "tokenizer", PROMPT_WORDS)
    DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                steps_offset=1).save_pretrained(out_dir / "scheduler")
    write_sd_model_index(out_dir)
    return out_dir
