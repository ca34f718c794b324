"""AI Hub's YOLO detectors from their authors' repositories (YOLOv7-tiny, YOLOX-S, YOLOv6-N), re-stated as plain
PyTorch modules in the form AI Hub exports them.

Each network is written layer for layer as its source's forward runs in eval mode, in the state AI Hub's loader
leaves it (BatchNorm folded where the loader folds it, RepVGG blocks re-parameterised), wrapped in AI Hub's own
wrapper: the detect head AI Hub substitutes (boxes, box sizes and scores kept apart, so int8 quantisation sees tensors
of very different ranges apart), the in-graph box decode and the shared post-processing of
qai_hub_models/models/_shared/yolo/utils.py (xywh -> xyxy, best class, casts), all part of the graph AI Hub compiles
and times. Sub-module names follow the sources' state_dict keys for YOLOX and YOLOv6 (a source state_dict loads
strictly); YOLOv7's are named by role, registered in the yaml's layer order (its parameters load one to one in that
order). Grids, anchor points and strides are constants of the input size, computed at trace time on the features'
device (so the modules build and export on the meta device).
Checked against the sources (their repositories at the commits below, random weights and BN statistics, outputs of
the source's own decode put through the same post-processing): boxes, scores and class indices agree (exactly for
YOLOv7 and YOLOv6; to float rounding, 1.5e-3 px on ~300 px boxes, for YOLOX, whose wh goes through exp).

Sources (AI Hub v0.46.1, quic/ai-hub-models 52c080d2; the model.py versions read are 04aee51e for yolov7 / yolox and
052dc1f3 for yolov6 and _shared/yolo/utils.py, the current form of these files), outputs boxes [1, 8400 | 25200, 4]
(x1, y1, x2, y2), scores [1, N] and class_idx [1, N] uint8; input image 1x3x640x640 in [0, 1] (aihub_models.csv):
- yolov7 (YoloV7 Tiny): WongKinYiu/yolov7@84932d70 (AI Hub's pinned commit) cfg yolov7-tiny.yaml, weights
  yolov7-tiny.pt loaded by `attempt_load`, which folds every Conv's BatchNorm (`Model.fuse`); AI Hub sets
  `traced = True` so the network stops before its Detect layer and returns the three P3/P4/P5 features, then runs its
  own `_YoloV7Detector`: the three 1x1 output convs (copied from Detect.m), sigmoid, reshape to
  [B, 3, H, W, 85], F.pad(x, (0, max(7 - 85, 0))) (a zero pad, a QNN ReduceMax workaround), xy = (s * 2 - 0.5 +
  grid) * stride, wh = (s * 2) ** 2 * anchor_grid (rank-4 form), scores the remaining 81 channels; then
  `detect_postprocess_split_input` (unbind / stack xyxy, split_with_sizes [1, 80], max over classes, times the
  objectness, uint8). Published 6.24M parameters; this module has 6.2197M, exactly the source's deploy model after
  Model.fuse (BN folded, as AI Hub's module holds it), 0.33% below. The residual is not pinned down: the released
  IDetect checkpoint adds only 1,661 ImplicitA/M values, the unfused model is 6.227M, and counting AI Hub's YoloV7
  object whole (it keeps the source's Detect convs beside the copy its detector uses, +0.23M) would give 6.45M; the
  grid constants of the decode (16,800 values) would make 6.236M, but the same rule does not fit the other two.
- yolox (YoloX Small): Megvii-BaseDetection/YOLOX@d872c71b (the commit AI Hub's code links; yolox/models is the same at
  today's HEAD 6ddff48) exps/default/yolox_s.py (depth 0.33, width 0.50, SiLU) via `get_exp("yolox-s").get_model()`,
  BatchNorm not folded (AI Hub does not call fuse_model), every nn.SiLU replaced by YOLOX's export SiLU
  (x * sigmoid(x)); AI Hub's YoloX.forward multiplies the image by 255, runs `model.backbone` (YOLOPAFPN), then its
  `yolox_head_forward_with_split_outputs` (stems, cls/reg convs, cls/reg/obj preds, sigmoid on obj and cls) and
  `yolox_head_decode_with_split_outputs` (xy = (reg + grid) * stride, wh = exp(reg) * stride, scores = [obj, cls]),
  then `detect_postprocess_split_input` and a second uint8 cast. Published 8.98M parameters; this module has 8.968M
  (BN unfolded, as AI Hub's module holds it).
- yolov6 (YoloV6-N): meituan/YOLOv6@55d80c31 (AI Hub's pinned commit) configs/yolov6n.py (depth 0.33, width 0.25,
  EfficientRep with fuse_P2 and SimCSPSPPF, RepBiFPANNeck) loaded from release 0.4.0 yolov6n.pt by
  `load_checkpoint(fuse=True)` (ConvModule BN folded), every RepVGGBlock `switch_to_deploy()` (one 3x3 conv with bias
  + ReLU); the 0.4.0 N checkpoint is self-distilled, so its head is heads/effidehead_distill_ns.Detect (reg_max 16):
  its eval forward uses only the 4-channel `reg_preds` (ltrb), not `reg_preds_dist` nor the DFL projection, which are
  kept here as unused parameters. `model.export = True` on the Model only (not on Detect), so Model.forward returns
  Detect's eval output: boxes decoded in-graph (dist2bbox to xywh, times stride), a ones column as confidence, the
  sigmoid class scores ([B, 8400, 85]); AI Hub's YoloV6.forward then runs `detect_postprocess` (slices, unbind / stack
  xyxy, scores * conf, max over classes in chunks of 5000 anchors with int32 indices, concat, uint8). Published 4.68M
  parameters; this module has 4.662M (the deployed model: BN folded and RepVGG branches merged), 0.4% below; the
  unfused training form would be 5.07M. YOLOv6's own README lists 4.7M for the deployed N model. The distill_ns head
  is inferred (README: every 0.4.0 checkpoint but N6/S6 self-distilled; engine.py builds distill_ns for YOLOv6n
  under --distill), not read from the checkpoint; the plain effidehead would give the same graph and 4.647M (-0.7%).

Op counts (latency_graphs.features_of, QNN pipeline) against AI Hub's QNN layers_total: yolov7 190 vs 208, yolox
296 vs 301, yolov6 193 vs 194 (the Ultralytics re-statements run 23-28 below theirs, e.g. yolov8_det 234 vs 257).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from aihub_mobile import builder
from aihub_ultralytics import best_class

IMAGE = (1, 3, 640, 640)  # aihub_models.csv: "Yolo: image:(1,3,640,640)" for all three


# --------------------------------------------------------------------------------------------------- shared


def split_postprocess(xy: torch.Tensor, wh: torch.Tensor, scores: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AI Hub's detect_postprocess_split_input: centre/size boxes to corners, the best class score times the
    objectness (scores[..., 0]) and its index as uint8."""
    cx, cy = xy.unbind(dim=-1)
    w, h = (wh * 0.5).unbind(dim=-1)
    boxes = torch.stack((cx - w, cy - h, cx + w, cy + h), -1)
    conf, per_class = scores.split_with_sizes([1, scores.shape[-1] - 1], dim=-1)
    best, index = torch.max(per_class, -1, keepdim=False)
    return boxes, best * conf.squeeze(-1), index.to(torch.uint8)


