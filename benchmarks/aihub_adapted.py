"""The encoders AI Hub deploys in a Qualcomm-adapted form, rebuilt as AI Hub's code defines them (benchmark-only).

AI Hub does not time the public library's module for its speech and translation encoders: it times an adaptation
(quic/ai-hub-models v0.46.1, the release whose latencies ../shared/latency holds). Its QNN layer counts say so:
1,606 layers for Whisper-Small's encoder where the HF module exports 295 ops. What each adaptation changes:

- Whisper (qai_hub_models/models/_shared/hf_whisper/model_adaptation.py): tensors in rank 4, [B, 1, T, C];
  every Linear a 1x1 Conv2d (the stem's Conv1d a (1, 3) Conv2d); split-head attention, each head its own 1x1 q/k/v
  convolutions, matmuls and softmax (one [T, T] score tensor per head instead of one [H, T, T]); and the encoder
  also computes every decoder layer's cross-attention K and V, per head, as its outputs (the decoder's KV cache).
- TrOCR (qai_hub_models/models/trocr/model.py, TrOCREncoder): the vision encoder, then each decoder layer's
  cross-attention k_proj / v_proj on its output, shaped [B, heads, S, head_dim]: the encoder's outputs.
- Opus-MT (qai_hub_models/models/_shared/opus_mt/model_adaptation.py, QcMarianEncoder): the Marian encoder (its
  QcMarianAttention folds the scaling into q_proj and transposes K at projection: the same ops), then each decoder
  layer's cross-attention K ([B, H, head_dim, S]) and V ([B, H, S, head_dim]) as outputs.
- Stable Diffusion's UNet (qai_hub_models/models/_shared/stable_diffusion/model_adaptation.py, monkey_patch_model):
  the transformer blocks stay NCHW (no reshape to tokens; LayerNorms permute to NHWC and back), every attention is
  split per head (SHAAttention: each head its own 1x1 q/k/v convolutions, one [H, W, S] score tensor per head), GEGLU
  is two 1x1 convolutions and the feed-forward's Linear a 1x1 convolution. Its text encoder and VAE decoder are not
  adapted. `adapt_sd_unet` applies this to a diffusers UNet2DConditionModel in place.

We cannot import qai_hub_models here (its package pulls AIMET and AI Hub's client), and only the graph's structure
matters (the features need shapes, not weights), so these modules re-state that structure with plain torch and
transformers modules; AI Hub's weight copying and its decoders are left out.
"""

from __future__ import annotations

import torch
from torch import nn


