"""Three more AI Hub models built from their authors' own code, re-stated as plain PyTorch modules (aihub_custom.CUSTOM
holds them).

Each module is written layer for layer as the source's forward runs in eval mode, wrapped in what AI Hub's
BaseModel.forward adds around it (those ops are part of the graph AI Hub compiles and times). Sub-module names mirror
the sources' state_dict keys, so a source checkpoint would load into them. Dropout layers (identity in eval mode, and
absent from the graph AI Hub compiles) are left out.

Sources (AI Hub v0.46.1, quic/ai-hub-models 52c080d2, and the code it loads):
- yamnet: w-hc/torch_audioset@e8852c5 torch_audioset/yamnet/model.py `YAMNet()`; AI Hub's YamNet.forward returns
  `self.model(audio)` (to_prob=False: logits, no sigmoid). 3.73M parameters, input audio 1x1x96x64.
- posenet_mobilenet: rwightman/posenet-pytorch@6f7376d4 posenet/models/mobilenet_v1.py
  `posenet.load_model(101)` = MobileNetV1(101, output_stride=16); AI Hub's wrapper feeds `image * 2 - 1` and appends
  `max_pool2d(heatmap, 3, stride=1, padding=1)`. 3.31M parameters, input image 1x3x513x257.
- deeplabv3_plus_mobilenet: jfzhang95/pytorch-deeplab-xception@9135e104 modeling/deeplab.py
  `DeepLab(backbone="mobilenet", sync_bn=False, num_classes=21)` (output_stride=16 default -> ASPP dilations 1/6/12/18,
  nn.BatchNorm2d); AI Hub's DeepLabV3Model.forward normalises with the torchvision mean/std and returns
  `argmax(1).byte()`. 5.80M parameters, input image 1x3x520x520 (get_input_spec; info.yaml says 513x513).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F


def _stride_or_dilate(stride: int, current_stride: int, rate: int, output_stride: int) -> tuple[int, int, int, int]:
    """Both sources' output-stride rule: once the feature map's stride reaches `output_stride`, a layer's stride turns
    into dilation. Returns (layer stride, layer dilation, the stride after it, the dilation rate after it)."""
    if current_stride == output_stride:
        return 1, rate, current_stride, rate * stride
    return stride, 1, current_stride * stride, rate


# --------------------------------------------------------------------------------------------------- YAMNet


class Conv2dTFSame(nn.Conv2d):
    """torch_audioset's Conv2d_tf (TF-Slim "SAME" padding), with the padding resolved for a fixed input size.

    The source computes, per spatial dim, total = max(0, (ceil(in/stride) - 1) * stride + k_eff - in); if either total
    is odd it first runs F.pad(x, [0, odd_w, 0, odd_h]) and then conv2d with padding [total_h // 2, total_w // 2].
    That depends only on the (static) input size, so it is fixed here at construction.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, groups: int, in_hw: tuple[int, int]):
        super().__init__(in_ch, out_ch, kernel, stride, padding=0, groups=groups, bias=False)
        odd, half, out_hw = [], [], []
        for size in in_hw:
            out = (size + stride - 1) // stride
            total = max(0, (out - 1) * stride + (kernel - 1) + 1 - size)
            odd.append(total % 2)
            half.append(total // 2)
            out_hw.append(out)
        self.pre_pad = [0, odd[1], 0, odd[0]] if (odd[0] or odd[1]) else None
        self.padding = (half[0], half[1])
        self.out_hw = (out_hw[0], out_hw[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_pad is not None:
            x = F.pad(x, self.pre_pad)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class _ConvBnRelu(nn.Module):
    def __init__(self, conv: Conv2dTFSame):
        super().__init__()
        self.conv = conv
        self.bn = nn.BatchNorm2d(conv.out_channels, eps=1e-4)  # YAMNetParams.BATCHNORM_EPSILON
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class _YamConv(nn.Module):
    def __init__(self, stride: int, in_ch: int, out_ch: int, in_hw: tuple[int, int]):
        super().__init__()
        self.fused = _ConvBnRelu(Conv2dTFSame(in_ch, out_ch, 3, stride, 1, in_hw))
        self.out_hw = self.fused.conv.out_hw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused(x)


class _YamSeparableConv(nn.Module):
    def __init__(self, stride: int, in_ch: int, out_ch: int, in_hw: tuple[int, int]):
        super().__init__()
        self.depthwise_conv = _ConvBnRelu(Conv2dTFSame(in_ch, in_ch, 3, stride, in_ch, in_hw))
        mid_hw = self.depthwise_conv.conv.out_hw
        self.pointwise_conv = _ConvBnRelu(Conv2dTFSame(in_ch, out_ch, 1, 1, 1, mid_hw))
        self.out_hw = self.pointwise_conv.conv.out_hw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class YamNet(nn.Module):
    """Restates w-hc/torch_audioset@e8852c5 torch_audioset/yamnet/model.py `YAMNet` (as AI Hub's
    qai_hub_models/models/yamnet/model.py@52c080d2 `YamNet` wraps it: forward returns `self.model(audio)`, i.e.
    to_prob=False, so the 521 class logits without the sigmoid).

    14 layers (Conv 3x3/2 then 13 depthwise-separable blocks), each conv bias-free with TF "SAME" padding, BN(eps=1e-4)
    and ReLU; then adaptive_avg_pool2d(1), reshape and Linear(1024, 521). Input audio (1, 1, 96, 64) log-mel patch,
    output class_scores (1, 521).
    """

    CONFIG = [  # (layer, stride, filters) with 3x3 kernels, as net_configs in the source
        (_YamConv, 2, 32), (_YamSeparableConv, 1, 64), (_YamSeparableConv, 2, 128), (_YamSeparableConv, 1, 128),
        (_YamSeparableConv, 2, 256), (_YamSeparableConv, 1, 256), (_YamSeparableConv, 2, 512),
        (_YamSeparableConv, 1, 512), (_YamSeparableConv, 1, 512), (_YamSeparableConv, 1, 512),
        (_YamSeparableConv, 1, 512), (_YamSeparableConv, 1, 512), (_YamSeparableConv, 2, 1024),
        (_YamSeparableConv, 1, 1024),
    ]

    def __init__(self, in_hw: tuple[int, int] = (96, 64)):
        super().__init__()
        model = nn.Module()  # AI Hub's wrapper holds the source module as `.model`
        in_ch, hw = 1, in_hw
        self.layer_names = []
        for i, (layer, stride, out_ch) in enumerate(self.CONFIG):
            mod = layer(stride, in_ch, out_ch, hw)
            model.add_module(f"layer{i + 1}", mod)
            self.layer_names.append(f"layer{i + 1}")
            in_ch, hw = out_ch, mod.out_hw
        model.classifier = nn.Linear(in_ch, 521, bias=True)
        self.model = model

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = audio
        for name in self.layer_names:
            x = getattr(self.model, name)(x)
        x = F.adaptive_avg_pool2d(x, 1)
        x = x.reshape(x.shape[0], -1)
        return self.model.classifier(x)


# --------------------------------------------------------------------------------------------------- PoseNet


class _PoseInputConv(nn.Module):
    def __init__(self, inp: int, outp: int, stride: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv2d(inp, outp, 3, stride, padding=((stride - 1) + dilation * 2) // 2, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self.conv(x))


class _PoseSeparableConv(nn.Module):
    def __init__(self, inp: int, outp: int, stride: int, dilation: int):
        super().__init__()
        self.depthwise = nn.Conv2d(inp, inp, 3, stride, padding=((stride - 1) + dilation * 2) // 2,
                                   dilation=dilation, groups=inp)
        self.pointwise = nn.Conv2d(inp, outp, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.depthwise(x))
        return F.relu6(self.pointwise(x))


class _PoseMobileNetV1(nn.Module):
    # MOBILE_NET_V1_100 (model_id 101 uses it): (type, in, out, stride)
    ARCH = [
        ("input", 3, 32, 2), ("sep", 32, 64, 1), ("sep", 64, 128, 2), ("sep", 128, 128, 1), ("sep", 128, 256, 2),
        ("sep", 256, 256, 1), ("sep", 256, 512, 2), ("sep", 512, 512, 1), ("sep", 512, 512, 1), ("sep", 512, 512, 1),
        ("sep", 512, 512, 1), ("sep", 512, 512, 1), ("sep", 512, 1024, 2), ("sep", 1024, 1024, 1),
    ]

    def __init__(self, output_stride: int = 16):
        super().__init__()
        # _to_output_strided_layers: once the stride reaches output_stride, later strides become dilation
        current_stride, rate = 1, 1
        self.features = nn.Sequential()
        for block_id, (kind, inp, outp, stride) in enumerate(self.ARCH):
            layer_stride, layer_rate, current_stride, rate = _stride_or_dilate(stride, current_stride, rate, output_stride)
            cls = _PoseInputConv if kind == "input" else _PoseSeparableConv
            self.features.add_module(f"conv{block_id}", cls(inp, outp, layer_stride, layer_rate))
        self.heatmap = nn.Conv2d(1024, 17, 1, 1)
        self.offset = nn.Conv2d(1024, 34, 1, 1)
        self.displacement_fwd = nn.Conv2d(1024, 32, 1, 1)
        self.displacement_bwd = nn.Conv2d(1024, 32, 1, 1)

    def forward(self, x: torch.Tensor):
        x = self.features(x)
        heatmap = torch.sigmoid(self.heatmap(x))
        return heatmap, self.offset(x), self.displacement_fwd(x), self.displacement_bwd(x)


class PosenetMobilenet(nn.Module):
    """Restates rwightman/posenet-pytorch@6f7376d47683553b99d6b67734bc8b368dbcda73 posenet/models/mobilenet_v1.py
    `MobileNetV1(101, output_stride=16)` (what `posenet.load_model(101)` builds), inside AI Hub's
    qai_hub_models/models/posenet_mobilenet/model.py@52c080d2 `PosenetMobilenet.forward`:
    `raw = model(image * 2.0 - 1.0); return (*raw, F.max_pool2d(raw[0], 3, stride=1, padding=1))`.

    MobileNet-V1 1.0 with biased convs and ReLU6 (no BN); with output stride 16 the 13th block (512->1024) runs at
    stride 1 and the 14th at dilation 2. Heads: sigmoid(heatmap 1x1 conv), offset / displacement_fwd / displacement_bwd
    1x1 convs. Input image (1, 3, 513, 257) in [0, 1]; outputs heatmaps (1, 17, 33, 17), offsets (1, 34, 33, 17),
    displacement_fwd / _bwd (1, 32, 33, 17), max_vals (1, 17, 33, 17).
    """

    def __init__(self):
        super().__init__()
        self.model = _PoseMobileNetV1(output_stride=16)

    def forward(self, image: torch.Tensor):
        raw_output = self.model(image * 2.0 - 1.0)
        max_vals = F.max_pool2d(raw_output[0], 3, stride=1, padding=1)
        return (*raw_output, max_vals)


# --------------------------------------------------------------------------------------------------- DeepLabV3+


def _bn_relu6_conv(inp: int, oup: int, k: int, stride: int, dilation: int, groups: int) -> list[nn.Module]:
    return [nn.Conv2d(inp, oup, k, stride, 0, dilation, groups=groups, bias=False), nn.BatchNorm2d(oup), nn.ReLU6()]


class _InvertedResidual(nn.Module):
    """modeling/backbone/mobilenet.py InvertedResidual: F.pad by the dilated 3x3's fixed padding, then the block
    (convs have padding 0); residual add when stride 1 and inp == oup."""

    def __init__(self, inp: int, oup: int, stride: int, dilation: int, expand_ratio: int):
        super().__init__()
        hidden = round(inp * expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        k_eff = 3 + 2 * (dilation - 1)
        beg = (k_eff - 1) // 2
        self.pad = (beg, k_eff - 1 - beg, beg, k_eff - 1 - beg)
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += _bn_relu6_conv(inp, hidden, 1, 1, 1, 1)  # pw
        layers += _bn_relu6_conv(hidden, hidden, 3, stride, dilation, hidden)  # dw
        layers += [nn.Conv2d(hidden, oup, 1, 1, 0, 1, bias=False), nn.BatchNorm2d(oup)]  # pw-linear
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_pad = F.pad(x, self.pad)
        if self.use_res_connect:
            return x + self.conv(x_pad)
        return self.conv(x_pad)


class _DeepLabMobileNetV2(nn.Module):
    SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2],
               [6, 320, 1, 1]]  # t, c, n, s

    def __init__(self, output_stride: int = 16):
        super().__init__()
        features: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32),
                                                   nn.ReLU6())]
        current_stride, rate, input_channel = 2, 1, 32
        for t, c, n, s in self.SETTING:
            stride, dilation, current_stride, rate = _stride_or_dilate(s, current_stride, rate, output_stride)
            for i in range(n):
                features.append(_InvertedResidual(input_channel, c, stride if i == 0 else 1, dilation, t))
                input_channel = c
        self.features = nn.Sequential(*features)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # low_level_features = features[0:4], high_level_features = features[4:] (shared modules in the source)
        low_level_feat = x
        for block in self.features[:4]:
            low_level_feat = block(low_level_feat)
        x = low_level_feat
        for block in self.features[4:]:
            x = block(x)
        return x, low_level_feat


class _ASPPModule(nn.Module):
    def __init__(self, inplanes: int, planes: int, kernel_size: int, padding: int, dilation: int):
        super().__init__()
        self.atrous_conv = nn.Conv2d(inplanes, planes, kernel_size, stride=1, padding=padding, dilation=dilation,
                                     bias=False)
        self.bn = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.atrous_conv(x)))


