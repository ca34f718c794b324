"""Diffusion transformers (SD3 MMDiT, PixArt-Sigma) and the T5 encoder: export wrappers, example inputs, geometry.

The canonical interfaces (the names Optimum's ONNX export of these pipelines uses):

- text_encoder_3 (SD3) / text_encoder (PixArt), a T5EncoderModel: input_ids int32 [B, L],
  attention_mask int32 [B, L] -> last_hidden_state [B, L, d_model]. SD3 feeds a mask of ones (its pipeline
  runs T5 unmasked; ones are the same computation).
- transformer, SD3Transformer2DModel: hidden_states [B, C, h, w], timestep [1] (sigma x 1000, broadcast over
  the batch), encoder_hidden_states [B, 77 + L, joint_attention_dim] (both CLIPs' penultimate states side by
  side, zero-padded to the T5 width, then the T5 tokens), pooled_projections [B, pooled_projection_dim]
  -> out_hidden_states [B, C, h, w] (the flow-matching velocity).
- transformer, PixArtTransformer2DModel: hidden_states, timestep [1], encoder_hidden_states [B, L, caption_channels],
  encoder_attention_mask float [B, L] (1 keep, 0 drop) -> out_hidden_states [B, out_channels, h, w] (noise and,
  with learned sigma, the variance channels; the loop keeps the first `in_channels`).

The export driver (fusionc.export) calls `dit_component(...)`; the denoising loop is fusionc.dit_trajectory.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

import torch

from fusionc.core.errors import BadInputError
from fusionc.core.options import CompileOptions
from fusionc.streaming import streamed_weights

DEFAULT_T5_LENGTH = {"sd3": 256, "pixart": 300}  # the pipelines' max_sequence_length defaults
SD3_CLIP_LENGTH = 77  # SD3's CLIP tokens, ahead of the T5 ones in the transformer's joint sequence
MASKED_SCORE = -1.0e4  # added to the scores of padding tokens (diffusers' and Apple's value; finite in fp16)
T5_COMPONENT = {"sd3": "text_encoder_3", "pixart": "text_encoder"}
T5_TOKENIZER = {"sd3": "tokenizer_3", "pixart": "tokenizer"}


class T5EncoderWrapper(torch.nn.Module):
    """input_ids, attention_mask (int32) -> last_hidden_state."""

    def __init__(self, model: torch.nn.Module, length: int | None = None) -> None:
        super().__init__()
        if length is not None:
            fold_position_bias(model, length)
        # eager attention: the dynamo export of T5's sdpa path with a dynamic batch fails to decompose (a view of
        # a transposed tensor); the eager form exports and the attention fusion pass re-forms it
        for module in model.modules():
            if getattr(module, "config", None) is not None and hasattr(module.config, "_attn_implementation"):
                module.config._attn_implementation = "eager"
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # the additive [B, 1, 1, L] mask, prepared here: transformers returns a 4D mask as is, where its own
        # construction from [B, L] exports as a bool GatherND over vmapped indices (no Core ML / HTP form)
        additive = (1.0 - attention_mask[:, None, None, :].float()) * MASKED_SCORE
        return self.model(input_ids=input_ids.long(), attention_mask=additive, return_dict=True).last_hidden_state


def fold_position_bias(model: torch.nn.Module, length: int) -> None:
    """T5's relative position bias depends on the token count only: computed once here for `length` tokens, it is
    exported as a constant [1, H, L, L] instead of the bucket arithmetic (int64 Log/Min/Where), which the HTP
    does not build in fp16 and no target needs at run time."""
    streamed = streamed_weights(model)  # weights left in the files (fusionc.streaming): read for this one call
    for module in model.modules():
        if getattr(module, "has_relative_attention_bias", False):
            with torch.no_grad(), (streamed.filled(module) if streamed is not None else contextlib.nullcontext()):
                table = module.compute_bias(length, length, device=None).detach().clone()

            def fixed(query_length: int, key_length: int, device: Any = None, past_seen_tokens: int = 0,
                      table: torch.Tensor = table, original: Any = module.compute_bias) -> torch.Tensor:
                if query_length == key_length == table.shape[-1] and not past_seen_tokens:
                    return table
                return original(query_length, key_length, device=device, past_seen_tokens=past_seen_tokens)

            module.compute_bias = fixed


class SD3TransformerWrapper(torch.nn.Module):
    """hidden_states, timestep [1], encoder_hidden_states, pooled_projections -> out_hidden_states."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                pooled_projections: torch.Tensor) -> torch.Tensor:
        timestep = timestep.expand(hidden_states.shape[0])
        return self.model(hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states,
                          pooled_projections=pooled_projections, timestep=timestep, return_dict=False)[0]


