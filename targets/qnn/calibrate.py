"""Streaming activation calibration: per-tensor ranges (and |x| histograms) without holding a step's activations.

Why not onnxruntime.quantization's calibrators: they add every tensor of the model as a graph output, run
the whole augmented model per sample and keep all outputs of all samples in memory before reducing them.
On the SD-1.5 UNet that passed 23.7 GB RSS with 2 samples (measured on this machine, issue 6). Here the
float model (saved once with external data) is cut into *segments* of consecutive nodes whose weights and
activations fit a byte budget; each segment runs as its own small onnxruntime session over all samples,
folds its tensors into running statistics as soon as they are produced, and keeps only the tensors that
later segments read. Peak memory is one segment's activations for one sample plus the live boundary
tensors; the weights of one segment are loaded at a time.

The same machinery serves the accuracy debugger (`run_segments` with a `visit` callback gives every fp32
intermediate once, in order) so debugging never needs a model with thousands of outputs either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from fusionc.core.numerics import Feeds
import onnx
import onnxruntime as ort

FLOAT_ELEM_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
HIST_BINS = 2048
BUDGET = 512 << 20  # bytes of activations, and of weights, per segment (SD-1.5 UNet: 13.5 GB peak at 1 GB)


@dataclass
class TensorStats:
    """Running min/max and a histogram of |x| whose range doubles (bins merge pairwise) as |x| grows."""

    min: float = math.inf
    max: float = -math.inf
    hist: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BINS, np.int64))
    hist_max: float = 0.0  # upper edge of the histogram

    def update(self, x: np.ndarray, histogram: bool = True) -> None:
        if x.size == 0:
            return
        x = np.asarray(x, dtype=np.float32)
        lo, hi = float(x.min()), float(x.max())
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        if not histogram:
            return
        amax = max(abs(lo), abs(hi))
        if not math.isfinite(amax):
            return
        if self.hist_max == 0.0:
            self.hist_max = amax if amax > 0 else 1e-8
        while amax > self.hist_max:  # double the range: merge bin pairs into the lower half
            merged = self.hist.reshape(-1, 2).sum(axis=1)
            self.hist = np.concatenate([merged, np.zeros(HIST_BINS // 2, np.int64)])
            self.hist_max *= 2
        counts, _ = np.histogram(np.abs(x), bins=HIST_BINS, range=(0.0, self.hist_max))
        self.hist += counts

    def percentile_absmax(self, percentile: float) -> float:
        """|x| below which `percentile` % of the calibration values lie (upper bin edge)."""
        total = int(self.hist.sum())
        if total == 0:
            return max(abs(self.min), abs(self.max), 0.0)
        index = int(np.searchsorted(np.cumsum(self.hist), total * percentile / 100.0))
        return (index + 1) * self.hist_max / HIST_BINS

    def to_json(self) -> dict[str, float]:
        return {"min": self.min, "max": self.max}


def _elem_types(graph: onnx.GraphProto) -> dict[str, onnx.TypeProto]:
    types: dict[str, onnx.TypeProto] = {}
    for info in list(graph.input) + list(graph.value_info) + list(graph.output):
        types[info.name] = info.type
    for init in graph.initializer:
        types[init.name] = onnx.helper.make_tensor_type_proto(init.data_type, list(init.dims))
    return types


def _nbytes(tp: onnx.TypeProto | None) -> int:
    if tp is None or not tp.HasField("tensor_type"):
        return 0
    dims = [d.dim_value if d.HasField("dim_value") else 1 for d in tp.tensor_type.shape.dim]
    size = onnx.helper.tensor_dtype_to_np_dtype(tp.tensor_type.elem_type).itemsize if tp.tensor_type.elem_type else 4
    return int(np.prod(dims, dtype=np.int64)) * size


def _init_bytes(init: onnx.TensorProto) -> int:
    for entry in init.external_data:
        if entry.key == "length":
            return int(entry.value)
    return init.ByteSize()


@dataclass
class Segment:
    nodes: list[onnx.NodeProto]
    inputs: list[str]
    outputs: list[str]


class SegmentedModel:
    """A saved model cut into segments of consecutive nodes (topological order) under byte budgets."""

    def __init__(self, path: Path, activation_budget: int = BUDGET, weight_budget: int = BUDGET,
                 keep: Iterable[str] = ()) -> None:
        self.path = Path(path)
        proto = onnx.load(str(path), load_external_data=False)
        if not proto.graph.value_info:
            proto = onnx.shape_inference.infer_shapes(proto)
        self.proto = proto
        graph = proto.graph
        self.types = _elem_types(graph)
        self.initializers = {init.name: init for init in graph.initializer}
        self.external = any(init.external_data for init in graph.initializer)
        self.graph_inputs = [i.name for i in graph.input if i.name not in self.initializers]
        self.graph_outputs = [o.name for o in graph.output]
        self.segments = self._cut(list(graph.node), activation_budget, weight_budget, set(keep))

    def _is_float(self, name: str) -> bool:
        tp = self.types.get(name)
        return tp is not None and tp.HasField("tensor_type") and tp.tensor_type.elem_type in FLOAT_ELEM_TYPES

    def _cut(self, nodes: list[onnx.NodeProto], act_budget: int, w_budget: int, keep: set[str]) -> list[Segment]:
        groups: list[list[onnx.NodeProto]] = [[]]
        act = weights = 0
        for node in nodes:
            node_act = self.activation_bytes(node)
            node_w = sum(_init_bytes(self.initializers[i]) for i in node.input if i in self.initializers)
            if groups[-1] and (act + node_act > act_budget or weights + node_w > w_budget):
                groups.append([])
                act = weights = 0
            groups[-1].append(node)
            act, weights = act + node_act, weights + node_w
        return self.segments_of(groups, keep)

    def activation_bytes(self, node: onnx.NodeProto) -> int:
        """Bytes of a node's outputs (static shapes; what a segment's activation budget counts)."""
        return sum(_nbytes(self.types.get(o)) for o in node.output)

    def segments_of(self, groups: list[list[onnx.NodeProto]], keep: Iterable[str] = ()) -> list[Segment]:
        """Segments of consecutive node groups: each one's inputs (graph inputs or earlier groups' tensors, no
        initializers) and outputs (what later groups, the graph outputs or `keep` read, and float tensors)."""
        keep = set(keep)
        last_use: dict[str, int] = {}
        for index, group in enumerate(groups):
            for node in group:
                for name in node.input:
                    last_use[name] = index
        for name in self.graph_outputs:
            last_use[name] = len(groups)
        segments = []
        for index, group in enumerate(groups):
            produced = [o for node in group for o in node.output if o]
            produced_set = set(produced)
            inputs = []
            for node in group:
                for name in node.input:
                    if name and name not in produced_set and name not in self.initializers and name not in inputs:
                        inputs.append(name)
            outputs = [o for o in produced if last_use.get(o, -1) > index or o in keep or self._is_float(o)]
            segments.append(Segment(group, inputs, outputs))
        return segments

    def segment_model(self, seg: Segment, outputs: list[str]) -> onnx.ModelProto:
        graph = onnx.helper.make_graph(
            seg.nodes, "segment",
            [self._info(n) for n in seg.inputs], [self._info(n) for n in outputs],
            [self.initializers[i] for i in dict.fromkeys(i for node in seg.nodes for i in node.input)
             if i in self.initializers])
        inner = {o for node in seg.nodes for o in node.output if o} - set(outputs)
        graph.value_info.extend(self._info(n) for n in sorted(inner) if n in self.types)  # shapes the QNN EP
        model = onnx.helper.make_model(graph, opset_imports=list(self.proto.opset_import),  # cannot infer
                                       functions=list(self.proto.functions))
        model.ir_version = self.proto.ir_version
        return model

    def _info(self, name: str) -> onnx.ValueInfoProto:
        tp = self.types.get(name)
        info = onnx.ValueInfoProto(name=name)
        if tp is not None:
            info.type.CopyFrom(tp)
        else:
            info.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
        return info

    def run(self, feeds: list[Feeds], visit: Callable[[str, int, np.ndarray], None],
            wanted: set[str] | None = None, label: str = "calibration", optimize: bool = True) -> list[Feeds]:
        """Run all samples segment by segment; `visit(name, sample, array)` sees each wanted float tensor once.
        `optimize=False`: no graph optimization (a QDQ graph's DequantizeLinear of a weight then runs per call,
        one float weight at a time, instead of being folded into float copies of all the segment's weights).

        Returns the graph outputs per sample.
        """
        live = [dict(f) for f in feeds]
        for name in self.graph_inputs:
            if (wanted is None or name in wanted) and self._is_float(name):
                for i, sample in enumerate(live):
                    visit(name, i, sample[name])
        future = self._future_inputs()
        from fusionc.core.progress import track

        for index, seg in track(list(enumerate(self.segments)), f"{label} ({len(live)} samples), segments"):
            outputs = [o for o in seg.outputs if o in future[index] or o in self.graph_outputs
                       or (self._is_float(o) and (wanted is None or o in wanted))]
            if not outputs:
                continue
            model = self.segment_model(seg, outputs)
            so = ort.SessionOptions()
            so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if optimize else
                                           ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
            so.log_severity_level = 3
            so.enable_cpu_mem_arena = False  # an arena per segment session would keep its peak until freed
            so.add_session_config_entry("session.disable_prepacking", "1")  # no second copy of the weights
            if self.external:
                path = self.path.parent / f".segment_{index}.onnx"  # beside the weights: relative external paths
                onnx.save(model, str(path))
                try:
                    session = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
                finally:
                    path.unlink(missing_ok=True)
            else:
                session = ort.InferenceSession(model.SerializeToString(), sess_options=so,
                                               providers=["CPUExecutionProvider"])
            for i, sample in enumerate(live):
                results = session.run(outputs, {n: sample[n] for n in seg.inputs})
                for name, array in zip(outputs, results):
                    if self._is_float(name) and (wanted is None or name in wanted):
                        visit(name, i, array)
                    if name in future[index] or name in self.graph_outputs:
                        sample[name] = array
                for name in [n for n in sample if n not in future[index] and n not in self.graph_outputs]:
                    del sample[name]
            del session
        return [{n: s[n] for n in self.graph_outputs if n in s} for s in live]

    def _future_inputs(self) -> list[set[str]]:
        """future[i]: tensors read by segments after i."""
        future: list[set[str]] = [set() for _ in self.segments]
        needed: set[str] = set()
        for index in range(len(self.segments) - 1, -1, -1):
            future[index] = set(needed)
            needed |= set(self.segments[index].inputs)
        return future


def collect_stats(model_path: Path, feeds: list[Feeds], tensors: set[str] | None = None,
                  activation_budget: int = BUDGET, weight_budget: int = BUDGET,
                  histograms: bool = True) -> dict[str, TensorStats]:
    """Running statistics of every float tensor (or of `tensors`) over all `feeds`, streamed by segment.

    `histograms=False` keeps min/max only (16-bit activations use the full range; histograms cost a pass
    over every activation, which at SD scale is most of the calibration time)."""
    model = SegmentedModel(model_path, activation_budget, weight_budget)
    stats: dict[str, TensorStats] = {}

    def visit(name: str, _sample: int, array: np.ndarray) -> None:
        stats.setdefault(name, TensorStats()).update(array, histograms)

    model.run(feeds, visit, tensors)
    return stats
