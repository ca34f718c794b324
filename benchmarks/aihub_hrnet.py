"""AI Hub's HRNet models, built from their authors' code, re-stated as plain PyTorch modules.

Each module is written layer for layer as the source's forward runs in eval mode for the configuration AI Hub loads,
wrapped in what AI Hub's model.py forward adds (those ops are part of the graph AI Hub compiles). Sub-module names
mirror the sources' state_dict keys, so a source checkpoint loads into them (checked: see "Verified" below).

Sources (AI Hub v0.46.1, quic/ai-hub-models 52c080d2, and the code it loads):
- hrnet_pose (component HRNetPose): leoxiaobin/deep-high-resolution-net.pytorch@6f69e467 lib/models/pose_hrnet.py
  `PoseHighResolutionNet(cfg)` with experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml (HRNet-W32: stem, layer1 of 4
  Bottlenecks, stages 2/3/4 of 1/4/3 modules with 2/3/4 branches of 4 BasicBlocks at 32/64/128/256 channels; the last
  module only fuses into branch 0; fusion upsamples with nn.Upsample(nearest); 1x1 final_layer to 17 joints).
  AI Hub's HRNetPose.forward: `normalize_image_torchvision(image)` ((x - mean) / std, torchvision constants) then the
  net; output heatmaps (1, 17, 64, 48). Published 28.5M parameters; input image (1, 3, 256, 192).
- hrnet_face (component HRNetFace): HRNet/HRNet-Facial-Landmark-Detection@f776dbe8 lib/models/hrnet.py
  `get_face_alignment_net(config)` = `HighResolutionNet` with experiments/cofw/face_alignment_cofw_hrnet_w18.yaml
  (HRNetV2-W18: same backbone at 18/36/72/144 channels, all stage-4 outputs kept; fusion upsamples with
  F.interpolate(size, bilinear); head: the 3 lower branches resized bilinearly (align_corners=False) to branch 0,
  concatenated (270 ch), 1x1 conv(+bias) - BN - ReLU - 1x1 conv(+bias) to 29 landmarks).
  AI Hub's HRNetFace.forward: `self.model(normalize_image_torchvision(image))`; output heatmaps (1, 29, 64, 64).
  Published 9.68M parameters; input image (1, 3, 256, 256).
- litehrnet (component LiteHRNet): open-mmlab/mmpose v1.2.0 (AI Hub's README pins mmpose==1.2.0; litehrnet.py is
  unchanged up to 759b39c1) mmpose/models/backbones/litehrnet.py `LiteHRNet` with
  configs/body_2d_keypoint/topdown_heatmap/coco/td-hm_litehrnet-18_8xb64-210e_coco-256x192.py (Lite-HRNet-18: stem 32,
  stages of 2/4/2 LITE modules with 2/3/4 branches at 40/80/160/320 channels, 2 conditional channel weighting blocks
  each, reduce ratio 8, with_fuse, IterativeHead) in a TopdownPoseEstimator whose HeatmapHead is only a 1x1
  final_layer (40 -> 17). AI Hub's LiteHRNet.forward: `image[:, [2, 1, 0]]`, (x - mean) / std with the
  PoseDataPreprocessor constants (0-255 scale, applied as is), `model._forward`, then view (1, 17, -1), torch.max over
  dim 2, indices // 48 and % 48 cast to float and stacked: outputs keypoints (1, 17, 2), scores (1, 17), heatmaps
  (1, 17, 64, 48). Published 1.11M parameters; input image (1, 3, 256, 192). The source's fuse accumulates in place
  (see _LiteHRModule), which is re-stated with the same data flow.

Parameter counts (AI Hub does not count consistently across these three):
- hrnet_pose 28,536,113 unfolded (+0.13% vs 28.5M); 28,508,945 with BN folded (+0.03%).
- hrnet_face 9,643,829 unfolded (-0.38% vs 9.68M); 9,626,321 folded (-0.55%). AI Hub's 9.68M matches the unfolded
  count plus the BN running statistics (9,678,305, -0.02%), i.e. a count of the state_dict.
- litehrnet 1,130,769 unfolded (+1.9% vs 1.11M); 1,114,569 with BN folded (+0.41%): AI Hub's figure is the folded one.
All three equal the source modules' own counts exactly (below), so the residual differences are AI Hub's counting.

Verified: each source file (pose_hrnet.py at 6f69e467, hrnet.py at f776dbe8, litehrnet.py at mmpose v1.2.0) was
imported from the fetched checkouts (configs read from their yaml / the mmpose config's dict; for litehrnet with
mmcv-lite 2.1.0 + mmengine 0.10.3 from a scratch --target dir, cv2 stubbed, mmpose's registry / BaseBackbone /
channel_shuffle imports stubbed), built, given random weights and random BN running statistics, and its state_dict
loaded with strict=True into the re-statement (all keys match: hrnet_pose's keys are the net's own, the wrapper's
`model.` prefix dropped; litehrnet's are `backbone.*` / `head.final_layer.*`). In eval mode on CPU the outputs of the
source (behind the wrapper's ops re-typed from AI Hub's model.py) and of the re-statement are identical (max abs diff
0.0 for the heatmaps of all three and for litehrnet's keypoints and scores).

Export (latency_graphs.features_of, "meta"): ops vs layers_total of AI Hub's QNN_DLC rows (float / w8a8):
hrnet_pose 745 vs 748 / 749, hrnet_face 783 vs 788 / 789, litehrnet 1056 (1159 counting the free reshapes etc.) vs
1058 (float only).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from aihub_mobile import builder, folded_params

_MEAN = (0.485, 0.456, 0.406)  # qai_hub_models.utils.image_processing.normalize_image_torchvision
_STD = (0.229, 0.224, 0.225)


def _normalize_torchvision(image: torch.Tensor) -> torch.Tensor:
    """AI Hub's normalize_image_torchvision: (image - mean) / std with (1, 3, 1, 1) constants (on the input's
    device, so the module also traces on meta)."""
    mean = torch.tensor(_MEAN, dtype=image.dtype, device=image.device).reshape(1, -1, 1, 1)
    std = torch.tensor(_STD, dtype=image.dtype, device=image.device).reshape(1, -1, 1, 1)
    return (image - mean) / std


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, relu: bool) -> nn.Sequential:
    """Conv (bias-free, 'same' padding for odd kernels) + BN [+ ReLU]: the sources' nn.Sequential(Conv2d, BN[, ReLU])
    used by downsample, transition and fuse layers (same indices, so the same state_dict keys)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, + identity (or downsample), ReLU."""

    expansion = 1

    def __init__(self, cin: int, planes: int, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


class Bottleneck(nn.Module):
    """1x1-BN-ReLU, 3x3-BN-ReLU, 1x1 (x4)-BN, + identity (or downsample), ReLU."""

    expansion = 4

    def __init__(self, cin: int, planes: int, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


def _blocks(block: type, cin: int, planes: int, count: int) -> nn.Sequential:
    """The sources' _make_layer / _make_one_branch (stride 1): a 1x1 conv+BN downsample on the first block when the
    channel count changes."""
    cout = planes * block.expansion
    downsample = _conv_bn(cin, cout, 1, 1, relu=False) if cin != cout else None
    return nn.Sequential(block(cin, planes, downsample), *[block(cout, planes) for _ in range(count - 1)])


class HighResolutionModule(nn.Module):
    """One exchange unit: every branch runs its BasicBlocks, then each output i sums all branches j brought to its
    resolution (j > i: 1x1 conv+BN then upsample; j < i: (i - j) stride-2 3x3 convs, ReLU between them) and ReLUs.

    `upsample` is "nearest" (pose_hrnet: nn.Upsample(scale_factor=2**(j-i), mode='nearest')) or "bilinear" (face
    hrnet: F.interpolate(size=x[i].shape[2:], mode='bilinear'))."""

    def __init__(self, channels: list[int], num_blocks: int, multi_scale_output: bool, upsample: str):
        super().__init__()
        n = len(channels)
        self.upsample = upsample
        self.branches = nn.ModuleList([_blocks(BasicBlock, c, c, num_blocks) for c in channels])
        fuse_layers = []
        for i in range(n if multi_scale_output else 1):
            row: list[nn.Module | None] = []
            for j in range(n):
                if j > i:
                    row.append(_conv_bn(channels[j], channels[i], 1, 1, relu=False))
                elif j == i:
                    row.append(None)
                else:
                    steps = [_conv_bn(channels[j], channels[j], 3, 2, relu=True) for _ in range(i - j - 1)]
                    steps.append(_conv_bn(channels[j], channels[i], 3, 2, relu=False))
                    row.append(nn.Sequential(*steps))
            fuse_layers.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(fuse_layers)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[0] if i == 0 else row[0](xs[0])
            for j in range(1, len(xs)):
                if j == i:
                    y = y + xs[j]
                elif j > i:
                    z = row[j](xs[j])
                    if self.upsample == "nearest":
                        z = F.interpolate(z, scale_factor=float(2 ** (j - i)), mode="nearest")
                    else:
                        z = F.interpolate(z, size=[xs[i].shape[2], xs[i].shape[3]], mode="bilinear")
                    y = y + z
                else:
                    y = y + row[j](xs[j])
            out.append(F.relu(y))
        return out


class HRNetBackbone(nn.Module):
    """The common HRNet body of both sources: stem (two stride-2 3x3 conv-BN-ReLU, 64 ch), layer1 (4 Bottlenecks, 256
    ch), then transition1/stage2, transition2/stage3, transition3/stage4. A transition adapts an existing branch with a
    3x3 conv-BN-ReLU when its width changes and opens the new lowest-resolution branch from the previous last one
    with a stride-2 3x3 conv-BN-ReLU. Returns the stage-4 outputs (only branch 0 when `last_multi_scale` is False)."""

    STAGES = ((1, 2), (4, 3), (3, 4))  # (modules, branches) of stages 2, 3, 4 in both configs; 4 blocks per branch

    def __init__(self, width: int, upsample: str, last_multi_scale: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.layer1 = _blocks(Bottleneck, 64, 64, 4)
        previous = [256]
        for s, (modules, branches) in enumerate(self.STAGES, start=2):
            channels = [width * 2 ** b for b in range(branches)]
            transition: list[nn.Module | None] = []
            for b, c in enumerate(channels):
                if b < len(previous):
                    transition.append(_conv_bn(previous[b], c, 3, 1, relu=True) if previous[b] != c else None)
                else:  # one new branch per stage here, so a single stride-2 conv from the last one
                    transition.append(nn.Sequential(_conv_bn(previous[-1], c, 3, 2, relu=True)))
            self.add_module(f"transition{s - 1}", nn.ModuleList(transition))
            stage = [HighResolutionModule(channels, 4, last_multi_scale or s < 4 or m < modules - 1, upsample)
                     for m in range(modules)]
            self.add_module(f"stage{s}", nn.Sequential(*stage))
            previous = channels

    def forward_backbone(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        ys = [self.layer1(x)]
        for s in (2, 3, 4):
            transition = getattr(self, f"transition{s - 1}")
            xs = []
            for b, t in enumerate(transition):
                if t is None:
                    xs.append(ys[b])
                else:  # an adapted branch takes its own input, a new branch the previous last one
                    xs.append(t(ys[b] if b < len(ys) else ys[-1]))
            for module in getattr(self, f"stage{s}"):
                xs = module(xs)
            ys = xs
        return ys


class HRNetPose(HRNetBackbone):
    """hrnet_pose: PoseHighResolutionNet (HRNet-W32, COCO 256x192, 17 joints) behind AI Hub's HRNetPose wrapper.
    AI Hub's wrapper holds the net as `.model`; here the net's modules sit at the top level (load `model.*` keys with
    the prefix stripped)."""

    def __init__(self, width: int = 32, joints: int = 17):
        super().__init__(width, upsample="nearest", last_multi_scale=False)
        self.final_layer = nn.Conv2d(width, joints, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.final_layer(self.forward_backbone(_normalize_torchvision(image))[0])


class HRNetFace(HRNetBackbone):
    """hrnet_face: HighResolutionNet (HRNetV2-W18, COFW, 29 landmarks) behind AI Hub's HRNetFace wrapper."""

    def __init__(self, width: int = 18, joints: int = 29):
        super().__init__(width, upsample="bilinear", last_multi_scale=True)
        total = width * 15  # 18 + 36 + 72 + 144
        self.head = nn.Sequential(nn.Conv2d(total, total, 1), nn.BatchNorm2d(total), nn.ReLU(),
                                  nn.Conv2d(total, joints, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        xs = self.forward_backbone(_normalize_torchvision(image))
        size = (xs[0].shape[2], xs[0].shape[3])
        up = [F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in xs[1:]]
        return self.head(torch.cat([xs[0], *up], 1))


# --------------------------------------------------------------------------------------------------- Lite-HRNet


class _ConvModule(nn.Module):
    """mmcv ConvModule as the Lite-HRNet config builds it: conv - [BN] - [act] with act in {relu, sigmoid, None};
    without a norm the conv has a bias (bias='auto')."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, norm: bool = True,
                 act: str | None = "relu"):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=not norm)
        if norm:
            self.bn = nn.BatchNorm2d(cout)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if hasattr(self, "bn"):
            x = self.bn(x)
        if self.act == "relu":
            x = F.relu(x)
        elif self.act == "sigmoid":
            x = torch.sigmoid(x)
        return x


def _channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """mmpose's channel_shuffle: view (b, g, c/g, h, w), swap dims 1 and 2, view back."""
    b, c, h, w = x.shape
    x = x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return x.view(b, c, h, w)


class _LiteStem(nn.Module):
    """Stem(3, stem_channels=32, out_channels=32, expand_ratio=1): 3x3/2 conv-BN-ReLU, split in two halves; one goes
    dw3x3/2-BN, 1x1-BN-ReLU (branch1), the other 1x1-BN-ReLU (16 -> 32), dw3x3/2-BN, 1x1-BN-ReLU (32 -> 16); concat,
    channel shuffle."""

    def __init__(self, cin: int = 3, channels: int = 32):
        super().__init__()
        half = channels // 2
        self.conv1 = _ConvModule(cin, channels, 3, 2)
        self.branch1 = nn.Sequential(_ConvModule(half, half, 3, 2, groups=half, act=None), _ConvModule(half, half))
        mid = channels  # round(stem_channels * expand_ratio)
        self.expand_conv = _ConvModule(half, mid)
        self.depthwise_conv = _ConvModule(mid, mid, 3, 2, groups=mid, act=None)
        self.linear_conv = _ConvModule(mid, half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.conv1(x).chunk(2, dim=1)
        x2 = self.linear_conv(self.depthwise_conv(self.expand_conv(x2)))
        return _channel_shuffle(torch.cat((self.branch1(x1), x2), dim=1), 2)


class _SpatialWeighting(nn.Module):
    """global avg pool, 1x1 conv(+bias)-ReLU (c -> c/4), 1x1 conv(+bias)-sigmoid, x * weights."""

    def __init__(self, channels: int, ratio: int = 4):
        super().__init__()
        self.conv1 = _ConvModule(channels, channels // ratio, norm=False, act="relu")
        self.conv2 = _ConvModule(channels // ratio, channels, norm=False, act="sigmoid")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv2(self.conv1(F.adaptive_avg_pool2d(x, 1)))


class _CrossResolutionWeighting(nn.Module):
    """Every branch adaptive-avg-pooled to the smallest one's size, concatenated, 1x1-BN-ReLU (/ratio), 1x1-BN-sigmoid,
    split back per branch; each branch times its weights upsampled (nearest) to its size."""

    def __init__(self, channels: list[int], ratio: int):
        super().__init__()
        self.channels = channels
        total = sum(channels)
        self.conv1 = _ConvModule(total, int(total / ratio), act="relu")
        self.conv2 = _ConvModule(int(total / ratio), total, act="sigmoid")

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        mini = xs[-1].shape[-2:]
        out = torch.cat([F.adaptive_avg_pool2d(s, mini) for s in xs[:-1]] + [xs[-1]], dim=1)
        weights = torch.split(self.conv2(self.conv1(out)), self.channels, dim=1)
        return [s * F.interpolate(a, size=s.shape[-2:], mode="nearest") for s, a in zip(xs, weights)]


class _ConditionalChannelWeighting(nn.Module):
    """Each branch split in halves; the second halves go through cross-resolution weighting, a dw3x3-BN and spatial
    weighting per branch; concat with the first halves, channel shuffle."""

    def __init__(self, channels: list[int], reduce_ratio: int):
        super().__init__()
        half = [c // 2 for c in channels]
        self.cross_resolution_weighting = _CrossResolutionWeighting(half, reduce_ratio)
        self.depthwise_convs = nn.ModuleList([_ConvModule(c, c, 3, 1, groups=c, act=None) for c in half])
        self.spatial_weighting = nn.ModuleList([_SpatialWeighting(c, 4) for c in half])

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        halves = [s.chunk(2, dim=1) for s in xs]
        x2 = self.cross_resolution_weighting([h[1] for h in halves])
        x2 = [sw(dw(s)) for s, dw, sw in zip(x2, self.depthwise_convs, self.spatial_weighting)]
        return [_channel_shuffle(torch.cat([h[0], s], dim=1), 2) for h, s in zip(halves, x2)]


def _dw_pw(cin: int, cout: int, stride: int, relu: bool) -> nn.Sequential:
    """The Lite-HRNet transition / fuse unit: dw3x3(stride)-BN, 1x1-BN [, ReLU] (Sequential indices 0..4 as in the
    source)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                               nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class _LiteHRModule(nn.Module):
    """LiteHRModule(module_type='LITE', with_fuse=True, multiscale_output=True): 2 conditional channel weighting
    blocks, then the fuse. The source's fuse accumulates in place (`y += ...` with `y = out[0]` for output 0, and
    the loop over j starting at 0), which the traced graph keeps: output 0 is 2 * out[0] + sum_j>0 up(f_0j(out[j])),
    and it overwrites out[0], so every later output i reads that pre-ReLU sum and applies f_i0 to it twice
    (y = f_i0(s) + f_i0(s) + ...). Re-stated with the same data flow (and the duplicated f_i0 convs)."""

    def __init__(self, channels: list[int], num_blocks: int, reduce_ratio: int):
        super().__init__()
        n = len(channels)
        self.layers = nn.Sequential(*[_ConditionalChannelWeighting(channels, reduce_ratio) for _ in range(num_blocks)])
        fuse_layers = []
        for i in range(n):
            row: list[nn.Module | None] = []
            for j in range(n):
                if j > i:
                    row.append(nn.Sequential(nn.Conv2d(channels[j], channels[i], 1, bias=False),
                                             nn.BatchNorm2d(channels[i]), nn.Upsample(scale_factor=2 ** (j - i))))
                elif j == i:
                    row.append(None)
                else:
                    steps = [_dw_pw(channels[j], channels[j], 2, relu=True) for _ in range(i - j - 1)]
                    steps.append(_dw_pw(channels[j], channels[i], 2, relu=False))
                    row.append(nn.Sequential(*steps))
            fuse_layers.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(fuse_layers)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        out = self.layers(xs)
        n = len(out)
        fused = []
        for i, row in enumerate(self.fuse_layers):
            y = out[0] + out[0] if i == 0 else row[0](out[0]) + row[0](out[0])
            for j in range(1, n):
                y = y + (out[j] if i == j else row[j](out[j]))
            if i == 0:
                out = [y, *out[1:]]  # the source's in-place `y += ...` on out[0]
            fused.append(F.relu(y))
        return fused


class _IterativeHead(nn.Module):
    """From the lowest resolution up: add the previous (bilinear, align_corners=True) upsampled result, then a
    depthwise-separable conv (dw3x3-BN, 1x1-BN-ReLU) to the next branch's width (the last keeps its own)."""

    def __init__(self, channels: list[int]):
        super().__init__()
        rev = channels[::-1]
        projects = []
        for i, c in enumerate(rev):
            cout = rev[i + 1] if i + 1 < len(rev) else c
            p = nn.Module()
            p.depthwise_conv = _ConvModule(c, c, 3, groups=c, act=None)
            p.pointwise_conv = _ConvModule(c, cout)
            projects.append(p)
        self.projects = nn.ModuleList(projects)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        ys, last = [], None
        for s, p in zip(xs[::-1], self.projects):
            if last is not None:
                s = s + F.interpolate(last, size=s.shape[-2:], mode="bilinear", align_corners=True)
            last = p.pointwise_conv(p.depthwise_conv(s))
            ys.append(last)
        return ys[::-1]


class LiteHRNet(nn.Module):
    """litehrnet: mmpose 1.2.0 TopdownPoseEstimator with LiteHRNet-18 (td-hm_litehrnet-18_8xb64-210e_coco-256x192)
    behind AI Hub's LiteHRNet wrapper: RGB -> BGR channel gather, (x - mean) / std with the data preprocessor's
    constants, backbone (stem, 3 stages of 2/4/2 LITE modules with 2/3/4 branches at 40/80/160/320 channels, the
    iterative head), HeatmapHead (deconv/conv layers empty: only the 1x1 final_layer to 17 joints), then the
    wrapper's argmax decode. Outputs keypoints (1, 17, 2), scores (1, 17), heatmaps (1, 17, 64, 48). Sub-modules
    are named as the source's `backbone.*` / `head.*` keys."""

    output_count = 3
    MEAN = (123.675, 116.28, 103.53)  # PoseDataPreprocessor of the config (applied to [0, 1] input by AI Hub as is)
    STD = (58.395, 57.12, 57.375)

    def __init__(self, joints: int = 17):
        super().__init__()
        backbone = nn.Module()
        backbone.stem = _LiteStem(3, 32)
        previous = [32]
        for s, (modules, channels) in enumerate(((2, [40, 80]), (4, [40, 80, 160]), (2, [40, 80, 160, 320]))):
            transition: list[nn.Module | None] = []
            for b, c in enumerate(channels):
                if b < len(previous):
                    transition.append(_dw_pw(previous[b], c, 1, relu=True) if previous[b] != c else None)
                else:  # one new branch per stage here: a single dw3x3/2 + 1x1 step from the last branch
                    transition.append(nn.Sequential(_dw_pw(previous[-1], c, 2, relu=True)))
            backbone.add_module(f"transition{s}", nn.ModuleList(transition))
            backbone.add_module(f"stage{s}", nn.Sequential(*[_LiteHRModule(channels, 2, 8) for _ in range(modules)]))
            previous = channels
        backbone.head_layer = _IterativeHead(previous)
        self.backbone = backbone
        self.head = nn.Module()
        self.head.final_layer = nn.Conv2d(40, joints, 1)
        self.heatmap_h = 48  # AI Hub's self.H = head.decoder.heatmap_size[0] (the codec's (w, h) = (48, 64))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bb = self.backbone
        x = image[:, [2, 1, 0], ...]
        mean = torch.tensor(self.MEAN, dtype=image.dtype, device=image.device).view(-1, 1, 1)
        std = torch.tensor(self.STD, dtype=image.dtype, device=image.device).view(-1, 1, 1)
        x = (x - mean) / std
        ys = [bb.stem(x)]
        for s in range(3):
            xs = []
            for b, t in enumerate(getattr(bb, f"transition{s}")):
                xs.append(ys[b] if t is None else t(ys[b] if b < len(ys) else ys[-1]))
            for module in getattr(bb, f"stage{s}"):
                xs = module(xs)
            ys = xs
        heatmaps = self.head.final_layer(bb.head_layer(ys)[0])
        b, k = heatmaps.shape[0], heatmaps.shape[1]
        scores, indices = torch.max(heatmaps.view(b, k, -1), dim=2)
        y_locs = (indices // self.heatmap_h).type(torch.float32)
        x_locs = (indices % self.heatmap_h).type(torch.float32)
        return torch.stack((x_locs, y_locs), dim=-1), scores, heatmaps


# (AI Hub model, component) -> builder; components as in aihub_perf.csv
BUILDERS: dict[tuple[str, str], Callable] = {
    ("hrnet_pose", "HRNetPose"): builder(HRNetPose, "image", (1, 3, 256, 192)),
    ("hrnet_face", "HRNetFace"): builder(HRNetFace, "image", (1, 3, 256, 256)),
    ("litehrnet", "LiteHRNet"): builder(LiteHRNet, "image", (1, 3, 256, 192)),
}
PUBLISHED_PARAMS = {"hrnet_pose": 28.5e6, "hrnet_face": 9.68e6, "litehrnet": 1.11e6}


if __name__ == "__main__":
    for (key, _), build in BUILDERS.items():
        module, feeds = build()
        with torch.no_grad():
            out = module(*feeds.values())
        shapes = [tuple(o.shape) for o in (out if isinstance(out, tuple) else (out,))]
        n = sum(p.numel() for p in module.parameters())
        print(f"{key}: outputs {shapes}, {n / 1e6:.3f}M params ({folded_params(module) / 1e6:.3f}M BN folded) "
              f"(AI Hub: {PUBLISHED_PARAMS[key] / 1e6:.2f}M)")
