"""Five of Qualcomm's own AI Hub models (network code published only inside quic/ai-hub-models), re-stated as plain
PyTorch modules.

Each module is written layer for layer as the source's forward runs in eval mode, including what AI Hub's BaseModel
forward adds (input scaling / normalisation, output decoding); those ops are part of the graph AI Hub compiles and
times. Sub-module names mirror the sources' state_dict keys, so an AI Hub checkpoint would load into them. None of
these networks has dropout.

Sources (AI Hub v0.46.1 = quic/ai-hub-models 52c080d2; all network code lives in that repository, under
qai_hub_models/models/<model>/):
- foot_track_net: model.py `FootTrackNet()` (wide=64, has_ext=True, upmode="UCBA", act="relu", RGB=True, n_lmk=17)
  with layers.py Mbv3SmallFast / Block3x3 / SeModule / CBAModule / UpModule / DetectModule / ContextModule /
  HeadModule. The wrapper ops are in FootTrackNet.forward itself: `x * 255`, `* 1.0`, a 1x1 3->3 "RGB->BGR norm" conv
  + BatchNorm in front of the backbone; sigmoid on the three centre heatmaps and the landmark visibility; two concats.
  4 outputs (heatmap 3ch, bbox 12ch, landmark 34ch, landmark_visibility 17ch at /4). 2.53M parameters (info.yaml),
  input image 1x3x480x640.
- gear_guard_net: model.py `GearGuardNet.from_pretrained()` config (nc=2, depth 0.33, width 0.5, a YOLOv5-style
  yaml with FusedConvBatchNorm + DoubleBlazeBlock instead of C3) built by layers.py `build_gear_guard_net_model`;
  the forward appends `GearGuardNet.decode` (per scale: permute, reshape to 3 anchors x 7, sigmoids, grid / anchor
  box decode, stack, concat) and `_shared/yolo/utils.py detect_postprocess` (xywh -> xyxy, scores *= conf, max over
  classes in 5000-row chunks -> one chunk here, class index -> uint8). 3 outputs (boxes, scores, class_idx).
  6.19M parameters, input image 1x3x320x192.
- face_det_lite: model.py `FaceDetLite()` (wide=32, has_ext=False, RGB=False, has_se=True, phase="train": the centre
  map is returned without sigmoid) with layers.py (its own Mbv3SmallFast config, same block classes as
  foot_track_net). Wrapper op: `(image - 0.442) / 0.280`. The source also builds `bridge` (a 1x1 64->32 conv, 2,048
  weights) that its forward never uses; it is left out (it is not in the exported graph, and AI Hub's 878K matches the
  count without it). 3 outputs (heatmap, bbox, landmark at /8). 878K parameters,
  input 1x1x480x640 (gray).
- face_attrib_net: model.py `FaceAttribNet(64, [2, 6, 3])` (all five heads; group_size 32, PReLU) with layers.py
  HeadBlock / DownsampleBlock / NormalBlock / Conv2dBlock. Wrapper ops: `(image - 0.5) / 0.50196078` in front,
  stack of the five 2-way logits, softmax, `[:, :, 1]` (forward returns only the probabilities). Input image
  1x3x128x128. Parameters: 10.82M here and in the v0.46.1 code, NOT the 12.1M of info.yaml: that figure (and its
  "Model checkpoint: multitask_FR_state_dict.pt", 46.3 MB) dates from v0.32, when FaceAttribNet was the multitask
  face-recognition net (extra head_converter 3->1 conv, an EmbedBlock 8x8 grouped conv + 1x1 on the 512-ch map and a
  liveness branch; that code at d3851c1a builds 12,145,810 parameters). v0.42.0 (8138fd0d) switched to the
  detection-only model and weights (detection_only_05302025.pt) without updating info.yaml. The v0.46.1 QNN layer
  count (161) fits the current code (see below), so this re-states the current code.
- facemap_3dmm: model.py `FaceMap_3DMM` around resnet_score_rgb.py `resnet18_wd2()` (ResNet-18, width 0.5 except the
  last unit's 512 channels, an rgb->gray 1x1 conv with bias first, 265 outputs). Wrapper op: `image * 255`.
  5.42M parameters, input image 1x3x128x128.

Parameter counts: AI Hub's published figures match the counts with BatchNorm folded into the preceding conv (the
exported asset): foot_track_net 2,530,598 (2.53M; unfolded 2,536,145), gear_guard_net 6,190,079 (6.19M; 6,200,991),
face_det_lite 877,743 (878K; 880,415), facemap_3dmm 5,420,685 (5.42M; 5,424,109); the unfolded torch counts are
within 0.3% too. face_attrib_net: see above. `python aihub_qualcomm.py` prints both.

Checked against the source: AI Hub's own classes (v0.46.1 files, imported with the hub/asset utilities stubbed out)
with random weights and random BatchNorm statistics, their state_dict loaded into these modules (every key
matches; only the source's unused Detect.anchors buffer of gear_guard_net has no counterpart), give
bit-identical outputs for all five; parameter counts are identical (face_det_lite minus `bridge`).

Layer counts (fusionc export + QNN passes: len(ops) / sum(op_counts)) vs AI Hub's QNN_DLC layers_total (v0.46.1):
foot_track_net 197/197 vs 202, face_det_lite 123/123 vs 127, gear_guard_net 204/231 vs 239, face_attrib_net 147/157
vs 161, facemap_3dmm 52/53 vs 55. AI Hub compiles these with channel-last inputs and (foot_track_net, face_det_lite)
channel-last outputs, which adds one transpose per such tensor (foot_track_net 1+4, face_det_lite 1+3: exactly the
gap); face_attrib_net and facemap_3dmm (channel-last input only) are then 3 and 1 short, gear_guard_net 7, most
likely in how the box decode's index / slice / constant ops are lowered (not verified).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from aihub_mobile import builder, folded_params


# ------------------------------------------------------------------ shared: foot_track_net / face_det_lite layers


class SeModule(nn.Module):
    """layers.py SeModule: global avg pool, 1x1 (C -> C/4) BN ReLU, 1x1 (C/4 -> C) BN sigmoid, scale."""

    def __init__(self, size: int, reduction: int = 4):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.se = nn.Sequential(
            nn.Conv2d(size, size // reduction, 1, bias=False), nn.BatchNorm2d(size // reduction), nn.ReLU(),
            nn.Conv2d(size // reduction, size, 1, bias=False), nn.BatchNorm2d(size), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.se(self.pool(x))


class Block3x3(nn.Module):
    """layers.py Block3x3 (a simplified MobileNetV3 block; no depthwise conv): 1x1 expand BN ReLU, then a dense 3x3
    (expand -> out, carrying the stride) BN ReLU; "kernel 5" blocks instead run the 3x3 at stride 1 and add a second
    dense 3x3 (out -> out, carrying the stride) BN ReLU. Optional SE, then a residual add when stride is 1 (a 1x1 conv
    + BN projection when the channel count changes)."""

    def __init__(self, kernel: int, in_size: int, expand: int, out_size: int, se: bool, stride: int):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.se = SeModule(out_size) if se else None
        self.conv1 = nn.Conv2d(in_size, expand, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(expand)
        self.conv2 = nn.Conv2d(expand, out_size, 3, stride if kernel == 3 else 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_size)
        if kernel != 3:
            self.conv3 = nn.Conv2d(out_size, out_size, 3, stride, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(out_size)
        self.shortcut = nn.Sequential()
        if stride == 1 and in_size != out_size:
            self.shortcut = nn.Sequential(nn.Conv2d(in_size, out_size, 1, bias=False), nn.BatchNorm2d(out_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        if self.kernel == 5:
            out = F.relu(self.bn3(self.conv3(out)))
        if self.se is not None:
            out = self.se(out)
        return out + self.shortcut(x) if self.stride == 1 else out


class Mbv3SmallFast(nn.Module):
    """layers.py Mbv3SmallFast: 3x3 stride-2 stem (BN ReLU), then the Block3x3 list; returns the outputs of the
    `keep` blocks plus the last one."""

    def __init__(self, in_ch: int, config: list[tuple[int, int, int, int, bool, int]], keep: list[int]):
        super().__init__()
        self.keep = keep
        self.conv1 = nn.Conv2d(in_ch, 16, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.bneck = nn.Sequential(*(Block3x3(*c) for c in config))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        outs = []
        for index, block in enumerate(self.bneck):
            x = block(x)
            if index in self.keep:
                outs.append(x)
        outs.append(x)
        return outs


class CBAModule(nn.Module):
    """Conv, BatchNorm, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class UpModule(nn.Module):
    """UpModule mode "UCBA": nearest x2 upsample, then a 3x3 CBA."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = CBAModule(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ContextModule(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        wide = ch // 4
        self.inconv = CBAModule(ch, wide, 3, 1, 1)
        self.upconv = CBAModule(wide, wide, 3, 1, 1)
        self.downconv = CBAModule(wide, wide, 3, 1, 1)
        self.downconv2 = CBAModule(wide, wide, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inconv(x)
        return torch.cat([self.upconv(x), self.downconv2(self.downconv(x))], dim=1)


class DetectModule(nn.Module):
    """SSH-style detect module: a 3x3 CBA to C/2 next to the context module (C/4 + C/4), concatenated."""

    def __init__(self, ch: int):
        super().__init__()
        self.upconv = CBAModule(ch, ch // 2, 3, 1, 1)
        self.context = ContextModule(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.upconv(x), self.context(x)], dim=1)


class HeadModule(nn.Module):
    """Optional 3x3 CBA ("ext"), then a 1x1 conv with bias."""

    def __init__(self, ch: int, out_ch: int, has_ext: bool):
        super().__init__()
        self.head = nn.Conv2d(ch, out_ch, 1)
        self.ext = CBAModule(ch, ch, 3, padding=1) if has_ext else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.ext is not None:
            x = self.ext(x)
        return self.head(x)


# --------------------------------------------------------------------------------------------- FootTrackNet

# (kernel, in, expand, out, SE, stride) of foot_track_net/layers.py Mbv3SmallFast.bneck
_FOOT_BNECK = [
    (3, 16, 16, 16, False, 1), (3, 16, 64, 16, False, 2), (3, 16, 64, 16, False, 1),
    (5, 16, 96, 32, True, 2), (5, 32, 96, 32, True, 1), (5, 32, 128, 32, True, 1),
    (3, 32, 128, 64, False, 2), (3, 64, 128, 64, False, 1), (3, 64, 160, 64, False, 1),
    (3, 64, 160, 64, False, 1), (3, 64, 256, 64, True, 1), (3, 64, 320, 64, True, 1),
    (5, 64, 320, 64, True, 1), (5, 64, 320, 96, True, 2), (5, 96, 480, 96, True, 1),
]


class FootTrackNet(nn.Module):
    """quic/ai-hub-models@52c080d2 qai_hub_models/models/foot_track_net/model.py `FootTrackNet()`: a
    person / face / foot detector (CenterNet-style maps at stride 4) on an Mbv3SmallFast backbone with a 3-level
    top-down FPN (nearest x2 + 3x3 CBA, lateral 1x1 CBA, add), an SSH detect module and eight heads with a 3x3 CBA
    extension each. Input image (1, 3, 480, 640) in [0, 1]; outputs at 120x160."""

    def __init__(self, wide: int = 64, n_lmk: int = 17):
        super().__init__()
        self.conv_layer = nn.Conv2d(3, 3, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(3)
        self.bb = Mbv3SmallFast(3, _FOOT_BNECK, keep=[2, 5, 12])
        c0, c1, c2 = 16, 32, 64
        self.conv3 = CBAModule(96, wide, 1)
        self.connect0 = CBAModule(c0, wide, 1)
        self.connect1 = CBAModule(c1, wide, 1)
        self.connect2 = CBAModule(c2, wide, 1)
        self.up0, self.up1, self.up2 = UpModule(wide), UpModule(wide), UpModule(wide)
        self.detect = DetectModule(wide)
        self.heatmap1, self.box1 = HeadModule(wide, 1, True), HeadModule(wide, 4, True)
        self.heatmap2, self.box2 = HeadModule(wide, 1, True), HeadModule(wide, 4, True)
        self.heatmap3, self.box3 = HeadModule(wide, 1, True), HeadModule(wide, 4, True)
        self.landmark = HeadModule(wide, 2 * n_lmk, True)
        self.landmark_vis = HeadModule(wide, n_lmk, True)
        self.output_count = 4

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = image * 255.0
        x = self.bn2(self.conv_layer(x * 1.0))
        s4, s8, s16, s32 = self.bb(x)
        s32 = self.conv3(s32)
        s16 = self.up0(s32) + self.connect2(s16)
        s8 = self.up1(s16) + self.connect1(s8)
        s4 = self.up2(s8) + self.connect0(s4)
        x = self.detect(s4)
        centers = torch.cat((self.heatmap1(x).sigmoid(), self.heatmap2(x).sigmoid(), self.heatmap3(x).sigmoid()), 1)
        boxes = torch.cat((self.box1(x), self.box2(x), self.box3(x)), 1)
        return centers, boxes, self.landmark(x), self.landmark_vis(x).sigmoid()


# --------------------------------------------------------------------------------------------- FaceDetLite

# face_det_lite/layers.py Mbv3SmallFast.bneck with has_se=True
_FACE_DET_BNECK = [
    (3, 16, 16, 16, False, 2), (3, 16, 64, 32, False, 2), (3, 32, 96, 32, False, 1),
    (5, 32, 96, 32, True, 2), (5, 32, 224, 32, True, 1), (5, 32, 224, 32, True, 1),
    (5, 32, 128, 64, True, 1), (5, 64, 160, 64, True, 1), (5, 64, 256, 96, True, 2),
]


class FaceDetLite(nn.Module):
    """quic/ai-hub-models@52c080d2 qai_hub_models/models/face_det_lite/model.py `FaceDetLite()`: gray-image face
    detector, Mbv3SmallFast (taps at /8 and /16, last at /32), a 2-level top-down FPN, SSH detect module, three 1x1
    heads (centre 1, box 4, 5 landmarks 10) at /8. Input (1, 1, 480, 640) in [0, 1]; outputs 60x80."""

    def __init__(self, wide: int = 32):
        super().__init__()
        self.bb = Mbv3SmallFast(1, _FACE_DET_BNECK, keep=[2, 7])
        self.conv3 = CBAModule(96, wide, 1)
        self.connect1 = CBAModule(32, wide, 1)
        self.connect2 = CBAModule(64, wide, 1)
        self.up0, self.up1 = UpModule(wide), UpModule(wide)
        self.detect = DetectModule(wide)
        self.center = HeadModule(wide, 1, False)
        self.box = HeadModule(wide, 4, False)
        self.landmark = HeadModule(wide, 10, False)
        self.output_count = 3

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, ...]:
        image = (input - 0.442) / 0.280
        s8_, s16_, s32_ = self.bb(image)
        s32 = self.conv3(s32_)
        s16 = self.up0(s32) + self.connect2(s16_)
        s8 = self.up1(s16) + self.connect1(s8_)
        x = self.detect(s8)
        return self.center(x), self.box(x), self.landmark(x)


# --------------------------------------------------------------------------------------------- GearGuardNet


class FusedConvBatchNorm(nn.Module):
    """gear_guard_net/layers.py FusedConvBatchNorm: conv (autopad k//2, no bias), BN(eps 1e-3), ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, padding: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2 if padding is None else padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=0.001, momentum=0.03)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DoubleBlazeBlock(nn.Module):
    """gear_guard_net/layers.py DoubleBlazeBlock (stride 1, kernel 5): dw5x5 BN, 1x1 -> max(in, out)/2 BN, ReLU,
    dw5x5 BN, 1x1 -> out BN; the skip goes through a 1x1 conv (with bias) when the channel count changes; add, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 5):
        super().__init__()
        hidden = max(out_ch, in_ch) // 2
        pad = (kernel - 1) // 2
        self.channel_pad = out_ch - in_ch
        if self.channel_pad != 0:
            self.pad = nn.Conv2d(in_ch, out_ch, 1)
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_ch, in_ch, kernel, 1, pad, groups=in_ch, bias=False), nn.BatchNorm2d(in_ch, eps=0.001),
            nn.Conv2d(in_ch, hidden, 1, bias=False), nn.BatchNorm2d(hidden, eps=0.001))
        self.act = nn.ReLU()
        self.conv2 = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, kernel, 1, pad, groups=hidden, bias=False), nn.BatchNorm2d(hidden, eps=0.001),
            nn.Conv2d(hidden, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch, eps=0.001))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(self.conv1(x))
        if self.channel_pad != 0:
            x = self.pad(x)
        return self.act(h + x)


class _Upsample(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="nearest")


class _Concat(nn.Module):
    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, 1)


class _Detect(nn.Module):
    """Detect: one 1x1 conv (with bias) per scale to 3 anchors x (5 + nc)."""

    def __init__(self, channels: tuple[int, ...], outputs: int):
        super().__init__()
        self.m = nn.ModuleList(nn.Conv2d(c, outputs, 1) for c in channels)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [conv(x) for conv, x in zip(self.m, xs)]


class GearGuardNet(nn.Module):
    """quic/ai-hub-models@52c080d2 qai_hub_models/models/gear_guard_net/model.py `GearGuardNet.from_pretrained()`:
    its yaml resolved by build_gear_guard_net_model (width 0.5 -> channels halved; depth 0.33 -> the 3/9-repeat
    DoubleBlazeBlock stages become 1/3 blocks). Layer i of the list is `model.<i>`, `from` indices as in the yaml.
    Then GearGuardNet.decode and detect_postprocess. Input image (1, 3, 320, 192) in [0, 1]; outputs boxes
    (1, 3780, 4), scores (1, 3780), class_idx (1, 3780) uint8."""

    ANCHORS = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))

    def __init__(self, nc: int = 2):
        super().__init__()
        FCB, DBB = FusedConvBatchNorm, DoubleBlazeBlock
        # (from, module) in yaml order; channels after width_multiple 0.5
        layers: list[tuple[int | list[int], nn.Module]] = [
            (-1, FCB(3, 32, 6, 2, 2)),                      # 0  /2
            (-1, FCB(32, 64, 3, 2)),                        # 1  /4
            (-1, DBB(64, 64)),                              # 2
            (-1, FCB(64, 128, 3, 2)),                       # 3  /8
            (-1, DBB(128, 128)),                            # 4
            (-1, FCB(128, 256, 3, 2)),                      # 5  /16
            (-1, nn.Sequential(*(DBB(256, 256) for _ in range(3)))),  # 6
            (-1, FCB(256, 512, 3, 2)),                      # 7  /32
            (-1, DBB(512, 512)),                            # 8
            (-1, FCB(512, 512, 3, 1)),                      # 9
            (-1, FCB(512, 256, 1, 1)),                      # 10
            (-1, _Upsample()),                              # 11
            ([-1, 6], _Concat()),                           # 12
            (-1, DBB(512, 256)),                            # 13
            (-1, FCB(256, 128, 1, 1)),                      # 14
            (-1, _Upsample()),                              # 15
            ([-1, 4], _Concat()),                           # 16
            (-1, DBB(256, 128)),                            # 17 (P3 out)
            (-1, FCB(128, 128, 3, 2)),                      # 18
            ([-1, 14], _Concat()),                          # 19
            (-1, DBB(256, 256)),                            # 20 (P4 out)
            (-1, FCB(256, 256, 3, 2)),                      # 21
            ([-1, 10], _Concat()),                          # 22
            (-1, DBB(512, 512)),                            # 23 (P5 out)
            ([17, 20, 23], _Detect((128, 256, 512), 3 * (nc + 5))),  # 24
        ]
        self.froms = [f for f, _ in layers]
        self.model = nn.Sequential(*(m for _, m in layers))
        self.save = sorted({x % i for i, f in enumerate(self.froms) for x in ([f] if isinstance(f, int) else f)
                            if x != -1})
        self.register_buffer("anchors", torch.tensor(self.ANCHORS, dtype=torch.float32).view(3, 3, 2),
                             persistent=False)
        self.output_count = 3

    def _decode_scale(self, out: torch.Tensor, scale_anchors: torch.Tensor, stride: float) -> torch.Tensor:
        out = out.permute(0, 2, 3, 1)
        batch, h, w, _ = out.shape
        pred = out.reshape(batch, h, w, 3, -1)
        nc = pred.shape[-1] - 5
        grid_y, grid_x = torch.meshgrid(torch.arange(h, device=out.device), torch.arange(w, device=out.device),
                                        indexing="ij")
        grid_y = grid_y.unsqueeze(0).unsqueeze(-1).expand(batch, -1, -1, 3).reshape(batch, -1)
        grid_x = grid_x.unsqueeze(0).unsqueeze(-1).expand(batch, -1, -1, 3).reshape(batch, -1)
        obj = pred[..., 4].sigmoid().reshape(batch, -1)
        cls = pred[..., 5:].sigmoid().reshape(batch, -1, nc)
        flat = pred.reshape(batch, -1, pred.shape[-1])
        anchor_idx = torch.arange(3, device=out.device).unsqueeze(0).unsqueeze(0).expand(h, w, -1).reshape(-1)
        anchors = scale_anchors[anchor_idx].unsqueeze(0).expand(batch, -1, -1)
        bx = (flat[..., 0].sigmoid() * 2 - 0.5 + grid_x) * stride
        by = (flat[..., 1].sigmoid() * 2 - 0.5 + grid_y) * stride
        bw = 4 * flat[..., 2].sigmoid() ** 2 * anchors[..., 0]
        bh = 4 * flat[..., 3].sigmoid() ** 2 * anchors[..., 1]
        return torch.cat([torch.stack([bx, by, bw, bh, obj], dim=2), cls], dim=2)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x: torch.Tensor | list[torch.Tensor] = image
        y: list[torch.Tensor | None] = []
        for i, (f, m) in enumerate(zip(self.froms, self.model)):
            if f != -1:
                x = y[f] if isinstance(f, int) else [x if j == -1 else y[j] for j in f]
            x = m(x)
            y.append(x if i in self.save else None)
        predictions = torch.cat([self._decode_scale(x[i], self.anchors[i], s) for i, s in enumerate((8., 16., 32.))],
                                dim=1)
        # detect_postprocess
        boxes = predictions[:, :, :4]
        conf = predictions[:, :, 4:5]
        scores = predictions[:, :, 5:]
        center, wh_half = boxes[..., :2], boxes[..., 2:] * 0.5
        boxes = torch.cat((center - wh_half, center + wh_half), dim=-1)
        scores = scores * conf
        max_scores, max_idx = [], []
        for split in torch.split(scores, 5000, dim=-2):
            s, idx = torch.max(split, -1, keepdim=False)
            max_scores.append(s)
            max_idx.append(idx.int())
        return boxes, torch.cat(max_scores, dim=-1), torch.cat(max_idx, dim=-1).to(torch.uint8)


# --------------------------------------------------------------------------------------------- FaceAttribNet


class Conv2dBlock(nn.Module):
    """face_attrib_net/layers.py Conv2dBlock: bias-free conv, optional BN, optional PReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, padding: int = 0, stride: int = 1, group: int = 1,
                 norm: bool = False, prelu: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, groups=group, bias=False)
        self.norm = nn.BatchNorm2d(out_ch) if norm else None
        self.activ = nn.PReLU() if prelu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.activ is not None:
            x = self.activ(x)
        return x


