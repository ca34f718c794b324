"""Four of AI Hub's semantic-segmentation models built from their authors' code, re-stated as plain PyTorch modules.

Each module is written layer for layer as the source's forward runs in eval mode, wrapped in what AI Hub's model.py
forward adds around it (input normalisation, argmax: those ops are part of the graph AI Hub compiles and times).
Sub-module names mirror the sources' state_dict keys (AI Hub's wrappers hold the network as `.model`), so a source
checkpoint loads into `.model`. Left out: dropout (identity in eval), and the parameters that eval mode never uses
(training-only auxiliary heads; BiSeNet's unused ImageNet `fc`, supervision convs and ARM BatchNorms), so those
source keys have no counterpart here.

Sources (AI Hub v0.46.1, quic/ai-hub-models 52c080d2, and the code it loads at the commits it pins):
- deeplab_xception: NOT jfzhang95/pytorch-deeplab-xception: AI Hub's DeeplabXception loads
  LikeLy-Journey/SegmenTron@4bc605ee (segmentron/models/deeplabv3_plus.py `DeepLabV3Plus` via
  `get_segmentation_model()` with configs/pascal_voc_deeplabv3_plus.yaml: backbone xception65, output stride 16, 21
  classes, SOLVER.AUX False; segmentron/models/backbones/xception.py `Xception65`, segmentron/modules/basic.py
  `SeparableConv2d` / `_ConvBNReLU`, segmentron/modules/module.py `_ASPP`). Its ASPP and decoder are built from
  separable convs with the image-pooling branch first, unlike jfzhang95's, so none of aihub_mobile's DeepLab pieces
  fit; only `builder` is reused. AI Hub wrapper (qai_hub_models/models/deeplab_xception/model.py
  `DeeplabXception.forward`): `(image - 0.5) / 0.5`, the network, first element of its output tuple,
  `argmax(1).byte()`; from_pretrained also sets the encoder's BatchNorm eps to 1e-3 (BN_EPS_FOR_ENCODER).
  41.26M parameters (info.yaml), input image 1x3x480x520, output mask 1x480x520 uint8.
- bisenet: ooooverflow/BiSeNet@284a8f67 model/build_BiSeNet.py `BiSeNet(12, "resnet18")` with
  model/build_contextpath.py `resnet18` (torchvision resnet18 stem + layer1-4, tail = mean over W then H). AI Hub
  wrapper (qai_hub_models/models/bisenet/model.py `BiseNet.forward`): `self.model(normalize_image_torchvision(image))`
  (torchvision mean/std), 12-class CamVid logits at full resolution. 12.0M parameters, input image 1x3x720x960,
  output mask 1x12x720x960.
- ddrnet23_slim: chenjun2hao/DDRNet.pytorch@bc0e193e lib/models/ddrnet_23_slim.py `DualResNet(BasicBlock, [2, 2, 2,
  2], num_classes=19, planes=32, spp_planes=128, head_planes=64, augment=False)` (DAPPM, segmenthead). AI Hub wrapper
  (qai_hub_models/models/_shared/cityscapes_segmentation/model.py `CityscapesSegmentor.forward`):
  `self.model(normalize_image_torchvision(image))`, raw 19-class logits at 1/8 resolution. 6.13M parameters
  (info.yaml v0.46; 5.69M up to v0.45, see below), input image 1x3x1024x2048, output mask 1x19x128x256.
- pidnet: XuJiacong/PIDNet@fefa5171 models/pidnet.py `get_pred_model("pidnet-s", 19)` = PIDNet(m=2, n=3,
  planes=32, ppm_planes=96, head_planes=128, augment=False) with models/model_utils.py (BasicBlock, Bottleneck, PAPPM,
  PagFM, Light_Bag, segmenthead). Same AI Hub wrapper as ddrnet23_slim. 8.06M parameters (info.yaml v0.46; 7.62M up
  to v0.45), input image 1x3x1024x2048, output mask 1x19x128x256.

Parameter counts (`python benchmarks/aihub_segmentation.py` prints them; "folded" = every BatchNorm whose input is a
conv's output folded into it; the pre-activation BatchNorms of DDRNet/PIDNet's DAPPM/PAPPM and seg heads cannot be):
- deeplab_xception: 41.055M (40.954M folded). AI Hub's 41.26M is the source's parameters plus the BatchNorm running
  mean/var buffers: 41.055M + 2 x 101,400 = 41.258M. Parameters alone are 0.50% under it.
- bisenet: 11.987M (11.982M folded) vs 12.0M. The source model has 12.51M parameters, 0.51M of them the unused
  ImageNet classifier `fc` of the torchvision resnet18 it wraps; AI Hub's 12.0M (and its 45.7 MB = 11.98M x 4 bytes
  float asset) counts the network without it.
- ddrnet23_slim: 5.696M (5.688M folded) vs 6.13M: cannot be matched. The network AI Hub builds has exactly these
  5.696M parameters (checked against the source class); AI Hub's own float asset is 21.7 MB = 5.69M x 4 bytes and
  its info.yaml said 5.69M until v0.45; the v0.46 re-count (6.13M) adds 0.43M that is not in the network.
- pidnet: 7.626M (7.615M folded) vs 8.06M: cannot be matched, same story: 29.1 MB float asset = 7.63M x 4 bytes,
  info.yaml said 7.62M until v0.45; the v0.46 figure adds the same 0.43M as ddrnet23_slim's.

Checked against the sources (random weights and BatchNorm statistics, eval mode, CPU, small inputs of the same aspect
as AI Hub's): each source model built with its authors' class (SegmenTron through get_segmentation_model with its
unused imports stubbed; BiSeNet with a stand-in torchvision package holding the ResNet-18 code path of
pytorch/vision@054e54c5 torchvision/models/resnet.py, as the venv has no torchvision), its state_dict loaded into
`.model` here (strict for DDRNet, PIDNet, DeepLab; BiSeNet: all keys here present in the source, the source's extra
keys being the unused ones listed above), and the wrapped
outputs compared (deeplab_xception at 240x260: logits before argmax and the uint8 masks; bisenet at 360x480,
ddrnet23_slim and pidnet at 512x1024: the logits): bit-identical (max abs difference 0.0) for all four, and every
state_dict key here has its source counterpart (878 / 154 / 333 / 453 keys).

Graph size (latency_graphs.features_of, exported on meta, after fusionc's QNN passes) against AI Hub's float QNN_DLC
layers_total: deeplab_xception 259 vs 262, bisenet 80 vs 81, ddrnet23_slim 153 vs 156, pidnet 204 (206 with the two
free Unsqueezes) vs 207. The 1-3 layer gaps (at most 2%) do not grow with depth (deeplab_xception has 147 convs and is
3 short, like the 55-conv DDRNet); they are not localised further: AI Hub publishes no per-layer listing.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from aihub_mobile import builder, folded_params


class _Normalize(nn.Module):
    """(image - mean) / std with per-channel constants held as (non-persistent) buffers, so they follow the module's
    device (meta or CPU)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).reshape(1, -1, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.mean) / self.std


