"""Two more AI Hub models from their authors' code, re-stated as plain PyTorch modules (torch only; no timm or
MediaPipe import): MediaPipe hand gesture recognition (the three components with rows in aihub_perf.csv) and NVIDIA
GPUNet-0. (AI Hub's YOLOv5 and YOLOv3 are Ultralytics' anchor-free "u" models: aihub_ultralytics.py builds them.)

Each module is written layer for layer as the source's forward runs in eval mode, in the state AI Hub's loader leaves
it, wrapped in what AI Hub's model class adds around it (the ops are part of the graph AI Hub compiles and times).
Sub-module names mirror the sources' state_dict keys (AI Hub's `conv_<i>`, GPUNet's builder names), so a source
state_dict loads strictly. Dropout (identity in eval mode) is left out. Constants (the normalisation's) are made at
trace time on the input's device, so every module builds and exports on the meta device.

Sources (AI Hub v0.46.1 = quic/ai-hub-models 52c080d2, read at that commit):
- mediapipe_hand_gesture (AI Hub's own re-implementation, models/mediapipe_hand_gesture/model.py, a collection):
  - PalmDetector: mediapipe_hand's HandDetector, the same graph (latency_graphs.SAME_GRAPH copies its features):
    AI Hub's layers_total is identical on every runtime (QNN 197, ONNX 196, TFLite 149) and so are its latencies
    (0.533 vs 0.530 ms on S24 QNN). v0.46.0 made the component's include_postprocessing default True (20 more ops),
    which the graph AI Hub timed cannot have had.
  - HandLandmarkDetector: hand_landmark_full as AI Hub writes it out (conv_0..conv_46, linear_0..3: TFLite-style
    explicit pads, ReLU6 as clamp, 14 inverted-residual blocks, mean, four heads; returns landmarks, sigmoid score,
    sigmoid handedness, world landmarks). Input image 1x3x224x224 (get_input_spec). 2,715,680 parameters vs 2.72M
    (-0.16%).
  - CannedGestureClassifier: gesture embedder MLP (Linear 64->128 + 7 residual BN1d/SiLU/Linear steps) shared by
    hand and mirrored hand, summed, BN1d/SiLU/Linear, * gamma + beta, ReLU, Linear to 8, softmax. Inputs hand and
    mirrored_hand (1, 64). 143,752 parameters (142,728 with the eight BatchNorm1d affine pairs folded) vs 143K
    published (+0.53% raw, -0.19% folded: BN folding explains the gap).
- gpunet / "GPUNet": NVIDIA/DeepLearningExamples@9dd9fcb9 (AI Hub's pin) PyTorch/Classification/GPUNet,
  get_configs(batch=1, latency="0.65ms", gpuType="GV100") = configs/batch1/GV100/0.65ms.json (GPUNet-0: Prologue,
  2 ConvBnAct, 5 EdgeResidual (fused IRB), 5 InvertedResidual (last two with SE), Epilogue) via
  GPUNet_Builder._get_model; BN not folded (eps 1e-3). Quirk kept: the stride-2 EdgeResidual convs are "same" but
  create_conv2d builds them with padding 0 (112 -> 55 -> 27). AI Hub's ImagenetClassifier.forward normalises
  (image - mean) / std (torchvision constants). Input image_tensor 1x3x224x224, output (1, 1000).
  11,885,432 parameters (11.865M BN folded) vs 10.49M published: NOT matched. The source model itself has
  11,885,432 (checked), and AI Hub's own info.yaml gives its float asset as 45.28 MB = 11.87M float32 values (MiB),
  i.e. this model with BN folded; the 10.49M figure is inconsistent with AI Hub's own asset size.

Verification (random weights and random BatchNorm statistics, the source's own code run in the same process, outputs
compared; scripts outside the repo):
- mediapipe_hand_gesture: AI Hub's HandLandmarkDetector and CannedGestureClassifier (extracted from 52c080d2,
  BaseModel stubbed as nn.Module): all outputs identical (max error 0).
- gpunet: GPUNet_Builder().get_model(0.65ms.json) at 9dd9fcb9 on the normalised image: logits identical (max error 0).

Op counts (latency_graphs.features_of: len(ops) / sum(op_counts)) vs AI Hub's QNN layers_total (ONNX, TFLite):
HandLandmarkDetector 95/95 vs 101 (98, 63; the gap is the explicit TFLite pads folded into the convs, as in
aihub_mediapipe); CannedGestureClassifier 82/82 vs 83 (114, 94); gpunet 77/78 vs 7 (82, 65) -- GPUNet's QNN rows
report 7 layers (8 for w8a16/w8a8) on every device, which cannot be a per-op count for a 33-conv network; compare
with its ONNX (82) / TFLite (65) counts instead.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from aihub_mobile import builder, folded_params
# --------------------------------------------------------------------------------------------------- MediaPipe gesture


class GestureHandLandmark(nn.Module):
    """AI Hub's own mediapipe_hand_gesture/model.py HandLandmarkDetector (MediaPipe's hand_landmark_full, TFLite
    converted: biased convs, BN folded): stem conv 3x3/2 + depthwise 3x3 + 1x1 to 16, then 14 inverted-residual blocks
    (1x1 expand, ReLU6, TF-style explicit pad, depthwise k x k, ReLU6, 1x1 project, residual when the shape keeps),
    a last 1x1 expand + depthwise 3x3 + ReLU6, global mean, four Linear heads; ReLU6 is torch.clamp(0, 6) as in the
    source. Returns (landmarks [1, 63], sigmoid(linear_0) score, sigmoid(linear_1) handedness, world landmarks
    [1, 63]). Layers are named conv_<i> / linear_<i> as AI Hub's (its state_dict loads strictly)."""

    output_count = 4
    # (in, expanded, out, kernel, stride) per block; stride-2 pads (0, 1, 0, 1) for k=3, (1, 2, 1, 2) for k=5
    BLOCKS = ((16, 64, 24, 3, 2), (24, 144, 24, 3, 1), (24, 144, 40, 5, 2), (40, 240, 40, 5, 1),
              (40, 240, 80, 3, 2), (80, 480, 80, 3, 1), (80, 480, 80, 3, 1), (80, 480, 112, 5, 1),
              (112, 672, 112, 5, 1), (112, 672, 112, 5, 1), (112, 672, 192, 5, 2), (192, 1152, 192, 5, 1),
              (192, 1152, 192, 5, 1), (192, 1152, 192, 5, 1))

    def __init__(self):
        super().__init__()
        convs = [nn.Conv2d(3, 24, 3, 2), nn.Conv2d(24, 24, 3, groups=24), nn.Conv2d(24, 16, 1)]
        self.plan: list[tuple[int, tuple[int, int, int, int], bool]] = []
        for c_in, mid, c_out, k, s in self.BLOCKS:
            pad = (k // 2,) * 4 if s == 1 else ((0, 1, 0, 1) if k == 3 else (1, 2, 1, 2))
            convs += [nn.Conv2d(c_in, mid, 1), nn.Conv2d(mid, mid, k, s, groups=mid), nn.Conv2d(mid, c_out, 1)]
            self.plan.append((s, pad, s == 1 and c_in == c_out))
        convs += [nn.Conv2d(192, 1152, 1), nn.Conv2d(1152, 1152, 3, groups=1152)]
        for i, conv in enumerate(convs):
            self.add_module(f"conv_{i}", conv)
        for i, out in enumerate((1, 1, 63, 63)):
            self.add_module(f"linear_{i}", nn.Linear(1152, out))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        relu6 = lambda t: torch.clamp(t, min=0.0, max=6.0)  # noqa: E731
        conv = lambda i, t: getattr(self, f"conv_{i}")(t)  # noqa: E731
        x = relu6(conv(0, F.pad(image, (0, 1, 0, 1))))
        x = conv(2, relu6(conv(1, F.pad(x, (1, 1, 1, 1)))))
        i = 3
        for _, pad, residual in self.plan:
            h = relu6(conv(i, x))
            h = conv(i + 2, relu6(conv(i + 1, F.pad(h, pad))))
            x = h + x if residual else h
            i += 3
        x = relu6(conv(i + 1, F.pad(relu6(conv(i, x)), (1, 1, 1, 1))))
        f = x.mean(dim=(2, 3))
        flag, handed = self.linear_0(f), self.linear_1(f)
        return self.linear_2(f), torch.sigmoid(flag), torch.sigmoid(handed), self.linear_3(f)


class _GestureMLP(nn.Module):
    """AI Hub's _InnerGestureMLP (MediaPipe gesture_embedder): Linear 64->128, then seven residual steps
    s = s + fc_i(SiLU(BN(.))) (the first on BN(fc0), eval-mode Dropout left out); BatchNorm1d eps 1e-3."""

    def __init__(self):
        super().__init__()
        self.fc0 = nn.Linear(64, 128)
        self.bn0 = nn.BatchNorm1d(128, eps=1e-3)
        self.act = nn.SiLU()
        self.fcs = nn.ModuleList(nn.Linear(128, 128) for _ in range(7))
        self.bns_after_add = nn.ModuleList(nn.BatchNorm1d(128, eps=1e-3, momentum=0.01) for _ in range(6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc0(x)
        s = z + self.fcs[0](self.act(self.bn0(z)))
        for i in range(1, 7):
            s = s + self.fcs[i](self.act(self.bns_after_add[i - 1](s)))
        return s


class CannedGestureClassifier(nn.Module):
    """AI Hub's CannedGestureClassifier (gesture embedder + canned classifier): the shared MLP on the hand and on the
    mirrored hand, summed, BN1d -> SiLU -> Linear 128 (embedding), * gamma + beta, ReLU, Linear to 8, softmax.
    Inputs hand / mirrored_hand (1, 64), output (1, 8)."""

    def __init__(self, num_classes: int = 8):
        super().__init__()
        self.inner_mlp = _GestureMLP()
        self.bn_out = nn.BatchNorm1d(128, eps=1e-3, momentum=0.01)
        self.act_out = nn.SiLU()
        self.fc_out = nn.Linear(128, 128)
        self.gamma = nn.Parameter(torch.ones(128))
        self.beta = nn.Parameter(torch.zeros(128))
        self.fc = nn.Linear(128, num_classes)

    def forward(self, hand: torch.Tensor, mirrored_hand: torch.Tensor) -> torch.Tensor:
        s = self.inner_mlp(hand) + self.inner_mlp(mirrored_hand)
        emb = self.fc_out(self.act_out(self.bn_out(s)))
        return F.softmax(self.fc(F.relu(emb * self.gamma + self.beta)), dim=-1)


def gesture_classifier_builder() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The classifier's two (1, 64) inputs (aihub_models.csv: hand, mirrored_hand)."""
    return CannedGestureClassifier().eval(), {"hand": torch.randn(1, 64), "mirrored_hand": torch.randn(1, 64)}


# --------------------------------------------------------------------------------------------------- GPUNet-0


def _gpunet_divisible(v: float, divisor: int = 8) -> int:
    """gpunet_modules.make_divisible (round to a multiple of 8, never more than 10% down)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _gpunet_act(name: str) -> nn.Module:
    return nn.SiLU() if name == "swish" else nn.ReLU()


class _GPUNetStem(nn.Module):
    """Prologue: conv 3x3/2 (pad 1, no bias), BN(eps 1e-3), act (the config gives none: "swish")."""

    def __init__(self, c_in: int, c_out: int, act: str = "swish"):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out, eps=1e-3),
                                 _gpunet_act(act))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _GPUNetConvBnAct(nn.Module):
    """ConvBnAct (skip=False, so never residual): conv k x k (symmetric pad, no bias), BN(eps 1e-3), act."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, act: str):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride, ((stride - 1) + (k - 1)) // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out, eps=1e-3)
        self.act1 = _gpunet_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv(x)))


class _GPUNetSE(nn.Module):
    """SqueezeExcite: spatial mean, 1x1 reduce (bias), block act, 1x1 expand (bias), sigmoid gate."""

    def __init__(self, c: int, rd: int, act: str):
        super().__init__()
        self.conv_reduce, self.act1 = nn.Conv2d(c, rd, 1), _gpunet_act(act)
        self.conv_expand, self.gate = nn.Conv2d(rd, c, 1), nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * self.gate(s)


class _GPUNetEdgeResidual(nn.Module):
    """EdgeResidual ("fused_irb", pad_type "same"): conv k x k expansion, BN, act, 1x1 projection, BN, residual when
    the shape keeps. The source's create_conv2d computes TF 'SAME' as *dynamic* for stride 2 but then builds a plain
    nn.Conv2d with padding 0 (no Conv2dSame): its stride-2 expansion convs are unpadded (224 -> 112 -> 55 -> 27)."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, exp: float, act: str):
        super().__init__()
        mid = _gpunet_divisible(c_in * exp)
        self.conv_exp = nn.Conv2d(c_in, mid, k, stride, (k - 1) // 2 if stride == 1 else 0, bias=False)
        self.bn1, self.act1 = nn.BatchNorm2d(mid, eps=1e-3), _gpunet_act(act)
        self.se = nn.Identity()  # use_se is false for every fused_irb of this config
        self.conv_pwl = nn.Conv2d(mid, c_out, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out, eps=1e-3)
        self.has_residual = c_in == c_out and stride == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_pwl(self.se(self.act1(self.bn1(self.conv_exp(x))))))
        return y + x if self.has_residual else y


class _GPUNetInvertedResidual(nn.Module):
    """InvertedResidual ("irb", pad_type ""): 1x1 expansion, BN, act, depthwise k x k (symmetric pad), BN, act,
    optional SE (reduce to round(mid * 0.25 / exp)), 1x1 projection, BN, residual when the shape keeps."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, exp: float, act: str, use_se: bool):
        super().__init__()
        mid = _gpunet_divisible(c_in * exp)
        self.conv_pw = nn.Conv2d(c_in, mid, 1, bias=False)
        self.bn1, self.act1 = nn.BatchNorm2d(mid, eps=1e-3), _gpunet_act(act)
        self.conv_dw = nn.Conv2d(mid, mid, k, stride, ((stride - 1) + (k - 1)) // 2, groups=mid, bias=False)
        self.bn2, self.act2 = nn.BatchNorm2d(mid, eps=1e-3), _gpunet_act(act)
        self.se = _GPUNetSE(mid, round(mid * 0.25 / exp), act) if use_se else nn.Identity()
        self.conv_pwl = nn.Conv2d(mid, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out, eps=1e-3)
        self.has_residual = c_in == c_out and stride == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act2(self.bn2(self.conv_dw(self.act1(self.bn1(self.conv_pw(x))))))
        y = self.bn3(self.conv_pwl(self.se(y)))
        return y + x if self.has_residual else y


class _GPUNetHeadTail(nn.Module):
    """Epilogue: 1x1 conv (no bias), BN, ReLU, global average pool, flatten, (Dropout: identity), Linear."""

    def __init__(self, c_in: int, c_out: int, classes: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out, eps=1e-3), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Identity(), nn.Linear(c_out, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class GPUNet0(nn.Module):
    """NVIDIA GPUNet-0 (configs/batch1/GV100/0.65ms.json) as GPUNet_Builder._get_model builds it (an nn.Sequential
    `network` whose layer names, e.g. "stage: 4 layer10", are the builder's, so the source state_dict loads strictly),
    inside AI Hub's ImagenetClassifier.forward: (image - mean) / std with the torchvision constants, then the network.
    Input image (1, 3, 224, 224) in [0, 1] (the config's 320 is not used by AI Hub), output logits (1, 1000)."""

    # (name, kind, c_in, c_out, kernel, stride, expansion, act, use_se), the JSON's layers in order
    LAYERS = (("head: 2", "head", 3, 32, 3, 2, 1, "swish", False),
              ("stage: 1 layer3", "conv", 32, 32, 3, 1, 1, "relu", False),
              ("stage: 1 layer4", "conv", 32, 32, 3, 1, 1, "relu", False),
              ("stage: 2 layer5", "fused_irb", 32, 32, 3, 2, 5, "relu", False),
              ("stage: 2 layer6", "fused_irb", 32, 32, 3, 1, 5, "relu", False),
              ("stage: 3 layer7", "fused_irb", 32, 64, 3, 2, 5, "relu", False),
              ("stage: 3 layer8", "fused_irb", 64, 64, 3, 1, 5, "relu", False),
              ("stage: 3 layer9", "fused_irb", 64, 64, 3, 1, 5, "relu", False),
              ("stage: 4 layer10", "irb", 64, 256, 3, 2, 5, "swish", False),
              ("stage: 4 layer11", "irb", 256, 256, 3, 1, 5, "swish", False),
              ("stage: 4 layer12", "irb", 256, 256, 3, 1, 5, "swish", False),
              ("stage: 6 layer13", "irb", 256, 704, 3, 2, 5, "relu", True),
              ("stage: 6 layer14", "irb", 704, 704, 3, 1, 5, "relu", True))

    def __init__(self):
        super().__init__()
        self.network = nn.Sequential()
        for name, kind, c_in, c_out, k, s, e, act, se in self.LAYERS:
            if kind == "head":
                layer: nn.Module = _GPUNetStem(c_in, c_out, act)
            elif kind == "conv":
                layer = _GPUNetConvBnAct(c_in, c_out, k, s, act)
            elif kind == "fused_irb":
                layer = _GPUNetEdgeResidual(c_in, c_out, k, s, e, act)
            else:
                layer = _GPUNetInvertedResidual(c_in, c_out, k, s, e, act, se)
            self.network.add_module(name, layer)
        self.network.add_module(" layer15", _GPUNetHeadTail(704, 1280, 1000))

    def forward(self, image_tensor: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        mean = torch.tensor([0.485, 0.456, 0.406], device=image_tensor.device).reshape(shape)
        std = torch.tensor([0.229, 0.224, 0.225], device=image_tensor.device).reshape(shape)
        return self.network((image_tensor - mean) / std)


# --------------------------------------------------------------------------------------------------- tables

# (AI Hub model, component) -> builder; components as in aihub_perf.csv, inputs as aihub_models.csv
BUILDERS: dict[tuple[str, str], Callable] = {
    ("mediapipe_hand_gesture", "HandLandmarkDetector"): builder(GestureHandLandmark, "image", (1, 3, 224, 224)),
    ("mediapipe_hand_gesture", "CannedGestureClassifier"): gesture_classifier_builder,
    ("gpunet", "GPUNet"): builder(GPUNet0, "image_tensor", (1, 3, 224, 224)),
}
PUBLISHED_COMPONENT_PARAMS = {
    ("mediapipe_hand_gesture", "HandLandmarkDetector"): 2.72e6,
    ("mediapipe_hand_gesture", "CannedGestureClassifier"): 143e3,
}
PUBLISHED_PARAMS = {"gpunet": 10.49e6}
NOT_PUBLISHED = {"gpunet": "info.yaml's 10.49M contradicts its own float asset (45.28 MB = 11.87M float32 values, "
                           "this model with BatchNorm folded); NVIDIA's GPUNet-0 has 11.89M"}


if __name__ == "__main__":
    for (key, component), build in BUILDERS.items():
        with torch.device("meta"):
            module, feeds = build()
        params = sum(p.numel() for p in module.parameters())
        published = PUBLISHED_COMPONENT_PARAMS.get((key, component)) or PUBLISHED_PARAMS.get(key)
        print(f"{key:24} {component:26} {params / 1e6:8.4f}M parameters ({folded_params(module) / 1e6:.4f}M BN "
              f"folded; AI Hub {published / 1e6:.3f}M{' - ' + NOT_PUBLISHED[key] if key in NOT_PUBLISHED else ''})")
