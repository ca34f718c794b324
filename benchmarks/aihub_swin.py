"""Swin-Tiny, -Small and -Base as Qualcomm AI Hub deploys them, re-stated in plain PyTorch (aihub_custom.CUSTOM holds
them).

AI Hub builds these from torchvision's `swin_t` / `swin_s` / `swin_b` (quic/ai-hub-models v0.43.0,
models/swin_*/model.py) and swaps two modules for inference (`_shared/swin/swin_transformer.py`):
- every shifted-window attention computes Q, K and V with three linears instead of one fused QKV linear, and a
  linear wider than 512 channels (the last stage's) is split into chunks of at most 512 input and output channels
  (partial products summed, output chunks concatenated); windows are partitioned with rank-4 views;
- the patch-merging linear is split the same way.
torchvision does not import beside the torch fusionc pins (latency_graphs.py), so the architecture is re-stated here.
Where the exported asset holds a constant that torchvision computes on the fly, the module holds it as a fixed
parameter: each block's relative-position bias (heads x 49 x 49, gathered from its table at export) and each shifted
block's attention mask (windows x 49 x 49). With them the parameter counts are AI Hub's (28.8M, 50.4M, 88.8M;
torchvision's own are 28.3M, 49.6M and 87.8M).

The current AI Hub release no longer lists Swin; its last figures (v0.39.1-v0.45.0 on the current chipsets, v0.37.1
on the 8 Gen 2) are in aihub_perf_history.csv, which costmodel_fit.load_rows reads for models the current release
dropped.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from aihub_mobile import builder

WINDOW = 7
MAX_CHANNELS = 512  # AI Hub's split_linear: no linear wider than this


def split_linear(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """`linear(x)` as AI Hub's split_linear computes it: output channels in chunks of at most MAX_CHANNELS, each the sum
    of partial products over input chunks of at most MAX_CHANNELS, bias added once per output chunk."""
    weight, bias = linear.weight, linear.bias
    out_chunks = -(-weight.shape[0] // MAX_CHANNELS)
    outputs = []
    for k, w in enumerate(weight.chunk(out_chunks, dim=0)):
        in_chunks = -(-w.shape[1] // MAX_CHANNELS)
        b = None if bias is None else bias.chunk(out_chunks)[k]
        if in_chunks == 1:
            outputs.append(F.linear(x, w, b))
            continue
        y = sum(F.linear(xc, wc) for xc, wc in zip(x.chunk(in_chunks, dim=-1), w.chunk(in_chunks, dim=1)))
        outputs.append(y if b is None else y + b)
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)


def shift_mask(size: int, shift: int, window: int = WINDOW) -> torch.Tensor:
    """The shifted-window attention mask (windows, window^2, window^2): 0 within a region, -100 across regions."""
    region = torch.zeros(size, size)
    count = 0
    for h in ((0, -window), (-window, -shift), (-shift, None)):
        for w in ((0, -window), (-window, -shift), (-shift, None)):
            region[h[0]:h[1], w[0]:w[1]] = count
            count += 1
    n = size // window
    region = region.view(n, window, n, window).permute(0, 2, 1, 3).reshape(n * n, window * window)
    diff = region.unsqueeze(1) - region.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


class WindowAttention(nn.Module):
    """AI Hub's ShiftedWindowAttentionInf on a [1, H, W, C] map of side `size`."""

    def __init__(self, dim: int, heads: int, size: int, shifted: bool) -> None:
        super().__init__()
        self.heads, self.size = heads, size
        self.shift = WINDOW // 2 if shifted and size > WINDOW else 0
        self.q, self.k, self.v = (nn.Linear(dim, dim) for _ in range(3))
        self.proj = nn.Linear(dim, dim)
        tokens = WINDOW * WINDOW
        self.bias = nn.Parameter(torch.zeros(1, heads, tokens, tokens), requires_grad=False)
        if self.shift:
            self.mask = nn.Parameter(shift_mask(size, self.shift), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, H, W, C = x.shape
        windows = (H // WINDOW) * (W // WINDOW)
        tokens = WINDOW * WINDOW
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        x = x.view(H // WINDOW, WINDOW, W // WINDOW, WINDOW * C).permute(0, 2, 1, 3).reshape(windows, tokens, C)
        project = split_linear if C > MAX_CHANNELS else (lambda t, linear: linear(t))
        q, k, v = (project(x, lin).reshape(windows, tokens, self.heads, C // self.heads).permute(0, 2, 1, 3)
                   for lin in (self.q, self.k, self.v))
        attn = (q * (C // self.heads) ** -0.5).matmul(k.transpose(-2, -1)) + self.bias
        if self.shift:
            attn = attn.view(1, windows, self.heads, tokens * tokens)
            attn = attn + self.mask.reshape(windows, -1).unsqueeze(0).unsqueeze(2)
            attn = attn.view(-1, self.heads, tokens, tokens)
        x = F.softmax(attn, dim=-1).matmul(v).transpose(1, 2).reshape(windows, tokens, C)
        x = self.proj(x)
        x = x.view(H // WINDOW, W // WINDOW, WINDOW, WINDOW * C).permute(0, 2, 1, 3).reshape(1, H, W, C)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        return x


class Block(nn.Module):
    """Pre-norm (Swin v1: x + attn(norm1(x)), then x + mlp(norm2(x))) or, with `post_norm`, Swin v2's
    x + norm1(attn(x)), then x + norm2(mlp(x)); `attention` builds the window attention (dim, heads, size, shifted)."""

    def __init__(self, dim: int, heads: int, size: int, shifted: bool, attention: Callable[..., nn.Module] | None = None,
                 post_norm: bool = False) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = (attention or WindowAttention)(dim, heads, size, shifted)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.post_norm = post_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.post_norm:
            x = x + self.norm1(self.attn(x))
            return x + self.norm2(self.mlp(x))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def merge_neighbours(x: torch.Tensor) -> torch.Tensor:
    """[..., H, W, C] -> [..., H/2, W/2, 4C]: each 2x2 neighbourhood's channels side by side (torchvision's order)."""
    return torch.cat([x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :], x[..., 0::2, 1::2, :], x[..., 1::2, 1::2, :]], -1)


def reduce(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """`linear(x)`, split as AI Hub's AutoSplitLinear splits a linear wider than MAX_CHANNELS."""
    wide = linear.in_features > MAX_CHANNELS or linear.out_features > MAX_CHANNELS
    return split_linear(x, linear) if wide else linear(x)


class PatchMerging(nn.Module):
    """2x2 neighbours concatenated (4C), normalized, reduced to 2C by a bias-free linear (split as AI Hub splits it)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reduce(self.norm(merge_neighbours(x)), self.reduction)


class Swin(nn.Module):
    """torchvision's SwinTransformer (patch 4, MLP ratio 4) at 224x224, 1000 classes: v1 as built here, v2 with
    aihub_swinv2's window attention, post-norm blocks and patch merging."""

    def __init__(self, embed: int, depths: tuple[int, ...], heads: tuple[int, ...],
                 attention: Callable[..., nn.Module] | None = None, post_norm: bool = False,
                 merging: Callable[[int], nn.Module] | None = None) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, embed, kernel_size=4, stride=4)
        self.stem_norm = nn.LayerNorm(embed)
        layers: list[nn.Module] = []
        size, dim = 224 // 4, embed
        for stage, (depth, h) in enumerate(zip(depths, heads)):
            layers += [Block(dim, h, size, i % 2 == 1, attention, post_norm) for i in range(depth)]
            if stage < len(depths) - 1:
                layers.append((merging or PatchMerging)(dim))
                size, dim = size // 2, dim * 2
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 1000)

    def forward(self, image_tensor: torch.Tensor) -> torch.Tensor:  # AI Hub's input name (its ImagenetClassifier)
        x = self.stem_norm(self.stem(image_tensor).permute(0, 2, 3, 1))
        x = self.norm(self.features(x)).permute(0, 3, 1, 2)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


CONFIGS = {"swin_tiny": ("Swin-Tiny", 96, (2, 2, 6, 2), (3, 6, 12, 24)),
           "swin_small": ("Swin-Small", 96, (2, 2, 18, 2), (3, 6, 12, 24)),
           "swin_base": ("Swin-Base", 128, (2, 2, 18, 2), (4, 8, 16, 32))}
BUILDERS: dict[tuple[str, str], Callable] = {
    (key, component): builder(lambda e=embed, d=depths, h=heads: Swin(e, d, h), "image_tensor", (1, 3, 224, 224))
    for key, (component, embed, depths, heads) in CONFIGS.items()}
PUBLISHED_PARAMS = {"swin_tiny": 28.8e6, "swin_small": 50.4e6, "swin_base": 88.8e6}  # info.yaml, v0.43.0
