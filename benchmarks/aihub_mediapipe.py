"""AI Hub's MediaPipe models (face, pose, hand, selfie) re-stated as plain PyTorch modules, one per component that
has rows in aihub_perf.csv.

Each module is written layer for layer as the source's forward runs in eval mode (these networks have no dropout and
no BatchNorm: TFLite already folded it), wrapped in what AI Hub's component class adds around it (its model.py
forward, plus the source edits AI Hub applies with find_replace_in_repo before importing). Sub-module names mirror
the sources' state_dict keys under AI Hub's wrapper attribute (`detector.` for the zmurez networks, none for selfie),
so a source checkpoint would load into them.

Sources (AI Hub v0.46.1, quic/ai-hub-models 52c080d2; MediaPipePyTorchAsRoot pins zmurez/MediaPipePyTorch at
65f2549b "to device bugs", read from the xenova/MediaPipePyTorch fork that contains that commit; zmurez's own
stored HEAD b38dbe3 predates it and lacks BlazeFace's back model). Parameter counts are AI Hub's info.yaml figures,
published per component (3 significant digits), so each component is compared with its own figure:
- mediapipe_face / FaceDetector: blazeface.py `BlazeFace(back_model=True)` (blazeface_back: 5x5/2 stem + 31
  BlazeBlocks + FinalBlazeBlock, 2 classifier + 2 regressor heads) with AI Hub's `_apply_blazeface_fixes`: the first
  pad becomes (2, 2, 2, 2) and `return [r, c]` becomes `return [r1, r2, c1, c2]` (the two concats become dead);
  FaceDetector.forward returns the four tensors (include_postprocessing=False). 135K parameters (info.yaml),
  input image 1x3x256x256.
- mediapipe_face / FaceLandmarkDetector: blazeface_landmark.py `BlazeFaceLandmark()` (PReLU BlazeBlocks, 468x3
  landmark head and a face-flag head; AI Hub turns `if x.shape[0] == 0:` into `if False:`); returns (flag sigmoid,
  landmarks / 192). 603K parameters, input image 1x3x192x192.
- mediapipe_pose / PoseDetector: blazepose.py `BlazePose()` (5x5 stem + 29 5x5 BlazeBlocks, projected skips at
  stride 2) with `_apply_blazepose_fixes`: the commented first pad is enabled as F.pad(x, (1, 2, 2, 2)) and
  `return [r1, r2, c1, c2]`; PoseDetector.forward returns the four tensors. 815K parameters, input 1x3x128x128.
- mediapipe_pose / PoseLandmarkDetector: blazepose_landmark.py `BlazePoseLandmark()` (encoder, top-down up1..up4,
  bottom-up block1..block5 heads; also a segmentation branch up8/up9/block6/segmentation); PoseLandmarkDetector.forward
  keeps output[0] (flag) and output[1][:, :25] (landmarks), so the segmentation branch is dead and is left out here
  (tracing/ONNX export drops it; its 1,537 parameters are not in AI Hub's count either, see below).
  3.36M parameters, input 1x3x256x256.
- mediapipe_hand / HandDetector: blazepalm.py `BlazePalm()` (32..256-ch BlazeBlocks, two ConvTranspose2d FPN steps,
  3-scale heads; 2944 anchors); no source edits; HandDetector.forward returns the source's (r, c) concats
  (include_postprocessing=False). 1.76M parameters, input 1x3x256x256.
- mediapipe_hand / HandLandmarkDetector: blazehand_landmark.py `BlazeHandLandmark()` (5x5 BlazeBlocks, bilinear
  x2 upsampling FPN, 2x2 heads); returns (hand_flag sigmoid, handedness sigmoid, landmarks / 256).
  2.01M parameters, input 1x3x256x256.
- mediapipe_selfie / MediaPipe-Selfie-Segmentation: AI Hub's own qai_hub_models/models/mediapipe_selfie/model.py
  `SelfieSegmentation("square")` (MobileNetV3-like encoder with squeeze-excite via AvgPool2d, 3-step decoder with
  attention gates, ConvTranspose2d 2x2 head, sigmoid; weights read from the TFLite file). 106K parameters, input
  1x3x256x256.

All AI Hub components list their input as channel-last (get_channel_last_inputs = ["image"]); as elsewhere in these
re-statements the NCHW module is exported and AI Hub's added input transpose is not modelled.

Parameter counts. Every zmurez re-statement loads the source checkpoint strictly where one was available
(blazefaceback.pth, blazeface_landmark.pth, blazepose.pth at 65f2549b: 136,240 / 604,685 / 818,104, equal to these
modules), and all seven reproduce their source's outputs exactly (max error 0) with the weights copied across. AI
Hub's published figures are slightly lower (by 0.2-0.9%) because they count the exported graph's distinct
initializers: the TFLite-converted depthwise convs carry all-zero biases (so the zmurez checkpoints show) and
identical zero tensors are merged, so only one per channel count remains (e.g. blazefaceback.pth deduplicated by
value is 134,872 -> "135K").
`deduplicated_params` applies that rule structurally and lands within 0.15% of every published figure; the raw
counts are within 0.5% except FaceDetector (+0.92%, 1,368 merged zero bias elements), which a random-weight module
cannot match by its plain parameter count. (For PoseLandmarkDetector the rule also confirms the dead segmentation
branch is absent from AI Hub's graph: with it the count would be 3,365,046, i.e. 3.37M.)

Op counts (fusionc export + QNN passes, len(ops) / sum(op_counts)) vs AI Hub's QNN layers_total: FaceDetector
142/146 vs 148, FaceLandmarkDetector 98/100 vs 107, PoseDetector 134/138 vs 140, PoseLandmarkDetector 285/287 vs
293, HandDetector 193/199 vs 197, HandLandmarkDetector 200/203 vs 211, selfie 136/136 vs 139. The remaining gaps are
of the size of the hand-written TFLite-style spatial pads (stem and every stride-2 BlazeBlock), which fusionc folds
into the following conv's padding (only the zero channel pads stay Pad ops), e.g. FaceLandmarkDetector has 7 folded
pads (stem + 6 stride-2 blocks), just its 100 vs 107.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from aihub_mobile import builder


# --------------------------------------------------------------------------------------------------- blocks


class BlazeBlock(nn.Module):
    """zmurez blazebase.py BlazeBlock: depthwise kxk + pointwise 1x1 (both biased) on the main path; the skip path is
    the input, max-pooled 2x2 at stride 2, then either a 1x1 projection (skip_proj) or zero channel padding; the sum
    goes through ReLU or per-channel PReLU. At stride 2 the main path is padded TFLite-style by hand
    ((0, 2, 0, 2) for k=3, (1, 2, 1, 2) otherwise) and the depthwise conv has no padding; else padding (k-1)//2."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, act: str = "relu",
                 skip_proj: bool = False):
        super().__init__()
        self.stride, self.kernel_size, self.channel_pad = stride, kernel, out_ch - in_ch
        if stride == 2:
            self.max_pool = nn.MaxPool2d(2, 2)
        self.convs = nn.Sequential(
            nn.Conv2d(in_ch, in_ch, kernel, stride, 0 if stride == 2 else (kernel - 1) // 2, groups=in_ch),
            nn.Conv2d(in_ch, out_ch, 1))
        self.skip_proj = nn.Conv2d(in_ch, out_ch, 1) if skip_proj else None
        self.act = nn.ReLU() if act == "relu" else nn.PReLU(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            h = F.pad(x, (0, 2, 0, 2) if self.kernel_size == 3 else (1, 2, 1, 2))
            x = self.max_pool(x)
        else:
            h = x
        if self.skip_proj is not None:
            x = self.skip_proj(x)
        elif self.channel_pad > 0:
            x = F.pad(x, (0, 0, 0, 0, 0, self.channel_pad))
        return self.act(self.convs(h) + x)


class FinalBlazeBlock(nn.Module):
    """zmurez blazebase.py FinalBlazeBlock (BlazeFace back model): pad (0, 2, 0, 2), depthwise 3x3/2, 1x1, ReLU; no
    skip."""

    def __init__(self, channels: int):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(channels, channels, 3, 2, 0, groups=channels),
                                   nn.Conv2d(channels, channels, 1))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.convs(F.pad(x, (0, 2, 0, 2))))


