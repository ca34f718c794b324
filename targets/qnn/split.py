"""Split a component whose HTP context would pass the size limit into consecutive parts, one context each.

An EP-context model embeds nothing (the .bin stays outside), but the context binary itself must stay
under ~2 GB for the HTP to load it (device profile `max_model_bytes`; SDXL's UNet is 2.6 B parameters).
The *prepared float graph* is cut, not the QDQ graph: consecutive nodes in topological order are grouped
under a weight budget (the calibration segmenter, `SegmentedModel`), each part becomes a model whose
inputs and outputs are the tensors that cross the cut, and every part is quantized with the plan of the
whole graph. A boundary tensor therefore keeps one encoding: the producing part dequantizes it at its
output and the consuming part re-quantizes it at its input, which is exact (the values are on the grid).

Weight sharing between contexts (the QNN EP's `ep.share_ep_contexts`) serves graphs that use the *same*
weights (variants of one model); consecutive parts of one UNet share none, so each part owns its weights.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import onnx_ir as ir

from fusionc.passes.qnn.qdq import InsertQdqPass, QdqPlan
from fusionc.targets.qnn.calibrate import SegmentedModel

CONTEXT_MARGIN = 0.85  # headroom under the limit for the context's own metadata and the HTP's tiling


def weight_bytes(model: ir.Model) -> int:
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


def split_float_model(float_path: Path, parts: int) -> list[Path]:
    """Cut the saved float graph into about `parts` consecutive pieces of equal weight; returns their paths
    (saved beside the float model, so their external data references stay valid)."""
    total = sum(v.const_value.nbytes for v in ir.load(float_path).graph.initializers.values()
                if v.const_value is not None)
    budget = max(1, -(-total // parts))
    segmented = SegmentedModel(float_path, activation_budget=1 << 62, weight_budget=budget)
    future = segmented._future_inputs()
    paths = []
    for index, seg in enumerate(segmented.segments):
        produced = [o for node in seg.nodes for o in node.output if o]
        outputs = [o for o in produced if o in future[index] or o in segmented.graph_outputs]
        path = float_path.with_name(f"{float_path.stem}.part{index}.onnx")
        onnx.save(segmented.segment_model(seg, outputs), str(path))
        paths.append(path)
    return paths


def quantize_part(part_path: Path, plan: QdqPlan) -> ir.Model:
    """One part with the whole graph's plan applied (entries of other parts are ignored by name)."""
    model = ir.load(part_path)
    InsertQdqPass(plan)(model)
    return model


def parts_needed(context_bytes: int, limit: int) -> int:
    usable = int(limit * CONTEXT_MARGIN)
    return max(1, -(-context_bytes // usable))
