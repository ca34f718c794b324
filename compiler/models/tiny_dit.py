"""Tiny diffusion-transformer pipelines with the real topologies, for the tests and the benchmarks.

`write_dit_pipeline(out_dir, family)` writes a complete diffusers pipeline folder with seeded random weights:

- ``sd3``: Stable Diffusion 3's layout: SD3Transformer2DModel (MMDiT, joint attention over CLIP + T5 tokens,
  pooled projections), two CLIPTextModelWithProjection encoders, a T5EncoderModel (text_encoder_3), a
  16-channel AutoencoderKL with a shift factor and no quant convs, FlowMatchEulerDiscreteScheduler(shift=3).
- ``pixart``: PixArt-Sigma's layout: PixArtTransformer2DModel (DiT with cross-attention, AdaLN-single, learned
  sigma: 8 output channels), one T5EncoderModel, the SD VAE (4 channels), DPM-Solver++.

Widths are tiny (a few hundred kB in all), depths and block types are the real ones. The T5 tokenizer is a
Unigram `tokenizer.json` written with the tokenizers library (no sentencepiece model needed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from fusionc.models.tiny import PROMPT_WORDS, text_config, vae_config
from fusionc.models.tokenizer import vocab_size, write_clip_tokenizer

DIT_FAMILIES = ("sd3", "pixart")
T5_MAX_LENGTH = 16  # tiny pipelines' T5 token count (SD3 uses 256, PixArt-Sigma 300)


def write_t5_tokenizer(out_dir: Path, words: list[str], max_length: int = T5_MAX_LENGTH) -> int:
    """A T5-style Unigram tokenizer (pad 0, eos 1, unk 2; `</s>` appended) where every word is one piece and
    any other text falls back to letters. Returns the vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    out_dir.mkdir(parents=True, exist_ok=True)
    vocab: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("\u2581" + w, -1.0) for w in sorted(set(w.lower() for w in words))]
    vocab += [("\u2581", -8.0)] + [(chr(c), -10.0) for c in range(ord("a"), ord("z") + 1)]
    vocab += [(chr(c), -10.0) for c in range(ord("0"), ord("9") + 1)]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                             special_tokens=[("</s>", 1)])
    tokenizer.save(str(out_dir / "tokenizer.json"))
    config = {"tokenizer_class": "T5Tokenizer", "model_max_length": max_length, "pad_token": "<pad>",
              "eos_token": "</s>", "unk_token": "<unk>", "extra_ids": 0}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return len(vocab)


def t5_config(vocab: int, d_model: int = 64, layers: int = 2):
    from transformers import T5Config

    return T5Config(vocab_size=vocab, d_model=d_model, d_ff=d_model * 2, d_kv=16, num_heads=d_model // 16,
                    num_layers=layers, feed_forward_proj="gated-gelu", relative_attention_num_buckets=8,
                    relative_attention_max_distance=16, is_encoder_decoder=False, use_cache=False,
                    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=False)


def sd3_transformer_config(sample_size: int = 8) -> dict[str, Any]:
    """SD3-medium's topology at width 16 (2 heads x 8): joint attention over 64-dim CLIP+T5 tokens."""
    return dict(sample_size=sample_size, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
                num_attention_heads=2, attention_head_dim=8, joint_attention_dim=64, caption_projection_dim=16,
                pooled_projection_dim=64, pos_embed_max_size=16)


def pixart_transformer_config(sample_size: int = 8) -> dict[str, Any]:
    """PixArt-Sigma XL-2's topology at width 16 (2 heads x 8): AdaLN-single, learned sigma, T5 captions."""
    return dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
                cross_attention_dim=16, sample_size=sample_size, patch_size=2, caption_channels=64,
                norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
                use_additional_conditions=False, interpolation_scale=1, norm_num_groups=8)


def sd3_vae_config(sample_size: int = 64) -> dict[str, Any]:
    config = vae_config(sample_size)
    config.update(latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
                  use_post_quant_conv=False)
    return config


def write_dit_pipeline(out_dir: Path, family: str = "sd3", seed: int = 0, sample_size: int = 8) -> Path:
    """Write a tiny diffusers pipeline of `family` ("sd3" or "pixart") with seeded random weights."""
    from diffusers import (AutoencoderKL, DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler,
                           PixArtTransformer2DModel, SD3Transformer2DModel)
    from transformers import CLIPTextModelWithProjection, T5EncoderModel

    if family not in DIT_FAMILIES:
        raise ValueError(f"unknown family {family}; choose from {DIT_FAMILIES}")
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"_diffusers_version": "0.42.1"}
    if family == "sd3":
        for k, folder in enumerate(("tokenizer", "tokenizer_2")):
            write_clip_tokenizer(out_dir / folder, PROMPT_WORDS)
            vocab = vocab_size(out_dir / folder)
            encoder = CLIPTextModelWithProjection(text_config(vocab, hidden=32, projection=32))
            encoder.save_pretrained(out_dir / ("text_encoder" if k == 0 else "text_encoder_2"))
        t5_vocab = write_t5_tokenizer(out_dir / "tokenizer_3", PROMPT_WORDS)
        T5EncoderModel(t5_config(t5_vocab)).save_pretrained(out_dir / "text_encoder_3")
        SD3Transformer2DModel(**sd3_transformer_config(sample_size)).save_pretrained(out_dir / "transformer")
        AutoencoderKL(**sd3_vae_config(sample_size * 8)).save_pretrained(out_dir / "vae")
        FlowMatchEulerDiscreteScheduler(shift=3.0).save_pretrained(out_dir / "scheduler")
        index.update({
            "_class_name": "StableDiffusion3Pipeline",
            "transformer": ["diffusers", "SD3Transformer2DModel"], "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModelWithProjection"], "tokenizer": ["transformers", "CLIPTokenizer"],
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
            "text_encoder_3": ["transformers", "T5EncoderModel"], "tokenizer_3": ["transformers", "T5TokenizerFast"],
            "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
            "image_encoder": [None, None], "feature_extractor": [None, None],
        })
    else:
        t5_vocab = write_t5_tokenizer(out_dir / "tokenizer", PROMPT_WORDS)
        T5EncoderModel(t5_config(t5_vocab)).save_pretrained(out_dir / "text_encoder")
        PixArtTransformer2DModel(**pixart_transformer_config(sample_size)).save_pretrained(out_dir / "transformer")
        AutoencoderKL(**vae_config(sample_size * 8)).save_pretrained(out_dir / "vae")
        DPMSolverMultistepScheduler(beta_start=0.0001, beta_end=0.02, beta_schedule="linear", num_train_timesteps=1000,
                                    algorithm_type="dpmsolver++", solver_order=2).save_pretrained(out_dir / "scheduler")
        index.update({
            "_class_name": "PixArtSigmaPipeline",
            "transformer": ["diffusers", "PixArtTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "T5EncoderModel"], "tokenizer": ["transformers", "T5TokenizerFast"],
            "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
        })
    (out_dir / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return out_dir