def blocks(*spec: tuple, stem: nn.Module | None = None, stem_act: nn.Module | None = None, **kw) -> nn.Sequential:
    """A Sequential of BlazeBlocks, each spec entry (in, out[, kernel[, stride]]) or (in, out, k, s, n) for n
    repeats; optionally led by a stem conv and its activation (index 0 and 1, as in the sources)."""
    layers: list[nn.Module] = [stem, stem_act] if stem is not None else []
    for s in spec:
        n = s[4] if len(s) > 4 else 1
        layers += [BlazeBlock(*s[:4], **kw) for _ in range(n)]
    return nn.Sequential(*layers)


def heads(b: int, x: torch.Tensor, conv: nn.Conv2d, last: int) -> torch.Tensor:
    """NCHW head -> NHWC -> (b, anchors, last), as the sources reshape every classifier / regressor output."""
    return conv(x).permute(0, 2, 3, 1).reshape(b, -1, last)


def pw(in_ch: int, out_ch: int) -> nn.Sequential:
    """BlazePoseLandmark's up/skip unit: depthwise 3x3 (pad 1) + 1x1 + ReLU."""
    return nn.Sequential(nn.Conv2d(in_ch, in_ch, 3, 1, 1, groups=in_ch), nn.Conv2d(in_ch, out_ch, 1), nn.ReLU())