def _torchvision_normalize() -> _Normalize:
    """qai_hub_models/utils/image_processing.py normalize_image_torchvision."""
    return _Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


# --------------------------------------------------------------------------------------------------- ResNet blocks
# One BasicBlock / Bottleneck serves torchvision's resnet18 (BiSeNet), DDRNet and PIDNet: the three use the same
# layout and parameter names (conv1/bn1/conv2/bn2[/conv3/bn3], downsample.0/.1); DDRNet and PIDNet add `no_relu`
# (skip the ReLU after the residual add) and a Bottleneck with expansion 2 that has no_relu=True by default.


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 no_relu: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.no_relu = no_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + (x if self.downsample is None else self.downsample(x))
        return out if self.no_relu else F.relu(out)


class _Bottleneck(nn.Module):
    expansion = 2

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 no_relu: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 2, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 2)
        self.downsample = downsample
        self.no_relu = no_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + (x if self.downsample is None else self.downsample(x))
        return out if self.no_relu else F.relu(out)


def _downsample(inplanes: int, outplanes: int, stride: int) -> nn.Module | None:
    if stride == 1 and inplanes == outplanes:
        return None
    return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride, bias=False), nn.BatchNorm2d(outplanes))


def _make_layer(block: type, inplanes: int, planes: int, blocks: int, stride: int = 1,
                last_no_relu: bool = True) -> nn.Sequential:
    """DDRNet/PIDNet `_make_layer` (last_no_relu=True: the last of several blocks skips its final ReLU; the first
    block keeps the block's default) and torchvision's (`last_no_relu=False`)."""
    layers = [block(inplanes, planes, stride, _downsample(inplanes, planes * block.expansion, stride))]
    for i in range(1, blocks):
        layers.append(block(planes * block.expansion, planes, 1, None,
                            no_relu=last_no_relu and i == blocks - 1))
    return nn.Sequential(*layers)


