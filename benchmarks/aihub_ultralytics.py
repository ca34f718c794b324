"""AI Hub's Ultralytics detectors and segmentors (YOLOv3, v5, v8, v10, 11), rebuilt in the form AI Hub exports.

AI Hub loads these from Ultralytics checkpoints (aihub_models.csv: `custom code from ultralytics`); the networks are
Ultralytics' own model configurations (yolov8n.yaml, yolov10n.yaml, yolo11n.yaml and their -seg twins; since v0.38
YOLOv5-M and YOLOv3-Tiny too, as the anchor-free "u" models yolov5mu and yolov3-tinyu, though aihub_models.csv still
names the older repositories and info.yaml their parameter counts), so
Ultralytics builds them here with random weights, and only AI Hub's export wrapper is re-stated
(quic/ai-hub-models v0.46.1, models/_shared/ultralytics and models/_shared/yolo):
- the detection head does not concatenate boxes and class scores (AI Hub patches Detect so that int8 quantization
  sees two tensors of very different ranges apart): the box branch goes through the DFL decode and the anchor
  offsets, the class branch through a sigmoid, each concatenated over the three levels on its own;
- YOLOv10 runs its one-to-many head with end-to-end mode off (AI Hub: "we have not seen good results from this
  pipeline"), so its graph is the same decode, not the top-k selection;
- detectors hand out boxes as (x1, y1, x2, y2) [B, N, 4], the best class score [B, N] and its index as uint8;
- segmentors also hand out the mask coefficients [B, N, 32] and the mask prototypes; their best class score is
  taken over chunks of 5,000 anchors (AI Hub's `get_most_likely_score`, a workaround for a QNN limit) and the
  index is cast to float (the float build's form).
A benchmark-only dependency (`pip install ultralytics` in the torchvision venv, see latency_graphs.py); the parameter
counts match AI Hub's published ones but for NOT_PUBLISHED's (`python benchmarks/aihub_ultralytics.py` prints them).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

CHUNK = 5000  # AI Hub's get_most_likely_score: the class max over at most this many anchors at a time
PUBLISHED_PARAMS_M = {"yolov8_det": 3.18, "yolov8_seg": 3.43, "yolov10_det": 2.33, "yolov11_det": 2.64,
                      "yolov11_seg": 2.89, "yolov5": 21.2, "yolov3": 11.5}  # aihub_models.csv (millions)
NOT_PUBLISHED = {"yolov5": "21.2M is the anchor-based yolov5m.pt AI Hub shipped until v0.38 (yolov5mu: 25.1M)",
                 "yolov3": "11.5M is the Darknet yolov3-tiny AI Hub shipped until v0.38 (yolov3-tinyu: 12.2M)"}


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """[..., 4] centre/size boxes to corner boxes."""
    xy, wh = boxes[..., :2], boxes[..., 2:]
    return torch.cat([xy - wh / 2, xy + wh / 2], dim=-1)


def best_class(scores: torch.Tensor, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Max and argmax over the last axis of [B, N, C]; over `chunk` anchors at a time when given."""
    if chunk is None:
        return torch.max(scores, -1)
    parts = [torch.max(part, -1) for part in torch.split(scores, chunk, dim=-2)]
    return torch.cat([p.values for p in parts], -1), torch.cat([p.indices for p in parts], -1)