class SplitHeadSelfAttention(nn.Module):
    """Whisper's SHAAttention on [B, 1, T, C]: per-head 1x1 convolutions, matmuls and softmax; one out conv."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        head_dim = dim // heads
        self.q = nn.ModuleList(nn.Conv2d(dim, head_dim, 1) for _ in range(heads))
        self.k = nn.ModuleList(nn.Conv2d(dim, head_dim, 1, bias=False) for _ in range(heads))
        self.v = nn.ModuleList(nn.Conv2d(dim, head_dim, 1) for _ in range(heads))
        self.out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.permute(0, 3, 1, 2)  # [B, C, 1, T]
        heads = []
        for q, k, v in zip(self.q, self.k, self.v):
            scores = q(h).permute(0, 2, 3, 1) @ k(h).permute(0, 2, 1, 3)  # [B, 1, T, T]
            heads.append(torch.softmax(scores, dim=-1) @ v(h).permute(0, 2, 3, 1))  # [B, 1, T, d]
        return self.out(torch.cat(heads, dim=-1).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class AdaptedWhisperLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn_norm, self.attn = nn.LayerNorm(dim), SplitHeadSelfAttention(dim, heads)
        self.ffn_norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Conv2d(dim, 4 * dim, 1), nn.Conv2d(4 * dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        h = nn.functional.gelu(self.fc1(self.ffn_norm(x).permute(0, 3, 1, 2)))
        return x + self.fc2(h).permute(0, 2, 3, 1)


class AdaptedWhisperEncoder(nn.Module):
    """AI Hub's QcWhisperEncoder: mel [1, mels, 3000] -> per decoder layer K [1, H, d, 1500] and V [1, H, 1500, d]
    (AI Hub concatenates the heads on axis 0, [H, 1, ...]: the same elements and ops; on axis 1 the outputs keep
    batch 1 in front, which our export declares for every output)."""

    def __init__(self, dim: int, layers: int, heads: int, decoder_layers: int, mels: int = 80,
                 positions: int = 1500) -> None:
        super().__init__()
        head_dim = dim // heads
        self.conv1 = nn.Conv2d(mels, dim, (1, 3), padding=(0, 1))
        self.conv2 = nn.Conv2d(dim, dim, (1, 3), stride=2, padding=(0, 1))
        self.positions = nn.Parameter(torch.zeros(positions, dim))
        self.layers = nn.ModuleList(AdaptedWhisperLayer(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.cross_k = nn.ModuleList(nn.ModuleList(nn.Conv2d(dim, head_dim, 1, bias=False) for _ in range(heads))
                                     for _ in range(decoder_layers))
        self.cross_v = nn.ModuleList(nn.ModuleList(nn.Conv2d(dim, head_dim, 1) for _ in range(heads))
                                     for _ in range(decoder_layers))
        self.output_count = 2 * decoder_layers

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = nn.functional.gelu(self.conv1(mel.unsqueeze(0).permute(1, 2, 0, 3)))
        x = nn.functional.gelu(self.conv2(x)).permute(0, 2, 3, 1) + self.positions  # [1, 1, 1500, C]
        for layer in self.layers:
            x = layer(x)
        h = self.norm(x).permute(0, 3, 1, 2)
        out = []
        for ks, vs in zip(self.cross_k, self.cross_v):
            out.append(torch.cat([k(h).permute(0, 2, 1, 3) for k in ks], dim=1))
            out.append(torch.cat([v(h).permute(0, 2, 3, 1) for v in vs], dim=1))
        return tuple(out)


class CrossKVEncoder(nn.Module):
    """An encoder followed by every decoder layer's cross-attention K/V projections, head-split, as its outputs
    (TrOCR's TrOCREncoder; Opus-MT's QcMarianEncoder with `transpose_key`: K as [B, H, d, S])."""

    def __init__(self, encoder: nn.Module, names: list[str], dim: int, kv_dim: int, heads: int, decoder_layers: int,
                 transpose_key: bool = False, bias: bool = True) -> None:
        super().__init__()
        self.encoder, self.names, self.heads, self.transpose_key = encoder, names, heads, transpose_key
        self.k = nn.ModuleList(nn.Linear(dim, kv_dim, bias=bias) for _ in range(decoder_layers))
        self.v = nn.ModuleList(nn.Linear(dim, kv_dim, bias=bias) for _ in range(decoder_layers))
        self.output_count = 2 * decoder_layers

    def forward(self, first: torch.Tensor, second: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        feeds = dict(zip(self.names, (first, second)))
        hidden = self.encoder(**feeds)[0]
        b = hidden.shape[0]
        out = []
        for k, v in zip(self.k, self.v):
            key = k(hidden).view(b, -1, self.heads, k.out_features // self.heads)
            out.append(key.permute(0, 2, 3, 1) if self.transpose_key else key.transpose(1, 2))
            out.append(v(hidden).view(b, -1, self.heads, v.out_features // self.heads).transpose(1, 2))
        return tuple(out)


class SplitHeadSpatialAttention(nn.Module):
    """SD's SHAAttention on NCHW: per-head 1x1 q/k/v convolutions ([B, d, H, W]), scores [B, H, W, S] per head,
    heads concatenated on the last axis, then the original output Linear (and dropout); returns NCHW."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        heads, head_dim = attn.heads, attn.to_q.out_features // attn.heads
        self.head_dim, self.scale = head_dim, head_dim ** -0.5
        self.q = nn.ModuleList(nn.Conv2d(attn.to_q.in_features, head_dim, 1, bias=attn.to_q.bias is not None)
                               for _ in range(heads))
        self.k = nn.ModuleList(nn.Conv2d(attn.to_k.in_features, head_dim, 1, bias=attn.to_k.bias is not None)
                               for _ in range(heads))
        self.v = nn.ModuleList(nn.Conv2d(attn.to_v.in_features, head_dim, 1, bias=attn.to_v.bias is not None)
                               for _ in range(heads))
        self.to_out = attn.to_out
        for convs, linear in ((self.q, attn.to_q), (self.k, attn.to_k), (self.v, attn.to_v)):
            for h, conv in enumerate(convs):
                _copy_rows(linear, conv, slice(h * head_dim, (h + 1) * head_dim))

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, **_: object) -> torch.Tensor:
        b = hidden_states.shape[0]
        context = (hidden_states if encoder_hidden_states is None
                   else encoder_hidden_states.permute(0, 2, 1).unsqueeze(2))  # [B, C, 1, S]
        heads = []
        for q, k, v in zip(self.q, self.k, self.v):
            scores = q(hidden_states).permute(0, 2, 3, 1) @ k(context).view(b, 1, self.head_dim, -1) * self.scale
            heads.append(torch.softmax(scores, dim=-1) @ v(context).view(b, 1, self.head_dim, -1).permute(0, 1, 3, 2))
        out = self.to_out[1](self.to_out[0](torch.cat(heads, dim=-1)))  # [B, H, W, C]
        return out.permute(0, 3, 1, 2)