class _ASPP(nn.Module):
    def __init__(self, inplanes: int = 320, dilations: tuple[int, ...] = (1, 6, 12, 18)):
        super().__init__()
        self.aspp1 = _ASPPModule(inplanes, 256, 1, 0, dilations[0])
        self.aspp2 = _ASPPModule(inplanes, 256, 3, dilations[1], dilations[1])
        self.aspp3 = _ASPPModule(inplanes, 256, 3, dilations[2], dilations[2])
        self.aspp4 = _ASPPModule(inplanes, 256, 3, dilations[3], dilations[3])
        self.global_avg_pool = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Conv2d(inplanes, 256, 1, stride=1,
                                             bias=False), nn.BatchNorm2d(256), nn.ReLU())
        self.conv1 = nn.Conv2d(1280, 256, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(256)
        self.relu = nn.ReLU()
        # self.dropout = nn.Dropout(0.5): identity in eval mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.aspp1(x)
        x2 = self.aspp2(x)
        x3 = self.aspp3(x)
        x4 = self.aspp4(x)
        x5 = self.global_avg_pool(x)
        x5 = F.interpolate(x5, size=x4.size()[2:], mode="bilinear", align_corners=True)
        x = torch.cat((x1, x2, x3, x4, x5), dim=1)
        return self.relu(self.bn1(self.conv1(x)))


class _Decoder(nn.Module):
    def __init__(self, num_classes: int = 21, low_level_inplanes: int = 24):
        super().__init__()
        self.conv1 = nn.Conv2d(low_level_inplanes, 48, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(48)
        self.relu = nn.ReLU()
        # the source's Dropout(0.5) / Dropout(0.1) (identity in eval) sat at indices 3 and 7 of last_conv
        self.last_conv = nn.Sequential(
            nn.Conv2d(304, 256, kernel_size=3, stride=1, padding=1, bias=False), nn.BatchNorm2d(256), nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, stride=1, padding=1, bias=False), nn.BatchNorm2d(256), nn.ReLU(),
            nn.Conv2d(256, num_classes, kernel_size=1, stride=1))

    def forward(self, x: torch.Tensor, low_level_feat: torch.Tensor) -> torch.Tensor:
        low_level_feat = self.relu(self.bn1(self.conv1(low_level_feat)))
        x = F.interpolate(x, size=low_level_feat.size()[2:], mode="bilinear", align_corners=True)
        x = torch.cat((x, low_level_feat), dim=1)
        return self.last_conv(x)


class _DeepLab(nn.Module):
    def __init__(self, num_classes: int = 21, output_stride: int = 16):
        super().__init__()
        self.backbone = _DeepLabMobileNetV2(output_stride)
        self.aspp = _ASPP(320, (1, 6, 12, 18) if output_stride == 16 else (1, 12, 24, 36))
        self.decoder = _Decoder(num_classes, 24)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x, low_level_feat = self.backbone(input)
        x = self.aspp(x)
        x = self.decoder(x, low_level_feat)
        return F.interpolate(x, size=input.size()[2:], mode="bilinear", align_corners=True)


class DeepLabV3PlusMobilenet(nn.Module):
    """Restates jfzhang95/pytorch-deeplab-xception@9135e104a7a51ea9effa9c6676a2fcffe6a6a2e6 modeling/deeplab.py
    `DeepLab(backbone="mobilenet", sync_bn=False, num_classes=21)` (output_stride 16, nn.BatchNorm2d; with
    modeling/backbone/mobilenet.py MobileNetV2, modeling/aspp.py, modeling/decoder.py), inside AI Hub's
    qai_hub_models/models/_shared/deeplab/model.py@52c080d2 `DeepLabV3Model.forward` (normalize_input=True):
    `(image - mean) / std` with the torchvision constants, the model, then `argmax(1).byte()`.

    Backbone: MobileNetV2 with the stride-2 stages up to /16, the 160-channel stage at stride 1 (dilation 1) and the
    320 block at dilation 2; every inverted-residual block F.pads its input (fixed padding) before convs with padding 0.
    Low-level features = output of features[0:4] (24 ch, /4). ASPP: 1x1 + three 3x3 atrous (6, 12, 18) + global pool
    (bilinear, align_corners=True, back to 33x33), concat, 1x1. Decoder: 1x1 (24->48) on the low-level features, ASPP
    output upsampled bilinear align_corners=True to /4, concat, two 3x3 convs, 1x1 to 21 classes; final bilinear
    align_corners=True upsample to the input size. Input image (1, 3, 520, 520) in [0, 1]; output mask (1, 520, 520)
    uint8.
    """

    def __init__(self):
        super().__init__()
        self.model = _DeepLab(num_classes=21, output_stride=16)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).reshape(1, -1, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        image = (image - self.mean) / self.std
        model_out = self.model(image)
        return model_out.argmax(1).byte()


# --------------------------------------------------------------------------------------------------- tables


def builder(module: Callable[[], nn.Module], name: str, shape: tuple[int, ...]) -> Callable:
    """A latency_graphs builder: the module in eval mode and AI Hub's one input `name` of `shape` (aihub_custom and
    aihub_sr_small build theirs with it too)."""
    def build() -> tuple[nn.Module, dict[str, torch.Tensor]]:
        return module().eval(), {name: torch.randn(shape)}
    return build


# (AI Hub model, component) -> builder; components as in aihub_perf.csv
BUILDERS: dict[tuple[str, str], Callable] = {
    ("yamnet", "YamNet"): builder(YamNet, "audio", (1, 1, 96, 64)),
    ("posenet_mobilenet", "Posenet-Mobilenet"): builder(PosenetMobilenet, "image", (1, 3, 513, 257)),
    ("deeplabv3_plus_mobilenet", "DeepLabV3-Plus-MobileNet"): builder(DeepLabV3PlusMobilenet, "image",
                                                                       (1, 3, 520, 520)),
}
PUBLISHED_PARAMS = {"yamnet": 3.73e6, "posenet_mobilenet": 3.31e6, "deeplabv3_plus_mobilenet": 5.80e6}


def folded_params(module: nn.Module) -> int:
    """Parameter count with every BatchNorm folded into the layer before it, as in the compiled asset AI Hub counts:
    BN's weight and bias become one bias per channel, or merge into the bias the layer before already has (seen
    where the two sit in one nn.Sequential). The aihub_* re-statements print it beside the plain count, and
    aihub_custom.COUNTED_AS compares it with AI Hub's figure where AI Hub counts that way."""
    norms = (nn.BatchNorm1d, nn.BatchNorm2d)
    total = sum(p.numel() for p in module.parameters()) - sum(
        m.num_features for m in module.modules() if isinstance(m, norms))
    for seq in (m for m in module.modules() if isinstance(m, nn.Sequential)):
        for before, norm in zip(seq, list(seq)[1:]):
            if isinstance(norm, norms) and getattr(before, "bias", None) is not None:
                total -= norm.num_features
    return total


if __name__ == "__main__":
    for (key, _), build in BUILDERS.items():
        with torch.device("meta"):
            module, feeds = build()
        params = sum(p.numel() for p in module.parameters())
        print(f"{key:26} {params / 1e6:7.4f}M parameters, {folded_params(module) / 1e6:7.4f}M with BN folded "
              f"(AI Hub: {PUBLISHED_PARAMS[key] / 1e6:.2f}M)")
