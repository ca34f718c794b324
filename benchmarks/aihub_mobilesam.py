"""MobileSAM's image encoder (TinyViT-5M at 1024x1024) as Qualcomm AI Hub deploys it, re-stated in plain PyTorch
(aihub_custom.CUSTOM holds it).

AI Hub's MobileSAMEncoder (quic/ai-hub-models v0.46.1, models/mobilesam/model.py) runs the `mobile_sam` package's
Sam.preprocess (normalization; the pad is empty at 1024x1024) and its TinyViT image encoder
(mobile_sam/modeling/tiny_vit_sam.py; vit_t: embed dims 64/128/160/320, depths 2/2/6/2, heads 2/4/5/10, windows
7/7/14/7) unpatched; the package imports timm for three helpers, so the architecture is re-stated here, module for
module. The encoder is a hybrid at high resolution, as a diffusion UNet is: MBConv blocks at 256x256, then windowed
attention (with a depthwise conv between attention and MLP) at 128x128 and 64x64, windows padded to whole tiles
(128 -> 133 for 7, 64 -> 70 for 14 and 7), and a conv neck. Each attention's relative-position bias is the gathered
(heads x N x N) constant that eval mode registers (`ab`), held as a fixed parameter. The classifier head TinyViT
builds but never calls is not in the graph. The decoder (AI Hub's patched two-way transformer) is not re-stated.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from aihub_mobile import builder

SIZE = 1024  # AI Hub's input spec: image (1, 3, 1024, 1024)
DIMS, DEPTHS, HEADS, WINDOWS = (64, 128, 160, 320), (2, 2, 6, 2), (2, 4, 5, 10), (7, 7, 14, 7)


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout))


class MBConv(nn.Module):
    def __init__(self, dim: int, expand: int = 4) -> None:
        super().__init__()
        hidden = dim * expand
        self.body = nn.Sequential(conv_bn(dim, hidden), nn.GELU(), conv_bn(hidden, hidden, 3, groups=hidden),
                                  nn.GELU(), conv_bn(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.body(x) + x)


class PatchMerging(nn.Module):
    """1x1 conv, depthwise 3x3 (stride 2, or 1 into the last stage), 1x1 conv; tokens out."""

    def __init__(self, side: int, dim: int, out: int) -> None:
        super().__init__()
        self.side = side
        self.body = nn.Sequential(conv_bn(dim, out), nn.GELU(), conv_bn(out, out, 3, 1 if out == 320 else 2, out),
                                  nn.GELU(), conv_bn(out, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x.view(1, self.side, self.side, -1).permute(0, 3, 1, 2)
        return self.body(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads, self.key_dim = heads, dim // heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        tokens = window * window
        self.bias = nn.Parameter(torch.zeros(heads, tokens, tokens), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        q, k, v = self.qkv(self.norm(x)).view(B, N, self.heads, -1).split([self.key_dim] * 3, dim=3)
        q, k, v = q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
        attn = (q @ k.transpose(-2, -1)) * self.key_dim ** -0.5 + self.bias
        return self.proj((attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, N, -1))


class TinyViTBlock(nn.Module):
    def __init__(self, dim: int, side: int, heads: int, window: int) -> None:
        super().__init__()
        self.side, self.window = side, window
        self.attn = Attention(dim, heads, window)
        self.local_conv = conv_bn(dim, dim, 3, groups=dim)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        H = W = self.side
        w = self.window
        pad = (w - H % w) % w
        y = x.view(B, H, W, C)
        if pad:
            y = F.pad(y, (0, 0, 0, pad, 0, pad))
        n = (H + pad) // w
        y = y.view(B, n, w, n, w, C).transpose(2, 3).reshape(B * n * n, w * w, C)
        y = self.attn(y).view(B, n, n, w, w, C).transpose(2, 3).reshape(B, H + pad, W + pad, C)
        if pad:
            y = y[:, :H, :W].contiguous()
        x = x + y.view(B, L, C)
        x = self.local_conv(x.transpose(1, 2).reshape(B, C, H, W)).view(B, C, L).transpose(1, 2)
        return x + self.mlp(x)


class LayerNorm2d(nn.Module):
    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        x = (x - u) / torch.sqrt((x - u).pow(2).mean(1, keepdim=True) + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MobileSAMEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1) / 255)
        self.register_buffer("std", torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1) / 255)
        side = SIZE // 4
        self.patch_embed = nn.Sequential(conv_bn(3, DIMS[0] // 2, 3, 2), nn.GELU(), conv_bn(DIMS[0] // 2, DIMS[0], 3, 2))
        stages: list[nn.Module] = [*(MBConv(DIMS[0]) for _ in range(DEPTHS[0])), PatchMerging(side, DIMS[0], DIMS[1])]
        for i in (1, 2, 3):
            side_i = side // 2 ** (i - 1 if i == 3 else i)
            stages += [TinyViTBlock(DIMS[i], side_i, HEADS[i], WINDOWS[i]) for _ in range(DEPTHS[i])]
            if i < 3:
                stages.append(PatchMerging(side_i, DIMS[i], DIMS[i + 1]))
        self.layers = nn.Sequential(*stages)
        self.neck = nn.Sequential(nn.Conv2d(DIMS[3], 256, 1, bias=False), LayerNorm2d(256),
                                  nn.Conv2d(256, 256, 3, padding=1, bias=False), LayerNorm2d(256))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.patch_embed((image - self.mean) / self.std))
        return self.neck(x.view(1, 64, 64, -1).permute(0, 3, 1, 2))


BUILDERS: dict[tuple[str, str], Callable] = {
    ("mobilesam", "MobileSAMEncoder"): builder(MobileSAMEncoder, "image", (1, 3, SIZE, SIZE))}
# info.yaml "Number of parameters (SAMEncoder)", v0.46.1: our count with each attention's gathered bias held as a
# parameter (1.22M of it, 1.15M in the 64x64 stage's 14x14 windows), as the exported asset holds it; without them 5.74M
PUBLISHED_PARAMS = {"mobilesam": 6.95e6}
