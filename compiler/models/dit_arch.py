"""Architecture of the built-in diffusion transformer (`fusionc/models/tiny_sd3`, `builtin:sd3`) and its folder writer.

A StableDiffusion3Pipeline at a width this machine's CPU trains in minutes, reusing the built-in pipeline's
trained parts (tiny_sd) where SD3's shapes allow it:

- text_encoder, text_encoder_2: SD3 needs two CLIPTextModelWithProjection encoders; both are tiny_sd's trained
  CLIP text encoder (width 64, frozen) with an identity text projection (SD3 reads the penultimate states and the
  projected pooled output), cut to its first 24 positions (the joint attention then runs over 24 CLIP tokens,
  not 77: a third of the cost; the captions take at most 22; a longer prompt is truncated with a warning). text_encoder_2 links to it and
  both tokenizers to tiny_sd's.
- vae: tiny_sd's AutoencoderKL as is (4 latent channels, 8x downsampling, no shift factor), linked.
- transformer: SD3Transformer2DModel (MMDiT: joint attention over image + CLIP tokens, AdaLN-Zero modulation
  from the pooled projections and the timestep), patch 2 over the 8x8 latents (16 image tokens), 4 layers of
  width 64 (4 heads x 16), joint_attention_dim 128 (the two CLIPs' states side by side), no T5: SD3 runs without
  its T5 (text_encoder_3 None), and a pipeline without one has no T5 tokens (fusionc.dit.t5_length).
- scheduler: FlowMatchEulerDiscreteScheduler (flow matching, velocity prediction) with shift 2.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch

TINY_SD = Path(__file__).parent / "tiny_sd"
TEXT_WIDTH = 64  # tiny_sd's CLIP width
CLIP_LENGTH = 24  # CLIP tokens the transformer sees (the shapes captions take at most 22 with BOS and EOS)
SHIFT = 2.0


def transformer_config() -> dict[str, Any]:
    return dict(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=4, num_attention_heads=4,
                attention_head_dim=16, joint_attention_dim=2 * TEXT_WIDTH, caption_projection_dim=64,
                pooled_projection_dim=2 * TEXT_WIDTH, pos_embed_max_size=4)


def new_transformer() -> torch.nn.Module:
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(**transformer_config())


def scheduler() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=SHIFT)


def clip_with_projection(source: Path = TINY_SD / "text_encoder") -> torch.nn.Module:
    """tiny_sd's CLIPTextModel as a CLIPTextModelWithProjection whose projection is the identity, over its first
    CLIP_LENGTH positions (CLIP's attention is causal: those tokens' states are exactly the 77-token model's)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    clip = CLIPTextModel.from_pretrained(str(source))
    config = CLIPTextConfig.from_dict({**clip.config.to_dict(), "projection_dim": clip.config.hidden_size,
                                       "max_position_embeddings": CLIP_LENGTH,
                                       "architectures": ["CLIPTextModelWithProjection"]})
    model = CLIPTextModelWithProjection(config)
    state = clip.state_dict()
    state = {k: (v[:CLIP_LENGTH] if k.endswith("position_embedding.weight") else v) for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    model.text_model.load_state_dict(state, strict=False)
    loaded = {f"text_model.{k}" for k in state}
    if {k for k in model.state_dict() if not k.endswith("position_ids")} - loaded != {"text_projection.weight"}:
        raise RuntimeError("tiny_sd's CLIP does not map onto CLIPTextModelWithProjection")
    with torch.no_grad():
        model.text_projection.weight.copy_(torch.eye(config.hidden_size))
    return model.eval()


MODEL_INDEX = {
    "_class_name": "StableDiffusion3Pipeline", "_diffusers_version": "0.42.1",
    "transformer": ["diffusers", "SD3Transformer2DModel"], "vae": ["diffusers", "AutoencoderKL"],
    "text_encoder": ["transformers", "CLIPTextModelWithProjection"], "tokenizer": ["transformers", "CLIPTokenizer"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "text_encoder_3": [None, None], "tokenizer_3": [None, None],
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    "image_encoder": [None, None], "feature_extractor": [None, None],
}


def _link(out_dir: Path, name: str, target: str) -> None:
    link = out_dir / name
    if link.is_symlink() or link.exists():
        if link.is_symlink() and os.readlink(link) == target:
            return
        raise FileExistsError(f"{link} exists and is not a link to {target}")
    link.symlink_to(target, target_is_directory=True)


def save_dit_pipeline(out_dir: Path, transformer: torch.nn.Module, fp16: bool = True) -> Path:
    """Write the StableDiffusion3Pipeline folder: the transformer (fp16 weights when `fp16`: half the bytes), the
    projected CLIP and links to tiny_sd's tokenizer and VAE (relative: the folder ships inside the package)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    module = copy.deepcopy(transformer).to(torch.float16) if fp16 else transformer
    module.save_pretrained(out_dir / "transformer")
    if not (out_dir / "text_encoder").exists():
        clip_with_projection().save_pretrained(out_dir / "text_encoder")
    _link(out_dir, "text_encoder_2", "text_encoder")
    for name, source in (("tokenizer", "tokenizer"), ("tokenizer_2", "tokenizer"), ("vae", "vae")):
        _link(out_dir, name, os.path.relpath(TINY_SD / source, out_dir.resolve()))
    scheduler().save_pretrained(out_dir / "scheduler")
    (out_dir / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2) + "\n", encoding="utf-8")
    return out_dir