def _bn_relu_conv(cin: int, cout: int, k: int = 1, pool: nn.Module | None = None, groups: int = 1) -> nn.Sequential:
    """[pool,] BN, ReLU, conv (bias-free): the pre-activation units of DAPPM / PAPPM."""
    mods = ([pool] if pool is not None else []) + [
        nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False)]
    return nn.Sequential(*mods)


def _pools() -> list[nn.Module]:
    """DAPPM / PAPPM scale1-4 pools: avg 5/2, 9/4, 17/8 (count_include_pad) and global."""
    return [nn.AvgPool2d(5, 2, 2), nn.AvgPool2d(9, 4, 4), nn.AvgPool2d(17, 8, 8), nn.AdaptiveAvgPool2d((1, 1))]


def _up(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class _DAPPM(nn.Module):
    """DDRNet's Deep Aggregation Pyramid Pooling Module (ddrnet_23_slim.py DAPPM): scale0 + four pooled scales, each
    pooled branch upsampled and added to the previous branch's output before its own 3x3 `process`; concat of the five,
    1x1 compression, plus a 1x1 shortcut."""

    def __init__(self, inplanes: int, branch: int, outplanes: int):
        super().__init__()
        pools = _pools()
        self.scale0 = _bn_relu_conv(inplanes, branch)
        for i in range(1, 5):
            setattr(self, f"scale{i}", _bn_relu_conv(inplanes, branch, pool=pools[i - 1]))
            setattr(self, f"process{i}", _bn_relu_conv(branch, branch, 3))
        self.compression = _bn_relu_conv(branch * 5, outplanes)
        self.shortcut = _bn_relu_conv(inplanes, outplanes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        outs = [self.scale0(x)]
        for i in range(1, 5):
            scale, process = getattr(self, f"scale{i}"), getattr(self, f"process{i}")
            outs.append(process(_up(scale(x), size) + outs[-1]))
        return self.compression(torch.cat(outs, 1)) + self.shortcut(x)


class _PAPPM(nn.Module):
    """PIDNet's parallel variant (model_utils.py PAPPM): the four pooled branches are each upsampled and added to
    scale0's output, concatenated and run through one grouped (4 groups) 3x3 conv."""

    def __init__(self, inplanes: int, branch: int, outplanes: int):
        super().__init__()
        pools = _pools()
        for i in range(1, 5):
            setattr(self, f"scale{i}", _bn_relu_conv(inplanes, branch, pool=pools[i - 1]))
        self.scale0 = _bn_relu_conv(inplanes, branch)
        self.scale_process = _bn_relu_conv(branch * 4, branch * 4, 3, groups=4)
        self.compression = _bn_relu_conv(branch * 5, outplanes)
        self.shortcut = _bn_relu_conv(inplanes, outplanes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x0 = self.scale0(x)
        scales = [_up(getattr(self, f"scale{i}")(x), size) + x0 for i in range(1, 5)]
        scale_out = self.scale_process(torch.cat(scales, 1))
        return self.compression(torch.cat([x0, scale_out], 1)) + self.shortcut(x)


class _SegHead(nn.Module):
    """DDRNet/PIDNet segmenthead without scale_factor: BN, ReLU, 3x3 conv, BN, ReLU, 1x1 conv (with bias)."""

    def __init__(self, inplanes: int, interplanes: int, outplanes: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, interplanes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(interplanes)
        self.conv2 = nn.Conv2d(interplanes, outplanes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(F.relu(self.bn1(x)))
        return self.conv2(F.relu(self.bn2(x)))


def _conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, relu_after: bool = False) -> list[nn.Module]:
    mods = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]
    return mods + [nn.ReLU()] if relu_after else mods


def _stem(planes: int) -> nn.Sequential:
    """DDRNet / PIDNet conv1: two 3x3 stride-2 convs (with bias), each followed by BN and ReLU."""
    return nn.Sequential(nn.Conv2d(3, planes, 3, 2, 1), nn.BatchNorm2d(planes), nn.ReLU(),
                         nn.Conv2d(planes, planes, 3, 2, 1), nn.BatchNorm2d(planes), nn.ReLU())


# --------------------------------------------------------------------------------------------------- DeepLab-Xception


class _SepConv(nn.Module):
    """SegmenTron SeparableConv2d (bias-free): relu_first -> ReLU, depthwise 3x3, BN, pointwise 1x1, BN; otherwise
    depthwise, BN, ReLU, pointwise, BN, ReLU. The depthwise conv carries the stride and dilation (padding=dilation)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1, relu_first: bool = True,
                 eps: float = 1e-5):
        super().__init__()
        dw = nn.Conv2d(cin, cin, 3, stride, dilation, dilation, groups=cin, bias=False)
        pw = nn.Conv2d(cin, cout, 1, bias=False)
        if relu_first:
            mods = [("relu", nn.ReLU()), ("depthwise", dw), ("bn_depth", nn.BatchNorm2d(cin, eps=eps)),
                    ("pointwise", pw), ("bn_point", nn.BatchNorm2d(cout, eps=eps))]
        else:
            mods = [("depthwise", dw), ("bn_depth", nn.BatchNorm2d(cin, eps=eps)), ("relu1", nn.ReLU()),
                    ("pointwise", pw), ("bn_point", nn.BatchNorm2d(cout, eps=eps)), ("relu2", nn.ReLU())]
        self.block = nn.Sequential(OrderedDict(mods))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class _XceptionBlock(nn.Module):
    """Three separable convs (the last one strided) plus a skip: 'conv' (1x1 strided conv + BN), 'sum' (identity) or
    'none'."""

    def __init__(self, ch: tuple[int, int, int, int], stride: int = 1, dilation: int = 1, skip: str = "conv",
                 relu_first: bool = True, eps: float = 1e-3):
        super().__init__()
        self.skip = skip
        if skip == "conv":
            self.conv = nn.Conv2d(ch[0], ch[3], 1, stride, bias=False)
            self.bn = nn.BatchNorm2d(ch[3], eps=eps)
        self.sep_conv1 = _SepConv(ch[0], ch[1], 1, dilation, relu_first, eps)
        self.sep_conv2 = _SepConv(ch[1], ch[2], 1, dilation, relu_first, eps)
        self.sep_conv3 = _SepConv(ch[2], ch[3], stride, dilation, relu_first, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.sep_conv3(self.sep_conv2(self.sep_conv1(x)))
        if self.skip == "conv":
            return out + self.bn(self.conv(x))
        return out + x if self.skip == "sum" else out


class _Xception65(nn.Module):
    """SegmenTron Xception65 at output stride 16 (entry stride 2 everywhere; exit block20 stride 1, block21
    dilation 2). Returns (c1, c4): c1 = the output of block2's second separable conv (256 ch, /4), c4 = block21's
    output (2048 ch, /16). The encoder's BatchNorm eps is 1e-3 (AI Hub sets BN_EPS_FOR_ENCODER after loading)."""

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32, eps=eps)
        self.conv2 = nn.Conv2d(32, 64, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(64, eps=eps)
        self.block1 = _XceptionBlock((64, 128, 128, 128), stride=2, eps=eps)
        self.block2 = _XceptionBlock((128, 256, 256, 256), stride=2, eps=eps)
        self.block3 = _XceptionBlock((256, 728, 728, 728), stride=2, eps=eps)
        for i in range(4, 20):  # middle flow: 16 identity-skip units
            setattr(self, f"block{i}", _XceptionBlock((728,) * 4, skip="sum", eps=eps))
        self.block20 = _XceptionBlock((728, 728, 1024, 1024), stride=1, dilation=1, eps=eps)
        self.block21 = _XceptionBlock((1024, 1536, 1536, 2048), dilation=2, skip="none", relu_first=False, eps=eps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.block1(x)
        # block2 (low_feat=True) returns (outputs, sc2); DeepLabV3Plus takes c1 = that sc2: the output of block2's
        # second separable conv, 256 ch at /4 (its third, strided, conv then takes the trunk to /8).
        b2 = self.block2
        sc2 = b2.sep_conv2(b2.sep_conv1(x))
        x = b2.sep_conv3(sc2) + b2.bn(b2.conv(x))
        for i in range(3, 22):
            x = getattr(self, f"block{i}")(x)  # block3's low-level output (c2) and c3 are unused in eval mode
        return sc2, x


class _SegmentronASPP(nn.Module):
    """SegmenTron _ASPP (output stride 16): image pooling (GAP, 1x1, BN, ReLU, bilinear align_corners=True back up),
    1x1 branch, three separable 3x3 branches at dilation 6/12/18; concat (pool first), 1x1, BN, ReLU."""

    def __init__(self, cin: int = 2048, cout: int = 256):
        super().__init__()
        self.aspp0 = nn.Sequential(OrderedDict([("conv", nn.Conv2d(cin, cout, 1, bias=False)),
                                                ("bn", nn.BatchNorm2d(cout)), ("relu", nn.ReLU())]))
        self.aspp1 = _SepConv(cin, cout, dilation=6, relu_first=False)
        self.aspp2 = _SepConv(cin, cout, dilation=12, relu_first=False)
        self.aspp3 = _SepConv(cin, cout, dilation=18, relu_first=False)
        self.image_pooling = nn.Sequential(OrderedDict([("gap", nn.AdaptiveAvgPool2d((1, 1))),
                                                        ("conv", nn.Conv2d(cin, cout, 1, bias=False)),
                                                        ("bn", nn.BatchNorm2d(cout)), ("relu", nn.ReLU())]))
        self.conv = nn.Conv2d(cout * 5, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = F.interpolate(self.image_pooling(x), size=x.shape[2:], mode="bilinear", align_corners=True)
        x = torch.cat((pool, self.aspp0(x), self.aspp1(x), self.aspp2(x), self.aspp3(x)), dim=1)
        return F.relu(self.bn(self.conv(x)))


class _ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class _DeepLabHead(nn.Module):
    """SegmenTron _DeepLabHead (USE_ASPP, ENABLE_DECODER): ASPP, bilinear (align_corners=True) up to c1's size,
    c1_block 1x1 256->48, concat, two separable 3x3 convs (304->256->256), 1x1 to the classes."""

    def __init__(self, nclass: int = 21, c1_channels: int = 256, c4_channels: int = 2048):
        super().__init__()
        self.aspp = _SegmentronASPP(c4_channels, 256)
        self.c1_block = _ConvBNReLU(c1_channels, 48)
        self.block = nn.Sequential(_SepConv(256 + 48, 256, relu_first=False), _SepConv(256, 256, relu_first=False),
                                   nn.Conv2d(256, nclass, 1))

    def forward(self, x: torch.Tensor, c1: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.aspp(x), c1.shape[2:], mode="bilinear", align_corners=True)
        return self.block(torch.cat([x, self.c1_block(c1)], dim=1))


class _SegmentronDeepLabV3Plus(nn.Module):
    def __init__(self, nclass: int = 21):
        super().__init__()
        self.encoder = _Xception65()
        self.head = _DeepLabHead(nclass)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1, c4 = self.encoder(x)
        return F.interpolate(self.head(c4, c1), x.shape[2:], mode="bilinear", align_corners=True)


class DeepLabXception(nn.Module):
    """AI Hub deeplab_xception: `(image - 0.5) / 0.5`, SegmenTron DeepLabV3Plus(xception65, OS 16, 21 classes),
    `argmax(1).byte()`. Input image (1, 3, 480, 520) in [0, 1]; output mask (1, 480, 520) uint8."""

    def __init__(self):
        super().__init__()
        self.normalize = _Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        self.model = _SegmentronDeepLabV3Plus(21)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(image)).argmax(1).byte()


# --------------------------------------------------------------------------------------------------- BiSeNet


class _ConvBlock(nn.Module):
    """BiSeNet ConvBlock: 3x3 conv (bias-free), BN, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv1(x)))


class _SpatialPath(nn.Module):
    def __init__(self):
        super().__init__()
        self.convblock1 = _ConvBlock(3, 64)
        self.convblock2 = _ConvBlock(64, 128)
        self.convblock3 = _ConvBlock(128, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convblock3(self.convblock2(self.convblock1(x)))


class _ResNet18Context(nn.Module):
    """build_contextpath.resnet18: torchvision resnet18 stem (7x7/2, BN, ReLU, maxpool 3/2) and layer1-4; returns
    layer3's and layer4's outputs and `tail` = mean over W then over H of layer4's (keepdim). Names follow the
    wrapper's aliases (context_path.conv1 ...), which are in the source state_dict beside context_path.features.*."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool1 = nn.MaxPool2d(3, 2, 1)
        self.layer1 = _make_layer(_BasicBlock, 64, 64, 2, last_no_relu=False)
        self.layer2 = _make_layer(_BasicBlock, 64, 128, 2, 2, last_no_relu=False)
        self.layer3 = _make_layer(_BasicBlock, 128, 256, 2, 2, last_no_relu=False)
        self.layer4 = _make_layer(_BasicBlock, 256, 512, 2, 2, last_no_relu=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool1(F.relu(self.bn1(self.conv1(x))))
        f3 = self.layer3(self.layer2(self.layer1(x)))
        f4 = self.layer4(f3)
        tail = torch.mean(torch.mean(f4, 3, keepdim=True), 2, keepdim=True)
        return f3, f4, tail


class _ARM(nn.Module):
    """AttentionRefinementModule as its forward runs: GAP, 1x1 conv (with bias), sigmoid, scale the input (the
    module's BatchNorm is commented out of the forward and left out here)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mul(x, torch.sigmoid(self.conv(F.adaptive_avg_pool2d(x, (1, 1)))))


class _FFM(nn.Module):
    """FeatureFusionModule: concat, ConvBlock 3x3 stride 1 to the classes, then channel attention (GAP, 1x1, ReLU,
    1x1, sigmoid), feature * att + feature."""

    def __init__(self, nclass: int, cin: int):
        super().__init__()
        self.convblock = _ConvBlock(cin, nclass, stride=1)
        self.conv1 = nn.Conv2d(nclass, nclass, 1)
        self.conv2 = nn.Conv2d(nclass, nclass, 1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        feature = self.convblock(torch.cat((a, b), dim=1))
        att = torch.sigmoid(self.conv2(F.relu(self.conv1(F.adaptive_avg_pool2d(feature, (1, 1))))))
        return torch.add(torch.mul(feature, att), feature)


class _BiSeNetNet(nn.Module):
    def __init__(self, nclass: int = 12):
        super().__init__()
        self.saptial_path = _SpatialPath()  # sic: the source's name
        self.context_path = _ResNet18Context()
        self.attention_refinement_module1 = _ARM(256)
        self.attention_refinement_module2 = _ARM(512)
        self.feature_fusion_module = _FFM(nclass, 1024)
        self.conv = nn.Conv2d(nclass, nclass, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sx = self.saptial_path(x)
        cx1, cx2, tail = self.context_path(x)
        cx1 = self.attention_refinement_module1(cx1)
        cx2 = torch.mul(self.attention_refinement_module2(cx2), tail)
        size = sx.shape[-2:]
        cx = torch.cat((F.interpolate(cx1, size=size, mode="bilinear"),
                        F.interpolate(cx2, size=size, mode="bilinear")), dim=1)
        result = self.feature_fusion_module(sx, cx)
        return self.conv(F.interpolate(result, scale_factor=8, mode="bilinear"))


class BiseNet(nn.Module):
    """AI Hub bisenet: torchvision normalisation, BiSeNet(12 classes, resnet18) logits. Input (1, 3, 720, 960);
    output (1, 12, 720, 960)."""

    def __init__(self):
        super().__init__()
        self.normalize = _torchvision_normalize()
        self.model = _BiSeNetNet(12)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(image))


# --------------------------------------------------------------------------------------------------- DDRNet23-slim


class _DualResNet(nn.Module):
    """DDRNet-23-slim (augment=False): a low-resolution branch (layer1-5, /4 -> /64, DAPPM) and a high-resolution
    branch at /8 (layer3_-5_), exchanging features twice (down3/down4 strided convs into the low branch,
    compression3/4 1x1 + bilinear up into the high one). Every stage input goes through a (non-inplace) ReLU."""

    def __init__(self, planes: int = 32, spp_planes: int = 128, head_planes: int = 64, nclass: int = 19):
        super().__init__()
        hi = planes * 2
        self.conv1 = _stem(planes)
        self.layer1 = _make_layer(_BasicBlock, planes, planes, 2)
        self.layer2 = _make_layer(_BasicBlock, planes, planes * 2, 2, 2)
        self.layer3 = _make_layer(_BasicBlock, planes * 2, planes * 4, 2, 2)
        self.layer4 = _make_layer(_BasicBlock, planes * 4, planes * 8, 2, 2)
        self.compression3 = nn.Sequential(*_conv_bn(planes * 4, hi))
        self.compression4 = nn.Sequential(*_conv_bn(planes * 8, hi))
        self.down3 = nn.Sequential(*_conv_bn(hi, planes * 4, 3, 2))
        self.down4 = nn.Sequential(*_conv_bn(hi, planes * 4, 3, 2, relu_after=True),
                                   *_conv_bn(planes * 4, planes * 8, 3, 2))
        self.layer3_ = _make_layer(_BasicBlock, planes * 2, hi, 2)
        self.layer4_ = _make_layer(_BasicBlock, hi, hi, 2)
        self.layer5_ = _make_layer(_Bottleneck, hi, hi, 1)
        self.layer5 = _make_layer(_Bottleneck, planes * 8, planes * 8, 1, 2)
        self.spp = _DAPPM(planes * 16, spp_planes, planes * 4)
        self.final_layer = _SegHead(planes * 4, head_planes, nclass)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2] // 8, x.shape[-1] // 8)
        x = self.layer1(self.conv1(x))
        l2 = self.layer2(F.relu(x))
        x = self.layer3(F.relu(l2))
        x_ = self.layer3_(F.relu(l2))
        l3 = x
        x = x + self.down3(F.relu(x_))
        x_ = x_ + _up(self.compression3(F.relu(l3)), size)
        x = self.layer4(F.relu(x))
        x_ = self.layer4_(F.relu(x_))
        l4 = x
        x = x + self.down4(F.relu(x_))
        x_ = x_ + _up(self.compression4(F.relu(l4)), size)
        x_ = self.layer5_(F.relu(x_))
        x = _up(self.spp(self.layer5(F.relu(x))), size)
        return self.final_layer(x + x_)


class DDRNet23Slim(nn.Module):
    """AI Hub ddrnet23_slim: torchvision normalisation, DualResNet-23-slim logits at 1/8. Input (1, 3, 1024, 2048);
    output (1, 19, 128, 256)."""

    def __init__(self):
        super().__init__()
        self.normalize = _torchvision_normalize()
        self.model = _DualResNet()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(image))


# --------------------------------------------------------------------------------------------------- PIDNet-S


class _PagFM(nn.Module):
    """Pixel-attention-guided fusion (after_relu=False, with_channel=False): sim = sigmoid(sum_c(f_x(x) *
    up(f_y(y)))); out = (1 - sim) * x + sim * up(y); f_x / f_y are 1x1 conv + BN."""

    def __init__(self, cin: int, mid: int):
        super().__init__()
        self.f_x = nn.Sequential(*_conv_bn(cin, mid))
        self.f_y = nn.Sequential(*_conv_bn(cin, mid))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        y_q = _up(self.f_y(y), size)
        sim = torch.sigmoid(torch.sum(self.f_x(x) * y_q, dim=1).unsqueeze(1))
        return (1 - sim) * x + sim * _up(y, size)


class _LightBag(nn.Module):
    """Light_Bag: a = sigmoid(d); conv_p((1 - a) * i + p) + conv_i(i + a * p), each a 1x1 conv + BN."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv_p = nn.Sequential(*_conv_bn(cin, cout))
        self.conv_i = nn.Sequential(*_conv_bn(cin, cout))

    def forward(self, p: torch.Tensor, i: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        a = torch.sigmoid(d)
        return self.conv_p((1 - a) * i + p) + self.conv_i(i + a * p)


class _PIDNet(nn.Module):
    """PIDNet-S (m=2, n=3, planes 32, PAPPM 96, head 128, augment=False): I branch (layer1-5 down to /64, PAPPM),
    P branch at /8 (layer3_-5_, fused with the I branch by PagFM), D branch at /8 (layer3_d-5_d, plus diff3/diff4 of
    the I branch upsampled), Light_Bag fusion and the seg head. The source's ReLUs are in-place but never alias a
    tensor that is read again, so plain ReLUs give the same values."""

    def __init__(self, planes: int = 32, ppm: int = 96, head: int = 128, nclass: int = 19):
        super().__init__()
        self.conv1 = _stem(planes)
        self.layer1 = _make_layer(_BasicBlock, planes, planes, 2)
        self.layer2 = _make_layer(_BasicBlock, planes, planes * 2, 2, 2)
        self.layer3 = _make_layer(_BasicBlock, planes * 2, planes * 4, 3, 2)
        self.layer4 = _make_layer(_BasicBlock, planes * 4, planes * 8, 3, 2)
        self.layer5 = _make_layer(_Bottleneck, planes * 8, planes * 8, 2, 2)
        self.compression3 = nn.Sequential(*_conv_bn(planes * 4, planes * 2))
        self.compression4 = nn.Sequential(*_conv_bn(planes * 8, planes * 2))
        self.pag3 = _PagFM(planes * 2, planes)
        self.pag4 = _PagFM(planes * 2, planes)
        self.layer3_ = _make_layer(_BasicBlock, planes * 2, planes * 2, 2)
        self.layer4_ = _make_layer(_BasicBlock, planes * 2, planes * 2, 2)
        self.layer5_ = _make_layer(_Bottleneck, planes * 2, planes * 2, 1)
        # D branch (m == 2): a single no-ReLU BasicBlock, then a Bottleneck
        self.layer3_d = _BasicBlock(planes * 2, planes, 1, _downsample(planes * 2, planes, 1), no_relu=True)
        self.layer4_d = _make_layer(_Bottleneck, planes, planes, 1)
        self.diff3 = nn.Sequential(*_conv_bn(planes * 4, planes, 3))
        self.diff4 = nn.Sequential(*_conv_bn(planes * 8, planes * 2, 3))
        self.spp = _PAPPM(planes * 16, ppm, planes * 4)
        self.dfm = _LightBag(planes * 4, planes * 4)
        self.layer5_d = _make_layer(_Bottleneck, planes * 2, planes * 2, 1)
        self.final_layer = _SegHead(planes * 4, head, nclass)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2] // 8, x.shape[-1] // 8)
        x = self.layer1(self.conv1(x))
        x = F.relu(self.layer2(F.relu(x)))
        x_ = self.layer3_(x)
        x_d = self.layer3_d(x)
        x = F.relu(self.layer3(x))
        x_ = self.pag3(x_, self.compression3(x))
        x_d = x_d + _up(self.diff3(x), size)
        x = F.relu(self.layer4(x))
        x_ = self.layer4_(F.relu(x_))
        x_d = self.layer4_d(F.relu(x_d))
        x_ = self.pag4(x_, self.compression4(x))
        x_d = x_d + _up(self.diff4(x), size)
        x_ = self.layer5_(F.relu(x_))
        x_d = self.layer5_d(F.relu(x_d))
        x = _up(self.spp(self.layer5(x)), size)
        return self.final_layer(self.dfm(x_, x, x_d))


class PidNet(nn.Module):
    """AI Hub pidnet: torchvision normalisation, PIDNet-S logits at 1/8. Input (1, 3, 1024, 2048); output
    (1, 19, 128, 256)."""

    def __init__(self):
        super().__init__()
        self.normalize = _torchvision_normalize()
        self.model = _PIDNet()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(image))


# --------------------------------------------------------------------------------------------------- tables

# (AI Hub model, component) -> builder; components as in aihub_perf.csv
BUILDERS: dict[tuple[str, str], Callable] = {
    ("deeplab_xception", "DeepLabXception"): builder(DeepLabXception, "image", (1, 3, 480, 520)),
    ("bisenet", "BiseNet"): builder(BiseNet, "image", (1, 3, 720, 960)),
    ("ddrnet23_slim", "DDRNet23-Slim"): builder(DDRNet23Slim, "image", (1, 3, 1024, 2048)),
    ("pidnet", "PidNet"): builder(PidNet, "image", (1, 3, 1024, 2048)),
}
PUBLISHED_PARAMS = {"deeplab_xception": 41.26e6, "bisenet": 12.0e6, "ddrnet23_slim": 6.13e6, "pidnet": 8.06e6}
NOT_PUBLISHED = {model: f"v0.46's figure adds ~0.43M that neither network has (its float asset is {mb} MB = these "
                        f"parameters at 4 bytes; info.yaml said {was} until v0.46.0)"
                 for model, mb, was in (("ddrnet23_slim", 21.7, "5.69M"), ("pidnet", 29.1, "7.62M"))}


if __name__ == "__main__":
    for (key, _), build in BUILDERS.items():
        with torch.device("meta"):
            module, feeds = build()
            out = module(*feeds.values())
            folded = folded_params(module)
        params = sum(p.numel() for p in module.parameters())
        print(f"{key:18} {params / 1e6:8.4f}M parameters, {folded / 1e6:8.4f}M with BN folded "
              f"(AI Hub: {PUBLISHED_PARAMS[key] / 1e6:.2f}M); output {tuple(out.shape)} {out.dtype}")