def joint_postprocess(pred: torch.Tensor, chunk: int = 5000) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AI Hub's detect_postprocess on one [B, N, 5 + C] tensor (xywh, conf, classes): corners, scores times conf, the
    class max over `chunk` anchors at a time (get_most_likely_score, a QNN workaround) with int32 indices, uint8."""
    boxes, conf, scores = pred[:, :, :4], pred[:, :, 4:5], pred[:, :, 5:]
    cx, cy, w, h = boxes.unbind(dim=-1)
    w, h = w * 0.5, h * 0.5
    boxes = torch.stack((cx - w, cy - h, cx + w, cy + h), -1)
    best, index = best_class(scores * conf, chunk)
    return boxes, best, index.int().to(torch.uint8)


def cell_grid(h: int, w: int, offset: float = 0.0, device: torch.device | None = None) -> torch.Tensor:
    """[h * w, 2] (x, y) cell coordinates, row-major, plus `offset` (on the features' device, so that a meta-device
    export sees them as constants of the same kind)."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device) + offset, torch.arange(w, device=device) + offset,
                            indexing="ij")
    return torch.stack((xs, ys), -1).reshape(-1, 2).float()


# --------------------------------------------------------------------------------------------------- YOLOv7-tiny


class V7Conv(nn.Module):
    """yolov7 models/common.py Conv after Model.fuse: conv (BN folded into its bias) + LeakyReLU(0.1), 'same' pad."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, bias=True)
        self.act = nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class V7Elan(nn.Module):
    """yolov7-tiny's recurring 6-layer block (four convs, concat, 1x1 merge): two 1x1 branches from the input, two 3x3
    convs stacked on the second, concat [3x3b, 3x3a, 1x1b, 1x1a] ("[-1, -2, -3, -4]"), 1x1 to `c_out`."""

    def __init__(self, c_in: int, hidden: int, c_out: int):
        super().__init__()
        self.a, self.b = V7Conv(c_in, hidden), V7Conv(c_in, hidden)
        self.c, self.d = V7Conv(hidden, hidden, 3), V7Conv(hidden, hidden, 3)
        self.out = V7Conv(4 * hidden, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.a(x), self.b(x)
        c = self.c(b)
        d = self.d(c)
        return self.out(torch.cat([d, c, b, a], 1))


class YoloV7Tiny(nn.Module):
    """cfg/deploy/yolov7-tiny.yaml at WongKinYiu/yolov7@84932d70 (layers 0-76, the yaml's indices in the comments) run
    with `traced = True`, followed by AI Hub's _YoloV7Detector and detect_postprocess_split_input (module docstring).
    """

    ANCHORS = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))
    STRIDES = (8, 16, 32)

    def __init__(self, hw: tuple[int, int] = (640, 640), nc: int = 80):
        super().__init__()
        self.h, self.w = hw
        self.na, self.no = 3, nc + 5
        self.output_count = 3
        # backbone
        self.p1 = V7Conv(3, 32, 3, 2)  # 0
        self.p2 = V7Conv(32, 64, 3, 2)  # 1
        self.elan2 = V7Elan(64, 32, 64)  # 2-7
        self.mp = nn.MaxPool2d(2, 2)  # 8, 15, 22 (MP: parameter-free, one module serves all three)
        self.elan3 = V7Elan(64, 64, 128)  # 9-14
        self.elan4 = V7Elan(128, 128, 256)  # 16-21
        self.elan5 = V7Elan(256, 256, 512)  # 23-28
        # head: SPP-CSP
        self.spp_short = V7Conv(512, 256)  # 29
        self.spp_in = V7Conv(512, 256)  # 30
        self.sp = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in (5, 9, 13))  # 31-33
        self.spp_merge = V7Conv(1024, 256)  # 35
        self.spp_out = V7Conv(512, 256)  # 37
        # top-down
        self.lat5 = V7Conv(256, 128)  # 38
        self.up = nn.Upsample(scale_factor=2, mode="nearest")  # 39, 49
        self.route4 = V7Conv(256, 128)  # 40
        self.elan_td4 = V7Elan(256, 64, 128)  # 42-47
        self.lat4 = V7Conv(128, 64)  # 48
        self.route3 = V7Conv(128, 64)  # 50
        self.elan_td3 = V7Elan(128, 32, 64)  # 52-57
        # bottom-up
        self.down3 = V7Conv(64, 128, 3, 2)  # 58
        self.elan_bu4 = V7Elan(256, 64, 128)  # 60-65
        self.down4 = V7Conv(128, 256, 3, 2)  # 66
        self.elan_bu5 = V7Elan(512, 128, 256)  # 68-73
        self.out3, self.out4, self.out5 = V7Conv(64, 128, 3), V7Conv(128, 256, 3), V7Conv(256, 512, 3)  # 74-76
        # AI Hub's _YoloV7Detector: Detect.m and the anchor grids (pixels), one rank-5 buffer per level
        self.m = nn.ModuleList(nn.Conv2d(c, self.na * self.no, 1) for c in (128, 256, 512))
        for i, anchors in enumerate(self.ANCHORS):
            self.register_buffer(f"anchor_grid_{i}", torch.tensor(anchors, dtype=torch.float32).view(1, 3, 1, 1, 2))

    def features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.elan2(self.p2(self.p1(image)))
        c3 = self.elan3(self.mp(x))  # 14
        c4 = self.elan4(self.mp(c3))  # 21
        c5 = self.elan5(self.mp(c4))  # 28
        s = self.spp_in(c5)
        pools = [pool(s) for pool in self.sp]
        s = self.spp_merge(torch.cat([pools[2], pools[1], pools[0], s], 1))
        p5 = self.spp_out(torch.cat([s, self.spp_short(c5)], 1))  # 37
        p4 = self.elan_td4(torch.cat([self.route4(c4), self.up(self.lat5(p5))], 1))  # 47
        p3 = self.elan_td3(torch.cat([self.route3(c3), self.up(self.lat4(p4))], 1))  # 57
        n4 = self.elan_bu4(torch.cat([self.down3(p3), p4], 1))  # 65
        n5 = self.elan_bu5(torch.cat([self.down4(n4), p5], 1))  # 73
        return self.out3(p3), self.out4(n4), self.out5(n5)

    def level(self, x: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """_YoloV7Detector.make_grid_points for level i (after its 1x1 conv)."""
        stride = self.STRIDES[i]
        nx, ny = self.h // stride, self.w // stride
        y = x.sigmoid().reshape(-1, self.na, self.no, nx, ny).permute(0, 1, 3, 4, 2).contiguous()
        y = F.pad(y, (0, max(7 - self.no, 0)))
        grid = cell_grid(ny, nx, device=x.device).view(1, 1, ny, nx, 2)
        xy = ((y[..., 0:2] * 2.0 - 0.5 + grid) * stride).reshape(-1, self.na * nx * ny, 2)
        wh = y[..., 2:4].reshape(-1, self.na, nx * ny, 2)
        wh = ((wh * 2) ** 2 * getattr(self, f"anchor_grid_{i}").squeeze(2)).reshape(-1, self.na * nx * ny, 2)
        scores = y[..., 4:].reshape(-1, self.na * nx * ny, max(3, self.no - 4))
        return xy, wh, scores

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        levels = [self.level(conv(f), i) for i, (conv, f) in enumerate(zip(self.m, self.features(image)))]
        xy, wh, scores = (torch.cat([lv[k] for lv in levels], 1) for k in range(3))
        return split_postprocess(xy, wh, scores)


# --------------------------------------------------------------------------------------------------- YOLOX-S


class XSiLU(nn.Module):
    """YOLOX's export SiLU (network_blocks.SiLU), which AI Hub swaps in for nn.SiLU: x * sigmoid(x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class BaseConv(nn.Module):
    """YOLOX BaseConv: bias-free conv ('same' pad), BatchNorm (eps 1e-3, init_yolo), SiLU; BN left unfolded."""

    def __init__(self, c_in: int, c_out: int, k: int, s: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, (k - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.03)
        self.act = XSiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class XBottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool):
        super().__init__()
        self.conv1, self.conv2 = BaseConv(c, c, 1), BaseConv(c, c, 3)
        self.use_add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return y + x if self.use_add else y


class CSPLayer(nn.Module):
    """YOLOX CSPLayer (expansion 0.5): bottlenecks on one 1x1 branch, concat with the other, 1x1 merge."""

    def __init__(self, c_in: int, c_out: int, n: int, shortcut: bool = True):
        super().__init__()
        hidden = c_out // 2
        self.conv1, self.conv2 = BaseConv(c_in, hidden, 1), BaseConv(c_in, hidden, 1)
        self.conv3 = BaseConv(2 * hidden, c_out, 1)
        self.m = nn.Sequential(*(XBottleneck(hidden, shortcut) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.cat((self.m(self.conv1(x)), self.conv2(x)), dim=1))


class SPPBottleneck(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        hidden = c_in // 2
        self.conv1 = BaseConv(c_in, hidden, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in (5, 9, 13))
        self.conv2 = BaseConv(4 * hidden, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [pool(x) for pool in self.m], dim=1))


class Focus(nn.Module):
    """Space-to-depth by strided slicing (order top-left, bottom-left, top-right, bottom-right), then a 3x3 conv."""

    def __init__(self, c_out: int):
        super().__init__()
        self.conv = BaseConv(12, c_out, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1))


class CSPDarknet(nn.Module):
    def __init__(self, base: int, depth: int):
        super().__init__()
        self.stem = Focus(base)
        self.dark2 = nn.Sequential(BaseConv(base, base * 2, 3, 2), CSPLayer(base * 2, base * 2, depth))
        self.dark3 = nn.Sequential(BaseConv(base * 2, base * 4, 3, 2), CSPLayer(base * 4, base * 4, depth * 3))
        self.dark4 = nn.Sequential(BaseConv(base * 4, base * 8, 3, 2), CSPLayer(base * 8, base * 8, depth * 3))
        self.dark5 = nn.Sequential(BaseConv(base * 8, base * 16, 3, 2), SPPBottleneck(base * 16, base * 16),
                                   CSPLayer(base * 16, base * 16, depth, shortcut=False))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x3 = self.dark3(self.dark2(self.stem(x)))
        x4 = self.dark4(x3)
        return x3, x4, self.dark5(x4)


class YOLOPAFPN(nn.Module):
    def __init__(self, depth: float, width: float):
        super().__init__()
        c3, c4, c5 = (int(c * width) for c in (256, 512, 1024))
        n = round(3 * depth)
        self.backbone = CSPDarknet(int(64 * width), max(round(depth * 3), 1))
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.lateral_conv0 = BaseConv(c5, c4, 1)
        self.C3_p4 = CSPLayer(2 * c4, c4, n, False)
        self.reduce_conv1 = BaseConv(c4, c3, 1)
        self.C3_p3 = CSPLayer(2 * c3, c3, n, False)
        self.bu_conv2 = BaseConv(c3, c3, 3, 2)
        self.C3_n3 = CSPLayer(2 * c3, c4, n, False)
        self.bu_conv1 = BaseConv(c4, c4, 3, 2)
        self.C3_n4 = CSPLayer(2 * c4, c5, n, False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x2, x1, x0 = self.backbone(x)
        fpn_out0 = self.lateral_conv0(x0)
        f_out0 = self.C3_p4(torch.cat([self.upsample(fpn_out0), x1], 1))
        fpn_out1 = self.reduce_conv1(f_out0)
        pan_out2 = self.C3_p3(torch.cat([self.upsample(fpn_out1), x2], 1))
        pan_out1 = self.C3_n3(torch.cat([self.bu_conv2(pan_out2), fpn_out1], 1))
        pan_out0 = self.C3_n4(torch.cat([self.bu_conv1(pan_out1), fpn_out0], 1))
        return pan_out2, pan_out1, pan_out0


class YOLOXHead(nn.Module):
    """YOLOXHead's layers (decoupled cls / reg branches per level); AI Hub's split forward is in YoloXSmall."""

    def __init__(self, nc: int, width: float, in_channels: tuple[int, ...] = (256, 512, 1024)):
        super().__init__()
        c = int(256 * width)
        self.stems = nn.ModuleList(BaseConv(int(ch * width), c, 1) for ch in in_channels)
        self.cls_convs = nn.ModuleList(nn.Sequential(BaseConv(c, c, 3), BaseConv(c, c, 3)) for _ in in_channels)
        self.reg_convs = nn.ModuleList(nn.Sequential(BaseConv(c, c, 3), BaseConv(c, c, 3)) for _ in in_channels)
        self.cls_preds = nn.ModuleList(nn.Conv2d(c, nc, 1) for _ in in_channels)
        self.reg_preds = nn.ModuleList(nn.Conv2d(c, 4, 1) for _ in in_channels)
        self.obj_preds = nn.ModuleList(nn.Conv2d(c, 1, 1) for _ in in_channels)
        self.strides = (8, 16, 32)


class YOLOXModel(nn.Module):
    def __init__(self, depth: float, width: float, nc: int = 80):
        super().__init__()
        self.backbone = YOLOPAFPN(depth, width)
        self.head = YOLOXHead(nc, width)


class YoloXSmall(nn.Module):
    """AI Hub's YoloX wrapper around YOLOX-S (module docstring)."""

    def __init__(self, depth: float = 0.33, width: float = 0.50):
        super().__init__()
        self.model = YOLOXModel(depth, width)
        self.output_count = 3

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        head = self.model.head
        feats = self.model.backbone(image * 255)
        regs, probs, grids, strides = [], [], [], []
        for k, x in enumerate(feats):  # yolox_head_forward_with_split_outputs
            x = head.stems[k](x)
            cls_out = head.cls_preds[k](head.cls_convs[k](x))
            reg_feat = head.reg_convs[k](x)
            regs.append(head.reg_preds[k](reg_feat).flatten(start_dim=2))
            probs.append(torch.cat((head.obj_preds[k](reg_feat).sigmoid(), cls_out.sigmoid()), 1).flatten(start_dim=2))
            h, w = x.shape[-2:]  # yolox_head_decode_with_split_outputs: trace-time constants
            grids.append(cell_grid(h, w, device=x.device))
            strides.append(torch.full((h * w, 1), float(head.strides[k]), device=x.device))
        grid, stride = torch.cat(grids).unsqueeze(0), torch.cat(strides).unsqueeze(0)
        raw = torch.cat(regs, dim=2).permute(0, 2, 1)
        scores = torch.cat(probs, dim=2).permute(0, 2, 1)
        xy = (raw[..., 0:2] + grid) * stride
        wh = torch.exp(raw[..., 2:4]) * stride
        boxes, best, index = split_postprocess(xy, wh, scores)
        return boxes, best, index.to(torch.uint8)


# --------------------------------------------------------------------------------------------------- YOLOv6-N


class RepVGGDeploy(nn.Module):
    """YOLOv6 RepVGGBlock after switch_to_deploy: the merged 3x3 conv (bias) + ReLU (its SE is Identity)."""

    def __init__(self, c_in: int, c_out: int, s: int = 1):
        super().__init__()
        self.rbr_reparam = nn.Conv2d(c_in, c_out, 3, s, 1, bias=True)
        self.nonlinearity = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinearity(self.rbr_reparam(x))


class ConvModule(nn.Module):
    """YOLOv6 ConvModule after fuse_model (BN folded into the conv bias); ConvBNReLU / ConvBNSiLU wrap it as
    `.block`."""

    def __init__(self, c_in: int, c_out: int, k: int, s: int, act: type[nn.Module]):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, bias=True)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class ConvAct(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int = 3, s: int = 1, act: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.block = ConvModule(c_in, c_out, k, s, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class RepBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, n: int):
        super().__init__()
        self.conv1 = RepVGGDeploy(c_in, c_out)
        self.block = nn.Sequential(*(RepVGGDeploy(c_out, c_out) for _ in range(n - 1))) if n > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.block(x) if self.block is not None else x


class CSPSPPFModule(nn.Module):
    """SimCSPSPPF's module (ConvBNReLU blocks, maxpool 5 three times in sequence)."""

    def __init__(self, c_in: int, c_out: int, k: int = 5):
        super().__init__()
        c = c_out // 2
        self.cv1, self.cv2 = ConvAct(c_in, c, 1), ConvAct(c_in, c, 1)
        self.cv3, self.cv4 = ConvAct(c, c, 3), ConvAct(c, c, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)
        self.cv5, self.cv6 = ConvAct(4 * c, c, 1), ConvAct(c, c, 3)
        self.cv7 = ConvAct(2 * c, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y0 = self.cv2(x)
        y1 = self.m(x1)
        y2 = self.m(y1)
        y3 = self.cv6(self.cv5(torch.cat([x1, y1, y2, self.m(y2)], 1)))
        return self.cv7(torch.cat((y0, y3), dim=1))


class SimCSPSPPF(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.cspsppf = CSPSPPFModule(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cspsppf(x)


class Transpose(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.upsample_transpose = nn.ConvTranspose2d(c, c, 2, 2, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample_transpose(x)


class BiFusion(nn.Module):
    """Upsampled coarser map (transposed conv), 1x1 of the same level, strided 3x3 of the finer one, concat, 1x1."""

    def __init__(self, c_in: tuple[int, int], c_out: int):
        super().__init__()
        self.cv1, self.cv2 = ConvAct(c_in[0], c_out, 1), ConvAct(c_in[1], c_out, 1)
        self.cv3 = ConvAct(3 * c_out, c_out, 1)
        self.upsample = Transpose(c_out)
        self.downsample = ConvAct(c_out, c_out, 3, 2)

    def forward(self, coarse: torch.Tensor, same: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.upsample(coarse), self.cv1(same), self.downsample(self.cv2(fine))), dim=1))


class EfficientRep(nn.Module):
    def __init__(self, ch: list[int], n: list[int]):
        super().__init__()
        self.stem = RepVGGDeploy(3, ch[0], 2)
        self.ERBlock_2 = nn.Sequential(RepVGGDeploy(ch[0], ch[1], 2), RepBlock(ch[1], ch[1], n[1]))
        self.ERBlock_3 = nn.Sequential(RepVGGDeploy(ch[1], ch[2], 2), RepBlock(ch[2], ch[2], n[2]))
        self.ERBlock_4 = nn.Sequential(RepVGGDeploy(ch[2], ch[3], 2), RepBlock(ch[3], ch[3], n[3]))
        self.ERBlock_5 = nn.Sequential(RepVGGDeploy(ch[3], ch[4], 2), RepBlock(ch[4], ch[4], n[4]),
                                       SimCSPSPPF(ch[4], ch[4]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        p2 = self.ERBlock_2(self.stem(x))  # fuse_P2: P2 is an output too
        p3 = self.ERBlock_3(p2)
        p4 = self.ERBlock_4(p3)
        return p2, p3, p4, self.ERBlock_5(p4)


class RepBiFPANNeck(nn.Module):
    def __init__(self, ch: list[int], n: list[int]):
        super().__init__()
        self.reduce_layer0 = ConvAct(ch[4], ch[5], 1)
        self.Bifusion0 = BiFusion((ch[3], ch[2]), ch[5])
        self.Rep_p4 = RepBlock(ch[5], ch[5], n[5])
        self.reduce_layer1 = ConvAct(ch[5], ch[6], 1)
        self.Bifusion1 = BiFusion((ch[2], ch[1]), ch[6])
        self.Rep_p3 = RepBlock(ch[6], ch[6], n[6])
        self.downsample2 = ConvAct(ch[6], ch[7], 3, 2)
        self.Rep_n3 = RepBlock(ch[6] + ch[7], ch[8], n[7])
        self.downsample1 = ConvAct(ch[8], ch[9], 3, 2)
        self.Rep_n4 = RepBlock(ch[5] + ch[9], ch[10], n[8])

    def forward(self, feats: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        x3, x2, x1, x0 = feats
        fpn_out0 = self.reduce_layer0(x0)
        f_out0 = self.Rep_p4(self.Bifusion0(fpn_out0, x1, x2))
        fpn_out1 = self.reduce_layer1(f_out0)
        pan_out2 = self.Rep_p3(self.Bifusion1(fpn_out1, x2, x3))
        pan_out1 = self.Rep_n3(torch.cat([self.downsample2(pan_out2), fpn_out1], 1))
        pan_out0 = self.Rep_n4(torch.cat([self.downsample1(pan_out1), fpn_out0], 1))
        return [pan_out2, pan_out1, pan_out0]


class DetectDistillNS(nn.Module):
    """heads/effidehead_distill_ns.Detect (reg_max 16) as its eval forward runs (Detect.export False): stems,
    cls / reg convs (ConvBNSiLU, folded), sigmoid class scores, ltrb distances from `reg_preds`, decoded in-graph."""

    def __init__(self, ch: tuple[int, ...], nc: int = 80, reg_max: int = 16):
        super().__init__()
        self.nc, self.stride = nc, (8, 16, 32)
        self.proj_conv = nn.Conv2d(reg_max + 1, 1, 1, bias=False)  # DFL projection: unused in eval
        self.proj = nn.Parameter(torch.linspace(0, reg_max, reg_max + 1), requires_grad=False)  # idem
        self.stems = nn.ModuleList(ConvAct(c, c, 1, act=nn.SiLU) for c in ch)
        self.cls_convs = nn.ModuleList(ConvAct(c, c, 3, act=nn.SiLU) for c in ch)
        self.reg_convs = nn.ModuleList(ConvAct(c, c, 3, act=nn.SiLU) for c in ch)
        self.cls_preds = nn.ModuleList(nn.Conv2d(c, nc, 1) for c in ch)
        self.reg_preds_dist = nn.ModuleList(nn.Conv2d(c, 4 * (reg_max + 1), 1) for c in ch)  # training-only branch
        self.reg_preds = nn.ModuleList(nn.Conv2d(c, 4, 1) for c in ch)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        cls_list, reg_list, points, strides = [], [], [], []
        for i, x in enumerate(feats):
            b, _, h, w = x.shape
            x = self.stems[i](x)
            cls_out = torch.sigmoid(self.cls_preds[i](self.cls_convs[i](x)))
            reg_out = self.reg_preds[i](self.reg_convs[i](x))
            cls_list.append(cls_out.reshape([b, self.nc, h * w]))
            reg_list.append(reg_out.reshape([b, 4, h * w]))
            points.append(cell_grid(h, w, 0.5, x.device))  # generate_anchors(is_eval=True, mode="af"): constants
            strides.append(torch.full((h * w, 1), float(self.stride[i]), device=x.device))
        scores = torch.cat(cls_list, dim=-1).permute(0, 2, 1)
        dist = torch.cat(reg_list, dim=-1).permute(0, 2, 1)
        anchor_points, stride_tensor = torch.cat(points), torch.cat(strides)
        lt, rb = torch.split(dist, 2, -1)  # dist2bbox(box_format="xywh")
        x1y1, x2y2 = anchor_points - lt, anchor_points + rb
        boxes = torch.cat([(x1y1 + x2y2) / 2, x2y2 - x1y1], -1) * stride_tensor
        ones = torch.ones((b, boxes.shape[1], 1), dtype=boxes.dtype, device=boxes.device)
        return torch.cat([boxes, ones, scores], dim=-1)


class YoloV6N(nn.Module):
    """AI Hub's YoloV6 wrapper around the deployed YOLOv6-N (module docstring)."""

    def __init__(self, depth: float = 0.33, width: float = 0.25):
        super().__init__()
        repeats = [(max(round(r * depth), 1) if r > 1 else r) for r in (1, 6, 12, 18, 6, 12, 12, 12, 12)]
        channels = [-(-int(c * width) // 8) * 8 for c in (64, 128, 256, 512, 1024, 256, 128, 128, 256, 256, 512)]
        self.backbone = EfficientRep(channels, repeats)
        self.neck = RepBiFPANNeck(channels, repeats)
        self.detect = DetectDistillNS((channels[6], channels[8], channels[10]))
        self.output_count = 3

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return joint_postprocess(self.detect(self.neck(self.backbone(image))))


# --------------------------------------------------------------------------------------------------- tables


# (AI Hub model, component) -> builder; components as in aihub_perf.csv
BUILDERS: dict[tuple[str, str], Callable] = {
    ("yolov7", "Yolo-v7"): builder(YoloV7Tiny, "image", IMAGE),
    ("yolox", "Yolo-X"): builder(YoloXSmall, "image", IMAGE),
    ("yolov6", "Yolo-v6"): builder(YoloV6N, "image", IMAGE),
}
PUBLISHED_PARAMS = {"yolov7": 6.24e6, "yolox": 8.98e6, "yolov6": 4.68e6}  # aihub_models.csv / info.yaml


if __name__ == "__main__":
    for (key, _), build in BUILDERS.items():
        with torch.device("meta"):
            module, feeds = build()
        params = sum(p.numel() for p in module.parameters())
        print(f"{key:8} {params / 1e6:7.4f}M parameters (AI Hub: {PUBLISHED_PARAMS[key] / 1e6:.2f}M, "
              f"{100 * (params / PUBLISHED_PARAMS[key] - 1):+.2f}%)")
