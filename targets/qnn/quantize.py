"""Quantize one prepared component: calibration feeds, streaming statistics, QDQ plan, Q/DQ insertion.

The stages are separate functions so the accuracy debugger and the remedies can re-plan from the same
statistics without recalibrating (statistics do not depend on the plan: they are fp32 ranges).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common

from fusionc.core.memory import MappedTensor, offload_weights
from fusionc.core.numerics import Feeds
from fusionc.passes.qnn.qdq import InsertQdqPass, QdqPlan
from fusionc.targets.qnn.calibrate import TensorStats, collect_stats
from fusionc.targets.qnn.rules import QuantConfig, build_plan

EXTERNAL_THRESHOLD = 256 << 20  # weights above this go to one .data file (protobuf stops at 2 GB)
SMALL_TENSOR_BYTES = 256  # tensors below this stay inside the .onnx (what ir.save does by default)


def split_batch(feeds: Feeds, batch: int = 1) -> list[Feeds]:
    """Batch-B feeds as B feeds of batch 1 (inputs without a batch axis, like `timestep`, are repeated)."""
    sizes = {v.shape[0] for k, v in feeds.items() if v.ndim and k != "timestep"}
    total = max(sizes) if sizes else 1
    out = []
    for start in range(0, total, batch):
        out.append({k: (v[start:start + batch] if v.ndim and k != "timestep" and v.shape[0] == total else v)
                    for k, v in feeds.items()})
    return out


def calibration_feeds(sample_feeds: list[Feeds], count: int) -> list[Feeds]:
    """`count` batch-1 feeds spread evenly over the trajectory (both guidance branches, every timestep)."""
    singles = [f for feeds in sample_feeds for f in split_batch(feeds)]
    if count <= 0 or count >= len(singles):
        return singles
    picks = np.linspace(0, len(singles) - 1, count).round().astype(int)
    return [singles[i] for i in dict.fromkeys(picks.tolist())]


def save_model(model: ir.Model, path: Path) -> list[Path]:
    """Save with one external-data file beside it when the weights are large (protobuf stops at 2 GB)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    size = sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)
    if size > EXTERNAL_THRESHOLD:
        return [path, _save_external(model, path)]
    for value in model.graph.initializers.values():  # lazy tensors point into another folder's .data file
        if isinstance(value.const_value, ir.ExternalTensor):
            value.const_value = ir.tensor(value.const_value.numpy(), name=value.name)
    ir.save(model, path)
    return [path]


def save_float(model: ir.Model, path: Path) -> Path:
    """The prepared float model, sorted, always with external data (calibration segments point into it).

    Weights the compile already keeps in scratch files under path's folder (the export's offload,
    fusionc.core.memory.offload_weights) are referenced where they are, and only the weights still in memory
    are written (into a new scratch file beside them): T5-XXL's float graph no longer holds a second 19 GB copy.
    A model reading weights from anywhere else is written whole to path + ".data", as before."""
    common.TopologicalSortPass()(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not _reference_weights_in_place(model, path.parent):
        _save_external(model, path)
        return path
    ir.save(model, path)  # external tensors keep their (relative) locations
    return path


def _graphs(model: ir.Model) -> tuple[ir.Graph, ...]:
    return (model.graph, *model.graph.subgraphs())


def _external_of(tensor: object) -> ir.ExternalTensor | None:
    if isinstance(tensor, MappedTensor):
        return tensor.external
    return tensor if isinstance(tensor, ir.ExternalTensor) else None


def _reference_weights_in_place(model: ir.Model, folder: Path) -> bool:
    """Point every external weight at its file relative to `folder`, after writing the resident ones into a new
    scratch file there; False (the model untouched) when some weight lives in a file outside `folder`."""
    folder = folder.resolve()
    for graph in _graphs(model):
        for value in graph.initializers.values():
            external = _external_of(value.const_value)
            if external is not None and not Path(external.path).resolve().is_relative_to(folder):
                return False
    offload_weights(model, folder / "weights", keep_below=SMALL_TENSOR_BYTES)
    for graph in _graphs(model):
        for value in graph.initializers.values():
            external = _external_of(value.const_value)
            if external is not None:
                value.const_value = ir.ExternalTensor(
                    Path(external.path).resolve().relative_to(folder).as_posix(), external.offset, external.length,
                    external.dtype, shape=external.shape, name=external.name, base_dir=folder)
    return True


def external_files(path: Path) -> list[Path]:
    """A saved model and every external data file its initializers read, sorted (what its content is)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    locations = {entry.value for graph in _proto_graphs(proto.graph) for init in graph.initializer
                 for entry in init.external_data if entry.key == "location"}
    return [Path(path), *sorted(Path(path).parent / loc for loc in locations)]


def _proto_graphs(graph):  # noqa: ANN001, ANN202 - onnx.GraphProto and its subgraphs
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.g.node or attr.g.initializer:
                yield from _proto_graphs(attr.g)
            for sub in attr.graphs:
                yield from _proto_graphs(sub)


def _save_external(model: ir.Model, path: Path) -> Path:
    """Save with the weights in path + ".data", and leave the model reading them lazily from that file: the
    in-memory arrays (3.4 GB for SD-1.5's float UNet) are freed before the calibration and the context build."""
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    ir.external_data.unload_from_model(model, path.parent, data.name, size_threshold_bytes=SMALL_TENSOR_BYTES)
    ir.save(model, path)
    return data


def calibrate(float_path: Path, feeds: list[Feeds], histograms: bool = True) -> dict[str, TensorStats]:
    return collect_stats(float_path, feeds, histograms=histograms)


def quantize(float_path: Path, stats: dict[str, TensorStats], config: QuantConfig, plan: QdqPlan | None = None,
             lazy: bool = False) -> ir.Model:
    """A fresh QDQ model from the saved float model (weights stay lazy until quantized). `plan`: one already built
    for this float model and config (build_plan); `lazy`: the integer weights are computed when the model is saved
    (InsertQdqPass's lazy_weights), for a model that is saved once, right away."""
    model = ir.load(float_path)
    InsertQdqPass(plan if plan is not None else build_plan(model, stats, config), lazy_weights=lazy)(model)
    common.TopologicalSortPass()(model)
    return model
