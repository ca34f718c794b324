"""Plain-PyTorch restatements of five small Qualcomm AI Hub super-resolution models (aihub_custom.CUSTOM holds them).

Sources:
  * quic/ai-hub-models @ 52c080d245d2d20c634459208ff2548ce10b3c9f (AI Hub v0.46.1):
      qai_hub_models/models/{quicksrnetsmall,quicksrnetmedium,quicksrnetlarge,xlsr,sesr_m5}/model.py,
      qai_hub_models/models/_shared/{quicksrnet,sesr,super_resolution}/...
    SuperResolutionModel.forward(image) == self.model(image) (no extra ops);
    DEFAULT_SCALE_FACTOR = 4; input spec image (1, 3, 128, 128) float32.
  * quic/aimet-model-zoo @ d09d2b0404d10f71a7640a87e9d5e5257b028802 (pinned by
    qai_hub_models/utils/aimet/repo.py):
      aimet_zoo_torch/quicksrnet/model/models.py       (QuickSRNetBase)
      aimet_zoo_torch/common/super_resolution/models.py (XLSRRelease, SESRRelease)
      aimet_zoo_torch/common/super_resolution/blocks.py (AnchorOp, GBlock, (Residual)CollapsibleLinearBlock)

Weights are random (default PyTorch init); the source-specific weight initialisations
(identity-like QuickSRNet init, nearest-upsampling AnchorOp init) are not reproduced.
Module attribute names follow the originals so state_dict keys line up with the
aimet-zoo checkpoints.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from aihub_mobile import builder

SCALE_FACTOR = 4  # qai_hub_models/models/_shared/super_resolution/model.py DEFAULT_SCALE_FACTOR
INPUT_SHAPE = (1, 3, 128, 128)


# --------------------------------------------------------------------------- blocks
class AnchorOp(nn.Module):
    """aimet_zoo_torch/common/super_resolution/blocks.py AnchorOp @ aimet-model-zoo d09d2b04.

    A plain 1x1 Conv2d(in_channels -> in_channels * s**2) (with bias). In the source it is
    initialised to channel-wise nearest upsampling (repeat-interleave); here random.
    """

    def __init__(self, scaling_factor: int, in_channels: int = 3, kernel_size: int = 1):
        super().__init__()
        self.net = nn.Conv2d(in_channels, in_channels * scaling_factor**2, kernel_size=kernel_size)

    def forward(self, x):
        return self.net(x)


class GBlock(nn.Module):
    """aimet_zoo_torch/common/super_resolution/blocks.py GBlock @ aimet-model-zoo d09d2b04.

    grouped 3x3 conv (groups=4) -> ReLU -> 1x1 conv.
    """

    def __init__(self, in_channels: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size=(3, 3), padding=1, groups=4),
            nn.ReLU(),
            nn.Conv2d(in_channels, in_channels, kernel_size=(1, 1), padding=0),
        )

    def forward(self, x):
        return self.net(x)


class CollapsibleLinearBlock(nn.Module):
    """aimet_zoo_torch/common/super_resolution/blocks.py CollapsibleLinearBlock @ aimet-model-zoo d09d2b04.

    Un-collapsed (training) form, which is what AI Hub instantiates and exports
    (collapse() is never called in ai-hub-models 52c080d2; the checkpoints are loaded
    into this un-collapsed structure):
      kxk conv (in -> tmp, no bias) -> 1x1 conv (tmp -> out, bias) -> activation.
    """

    def __init__(self, in_channels, out_channels, tmp_channels, kernel_size, activation):
        super().__init__()
        self.conv_expand = nn.Conv2d(in_channels, tmp_channels, (kernel_size, kernel_size),
                                     padding=(kernel_size - 1) // 2, bias=False)
        self.conv_squeeze = nn.Conv2d(tmp_channels, out_channels, (1, 1))
        if activation == "relu":
            self.activation = nn.ReLU()
        elif activation == "identity":
            self.activation = nn.Identity()
        else:
            raise ValueError(activation)

    def forward(self, x):
        return self.activation(self.conv_squeeze(self.conv_expand(x)))


class ResidualCollapsibleLinearBlock(CollapsibleLinearBlock):
    """aimet_zoo_torch/common/super_resolution/blocks.py ResidualCollapsibleLinearBlock @ aimet-model-zoo d09d2b04.

    Un-collapsed form: activation(x + conv_squeeze(conv_expand(x))).
    """

    def forward(self, x):
        return self.activation(x + self.conv_squeeze(self.conv_expand(x)))


# --------------------------------------------------------------------------- models
class QuickSRNet(nn.Module):
    """aimet_zoo_torch/quicksrnet/model/models.py QuickSRNetBase @ aimet-model-zoo d09d2b04,
    as built by ai-hub-models 52c080d2 qai_hub_models/models/_shared/quicksrnet/common.py
    (integer-scale path only; AI Hub exports scale 4).

    forward: cnn = [conv3x3(3->C), Hardtanh(0,1)] + N x [conv3x3(C->C), Hardtanh(0,1)]
             -> conv_last conv3x3(C -> 3*s^2)
             [-> + anchor(input) (1x1 conv 3->3*s^2) if use_ito_connection]
             -> clip_output Hardtanh(0,1) -> PixelShuffle(s)
    """

    def __init__(self, scaling_factor: int, num_channels: int, num_intermediate_layers: int,
                 use_ito_connection: bool, in_channels: int = 3, out_channels: int = 3):
        super().__init__()
        self._use_ito_connection = use_ito_connection
        layers = [nn.Conv2d(in_channels, num_channels, kernel_size=(3, 3), padding=1),
                  nn.Hardtanh(min_val=0.0, max_val=1.0)]
        for _ in range(num_intermediate_layers):
            layers += [nn.Conv2d(num_channels, num_channels, kernel_size=(3, 3), padding=1),
                       nn.Hardtanh(min_val=0.0, max_val=1.0)]
        self.cnn = nn.Sequential(*layers)
        self.conv_last = nn.Conv2d(num_channels, out_channels * scaling_factor**2,
                                   kernel_size=(3, 3), padding=1)
        if use_ito_connection:
            # AnchorOp(scaling_factor, freeze_weights=False): trainable 1x1 conv
            self.anchor = AnchorOp(scaling_factor, in_channels=in_channels)
        self.depth_to_space = nn.PixelShuffle(scaling_factor)
        self.clip_output = nn.Hardtanh(min_val=0.0, max_val=1.0)

    def forward(self, image):
        x = self.cnn(image)
        if self._use_ito_connection:  # static Python flag, not data-dependent
            residual = self.conv_last(x)
            input_convolved = self.anchor(image)
            x = input_convolved + residual
        else:
            x = self.conv_last(x)
        x = self.clip_output(x)
        return self.depth_to_space(x)


class QuickSRNetSmall(QuickSRNet):
    """ai-hub-models 52c080d2 qai_hub_models/models/quicksrnetsmall/model.py:
    QuickSRNetBase(s, num_channels=32, num_intermediate_layers=2, use_ito_connection=False)."""

    def __init__(self, scaling_factor: int = SCALE_FACTOR):
        super().__init__(scaling_factor, 32, 2, False)


class QuickSRNetMedium(QuickSRNet):
    """ai-hub-models 52c080d2 qai_hub_models/models/quicksrnetmedium/model.py:
    QuickSRNetBase(s, num_channels=32, num_intermediate_layers=5, use_ito_connection=False)."""

    def __init__(self, scaling_factor: int = SCALE_FACTOR):
        super().__init__(scaling_factor, 32, 5, False)


class QuickSRNetLarge(QuickSRNet):
    """ai-hub-models 52c080d2 qai_hub_models/models/quicksrnetlarge/model.py:
    QuickSRNetBase(s, num_channels=64, num_intermediate_layers=11, use_ito_connection=True)."""

    def __init__(self, scaling_factor: int = SCALE_FACTOR):
        super().__init__(scaling_factor, 64, 11, True)


class XLSR(nn.Module):
    """aimet_zoo_torch/common/super_resolution/models.py XLSRRelease @ aimet-model-zoo d09d2b04,
    as built by ai-hub-models 52c080d2 qai_hub_models/models/xlsr/model.py (XLSRRelease(scaling_factor=s)).

    forward: residual = conv3x3(3->16)(x)
             g = [conv3x3(3->32), ReLU, conv1x1(32->32), GBlock x3](x)
             cat([g, residual], dim=1) -> conv1x1(48->32) -> ReLU -> conv3x3(32->3*s^2)
             -> PixelShuffle(s) -> Hardtanh(0,1)
    """

    def __init__(self, scaling_factor: int = SCALE_FACTOR, in_channels: int = 3, out_channels: int = 3):
        super().__init__()
        self.residual = nn.Conv2d(in_channels, 16, kernel_size=(3, 3), padding=1)
        self.cnn = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=(3, 3), padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, kernel_size=(1, 1), padding=0),
            GBlock(32),
            GBlock(32),
            GBlock(32),
        )
        self.tail = nn.Sequential(
            nn.Conv2d(48, 32, kernel_size=(1, 1), padding=0),
            nn.ReLU(),
            nn.Conv2d(32, out_channels * scaling_factor**2, kernel_size=(3, 3), padding=1),
        )
        self.depth_to_space = nn.PixelShuffle(scaling_factor)
        self.clipped_relu = nn.Hardtanh(0, 1)

    def forward(self, image):
        residual = self.residual(image)
        gblock_output = self.cnn(image)
        concat_output = torch.cat([gblock_output, residual], dim=1)
        output = self.tail(concat_output)
        return self.clipped_relu(self.depth_to_space(output))


class SESR(nn.Module):
    """aimet_zoo_torch/common/super_resolution/models.py SESRRelease @ aimet-model-zoo d09d2b04,
    in its UN-collapsed form, as built by ai-hub-models 52c080d2
    qai_hub_models/models/_shared/sesr/common.py (SESRRelease(s, num_channels, num_lblocks));
    AI Hub never calls .collapse(), so the exported graph has the expand(256)+squeeze pairs.

    forward: up = anchor(x)  (1x1 conv 3->3*s^2, frozen in source but still a conv + params)
             f0 = ReLU(conv1x1(256->C)(conv5x5(3->256, no bias)(x)))
             r  = M x ResidualCLB: ReLU(h + conv1x1(256->C)(conv3x3(C->256, no bias)(h)))
             r  = r + f0
             y  = conv1x1(256->3*s^2)(conv5x5(C->256, no bias)(r))   (identity activation)
             PixelShuffle(s)(y + up)
    """

    def __init__(self, scaling_factor: int = SCALE_FACTOR, num_channels: int = 16, num_lblocks: int = 5,
                 in_channels: int = 3, out_channels: int = 3):
        super().__init__()
        self.anchor = AnchorOp(scaling_factor, in_channels=in_channels)
        self.conv_first = CollapsibleLinearBlock(in_channels, num_channels, tmp_channels=256,
                                                 kernel_size=5, activation="relu")
        self.residual_block = nn.Sequential(*[
            ResidualCollapsibleLinearBlock(num_channels, num_channels, tmp_channels=256,
                                           kernel_size=3, activation="relu")
            for _ in range(num_lblocks)
        ])
        self.conv_last = CollapsibleLinearBlock(num_channels, out_channels * scaling_factor**2,
                                                tmp_channels=256, kernel_size=5, activation="identity")
        self.depth_to_space = nn.PixelShuffle(scaling_factor)

    def forward(self, image):
        upsampled_input = self.anchor(image)
        initial_features = self.conv_first(image)
        residual_features = self.residual_block(initial_features)
        residual_features = residual_features + initial_features
        final_features = self.conv_last(residual_features)
        output = final_features + upsampled_input
        return self.depth_to_space(output)


class SESR_M5(SESR):
    """ai-hub-models 52c080d2 qai_hub_models/models/sesr_m5/model.py:
    SESRRelease(s, num_channels=16, num_lblocks=5) (un-collapsed)."""

    def __init__(self, scaling_factor: int = SCALE_FACTOR):
        super().__init__(scaling_factor, num_channels=16, num_lblocks=5)


# --------------------------------------------------------------------------- builders
def _image(cls: type[nn.Module]) -> Callable:
    return builder(cls, "image", INPUT_SHAPE)


# Component names as in the `component` column of /work/shared/latency/aihub_perf.csv.
BUILDERS = {
    ("quicksrnetsmall", "QuickSRNetSmall"): _image(QuickSRNetSmall),
    ("quicksrnetmedium", "QuickSRNetMedium"): _image(QuickSRNetMedium),
    ("quicksrnetlarge", "QuickSRNetLarge"): _image(QuickSRNetLarge),
    ("xlsr", "XLSR"): _image(XLSR),
    ("sesr_m5", "SESR-M5"): _image(SESR_M5),
}
PUBLISHED_PARAMS = {"quicksrnetsmall": 33.3e3, "quicksrnetmedium": 61.0e3, "quicksrnetlarge": 436e3, "xlsr": 28.0e3,
                    "sesr_m5": 343e3}
