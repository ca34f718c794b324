"""Split a component whose HTP context would pass the size limit into consecutive parts, one context each.

An EP-context model embeds nothing (the .bin stays outside), but the context binary itself must stay
under ~2 GB for the HTP to load it (device profile `max_model_bytes`; SDXL's UNet is 2.6 B parameters).
The *prepared float graph* is cut, not the QDQ graph: consecutive nodes in topological order are grouped
under a weight budget (the calibration segmenter, `SegmentedModel`), each part becomes a model whose
inputs and outputs are the tensors that cross the cut, and every part is quantized with the plan of the
whole graph. A boundary tensor therefore keeps one encoding: the producing part dequantizes it at its
output and the consuming part re-quantizes it at its input, which is exact (the values are on the grid).

Parts are also cut to bound the memory of their context build. The QNN HTP backend's graph preparation (in the
build's child process, context_child.py) grows with the part's activations, whatever its weights. Measured on
SD3-medium's transformer at full width, 512x512 (benchmarks/results/qnn_memory.json; the child's peak RSS against
the part's fp32 activation bytes, the sum of its nodes' outputs): two blocks 4.3 GB for 1.34 GB (0.1 GB of 8-bit
weights; 3.2x), the embedders about 0.75 GB for 0.4 GB; whole SD3-medium in two parts passed 21 GB
(dit_scale.json). So a part's activations stay under `build_activation_budget(--qnn-max-build-bytes)` (4 bytes of
build per activation byte, above the 3.2x of whole blocks), which adds parts where the weights alone would not.
Under a 1.5 GiB limit, 1 to 4 of SD3's layers were cut into parts smaller than a block, each built in at most
1.3 GB (sampled every 0.2 s). A part fed by no graph input (a constant subgraph cut off on its own: QNN
refuses graphs without inputs) is merged into the next one.

Weight sharing between contexts (the QNN EP's `ep.share_ep_contexts`) serves graphs that use the *same*
weights (variants of one model); consecutive parts of one UNet share none, so each part owns its weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import onnx
import onnx_ir as ir

from fusionc.passes.qnn.qdq import InsertQdqPass, QdqPlan
from fusionc.targets.qnn.calibrate import SegmentedModel

CONTEXT_MARGIN = 0.85  # headroom under the limit for the context's own metadata and the HTP's tiling
BUILD_BYTES_PER_ACTIVATION_BYTE = 4.0  # context build child's peak RSS per fp32 activation byte (module docstring)
BUILD_BASE_BYTES = 256 << 20  # the child's own RSS (onnxruntime, the QNN libraries) on a small graph
DEFAULT_MAX_BUILD_BYTES = 8 << 30  # the memory one context build may take: parts are cut to stay under it


def build_activation_budget(max_build_bytes: int | None) -> int:
    """fp32 activation bytes a part may have for its context build to stay under `max_build_bytes`."""
    limit = int(max_build_bytes or DEFAULT_MAX_BUILD_BYTES)
    return max(1, int((limit - BUILD_BASE_BYTES) / BUILD_BYTES_PER_ACTIVATION_BYTE))


def weight_bytes(model: ir.Model) -> int:
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


def split_float_model(float_path: Path, parts: int, activation_budget: int = 1 << 62) -> list[Path]:
    """Cut the saved float graph into about `parts` consecutive pieces of equal weight, and more where a piece's
    activations would pass `activation_budget`; returns their paths (saved beside the float model, so their
    external data references stay valid), or [float_path] when it stays whole."""
    total = sum(v.const_value.nbytes for v in ir.load(float_path).graph.initializers.values()
                if v.const_value is not None)
    budget = max(1, -(-total // parts)) if parts > 1 else 1 << 62  # one part: only the activations cut
    segmented = SegmentedModel(float_path, activation_budget=activation_budget, weight_budget=budget)
    segmented.segments = _with_inputs(segmented)
    if len(segmented.segments) == 1:
        return [float_path]
    future = segmented._future_inputs()
    paths = []
    for index, seg in enumerate(segmented.segments):
        produced = [o for node in seg.nodes for o in node.output if o]
        outputs = [o for o in produced if o in future[index] or o in segmented.graph_outputs]
        path = float_path.with_name(f"{float_path.stem}.part{index}.onnx")
        onnx.save(segmented.segment_model(seg, outputs), str(path))
        paths.append(path)
    return paths


def _with_inputs(segmented: SegmentedModel) -> list:
    """The segments, each one fed by no graph input or earlier segment merged into the next (the last: into the
    one before it)."""
    groups: list[list] = []
    carry: list = []
    for seg in segmented.segments:
        if seg.inputs:
            groups.append(carry + seg.nodes)
            carry = []
        else:
            carry += seg.nodes
    if carry:
        if groups:
            groups[-1] += carry
        else:
            groups.append(carry)
    if len(groups) == len(segmented.segments):
        return segmented.segments
    return segmented.segments_of(groups)


def quantize_part(part_path: Path, plan: QdqPlan, lazy: bool = False) -> ir.Model:
    """One part with the whole graph's plan applied (entries of other parts are ignored by name); `lazy`: its
    integer weights are computed when it is saved (InsertQdqPass's lazy_weights)."""
    model = ir.load(part_path)
    InsertQdqPass(plan, lazy_weights=lazy)(model)
    return model


def parts_needed(context_bytes: int, limit: int) -> int:
    usable = int(limit * CONTEXT_MARGIN)
    return max(1, -(-context_bytes // usable))


def chain_inputs(parts: Iterable[tuple[Iterable[str], Iterable[str]]]) -> list[str]:
    """The inputs of a chain of parts, each given as (inputs, outputs): what some part reads and no earlier part
    produced, in order of first use. A later part may read a graph input the first one does not (every
    cross-attention of SDXL's UNet reads `encoder_hidden_states`)."""
    needed: list[str] = []
    produced: set[str] = set()
    for inputs, outputs in parts:
        needed += [n for n in inputs if n not in produced and n not in needed]
        produced.update(outputs)
    return needed