class PixArtTransformerWrapper(torch.nn.Module):
    """hidden_states, timestep [1], encoder_hidden_states, encoder_attention_mask -> out_hidden_states.

    With `use_additional_conditions` (PixArt-alpha at 1024) the resolution and aspect ratio are the build's
    static image size, folded in as constants (the pipeline passes exactly those)."""

    def __init__(self, model: torch.nn.Module, height: int, width: int) -> None:
        super().__init__()
        use_broadcast_mask_attention(model)
        self.model = model
        self.size = (float(height), float(width))

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                encoder_attention_mask: torch.Tensor) -> torch.Tensor:
        batch = hidden_states.shape[0]
        added: dict[str, Any] = {"resolution": None, "aspect_ratio": None}
        if self.model.use_additional_conditions:
            resolution = torch.tensor([self.size], dtype=hidden_states.dtype).expand(batch, 2)
            ratio = torch.tensor([[self.size[0] / self.size[1]]], dtype=hidden_states.dtype).expand(batch, 1)
            added = {"resolution": resolution, "aspect_ratio": ratio}
        return self.model(hidden_states, encoder_hidden_states=encoder_hidden_states,
                          timestep=timestep.expand(batch), added_cond_kwargs=added,
                          encoder_attention_mask=encoder_attention_mask, return_dict=False)[0]