def up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear")


# --------------------------------------------------------------------------------------------------- face


class _BlazeFaceBack(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = blocks((24, 24, 3, 1, 7), (24, 24, 3, 2), (24, 24, 3, 1, 7), (24, 48, 3, 2),
                               (48, 48, 3, 1, 7), (48, 96, 3, 2), (96, 96, 3, 1, 7),
                               stem=nn.Conv2d(3, 24, 5, 2, 0), stem_act=nn.ReLU())
        self.final = FinalBlazeBlock(96)
        self.classifier_8, self.classifier_16 = nn.Conv2d(96, 2, 1), nn.Conv2d(96, 6, 1)
        self.regressor_8, self.regressor_16 = nn.Conv2d(96, 32, 1), nn.Conv2d(96, 96, 1)


class FaceDetector(nn.Module):
    """AI Hub FaceDetector: BlazeFace back model, first pad (2, 2, 2, 2), outputs (box_coords_1 [b, 512, 16],
    box_coords_2 [b, 384, 16], box_scores_1 [b, 512, 1], box_scores_2 [b, 384, 1])."""

    output_count = 4

    def __init__(self):
        super().__init__()
        self.detector = _BlazeFaceBack()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        d, b = self.detector, image.shape[0]
        x = d.backbone(F.pad(image, (2, 2, 2, 2)))  # (b, 96, 16, 16)
        h = d.final(x)                              # (b, 96, 8, 8)
        return (heads(b, x, d.regressor_8, 16), heads(b, h, d.regressor_16, 16),
                heads(b, x, d.classifier_8, 1), heads(b, h, d.classifier_16, 1))


class _BlazeFaceLandmark(nn.Module):
    def __init__(self):
        super().__init__()
        p = {"act": "prelu"}
        self.backbone1 = blocks((16, 16, 3, 1, 2), (16, 32, 3, 2), (32, 32, 3, 1, 2), (32, 64, 3, 2),
                                (64, 64, 3, 1, 2), (64, 128, 3, 2), (128, 128, 3, 1, 2), (128, 128, 3, 2),
                                (128, 128, 3, 1, 2), stem=nn.Conv2d(3, 16, 3, 2, 0), stem_act=nn.PReLU(16), **p)
        self.backbone2a = nn.Sequential(*blocks((128, 128, 3, 2), (128, 128, 3, 1, 2), **p),
                                        nn.Conv2d(128, 32, 1), nn.PReLU(32), BlazeBlock(32, 32, 3, **p),
                                        nn.Conv2d(32, 1404, 3))
        self.backbone2b = nn.Sequential(BlazeBlock(128, 128, 3, 2, **p), nn.Conv2d(128, 32, 1), nn.PReLU(32),
                                        BlazeBlock(32, 32, 3, **p), nn.Conv2d(32, 1, 3))


class FaceLandmarkDetector(nn.Module):
    """AI Hub FaceLandmarkDetector: BlazeFaceLandmark; outputs (scores [b], landmarks [b, 468, 3])."""

    output_count = 2

    def __init__(self):
        super().__init__()
        self.detector = _BlazeFaceLandmark()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.detector
        x = d.backbone1(F.pad(image, (0, 1, 0, 1)))
        landmarks = d.backbone2a(x).view(-1, 468, 3) / 192
        flag = d.backbone2b(x).sigmoid().view(-1)
        return flag, landmarks


# --------------------------------------------------------------------------------------------------- pose


class _BlazePose(nn.Module):
    def __init__(self):
        super().__init__()
        proj = {"skip_proj": True}  # every stride-2 block here projects its skip with a 1x1 conv
        self.backbone1 = nn.Sequential(*blocks((48, 48, 5, 1, 3), stem=nn.Conv2d(3, 48, 5, 1, 2), stem_act=nn.ReLU()),
                                       BlazeBlock(48, 64, 5, 2, **proj), *blocks((64, 64, 5, 1, 3)),
                                       BlazeBlock(64, 96, 5, 2, **proj), *blocks((96, 96, 5, 1, 6)),
                                       BlazeBlock(96, 128, 5, 2, **proj), *blocks((128, 128, 5, 1, 7)))
        self.backbone2 = nn.Sequential(BlazeBlock(128, 256, 5, 2, **proj), *blocks((256, 256, 5, 1, 6)))
        self.classifier_8, self.classifier_16 = nn.Conv2d(128, 2, 1), nn.Conv2d(256, 6, 1)
        self.regressor_8, self.regressor_16 = nn.Conv2d(128, 24, 1), nn.Conv2d(256, 72, 1)


class PoseDetector(nn.Module):
    """AI Hub PoseDetector: BlazePose detector with the (1, 2, 2, 2) input pad enabled; outputs (box_coords_1
    [b, 512, 12], box_coords_2 [b, 384, 12], box_scores_1 [b, 512, 1], box_scores_2 [b, 384, 1])."""

    output_count = 4

    def __init__(self):
        super().__init__()
        self.detector = _BlazePose()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        d, b = self.detector, image.shape[0]
        x = d.backbone1(F.pad(image, (1, 2, 2, 2)))  # (b, 128, 16, 16)
        h = d.backbone2(x)                           # (b, 256, 8, 8)
        return (heads(b, x, d.regressor_8, 12), heads(b, h, d.regressor_16, 12),
                heads(b, x, d.classifier_8, 1), heads(b, h, d.classifier_16, 1))


class _BlazePoseLandmark(nn.Module):
    def __init__(self, segmentation: bool = False):
        super().__init__()
        self.backbone1 = blocks((24, 24, 3, 1, 2), stem=nn.Conv2d(3, 24, 3, 2, 0), stem_act=nn.ReLU())
        self.backbone2 = blocks((24, 48, 3, 2), (48, 48, 3, 1, 3))
        self.backbone3 = blocks((48, 96, 3, 2), (96, 96, 3, 1, 4))
        self.backbone4 = blocks((96, 192, 3, 2), (192, 192, 3, 1, 5))
        self.backbone5 = blocks((192, 288, 3, 2), (288, 288, 3, 1, 6))
        self.up1, self.up2, self.up3, self.up4 = pw(288, 48), pw(192, 48), pw(96, 48), pw(48, 48)
        self.block1 = blocks((48, 96, 3, 2), (96, 96, 3, 1, 4))
        self.up5 = pw(96, 96)
        self.block2 = blocks((96, 192, 3, 2), (192, 192, 3, 1, 5))
        self.up6 = pw(192, 192)
        self.block3 = blocks((192, 288, 3, 2), (288, 288, 3, 1, 6))
        self.up7 = pw(288, 288)
        self.block4 = blocks((288, 288, 3, 2), (288, 288, 3, 1, 7), (288, 288, 3, 2), (288, 288, 3, 1, 6))
        if segmentation:  # dead in AI Hub's PoseLandmarkDetector (its output is not returned)
            self.up8, self.up9, self.block6 = pw(48, 8), pw(24, 8), pw(8, 8)
            self.segmentation = nn.Conv2d(8, 1, 3, padding=1)
        self.block5 = BlazeBlock(288, 288, 3)
        self.flag = nn.Conv2d(288, 1, 2)
        self.landmarks = nn.Conv2d(288, 124, 2)


class PoseLandmarkDetector(nn.Module):
    """AI Hub PoseLandmarkDetector: BlazePoseLandmark; outputs (scores [b], landmarks[:, :25] [b, 25, 4])."""

    output_count = 2

    def __init__(self, num_valid_landmarks: int = 25):
        super().__init__()
        self.detector = _BlazePoseLandmark()
        self.num_valid_landmarks = num_valid_landmarks

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d, b = self.detector, image.shape[0]
        x = d.backbone1(F.pad(image, (0, 1, 0, 1)))
        y = d.backbone2(x)
        z = d.backbone3(y)
        w = d.backbone4(z)
        v = d.backbone5(w)
        w1 = d.up2(w) + up2(d.up1(v))
        z1 = d.up3(z) + up2(w1)
        y1 = d.up4(y) + up2(z1)
        out = d.block1(y1) + d.up5(z)
        out = d.block2(out) + d.up6(w)
        out = d.block3(out) + d.up7(v)
        out = d.block5(d.block4(out))
        flag = d.flag(out).view(-1).sigmoid()
        landmarks = d.landmarks(out).view(b, 31, 4) / 256
        return flag, landmarks[:, :self.num_valid_landmarks]


# --------------------------------------------------------------------------------------------------- hand


class _BlazePalm(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone1 = blocks((32, 32, 3, 1, 7), (32, 64, 3, 2), (64, 64, 3, 1, 7), (64, 128, 3, 2),
                                (128, 128, 3, 1, 7), stem=nn.Conv2d(3, 32, 3, 2, 0), stem_act=nn.ReLU())
        self.backbone2 = blocks((128, 256, 3, 2), (256, 256, 3, 1, 7))
        self.backbone3 = blocks((256, 256, 3, 2), (256, 256, 3, 1, 7))
        self.conv_transpose1 = nn.ConvTranspose2d(256, 256, 2, 2)
        self.blaze1 = BlazeBlock(256, 256)
        self.conv_transpose2 = nn.ConvTranspose2d(256, 128, 2, 2)
        self.blaze2 = BlazeBlock(128, 128)
        self.classifier_32, self.classifier_16, self.classifier_8 = (
            nn.Conv2d(128, 2, 1), nn.Conv2d(256, 2, 1), nn.Conv2d(256, 6, 1))
        self.regressor_32, self.regressor_16, self.regressor_8 = (
            nn.Conv2d(128, 36, 1), nn.Conv2d(256, 36, 1), nn.Conv2d(256, 108, 1))


class HandDetector(nn.Module):
    """AI Hub HandDetector: BlazePalm; outputs (box_coords [b, 2944, 18], box_scores [b, 2944, 1]), the source's
    concatenations over the 32x32, 16x16 and 8x8 heads."""

    output_count = 2

    def __init__(self):
        super().__init__()
        self.detector = _BlazePalm()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d, b = self.detector, image.shape[0]
        x = d.backbone1(F.pad(image, (0, 1, 0, 1)))  # (b, 128, 32, 32)
        y = d.backbone2(x)                           # (b, 256, 16, 16)
        z = d.backbone3(y)                           # (b, 256, 8, 8)
        y = d.blaze1(y + F.relu(d.conv_transpose1(z)))
        x = d.blaze2(x + F.relu(d.conv_transpose2(y)))
        c = torch.cat((heads(b, x, d.classifier_32, 1), heads(b, y, d.classifier_16, 1),
                       heads(b, z, d.classifier_8, 1)), dim=1)
        r = torch.cat((heads(b, x, d.regressor_32, 18), heads(b, y, d.regressor_16, 18),
                       heads(b, z, d.regressor_8, 18)), dim=1)
        return r, c


class _BlazeHandLandmark(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone1 = blocks((24, 24, 5, 1, 2), (24, 48, 5, 2), stem=nn.Conv2d(3, 24, 3, 2, 0), stem_act=nn.ReLU())
        self.backbone2 = blocks((48, 48, 5, 1, 2), (48, 96, 5, 2))
        self.backbone3 = blocks((96, 96, 5, 1, 2), (96, 96, 5, 2))
        self.backbone4 = blocks((96, 96, 5, 1, 2), (96, 96, 5, 2))
        self.blaze5, self.blaze6 = BlazeBlock(96, 96, 5), BlazeBlock(96, 96, 5)
        self.conv7 = nn.Conv2d(96, 48, 1)
        self.backbone8 = blocks((48, 48, 5, 1, 4), (48, 96, 5, 2), (96, 96, 5, 1, 4), (96, 288, 5, 2),
                                (288, 288, 5, 1, 4), (288, 288, 5, 2), (288, 288, 5, 1, 4), (288, 288, 5, 2),
                                (288, 288, 5, 1, 4), (288, 288, 5, 2), (288, 288, 5, 1, 4))
        self.hand_flag, self.handed = nn.Conv2d(288, 1, 2), nn.Conv2d(288, 1, 2)
        self.landmarks = nn.Conv2d(288, 63, 2)


class HandLandmarkDetector(nn.Module):
    """AI Hub HandLandmarkDetector: BlazeHandLandmark; outputs (scores [b], lr [b], landmarks [b, 21, 3])."""

    output_count = 3

    def __init__(self):
        super().__init__()
        self.detector = _BlazeHandLandmark()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        d = self.detector
        x = d.backbone1(F.pad(image, (0, 1, 0, 1)))
        y = d.backbone2(x)
        z = d.backbone3(y)
        w = d.backbone4(z)
        z = d.blaze5(z + up2(w))
        y = d.conv7(d.blaze6(y + up2(z)))
        x = d.backbone8(x + up2(y))
        hand_flag = d.hand_flag(x).view(-1).sigmoid()
        handed = d.handed(x).view(-1).sigmoid()
        landmarks = d.landmarks(x).view(-1, 21, 3) / 256
        return hand_flag, handed, landmarks


# --------------------------------------------------------------------------------------------------- selfie


class _Depthwise(nn.Module):
    """AI Hub selfie DepthwiseConv2d (a biased depthwise conv held as `.depthwise`)."""

    def __init__(self, ch: int, kernel: int, stride: int, padding: int):
        super().__init__()
        self.depthwise = nn.Conv2d(ch, ch, kernel, stride, padding, groups=ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.depthwise(x)


class SelfieSegmentation(nn.Module):
    """AI Hub SelfieSegmentation("square"), 256x256 -> mask (b, 1, 256, 256).

    Encoder: conv1 3x3/2 + hardswish; an SE-gated depthwise stage (conv2, depthwise1/2, SE conv3/conv4 on a
    global AvgPool2d, projection conv5); two inverted residuals (conv6..conv9); five SE inverted residuals with
    hardswish (expand 1x1, depthwise 5x5, AvgPool2d-SE, project; residual from the second on). Decoder: a gated
    global context (conv30 * sigmoid(conv31(avgpool(x)))), then three x2 bilinear steps each with a 1x1, an
    attention gate (skip * sigmoid(1x1(relu(1x1(avgpool(skip + up))))) + up), a 1x1 + ReLU and a depthwise residual;
    ConvTranspose2d 2x2/2 to one channel and sigmoid. The AvgPool2d kernels equal the feature size (global pooling
    at 256x256, the square variant's allow_avg=True)."""

    # (expand conv, depthwise, SE squeeze, SE excite, project, in, expanded, squeezed, out, kernel, stride, residual)
    SE_BLOCKS = [(10, 4, 11, 12, 13, 24, 96, 24, 32, 5, 2, False), (14, 5, 15, 16, 17, 32, 128, 32, 32, 5, 1, True),
                 (18, 6, 19, 20, 21, 32, 128, 32, 32, 5, 1, True), (22, 7, 23, 24, 25, 32, 96, 24, 32, 5, 1, True),
                 (26, 8, 27, 28, 29, 32, 96, 24, 32, 5, 1, True)]
    # (up conv, squeeze, excite, out conv, depthwise, in, out, pooled size)
    DECODER = [(32, 33, 34, 35, 9, 128, 24, 32), (36, 37, 38, 39, 10, 24, 16, 64), (40, 41, 42, 43, 11, 16, 16, 128)]

    def __init__(self):
        super().__init__()
        conv, dw = self._conv, self._dw
        conv(1, 3, 16, 3, 2, 1)
        conv(2, 16, 16)
        dw(1, 16, 3, 2)
        conv(3, 16, 8)
        conv(4, 8, 16)
        conv(5, 16, 16)
        conv(6, 16, 72)
        dw(2, 72, 3, 2)
        conv(7, 72, 24)
        conv(8, 24, 88)
        dw(3, 88, 3, 1)
        conv(9, 88, 24)
        for e, d, sq, ex, pr, cin, mid, red, cout, k, s, _ in self.SE_BLOCKS:
            conv(e, cin, mid)
            dw(d, mid, k, s)
            conv(sq, mid, red)
            conv(ex, red, mid)
            conv(pr, mid, cout)
        conv(30, 32, 128)
        conv(31, 32, 128)
        for u, sq, ex, o, d, cin, cout, _ in self.DECODER:
            conv(u, cin, cout)
            conv(sq, cout, cout)
            conv(ex, cout, cout)
            conv(o, cout, cout)
            dw(d, cout, 3, 1)
        self.transpose_conv = nn.ConvTranspose2d(16, 1, 2, 2, 0)

    def _conv(self, i: int, cin: int, cout: int, k: int = 1, s: int = 1, p: int = 0) -> None:
        self.add_module(f"conv{i}", nn.Conv2d(cin, cout, k, s, p))

    def _dw(self, i: int, ch: int, k: int, s: int) -> None:
        self.add_module(f"depthwise{i}", _Depthwise(ch, k, s, k // 2))

    def c(self, i: int) -> nn.Module:
        return getattr(self, f"conv{i}")

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        c, hs, gpool = self.c, F.hardswish, lambda t: F.adaptive_avg_pool2d(t, 1)
        x1 = hs(c(1)(image))                                          # (b, 16, 128, 128)
        x = F.relu(self.depthwise1(F.relu(c(2)(x1))))                 # (b, 16, 64, 64)
        x = torch.sigmoid(c(4)(F.relu(c(3)(F.avg_pool2d(x, 64))))) * x
        x3 = c(5)(x)
        x = F.relu(self.depthwise2(F.relu(c(6)(x3))))                 # (b, 72, 32, 32)
        x4 = c(7)(x)
        x2 = c(9)(F.relu(self.depthwise3(F.relu(c(8)(x4))))) + x4     # (b, 24, 32, 32)
        x = x2
        for e, d, sq, ex, pr, *_, residual in self.SE_BLOCKS:
            skip = x
            h = hs(getattr(self, f"depthwise{d}")(hs(c(e)(x))))       # 16x16 after the first
            h = torch.sigmoid(c(ex)(F.relu(c(sq)(F.avg_pool2d(h, 16))))) * h
            x = c(pr)(h) + skip if residual else c(pr)(h)
        x = F.relu(c(30)(x)) * torch.sigmoid(c(31)(F.avg_pool2d(x, 16)))
        for (u, sq, ex, o, d, _, _, pool), skip in zip(self.DECODER, (x2, x3, x1)):
            up = c(u)(F.interpolate(x, scale_factor=2, mode="bilinear"))
            gate = F.avg_pool2d(skip + up, pool)
            x = F.relu(c(o)(up + skip * torch.sigmoid(c(ex)(F.relu(c(sq)(gate))))))
            x = x + F.relu(getattr(self, f"depthwise{d}")(x))
        return torch.sigmoid(self.transpose_conv(x))


# --------------------------------------------------------------------------------------------------- tables


# (AI Hub model, component) -> builder; components as in aihub_perf.csv
BUILDERS: dict[tuple[str, str], Callable] = {
    ("mediapipe_face", "FaceDetector"): builder(FaceDetector, "image", (1, 3, 256, 256)),
    ("mediapipe_face", "FaceLandmarkDetector"): builder(FaceLandmarkDetector, "image", (1, 3, 192, 192)),
    ("mediapipe_pose", "PoseDetector"): builder(PoseDetector, "image", (1, 3, 128, 128)),
    ("mediapipe_pose", "PoseLandmarkDetector"): builder(PoseLandmarkDetector, "image", (1, 3, 256, 256)),
    ("mediapipe_hand", "HandDetector"): builder(HandDetector, "image", (1, 3, 256, 256)),
    ("mediapipe_hand", "HandLandmarkDetector"): builder(HandLandmarkDetector, "image", (1, 3, 256, 256)),
    ("mediapipe_selfie", "MediaPipe-Selfie-Segmentation"): builder(SelfieSegmentation, "image", (1, 3, 256, 256)),
}
# AI Hub's info.yaml publishes one count per component ("Number of parameters (FaceDetector): 135K"), 3 significant
# digits; compare each component with its own figure. PUBLISHED_PARAMS keeps the per-model form of the other tables
# (the sum of the components' figures) for a per-model comparison of summed counts.
PUBLISHED_COMPONENT_PARAMS = {
    ("mediapipe_face", "FaceDetector"): 135e3, ("mediapipe_face", "FaceLandmarkDetector"): 603e3,
    ("mediapipe_pose", "PoseDetector"): 815e3, ("mediapipe_pose", "PoseLandmarkDetector"): 3.36e6,
    ("mediapipe_hand", "HandDetector"): 1.76e6, ("mediapipe_hand", "HandLandmarkDetector"): 2.01e6,
    ("mediapipe_selfie", "MediaPipe-Selfie-Segmentation"): 106e3,
}
PUBLISHED_PARAMS = {model: sum(v for (m, _), v in PUBLISHED_COMPONENT_PARAMS.items() if m == model)
                    for model, _ in PUBLISHED_COMPONENT_PARAMS}


def deduplicated_params(module: nn.Module) -> int:
    """The count AI Hub publishes: the exported graph's distinct initializers. The TFLite-converted checkpoints'
    depthwise convs have all-zero biases, and the exporter merges identical constant tensors, so of the zero
    depthwise biases one per channel count survives. Structurally: all parameters minus every depthwise bias after
    the first of its size. (Checked against blazefaceback.pth, blazeface_landmark.pth and blazepose.pth, whose
    value-deduplicated counts are 134,872, 603,373 and 815,016 = this function's.)"""
    seen, dropped = set(), 0
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels and m.bias is not None:
            if m.bias.numel() in seen:
                dropped += m.bias.numel()
            seen.add(m.bias.numel())
    return sum(p.numel() for p in module.parameters()) - dropped


if __name__ == "__main__":
    for key, build in BUILDERS.items():
        with torch.device("meta"):
            module, feeds = build()
        params, dedup, pub = sum(p.numel() for p in module.parameters()), deduplicated_params(module), \
            PUBLISHED_COMPONENT_PARAMS[key]
        print(f"{key[0]:18} {key[1]:30} {params:>9,} parameters ({100 * (params / pub - 1):+.2f}%), "
              f"{dedup:>9,} deduplicated ({100 * (dedup / pub - 1):+.2f}%); AI Hub: {pub:,.0f}")
