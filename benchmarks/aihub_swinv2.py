"""SwinV2-Base as Qualcomm AI Hub deployed it, re-stated in plain PyTorch (aihub_custom.CUSTOM holds it).

AI Hub built it from torchvision's `swin_v2_b` (quic/ai-hub-models v0.45.0, models/swinv2_base/model.py: patch 4,
embed 128, depths 2/2/18/2, heads 4/8/16/32, window 8) at its ImageNet input, 224x224, swapping only the patch-merging
linears for AutoSplitLinear (aihub_swin.split_linear: no linear wider than 512 channels). Unlike Swin v1 (aihub_swin),
attention keeps torchvision's form: one fused QKV linear, cosine attention (normalized Q and K, a per-head logit
scale), post-norm residual blocks, feature maps padded to whole windows (28 -> 32, 14 -> 16, 7 -> 8; no shift where
one window covers the map), patch merging that reduces before it normalizes. What torchvision computes from
parameters alone on every call is held as the constant a converter folds it to: each block's continuous position bias
(16 * sigmoid of an MLP over a fixed coordinate table, heads x 64 x 64), the logit scale (exp of the clamped
parameter) and the shifted blocks' attention masks. torchvision does not import beside the torch fusionc pins
(latency_graphs.py), hence the re-statement.

The current AI Hub release no longer lists SwinV2; its last figures are in aihub_perf_history.csv, which
costmodel_fit.load_rows reads for models the current release dropped.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from aihub_mobile import builder
from aihub_swin import Swin, merge_neighbours, reduce, shift_mask

WINDOW = 8
EMBED, DEPTHS, HEADS = 128, (2, 2, 18, 2), (4, 8, 16, 32)


class WindowAttentionV2(nn.Module):
    """torchvision's shifted_window_attention with v2_logit_scale, on a [1, H, W, C] map of side `size`."""

    def __init__(self, dim: int, heads: int, size: int, shifted: bool) -> None:
        super().__init__()
        self.heads = heads
        self.padded = -(-size // WINDOW) * WINDOW
        self.shift = WINDOW // 2 if shifted and self.padded > WINDOW else 0
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        tokens = WINDOW * WINDOW
        self.position_bias = nn.Parameter(torch.zeros(1, heads, tokens, tokens), requires_grad=False)
        self.logit_scale = nn.Parameter(torch.full((heads, 1, 1), 10.0), requires_grad=False)
        if self.shift:
            self.mask = nn.Parameter(shift_mask(self.padded, self.shift, WINDOW), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, H, W, C = x.shape
        pad = self.padded - H
        x = F.pad(x, (0, 0, 0, pad, 0, pad))
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        n = self.padded // WINDOW
        windows, tokens = n * n, WINDOW * WINDOW
        x = x.view(1, n, WINDOW, n, WINDOW, C).permute(0, 1, 3, 2, 4, 5).reshape(windows, tokens, C)
        q, k, v = self.qkv(x).reshape(windows, tokens, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) * self.logit_scale + self.position_bias
        if self.shift:
            attn = attn.view(1, windows, self.heads, tokens, tokens) + self.mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, tokens, tokens)
        x = self.proj(F.softmax(attn, dim=-1).matmul(v).transpose(1, 2).reshape(windows, tokens, C))
        x = x.view(1, n, n, WINDOW, WINDOW, C).permute(0, 1, 3, 2, 4, 5).reshape(1, self.padded, self.padded, C)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        return x[:, :H, :W, :].contiguous()


class PatchMergingV2(nn.Module):
    """2x2 neighbours concatenated (4C), reduced to 2C by a bias-free linear (split as AI Hub splits it), normalized."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(reduce(merge_neighbours(x), self.reduction))


def SwinV2() -> nn.Module:  # noqa: N802 (a model constructor, as torchvision's swin_v2_b)
    return Swin(EMBED, DEPTHS, HEADS, WindowAttentionV2, post_norm=True, merging=PatchMergingV2)


BUILDERS: dict[tuple[str, str], Callable] = {
    ("swinv2_base", "SwinV2-Base"): builder(SwinV2, "image_tensor", (1, 3, 224, 224))}
# AI Hub's info.yaml (v0.42.0-v0.45.0) gives SwinV2-Base Swin-Base's figures verbatim (88.8M parameters, 339 MB float,
# 90.2 MB w8a16): not a count of this model, so none is checked against it. torchvision's swin_v2_b has 87,930,848
# (Swin_V2_B_Weights meta); ours holds the folded constants in place of the position MLPs (position_mlp_params)
NOT_PUBLISHED = {"swinv2_base": "info.yaml repeats Swin-Base's parameter count and sizes"}
TORCHVISION_PARAMS = 87_930_848


def position_mlp_params() -> int:
    """Parameters of torchvision's per-block position MLPs (Linear(2, 512) + ReLU + Linear(512, heads, no bias))."""
    return sum(depth * (2 * 512 + 512 + 512 * heads) for depth, heads in zip(DEPTHS, HEADS))