def anchor_points(levels: list[torch.Tensor], strides: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each level's cell centres ([2, N], in cells, row-major over [B, C, H, W] maps) and their strides ([1, N]),
    levels one after another: the constants Ultralytics' make_anchors computes at trace time."""
    points, steps = [], []
    for level, stride in zip(levels, strides):
        h, w = level.shape[-2:]
        y, x = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        points.append(torch.stack([x.reshape(-1), y.reshape(-1)]))
        steps.append(torch.full((1, h * w), float(stride)))
    return torch.cat(points, 1), torch.cat(steps, 1)


class SplitDetectHead(nn.Module):
    """Ultralytics' Detect head (its cv2 / cv3 / dfl layers) with boxes and class scores decoded apart."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def boxes_and_scores(self, x: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        head, b = self.head, x[0].shape[0]
        boxes = [head.cv2[i](x[i]) for i in range(head.nl)]
        scores = [head.cv3[i](x[i]) for i in range(head.nl)]
        box = torch.cat([level.view(b, boxes[0].shape[1], -1) for level in boxes], 2)
        cls = torch.cat([level.view(b, scores[0].shape[1], -1) for level in scores], 2)
        anchors, strides = anchor_points(boxes, head.stride.tolist())
        return head.decode_bboxes(head.dfl(box), anchors.unsqueeze(0)) * strides, cls.sigmoid()

    def forward(self, x: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        if not hasattr(self.head, "proto"):
            return self.boxes_and_scores(x)
        head, b = self.head, x[0].shape[0]
        protos = head.proto(x[0])
        coeffs = torch.cat([head.cv4[i](x[i]).view(b, head.nm, -1) for i in range(head.nl)], 2)
        return (*self.boxes_and_scores(x), coeffs, protos)


class UltralyticsExport(nn.Module):
    """An Ultralytics detection / segmentation model as AI Hub's YoloV8Detector / UltralyticsMulticlassSegmentor
    export it (module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        head = model.model[-1]
        head.end2end = False  # YOLOv10: the one-to-many head, as AI Hub exports it; its one-to-one twin unused
        for unused in ("one2one_cv2", "one2one_cv3"):
            if hasattr(head, unused):
                delattr(head, unused)
        self.layers, self.save = model.model[:-1], model.save
        self.head_from = head.f
        self.head = SplitDetectHead(head)
        self.segment = hasattr(head, "proto")
        self.output_count = 5 if self.segment else 3

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y: list[torch.Tensor | None] = []
        x = image
        for layer in self.layers:  # Ultralytics' DetectionModel._predict_once, without its profiling / hooks
            if layer.f != -1:
                x = y[layer.f] if isinstance(layer.f, int) else [x if j == -1 else y[j] for j in layer.f]
            x = layer(x)
            y.append(x if layer.i in self.save else None)
        outputs = self.head([x if j == -1 else y[j] for j in self.head_from])
        boxes, scores = xywh_to_xyxy(outputs[0].permute(0, 2, 1)), outputs[1].permute(0, 2, 1)
        if not self.segment:
            best, index = best_class(scores)
            return boxes, best, index.to(torch.uint8)
        best, index = best_class(scores, CHUNK)
        return boxes, best, outputs[2].permute(0, 2, 1), index.to(torch.float32), outputs[3]


def ultralytics_model(config: str) -> Callable:
    """Builder: Ultralytics' model `config` (e.g. "yolov8n.yaml") with random weights, AI Hub's 640x640 input."""
    def build() -> tuple[nn.Module, dict[str, torch.Tensor]]:
        from ultralytics.nn.tasks import yaml_model_load
        from ultralytics.nn.tasks import DetectionModel, SegmentationModel

        cfg = yaml_model_load(config)
        model_class = SegmentationModel if "-seg" in config else DetectionModel
        model = model_class(cfg, verbose=False).eval()
        return UltralyticsExport(model).eval(), {"image": torch.rand(1, 3, 640, 640)}
    return build


# (AI Hub model, component) -> builder; input shapes from aihub_models.csv (image: 1x3x640x640)
ULTRALYTICS: dict[tuple[str, str], Callable] = {
    ("yolov8_det", "YOLOv8-Detection"): ultralytics_model("yolov8n.yaml"),
    ("yolov8_seg", "YOLOv8-Segmentation"): ultralytics_model("yolov8n-seg.yaml"),
    ("yolov10_det", "YOLOv10-Detection"): ultralytics_model("yolov10n.yaml"),
    ("yolov11_det", "YOLOv11-Detection"): ultralytics_model("yolo11n.yaml"),
    ("yolov11_seg", "YOLOv11-Segmentation"): ultralytics_model("yolo11n-seg.yaml"),
    ("yolov5", "Yolo-v5"): ultralytics_model("yolov5mu.yaml"),
    ("yolov3", "Yolo-v3"): ultralytics_model("yolov3-tinyu.yaml"),
}


if __name__ == "__main__":
    for (model, _), build in ULTRALYTICS.items():
        module, feeds = build()
        with torch.no_grad():
            shapes = [tuple(t.shape) for t in module(**feeds)]
        params = sum(p.numel() for p in module.parameters()) / 1e6
        stale = f" - not this model: {NOT_PUBLISHED[model]}" if model in NOT_PUBLISHED else ""
        print(f"{model:12s} {params:.3f}M parameters (AI Hub {PUBLISHED_PARAMS_M[model]}M{stale})  outputs {shapes}")