class PermutedLayerNorm(nn.Module):
    """A LayerNorm over channels of an NCHW tensor: permuted to NHWC and back, as AI Hub's PermuteLayerNorm."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvGEGLU(nn.Module):
    """AI Hub's QcGEGLU: the GEGLU projection as two 1x1 convolutions (hidden, gate), no chunk."""

    def __init__(self, geglu: nn.Module) -> None:
        super().__init__()
        dim_in, dim_out = geglu.proj.in_features, geglu.proj.out_features // 2
        self.hidden = nn.Conv2d(dim_in, dim_out, 1, bias=geglu.proj.bias is not None)
        self.gate = nn.Conv2d(dim_in, dim_out, 1, bias=geglu.proj.bias is not None)
        _copy_rows(geglu.proj, self.hidden, slice(0, dim_out))
        _copy_rows(geglu.proj, self.gate, slice(dim_out, 2 * dim_out))

    def forward(self, x: torch.Tensor, *_: object, **__: object) -> torch.Tensor:
        return self.hidden(x) * nn.functional.gelu(self.gate(x))


def _copy_rows(linear: nn.Linear, conv: nn.Conv2d, rows: slice) -> None:
    """conv (1x1) computes `rows` of linear's outputs (so the adapted UNet computes what the original does)."""
    with torch.no_grad():
        conv.weight.copy_(linear.weight[rows].reshape(conv.weight.shape))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias[rows])


def _linear_as_conv(linear: nn.Linear) -> nn.Conv2d:
    conv = nn.Conv2d(linear.in_features, linear.out_features, 1, bias=linear.bias is not None)
    _copy_rows(linear, conv, slice(None))
    return conv


def _nchw_inputs(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, int]:  # noqa: ANN001
    """Transformer2DModel without the reshape to tokens (AI Hub's optimized_operate_on_continuous_inputs)."""
    hidden_states = self.proj_in(self.norm(hidden_states))
    return hidden_states, hidden_states.shape[1]


def _nchw_output(self, hidden_states, residual, batch_size, height, width, inner_dim):  # noqa: ANN001, ANN202
    return self.proj_out(hidden_states) + residual


def adapt_sd_unet(unet: nn.Module) -> nn.Module:
    """AI Hub's monkey_patch_model on a diffusers UNet2DConditionModel (SD-1.5's: conv proj_in / proj_out), in place:
    split-head attention, NCHW transformer blocks, GEGLU and feed-forward as 1x1 convolutions."""
    import types

    from diffusers.models.activations import GEGLU
    from diffusers.models.attention import BasicTransformerBlock, FeedForward
    from diffusers.models.attention_processor import Attention
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    for module in list(unet.modules()):
        if isinstance(module, Transformer2DModel):
            if isinstance(module.proj_in, nn.Linear):
                module.proj_in, module.proj_out = _linear_as_conv(module.proj_in), _linear_as_conv(module.proj_out)
            module._operate_on_continuous_inputs = types.MethodType(_nchw_inputs, module)
            module._get_output_for_continuous_inputs = types.MethodType(_nchw_output, module)
        if isinstance(module, BasicTransformerBlock):
            module.attn1, module.attn2 = SplitHeadSpatialAttention(module.attn1), SplitHeadSpatialAttention(module.attn2)
            module.norm1, module.norm2 = PermutedLayerNorm(module.norm1), PermutedLayerNorm(module.norm2)
            if getattr(module, "norm3", None) is not None:
                module.norm3 = PermutedLayerNorm(module.norm3)
        if isinstance(module, FeedForward):
            module.net = nn.ModuleList(ConvGEGLU(m) if isinstance(m, GEGLU) else
                                       _linear_as_conv(m) if isinstance(m, nn.Linear) else m for m in module.net)
    assert not any(isinstance(m, Attention) for m in unet.modules()), "an attention was not split per head"
    return unet