def _gconv(in_ch: int, out_ch: int, stride: int, group: int) -> Conv2dBlock:
    """Grouped 3x3, no BN, no activation."""
    return Conv2dBlock(in_ch, out_ch, 3, 1, stride, group)


def _pconv(in_ch: int, out_ch: int, prelu: bool) -> Conv2dBlock:
    """1x1 + BN (+ PReLU)."""
    return Conv2dBlock(in_ch, out_ch, 1, 0, 1, 1, norm=True, prelu=prelu)


class HeadBlock(nn.Module):
    def __init__(self, chan: int, gs: int = 32):
        super().__init__()
        self.conv = Conv2dBlock(3, chan, 3, 1, 1, 1, norm=True, prelu=True)
        g = chan // gs
        self.bran1 = nn.Sequential(_gconv(chan, chan, 2, g), _pconv(chan, chan, True), _gconv(chan, chan, 1, g),
                                   _pconv(chan, chan, False))
        self.bran2 = nn.Sequential(_gconv(chan, chan, 2, g), _pconv(chan, chan, False))
        self.activ = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.activ(self.bran1(x) + self.bran2(x))


class DownsampleBlock(nn.Module):
    def __init__(self, chan: int, gs: int = 32):
        super().__init__()
        g = chan // gs
        self.bran1 = nn.Sequential(_gconv(chan, 2 * chan, 2, g), _pconv(2 * chan, 2 * chan, True))
        self.bran2 = nn.Sequential(_gconv(chan, 4 * chan, 2, g), _pconv(4 * chan, 2 * chan, True),
                                   _gconv(2 * chan, 4 * chan, 1, g), _pconv(4 * chan, 2 * chan, False))
        self.activ = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activ(self.bran1(x) + self.bran2(x))


