"""AI Hub models built from their authors' own code (no library ships them), re-stated as plain PyTorch modules.

aihub_models.csv marks these "not rebuildable from torchvision, timm, transformers or diffusers": AI Hub imports each
from its source repository. Their graphs are small enough to re-state here, layer for layer as the source's forward
runs in eval mode, so that the cost model sees the convolution-heavy, high-resolution graphs a diffusion model's VAE
decoder and UNet are made of (640x1280 and 512x512 feature maps whose activations cannot stay in the NPU's local
memory) and the tiny ones beside them. Each module's parameter count matches AI Hub's published one to its three
significant figures (YAMNet's and DeepLabV3+'s once BatchNorm is folded into the convolutions, as AI Hub counts them:
0.3% apart unfolded; `python benchmarks/aihub_custom.py` prints both).

Sources (AI Hub v0.46.1, quic/ai-hub-models 52c080d2, and the code it loads):
- unet_segmentation: milesial/Pytorch-UNet `unet_carvana(scale=1.0)`: UNet(n_channels=3, n_classes=2,
  bilinear=False) (31.0M parameters), input 1x3x640x1280.
- real_esrgan_x4plus: BasicSR's RRDBNet(3, 3, num_feat=64, num_block=23, num_grow_ch=32, scale=4) (AI Hub's
  extern/basicsr copy), output clamped to [0, 1] by AI Hub's wrapper; esrgan: xinntao/ESRGAN's RRDBNet(3, 3, 64, 23,
  gc=32), the same layers without the clamp (16.7M parameters), input 1x3x128x128.
- real_esrgan_general_x4v3: BasicSR's SRVGGNetCompact(3, 3, num_feat=64, num_conv=32, upscale=4, act_type="prelu")
  (1.21M parameters), input 1x3x128x128.
- quicksrnetsmall / medium / large, xlsr, sesr_m5 (quic/aimet-model-zoo): aihub_sr_small.py.
- yamnet, posenet_mobilenet, deeplabv3_plus_mobilenet: aihub_mobile.py (added after the first fit with the others).
- ffnet_40s / 54s / 78s / 78s_lowres / 122ns_lowres (Qualcomm-AI-research/FFNet): aihub_ffnet.py; mediapipe_face /
  pose / hand / selfie (zmurez/MediaPipePyTorch and AI Hub's own selfie network): aihub_mediapipe.py, whose counts
  AI Hub publishes per component and as the exported graph's distinct initializers (`deduplicated_params`);
  foot_track_net, gear_guard_net, face_det_lite, face_attrib_net, facemap_3dmm (Qualcomm's own, in AI Hub's
  repository): aihub_qualcomm.py; yolov7 (tiny), yolox (small), yolov6 (nano) from their authors' repositories:
  aihub_yolo.py (AI Hub's Ultralytics models are built by Ultralytics itself: aihub_ultralytics.py); hrnet_pose,
  hrnet_face, litehrnet: aihub_hrnet.py; deeplab_xception (SegmenTron), bisenet, ddrnet23_slim, pidnet:
  aihub_segmentation.py; sinet, bgnet, easyocr (detector and recognizer): aihub_portrait_ocr.py; the MediaPipe hand
  gesture components and GPUNet-0: aihub_more.py. Where AI Hub's figure is not the model it compiles, NOT_PUBLISHED
  says why (a stale info.yaml, mostly).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

import aihub_ffnet
import aihub_hrnet
import aihub_mediapipe
import aihub_mobile
import aihub_mobilesam
import aihub_more
import aihub_portrait_ocr
import aihub_qualcomm
import aihub_segmentation
import aihub_sr_small
import aihub_swin
import aihub_swinv2
import aihub_yolo


class DoubleConv(nn.Sequential):
    """(3x3 conv, BatchNorm, ReLU) x 2 (milesial/Pytorch-UNet unet_parts.DoubleConv)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SegmentationUNet(nn.Module):
    """milesial/Pytorch-UNet's UNet with transposed-convolution upsampling (bilinear=False), as unet_carvana builds it.
    The source pads the upsampled map to the skip's size with F.pad; at AI Hub's 640x1280 the sizes agree and the pad
    is zero, so it is left out (a zero Pad is a no-op every exporter removes)."""

    def __init__(self, n_channels: int = 3, n_classes: int = 2) -> None:
        super().__init__()
        widths = (64, 128, 256, 512, 1024)
        self.inc = DoubleConv(n_channels, widths[0])
        self.downs = nn.ModuleList(nn.Sequential(nn.MaxPool2d(2), DoubleConv(a, b)) for a, b in zip(widths, widths[1:]))
        self.ups = nn.ModuleList(nn.ConvTranspose2d(b, b // 2, 2, stride=2) for b in reversed(widths[1:]))
        self.up_convs = nn.ModuleList(DoubleConv(b, b // 2) for b in reversed(widths[1:]))
        self.outc = nn.Conv2d(widths[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up, conv in zip(self.ups, self.up_convs):
            x = conv(torch.cat([skips.pop(), up(x)], dim=1))
        return self.outc(x)


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convolutions, each reading the concatenation of every earlier output (BasicSR rrdbnet_arch)."""

    def __init__(self, feat: int = 64, grow: int = 32) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(feat + i * grow, grow if i < 4 else feat, 3, 1, 1) for i in range(5))
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv in self.convs[:4]:
            features.append(self.lrelu(conv(torch.cat(features, 1))))
        return self.convs[4](torch.cat(features, 1)) * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, feat: int, grow: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(ResidualDenseBlock(feat, grow) for _ in range(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN's generator at scale 4: 23 RRDBs at the input's resolution, then two nearest-neighbour 2x upsamplings
    each followed by a 3x3 convolution (BasicSR rrdbnet_arch.RRDBNet; xinntao/ESRGAN RRDBNet_arch.RRDBNet is the same
    network). `clamp`: Real-ESRGAN's AI Hub wrapper clamps the output to [0, 1]."""

    def __init__(self, feat: int = 64, blocks: int = 23, grow: int = 32, clamp: bool = False) -> None:
        super().__init__()
        self.conv_first = nn.Conv2d(3, feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(feat, grow) for _ in range(blocks)))
        self.conv_body = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(feat, 3, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)
        self.clamp = clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        out = self.conv_last(self.lrelu(self.conv_hr(feat)))
        return out.clamp(0, 1) if self.clamp else out


class SRVGGNetCompact(nn.Module):
    """A plain stack of 3x3 convolutions with PReLU at the input's resolution, a pixel shuffle to 4x, plus the
    nearest-upsampled input (BasicSR srvgg_arch.SRVGGNetCompact)."""

    def __init__(self, feat: int = 64, convs: int = 32, upscale: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, feat, 3, 1, 1), nn.PReLU(feat)]
        for _ in range(convs):
            layers += [nn.Conv2d(feat, feat, 3, 1, 1), nn.PReLU(feat)]
        layers += [nn.Conv2d(feat, 3 * upscale * upscale, 3, 1, 1), nn.PixelShuffle(upscale)]
        self.body = nn.Sequential(*layers)
        self.upscale = upscale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + F.interpolate(x, scale_factor=self.upscale, mode="nearest")


def _image(module: Callable[[], nn.Module], height: int, width: int) -> Callable:
    return aihub_mobile.builder(module, "image", (1, 3, height, width))


# (AI Hub model, component) -> builder; the published parameter count beside each (aihub_models.csv)
CUSTOM: dict[tuple[str, str], Callable] = {
    ("unet_segmentation", "Unet-Segmentation"): _image(SegmentationUNet, 640, 1280),
    ("real_esrgan_x4plus", "Real-ESRGAN-x4plus"): _image(lambda: RRDBNet(clamp=True), 128, 128),
    ("esrgan", "ESRGAN"): _image(RRDBNet, 128, 128),
    ("real_esrgan_general_x4v3", "Real-ESRGAN-General-x4v3"): _image(SRVGGNetCompact, 128, 128),
    **aihub_sr_small.BUILDERS,
    **aihub_mobile.BUILDERS,
    **aihub_swin.BUILDERS,
    **aihub_mobilesam.BUILDERS,
    **aihub_swinv2.BUILDERS,
    **aihub_ffnet.BUILDERS,
    **aihub_mediapipe.BUILDERS,
    **aihub_qualcomm.BUILDERS,
    **aihub_yolo.BUILDERS,
    **aihub_hrnet.BUILDERS,
    **aihub_segmentation.BUILDERS,
    **aihub_portrait_ocr.BUILDERS,
    **aihub_more.BUILDERS,
}
PUBLISHED_PARAMS = {"unet_segmentation": 31.0e6, "real_esrgan_x4plus": 16.7e6, "esrgan": 16.7e6,
                    "real_esrgan_general_x4v3": 1.21e6, **aihub_sr_small.PUBLISHED_PARAMS,
                    **aihub_mobile.PUBLISHED_PARAMS, **aihub_swin.PUBLISHED_PARAMS,
                    **aihub_mobilesam.PUBLISHED_PARAMS, **aihub_ffnet.PUBLISHED_PARAMS,
                    **aihub_qualcomm.PUBLISHED_PARAMS, **aihub_yolo.PUBLISHED_PARAMS, **aihub_hrnet.PUBLISHED_PARAMS,
                    **aihub_segmentation.PUBLISHED_PARAMS, **aihub_more.PUBLISHED_PARAMS}
PUBLISHED_COMPONENT_PARAMS = {**aihub_mediapipe.PUBLISHED_COMPONENT_PARAMS,  # (model, component) -> AI Hub's count
                              **aihub_portrait_ocr.PUBLISHED_COMPONENT_PARAMS, **aihub_more.PUBLISHED_COMPONENT_PARAMS}
# model (or (model, component)) -> why AI Hub's figure is not the count of the graph it compiles (a stale info.yaml)
NOT_PUBLISHED = (aihub_swinv2.NOT_PUBLISHED | aihub_qualcomm.NOT_PUBLISHED | aihub_segmentation.NOT_PUBLISHED
                 | aihub_portrait_ocr.NOT_PUBLISHED | aihub_more.NOT_PUBLISHED)
# How AI Hub counts a model, where its figure is not the plain parameter count: distinct initializers (MediaPipe's
# merged zero biases), or with BatchNorm folded
COUNTED_AS = {**{model: aihub_mediapipe.deduplicated_params for model in aihub_mediapipe.PUBLISHED_PARAMS},
              "litehrnet": aihub_mobile.folded_params, "mediapipe_hand_gesture": aihub_mobile.folded_params}


def counted_params(key: str, module: nn.Module) -> int:
    """A module's parameters counted the way AI Hub counts that model's."""
    return COUNTED_AS[key](module) if key in COUNTED_AS else sum(p.numel() for p in module.parameters())


def published_params(key: str, component: str) -> float | None:
    """AI Hub's published parameter count of one component (per model where it publishes one per model); None where
    that figure is not the graph's (NOT_PUBLISHED)."""
    if key in NOT_PUBLISHED or (key, component) in NOT_PUBLISHED:
        return None
    return PUBLISHED_COMPONENT_PARAMS.get((key, component), PUBLISHED_PARAMS.get(key))


if __name__ == "__main__":
    for (key, component), build in CUSTOM.items():
        with torch.device("meta"):
            module, _ = build()
        published = published_params(key, component)
        why = NOT_PUBLISHED.get(key) or NOT_PUBLISHED.get((key, component))
        print(f"{key:26} {component:30} {counted_params(key, module) / 1e6:7.3f}M parameters (AI Hub: "
              f"{f'{published / 1e6:g}M' if published else why})")
