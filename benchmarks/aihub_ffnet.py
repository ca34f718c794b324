"""AI Hub's five FFNet ("fuss-free network") Cityscapes segmentation models, re-stated as plain PyTorch modules.

Each module is written layer for layer as the source's forward runs in eval mode, wrapped in what AI Hub's
CityscapesSegmentor.forward adds around it (those ops are part of the graph AI Hub compiles and times). Sub-module
names mirror the sources' state_dict keys (AI Hub's wrapper holds the FFNet as `.model`), so a source checkpoint would
load into `.model`. The networks have no dropout (it is only used by the classification head, absent here).

Sources (AI Hub v0.46.1, quic/ai-hub-models 52c080d2, and the code it loads):
- AI Hub wrapper, all five: qai_hub_models/models/_shared/cityscapes_segmentation/model.py `CityscapesSegmentor`;
  forward is `self.model(normalize_image_torchvision(image))`, i.e. (image - mean) / std with the torchvision
  ImageNet constants, and returns the raw 19-class logits at 1/4 of the network input's resolution (output "mask"; no
  argmax, no upsampling). The network comes from _shared/ffnet/model.py `_load_ffnet_source_model(variant)`, which
  calls `models.model_registry.model_entrypoint(variant)()` in Qualcomm-AI-research/FFNet@0887620d
  (FFNET_SOURCE_REPO_COMMIT; AI Hub's only patch renames datasets/ -> ffnet_datasets/, the model code is unchanged).
  Network code: models/ffnet_S_mobile.py and models/ffnet_NS_mobile.py (the registry entries),
  models/ffnet_blocks.py (`create_ffnet`, FFNet, FFNetUpHead, AdapterConv, UpBranch, UpsampleCat, the segmentation
  heads, GaussianConv2D) and models/resnet.py (ResNetS / ResNetNarrow with BasicBlock).
- ffnet_40s: `segmentation_ffnet40S_dBBB_mobile` = create_ffnet(backbone=Resnet40S_D (ResNetS, BasicBlock, blocks
  [4, 5, 6, 4], strides [2, 2, 2, 2], channels [64, 128, 192, 320]), head "B_mobile", task "segmentation_B",
  pre_downsampling=False). 13.9M parameters, input image 1x3x1024x2048, output 1x19x128x256.
- ffnet_54s: `segmentation_ffnet54S_dBBB_mobile`, the same with Resnet54S_D (blocks [5, 8, 8, 5]). 18.0M parameters,
  input 1x3x1024x2048.
- ffnet_78s: `segmentation_ffnet78S_dBBB_mobile`, the same with Resnet78S_D (blocks [6, 12, 12, 8]). 27.5M
  parameters, input 1x3x1024x2048.
- ffnet_78s_lowres: `segmentation_ffnet78S_BCC_mobile_pre_down` = create_ffnet(backbone=Resnet78S (strides
  [1, 2, 2, 2]), head "C_mobile", task "segmentation_C", pre_downsampling=True). 26.8M parameters, input
  1x3x512x1024 (FFNetLowRes.get_input_spec), output 1x19x64x128.
- ffnet_122ns_lowres: `segmentation_ffnet122NS_CCC_mobile_pre_down` = create_ffnet(backbone=Resnet122NS
  (ResNetNarrow, 3 stages, blocks [16, 24, 20], strides [2, 2, 2], channels [64, 64, 128, 256]), head "C_mobile",
  task "segmentation_C", pre_downsampling=True). 32.1M parameters, input 1x3x512x1024, output 1x19x64x128.

The "_pre_down" variants (the ones AI Hub's lowres models load) smooth and subsample their input before the backbone:
F.pad(x, (0, 0, 1, 1), mode="reflect") (rows only) and a fixed depthwise 5x5 Gaussian (sigma 0.7, no padding, stride
2; a buffer, not a parameter), so a 512x1024 input reaches the backbone at 255x510 and the logits come out at 64x128.
AI Hub compiles them that way (its lowres input spec is 512x1024 with the pre_down network, whose docstring says it is
meant for 2048x1024 inputs); it is re-stated as the source runs.

Parameter counts (trainable parameters, BatchNorm unfolded; `python benchmarks/aihub_ffnet.py` prints them) match AI
Hub's published three significant figures: 13.91M, 18.04M, 27.49M, 26.83M, 32.17M (folding BN gives 13.90M, 18.03M,
27.48M, 26.81M, 32.15M; all within 0.3% of AI Hub either way). Checked against the source: the FFNet classes of
FFNet@0887620d, built directly, load_state_dict(strict=True) into `.model`, and give the same logits as these modules.
After export and the QNN passes the graphs have 142 / 177 / 237 / 238 / 350 ops against AI Hub's float QNN layer
counts of 143 / 178 / 238 / 239 / 351: the same one-layer difference for all five, whatever the depth, so it lies at
the graph's ends (the input/output handling of the compiled asset) and not in the network.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from aihub_mobile import builder, folded_params

UP = {"mode": "nearest"}  # ffnet_blocks.mobile_up_kwargs: every "_mobile" head upsamples with nearest


# --------------------------------------------------------------------------------------------------- backbones


class BasicBlock(nn.Module):
    """resnet.py BasicBlock: conv3x3(stride)-BN-ReLU-conv3x3-BN, plus the shortcut (1x1 conv + BN when the shape
    changes), then ReLU."""

    def __init__(self, in_chan: int, out_chan: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chan, out_chan, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chan)
        self.conv2 = nn.Conv2d(out_chan, out_chan, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chan)
        self.relu = nn.ReLU()
        self.downsample = None
        if in_chan != out_chan or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(in_chan, out_chan, 1, stride, bias=False),
                                            nn.BatchNorm2d(out_chan))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(shortcut + out)


def _stage(in_chan: int, out_chan: int, blocks: int, stride: int) -> nn.Sequential:
    """ResNet*._make_layer: the first block takes the stride (and the channel change), the rest are 1-strided."""
    return nn.Sequential(BasicBlock(in_chan, out_chan, stride),
                         *[BasicBlock(out_chan, out_chan) for _ in range(blocks - 1)])


class ResNetS(nn.Module):
    """resnet.py ResNetS (the "slim" 4-stage backbone): stem conv3x3/2 (3->32)-BN-ReLU, conv3x3/2 (32->64)-BN-ReLU, then
    four BasicBlock stages with channels [64, 128, 192, 320]; returns the four stage outputs (feat4..feat32)."""

    def __init__(self, blocks: list[int], strides: list[int], branch_chans=(64, 128, 192, 320)):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self.bn0 = nn.BatchNorm2d(32)
        self.relu0 = nn.ReLU()
        self.conv1 = nn.Conv2d(32, 64, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu1 = nn.ReLU()
        chans = [64, *branch_chans]
        for i in range(4):
            self.add_module(f"layer{i + 1}", _stage(chans[i], chans[i + 1], blocks[i], strides[i]))
        self.out_channels = list(branch_chans)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.relu0(self.bn0(self.conv0(x)))
        x = self.relu1(self.bn1(self.conv1(x)))
        feat4 = self.layer1(x)
        feat8 = self.layer2(feat4)
        feat16 = self.layer3(feat8)
        return feat4, feat8, feat16, self.layer4(feat16)


class ResNetNarrow(nn.Module):
    """resnet.py ResNetNarrow (3 stages): stem conv3x3/2 (3->64), conv3x3/2 (64->64), conv3x3/1 (64->branch_chans[0]),
    each with BN-ReLU (its output is feat4), then three BasicBlock stages giving feat8, feat16, feat32."""

    def __init__(self, blocks: list[int], strides: list[int], branch_chans=(64, 64, 128, 256)):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 64, 3, 2, 1, bias=False)
        self.bn0 = nn.BatchNorm2d(64)
        self.relu0 = nn.ReLU()
        self.conv1 = nn.Conv2d(64, 64, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(64, branch_chans[0], 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(branch_chans[0])
        self.relu2 = nn.ReLU()
        for i in range(3):
            self.add_module(f"layer{i + 1}", _stage(branch_chans[i], branch_chans[i + 1], blocks[i], strides[i]))
        self.out_channels = list(branch_chans)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.relu0(self.bn0(self.conv0(x)))
        x = self.relu1(self.bn1(self.conv1(x)))
        feat4 = self.relu2(self.bn2(self.conv2(x)))
        feat8 = self.layer1(feat4)
        feat16 = self.layer2(feat8)
        return feat4, feat8, feat16, self.layer3(feat16)


# --------------------------------------------------------------------------------------------------- head


class ConvBNReLU(nn.Module):
    """ffnet_blocks.ConvBNReLU: bias-free conv, BN, ReLU, held in `.layers` as the source does."""

    def __init__(self, in_chan: int, out_chan: int, ks: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(in_chan, out_chan, ks, 1, ks // 2, bias=False),
                                    nn.BatchNorm2d(out_chan), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class AdapterConv(nn.Module):
    """ffnet_blocks.AdapterConv: one 1x1 ConvBNReLU per branch, mapping the backbone's channels to the head's."""

    def __init__(self, in_channels: list[int], out_channels: list[int]):
        super().__init__()
        self.adapter_conv = nn.ModuleList(ConvBNReLU(i, o, 1) for i, o in zip(in_channels, out_channels))

    def forward(self, x):
        return [conv(f) for conv, f in zip(self.adapter_conv, x)]


class UpBranch(nn.Module):
    """ffnet_blocks.UpBranch (FANet-style top-down path): at each scale a 3x3 "sm" ConvBNReLU to the head's output
    width and a 1x1 "up" ConvBNReLU to the next-finer branch's width, nearest-upsampled and added to that branch."""

    def __init__(self, in_channels: list[int], out_channels: list[int]):
        super().__init__()
        c4, c8, c16, c32 = in_channels
        o4, o8, o16, o32 = out_channels
        self.fam_32_sm = ConvBNReLU(c32, o32, 3)
        self.fam_32_up = ConvBNReLU(c32, c16, 1)
        self.fam_16_sm = ConvBNReLU(c16, o16, 3)
        self.fam_16_up = ConvBNReLU(c16, c8, 1)
        self.fam_8_sm = ConvBNReLU(c8, o8, 3)
        self.fam_8_up = ConvBNReLU(c8, c4, 1)
        self.fam_4 = ConvBNReLU(c4, o4, 3)
        self.high_level_ch = sum(out_channels)

    def forward(self, x):
        feat4, feat8, feat16, feat32 = x
        sm32 = self.fam_32_sm(feat32)
        x = F.interpolate(self.fam_32_up(feat32), feat16.shape[-2:], **UP) + feat16
        sm16 = self.fam_16_sm(x)
        x = F.interpolate(self.fam_16_up(x), feat8.shape[-2:], **UP) + feat8
        sm8 = self.fam_8_sm(x)
        sm4 = self.fam_4(F.interpolate(self.fam_8_up(x), feat4.shape[-2:], **UP) + feat4)
        return sm4, sm8, sm16, sm32