class NormalBlock(nn.Module):
    def __init__(self, chan: int, gs: int = 32):
        super().__init__()
        g = chan // gs
        self.model = nn.Sequential(_gconv(chan, 2 * chan, 1, g), _pconv(2 * chan, chan, True),
                                   _gconv(chan, 2 * chan, 1, g), _pconv(2 * chan, chan, False))
        self.activ = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activ(self.model(x) + x)


class FaceAttribNet(nn.Module):
    """quic/ai-hub-models@52c080d2 qai_hub_models/models/face_attrib_net/model.py `FaceAttribNet(64, [2, 6, 3])`:
    grouped-conv (group size 32) residual trunk 128 -> 64 (64 ch) -> 32 (128) -> 16 (256) -> 8 (512); five identical
    attribute branches (left/right eye openness, eyeglasses, mask, sunglasses), each: grouped 3x3 s2 on the 16x16
    features + 1x1 BN PReLU, concat with the 8x8 trunk output, grouped 3x3 s2 + 1x1 BN PReLU, 4x4 avg pool, linear
    -> 2. Output: softmax presence probability per attribute, (1, 5). The branches run in the source's order (left,
    right, eyeglasses, mask, sunglasses)."""

    BRANCHES = ("left_openness", "right_openness", "eyeglasses", "mask", "sunglasses")

    def __init__(self, chan: int = 64, blks_per_layer: tuple[int, ...] = (2, 6, 3), gs: int = 32):
        super().__init__()
        self.head = HeadBlock(chan, gs)
        self.main_module = nn.ModuleList()
        c = chan
        for n in blks_per_layer:
            blocks = [DownsampleBlock(c, gs)] + [NormalBlock(2 * c, gs) for _ in range(n - 1)]
            self.main_module.append(nn.Sequential(*blocks))
            c *= 2
        for name in self.BRANCHES:
            setattr(self, f"{name}_bran1_gconv", _gconv(chan * 4, chan * 2, 2, chan * 4 // gs))
            setattr(self, f"{name}_bran1_conv", _pconv(chan * 2, chan * 2, True))
            setattr(self, f"{name}_bran2_gconv", _gconv(chan * 10, chan * 5, 2, chan * 10 // gs))
            setattr(self, f"{name}_bran2_conv", _pconv(chan * 5, chan * 2, True))
            setattr(self, f"{name}_ave", nn.AvgPool2d(4, 1))
            setattr(self, f"{name}_cls", nn.Linear(chan * 2, 2))

    def _branch(self, name: str, fea3: torch.Tensor, fea4: torch.Tensor) -> torch.Tensor:
        a = getattr(self, f"{name}_bran1_conv")(getattr(self, f"{name}_bran1_gconv")(fea3))
        a = torch.cat((a, fea4), dim=1)
        a = getattr(self, f"{name}_ave")(getattr(self, f"{name}_bran2_conv")(getattr(self, f"{name}_bran2_gconv")(a)))
        return getattr(self, f"{name}_cls")(a.flatten(start_dim=1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = (image - 0.5) / 0.50196078
        fea3 = self.main_module[1](self.main_module[0](self.head(x)))
        fea4 = self.main_module[2](fea3)
        logit = torch.stack([self._branch(name, fea3, fea4) for name in self.BRANCHES], dim=1)
        return F.softmax(logit, dim=2)[:, :, 1]


# --------------------------------------------------------------------------------------------- FaceMap 3DMM


class ConvBlock(nn.Module):
    """resnet_score_rgb.py ConvBlock: conv, optional BN, optional ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0, bias: bool = False,
                 use_bn: bool = True, relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, bias=bias)
        self.bn = nn.BatchNorm2d(out_ch) if use_bn else None
        self.activ = nn.ReLU() if relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.activ is not None:
            x = self.activ(x)
        return x


class _ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = ConvBlock(in_ch, out_ch, 3, stride, 1)
        self.conv2 = ConvBlock(out_ch, out_ch, 3, 1, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class ResUnit(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.body = _ResBlock(in_ch, out_ch, stride)
        self.identity_conv = ConvBlock(in_ch, out_ch, 1, stride, relu=False) if in_ch != out_ch or stride != 1 \
            else None
        self.activ = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self.identity_conv(x) if self.identity_conv is not None else x
        return self.activ(self.body(x) + identity)


class ResInitBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = ConvBlock(in_ch, out_ch, 7, 2, 3)
        self.pool = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.MaxPool2d(3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(x))


class FaceMap3DMM(nn.Module):
    """quic/ai-hub-models@52c080d2 qai_hub_models/models/facemap_3dmm/model.py `FaceMap_3DMM` with
    resnet_score_rgb.py `resnet18_wd2()`: 1x1 rgb->gray conv (bias, no BN), 7x7 s2 stem (32 ch), ZeroPad2d(0,1,0,1)
    + 3x3 s2 max pool, basic-block stages [32,32], [64,64], [128,128], [256,512] (the very last unit keeps full
    width), 4x4 avg pool, linear 512 -> 265 (3DMM shape/expression/pose/camera coefficients). Input image
    (1, 3, 128, 128) in [0, 1], multiplied by 255 by the wrapper."""

    def __init__(self):
        super().__init__()
        model = nn.Module()
        model.rgb2gray_block = ConvBlock(3, 1, 1, bias=True, use_bn=False, relu=False)
        features = nn.Sequential()
        features.add_module("init_block", ResInitBlock(1, 32))
        in_ch = 32
        for i, stage_channels in enumerate([[32, 32], [64, 64], [128, 128], [256, 512]]):
            stage = nn.Sequential()
            for j, out_ch in enumerate(stage_channels):
                stage.add_module(f"unit{j + 1}", ResUnit(in_ch, out_ch, 2 if j == 0 and i != 0 else 1))
                in_ch = out_ch
            features.add_module(f"stage{i + 1}", stage)
        features.add_module("final_pool", nn.AvgPool2d(4, 1))
        model.features = features
        model.output = nn.Linear(in_ch, 265)
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.model.rgb2gray_block(image * 255)
        x = self.model.features(x)
        return self.model.output(x.view(x.size(0), -1))


# --------------------------------------------------------------------------------------------------- tables


# (AI Hub model, component) -> builder; components as in aihub_perf.csv
BUILDERS: dict[tuple[str, str], Callable] = {
    ("foot_track_net", "Person-Foot-Detection"): builder(FootTrackNet, "image", (1, 3, 480, 640)),
    ("gear_guard_net", "PPE-Detection"): builder(GearGuardNet, "image", (1, 3, 320, 192)),
    ("face_det_lite", "Lightweight-Face-Detection"): builder(FaceDetLite, "input", (1, 1, 480, 640)),
    ("face_attrib_net", "Facial-Attribute-Detection"): builder(FaceAttribNet, "image", (1, 3, 128, 128)),
    ("facemap_3dmm", "Facial-Landmark-Detection"): builder(FaceMap3DMM, "image", (1, 3, 128, 128)),
}
PUBLISHED_PARAMS = {"foot_track_net": 2.53e6, "gear_guard_net": 6.19e6, "face_det_lite": 878e3,
                    "face_attrib_net": 12.1e6, "facemap_3dmm": 5.42e6}
NOT_PUBLISHED = {"face_attrib_net": "info.yaml's 12.1M is the v0.32 multitask network's (face embedding and liveness "
                                    "branches); v0.42 replaced it with this detection-only one and kept the figure"}


if __name__ == "__main__":
    for (key, _), build in BUILDERS.items():
        with torch.device("meta"):
            module, feeds = build()
        params = sum(p.numel() for p in module.parameters())
        print(f"{key:16} {params / 1e6:7.4f}M parameters, {folded_params(module) / 1e6:7.4f}M with BN folded "
              f"(AI Hub: {PUBLISHED_PARAMS[key] / 1e6:.3f}M, {100 * (params / PUBLISHED_PARAMS[key] - 1):+.2f}%)")