class BroadcastMaskAttnProcessor:
    """diffusers' AttnProcessor2_0 for plain (PixArt) attention, with the key mask [B, 1, L] broadcast over heads
    and queries as [B, 1, 1, L] instead of repeated per head: identical numbers, but it exports with a dynamic
    batch (the stock processor's `repeat_interleave` + `view(batch, heads, ...)` does not)."""

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        batch = hidden_states.shape[0]
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (x.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
        mask = attention_mask.unsqueeze(1) if attention_mask is not None else None
        out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        return out / attn.rescale_output_factor


def use_broadcast_mask_attention(model: torch.nn.Module) -> int:
    """Give every plain attention of `model` the BroadcastMaskAttnProcessor; returns how many were changed."""
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    changed = 0
    for module in model.modules():
        if (isinstance(module, Attention) and isinstance(module.processor, AttnProcessor2_0)
                and module.spatial_norm is None and module.group_norm is None and module.norm_q is None
                and not module.norm_cross and not module.residual_connection):
            module.set_processor(BroadcastMaskAttnProcessor())
            changed += 1
    return changed


@dataclass
class DitGeometry:
    """What the denoising loop needs to know of a diffusion-transformer pipeline besides its runners."""

    family: str  # "sd3" | "pixart"
    latent_channels: int
    out_channels: int
    clip_length: int  # CLIP tokens (SD3); 0 for PixArt
    t5_length: int
    joint_dim: int  # T5 width the CLIP states are padded to (SD3: joint_attention_dim)
    scaling_factor: float
    shift_factor: float
    latent_scale: int = 8  # pixels per latent (the VAE's downsampling)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def t5_length(checkpoint: Any, options: CompileOptions) -> int:
    """T5 tokens: --text-length, else the pipeline's default capped by the tokenizer's model_max_length; an SD3
    pipeline without a T5 has none (its transformer sees the 77 CLIP tokens alone)."""
    family = checkpoint.dit_family
    if options.text_length is not None:
        if options.text_length < 1:
            raise BadInputError(f"--text-length {options.text_length} must be at least 1")
        return int(options.text_length)
    if family == "sd3" and "text_encoder_3" not in checkpoint.classes and not lone_transformer(checkpoint):
        return 0  # a pipeline shipped without a T5 (the built-in `builtin:sd3`): CLIP tokens only
    default = DEFAULT_T5_LENGTH[family]
    folder = checkpoint.tokenizer_dirs.get(T5_TOKENIZER[family])
    if folder is not None and (folder / "tokenizer_config.json").is_file():
        limit = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("model_max_length")
        if isinstance(limit, int) and 0 < limit < default:
            return limit
    return default


def lone_transformer(checkpoint: Any) -> bool:
    """A transformer folder compiled alone: its token counts are the pipeline's defaults (SD3: 77 CLIP + 256 T5)."""
    return set(checkpoint.classes) == {"transformer"}


def geometry(checkpoint: Any, options: CompileOptions) -> DitGeometry:
    family = checkpoint.dit_family
    cfg = checkpoint.configs["transformer"]
    vae = checkpoint.configs.get("vae")
    clip = checkpoint.configs.get("text_encoder") if family == "sd3" else None
    joint = int(getattr(cfg, "joint_attention_dim", 0) or getattr(cfg, "caption_channels", 0) or 0)
    return DitGeometry(
        family, int(cfg.in_channels), int(cfg.out_channels or cfg.in_channels),
        int(clip.max_position_embeddings) if clip is not None else (
            SD3_CLIP_LENGTH if family == "sd3" and lone_transformer(checkpoint) else 0),
        t5_length(checkpoint, options), joint,
        float(getattr(vae, "scaling_factor", None) or 1.0) if vae is not None else 1.0,
        float(getattr(vae, "shift_factor", None) or 0.0) if vae is not None else 0.0,
        2 ** (len(vae.block_out_channels) - 1) if vae is not None and hasattr(vae, "block_out_channels") else 8)


def t5_component(model: torch.nn.Module, length: int, batch: int,
                 gen: torch.Generator) -> tuple[torch.nn.Module, dict[str, torch.Tensor], list[str]]:
    """(wrapper, example inputs, output names) of a T5 encoder at `length` tokens."""
    ids = torch.randint(0, model.config.vocab_size, (batch, length), generator=gen, dtype=torch.int32)
    mask = torch.ones(batch, length, dtype=torch.int32)
    return T5EncoderWrapper(model, length).eval(), {"input_ids": ids, "attention_mask": mask}, ["last_hidden_state"]


def lone_t5_length(options: CompileOptions) -> int:
    """T5 tokens of a T5 encoder folder compiled alone (no pipeline to say which): --text-length, else SD3's 256."""
    if options.text_length is not None and options.text_length < 1:
        raise BadInputError(f"--text-length {options.text_length} must be at least 1")
    return int(options.text_length) if options.text_length is not None else DEFAULT_T5_LENGTH["sd3"]


def dit_component(checkpoint: Any, name: str, options: CompileOptions, batch: int, latent_hw: tuple[int, int],
                  image_hw: tuple[int, int], gen: torch.Generator) -> tuple[torch.nn.Module, dict[str, torch.Tensor], list[str]] | None:
    """(wrapper, example inputs, output names) of a DiT pipeline's transformer or T5 encoder; None for the
    components the UNet code already handles (CLIP encoders, VAE)."""
    family = checkpoint.dit_family
    model = checkpoint.models.get("transformer" if name == "transformer" else name)
    if name == T5_COMPONENT[family]:
        return t5_component(model, t5_length(checkpoint, options), batch, gen)
    if name != "transformer":
        return None
    geo = geometry(checkpoint, options)
    cfg = model.config
    h, w = latent_hw
    if h % cfg.patch_size or w % cfg.patch_size:
        raise BadInputError(f"latent size {h}x{w} must be a multiple of the transformer's patch size {cfg.patch_size}: "
                            "change --height/--width")
    example = {"hidden_states": torch.randn(batch, cfg.in_channels, h, w, generator=gen),
               "timestep": torch.tensor([500.0])}
    if family == "sd3":
        limit = cfg.pos_embed_max_size * cfg.patch_size
        if h > limit or w > limit:
            raise BadInputError(f"latent size {h}x{w} exceeds the transformer's position table ({limit}x{limit}): "
                                "lower --height/--width")
        example["encoder_hidden_states"] = torch.randn(batch, geo.clip_length + geo.t5_length, cfg.joint_attention_dim,
                                                       generator=gen)
        example["pooled_projections"] = torch.randn(batch, cfg.pooled_projection_dim, generator=gen)
        return SD3TransformerWrapper(model).eval(), example, ["out_hidden_states"]
    example["encoder_hidden_states"] = torch.randn(batch, geo.t5_length, cfg.caption_channels, generator=gen)
    example["encoder_attention_mask"] = torch.ones(batch, geo.t5_length)
    return PixArtTransformerWrapper(model, *image_hw).eval(), example, ["out_hidden_states"]