class UpsampleCat(nn.Module):
    """ffnet_blocks.UpsampleCat: nearest-upsample every coarser branch to the finest one's size, concatenating one at a
    time (three cats, as the source's loop)."""

    def forward(self, x):
        out = x[0]
        for f in x[1:]:
            out = torch.cat([out, F.interpolate(f, out.shape[-2:], **UP)], dim=1)
        return out


class SegmentationHead(nn.Module):
    """ffnet_blocks.SegmentationHead_NoSigmoid_3x3 / _1x1: conv3x3 (with bias) to `mid`, BN, ReLU, then a conv (with
    bias) to the classes: 3x3 for the "_B" heads, 1x1 for the "_C" heads."""

    def __init__(self, in_ch: int, mid: int, num_outputs: int, last_kernel: int):
        super().__init__()
        self.last_layer = nn.Sequential(
            nn.Conv2d(in_ch, mid, 3, 1, 1), nn.BatchNorm2d(mid), nn.ReLU(),
            nn.Conv2d(mid, num_outputs, last_kernel, 1, last_kernel // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(x)


class FFNetUpHead(nn.Module):
    """ffnet_blocks.FFNetUpHead for the mobile segmentation heads, as `.layers` = [AdapterConv, UpBranch, UpsampleCat,
    segmentation head]. "B_mobile" + "segmentation_B": adapter widths [64, 128, 128, 256], UpBranch outputs
    [96, 96, 64, 32], 3x3 head via 256. "C_mobile" + "segmentation_C": adapter widths [128] * 4, UpBranch outputs
    [128, 16, 16, 16], 1x1 head via 128."""

    HEADS = {"B": ([64, 128, 128, 256], [96, 96, 64, 32], 256, 3),
             "C": ([128, 128, 128, 128], [128, 16, 16, 16], 128, 1)}

    def __init__(self, in_chans: list[int], head: str, num_classes: int = 19):
        super().__init__()
        base, up_out, mid, last_k = self.HEADS[head]
        up = UpBranch(base, up_out)
        self.layers = nn.Sequential(AdapterConv(in_chans, base), up, UpsampleCat(),
                                    SegmentationHead(up.high_level_ch, mid, num_classes, last_k))

    def forward(self, x):
        return self.layers(x)


def _gaussian_5x5(sigma: float = 0.7) -> list[list[float]]:
    """The 5x5 kernel GaussianConv2D builds with scipy.ndimage.gaussian_filter(delta, sigma) (truncate=4 -> radius
    int(4 * sigma + 0.5) = 3, mode "reflect"): separable; the radius-3 taps fold back onto the edges through the
    half-sample reflection, so the 1D profile is [w2 + w3, w1, w0, w1, w2 + w3] with w normalised over -3..3."""
    radius = int(4.0 * sigma + 0.5)
    w = [math.exp(-0.5 * (k / sigma) ** 2) for k in range(radius + 1)]
    total = w[0] + 2 * sum(w[1:])
    w = [v / total for v in w]
    line = [w[2] + w[3], w[1], w[0], w[1], w[2] + w[3]]
    return [[a * b for b in line] for a in line]


class GaussianConv2D(nn.Module):
    """ffnet_blocks.GaussianConv2D(channels=3, kernel_size=5, sigma=0.7, stride=2): a fixed depthwise 5x5 blur with
    stride 2 and no padding; its kernel is a buffer (`weight`), not a parameter."""

    def __init__(self, channels: int = 3, stride: int = 2):
        super().__init__()
        kernel = torch.tensor(_gaussian_5x5()).view(1, 1, 5, 5).repeat(channels, 1, 1, 1)
        self.register_buffer("weight", kernel)
        self.channels = channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, groups=self.channels, stride=self.stride)


class FFNet(nn.Module):
    """ffnet_blocks.FFNet in eval mode: [pre-downsampling] -> backbone (4 feature maps) -> FFNetUpHead -> logits."""

    def __init__(self, backbone: nn.Module, head: str, pre_downsampling: bool, num_classes: int = 19):
        super().__init__()
        self.backbone_model = backbone
        self.head = FFNetUpHead(backbone.out_channels, head, num_classes)
        self.pre_downsampling = pre_downsampling
        if pre_downsampling:
            self.smoothing = GaussianConv2D(channels=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_downsampling:  # smooth_and_downsample_input: reflect-pad one row top and bottom, blur, stride 2
            x = self.smoothing(F.pad(x, (0, 0, 1, 1), mode="reflect"))
        return self.head(self.backbone_model(x))


# --------------------------------------------------------------------------------------------------- AI Hub wrapper


class CityscapesSegmentor(nn.Module):
    """AI Hub's CityscapesSegmentor around the FFNet (`.model`): input image (1, 3, H, W) RGB in [0, 1], normalised with
    the torchvision ImageNet mean/std (normalize_image_torchvision: (image - mean) / std), output "mask" = the raw
    (1, 19, H/4, W/4) logits (H/8, W/8 for the pre-downsampling lowres models)."""

    def __init__(self, model: FFNet):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model((image - self.mean) / self.std)


S_BLOCKS = {"40S": [4, 5, 6, 4], "54S": [5, 8, 8, 5], "78S": [6, 12, 12, 8]}  # resnet.py Resnet{40,54,78}S[_D]


def ffnet_s_dbbb(variant: str) -> CityscapesSegmentor:
    """segmentation_ffnet{40,54,78}S_dBBB_mobile: Resnet*S_D (every stage strided), "B_mobile" head, no pre-down."""
    return CityscapesSegmentor(FFNet(ResNetS(S_BLOCKS[variant], [2, 2, 2, 2]), "B", pre_downsampling=False))


def ffnet_78s_bcc_pre_down() -> CityscapesSegmentor:
    """segmentation_ffnet78S_BCC_mobile_pre_down: Resnet78S (layer1 unstrided), "C_mobile" head, pre-downsampling."""
    return CityscapesSegmentor(FFNet(ResNetS(S_BLOCKS["78S"], [1, 2, 2, 2]), "C", pre_downsampling=True))


def ffnet_122ns_ccc_pre_down() -> CityscapesSegmentor:
    """segmentation_ffnet122NS_CCC_mobile_pre_down: Resnet122NS (3 stages, blocks [16, 24, 20]), "C_mobile" head,
    pre-downsampling."""
    return CityscapesSegmentor(FFNet(ResNetNarrow([16, 24, 20], [2, 2, 2]), "C", pre_downsampling=True))


# (AI Hub model, component) -> builder; components as in aihub_perf.csv
BUILDERS: dict[tuple[str, str], Callable] = {
    ("ffnet_40s", "FFNet-40S"): builder(lambda: ffnet_s_dbbb("40S"), "image", (1, 3, 1024, 2048)),
    ("ffnet_54s", "FFNet-54S"): builder(lambda: ffnet_s_dbbb("54S"), "image", (1, 3, 1024, 2048)),
    ("ffnet_78s", "FFNet-78S"): builder(lambda: ffnet_s_dbbb("78S"), "image", (1, 3, 1024, 2048)),
    ("ffnet_78s_lowres", "FFNet-78S-LowRes"): builder(ffnet_78s_bcc_pre_down, "image", (1, 3, 512, 1024)),
    ("ffnet_122ns_lowres", "FFNet-122NS-LowRes"): builder(ffnet_122ns_ccc_pre_down, "image", (1, 3, 512, 1024)),
}
PUBLISHED_PARAMS = {"ffnet_40s": 13.9e6, "ffnet_54s": 18.0e6, "ffnet_78s": 27.5e6, "ffnet_78s_lowres": 26.8e6,
                    "ffnet_122ns_lowres": 32.1e6}


if __name__ == "__main__":
    for (key, _), build in BUILDERS.items():
        with torch.device("meta"):
            module, feeds = build()
        params = sum(p.numel() for p in module.parameters())
        print(f"{key:20} {params / 1e6:8.4f}M parameters, {folded_params(module) / 1e6:8.4f}M with BN folded "
              f"(AI Hub: {PUBLISHED_PARAMS[key] / 1e6:.1f}M)")
