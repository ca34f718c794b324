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
