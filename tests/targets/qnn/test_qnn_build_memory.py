"""What keeps the QNN build's memory bounded at SD3 / SDXL scale (benchmarks/results/qnn_memory.json), on tiny graphs:
lazy integer weights that save to the same bytes, quantization in blocks equal to one piece, parts cut by their
activations (and never a part without graph inputs), and one part saved and built before the next is made."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import fusionc.passes.qnn.qdq as qdq
from fusionc.passes.qnn.qdq import Encoding
from fusionc.targets.qnn.calibrate import SegmentedModel, TensorStats
from fusionc.targets.qnn.quantize import quantize, save_float, save_model
from fusionc.targets.qnn.rules import QuantConfig, build_plan
from fusionc.targets.qnn.split import build_activation_budget, split_float_model

CHAIN = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[1,64] x, float[64,64] W0, float[64,64] W1, float[64,64] W2, float[64,64] W3, float[1,64] T) => (float[1,64] y) {
  t = Relu (T)
  a0 = MatMul (x, W0)
  b0 = Add (a0, t)
  a1 = MatMul (b0, W1)
  b1 = Relu (a1)
  a2 = MatMul (b1, W2)
  b2 = Relu (a2)
  a3 = MatMul (b2, W3)
  y = Tanh (a3)
}
"""


def chain_file(tmp_path: Path) -> Path:
    """Four 64x64 MatMuls; T is a constant whose Relu is fed by no graph input (a constant subgraph)."""
    from fusionc.passes.generic.cleanup import InferShapesPass

    model = ir.from_onnx_text(CHAIN)
    rng = np.random.default_rng(0)
    for value in list(model.graph.inputs)[1:]:
        value.const_value = ir.tensor(rng.standard_normal(tuple(value.shape)).astype(np.float32), name=value.name)
        model.graph.inputs.remove(value)
        model.graph.register_initializer(value)
    for node in model.graph:
        node.name = f"n_{node.outputs[0].name}"
    InferShapesPass()(model)
    return save_float(model, tmp_path / "float" / "model.float.onnx")


def stats_of(path: Path) -> dict[str, TensorStats]:
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, 64)).astype(np.float32)} for _ in range(3)]
    from fusionc.targets.qnn.calibrate import collect_stats

    return collect_stats(path, feeds, histograms=False)


def saved_bytes(model: ir.Model, path: Path) -> list[bytes]:
    return [p.read_bytes() for p in save_model(model, path)]


def test_lazy_weights_hold_no_integers_and_save_the_same_bytes(tmp_path: Path) -> None:
    path = chain_file(tmp_path)
    stats, config = stats_of(path), QuantConfig.for_precision("w8a16")
    eager = quantize(path, stats, config)
    lazy = quantize(path, stats, config, plan=build_plan(ir.load(path), stats, config), lazy=True)
    held = [v for v in lazy.graph.initializers.values() if v.name.endswith("_quantized")]
    assert held and all(isinstance(v.const_value, ir.LazyTensor) for v in held)
    assert not any(isinstance(v.const_value, ir.LazyTensor) for v in eager.graph.initializers.values())
    assert saved_bytes(lazy, tmp_path / "lazy" / "m.onnx") == saved_bytes(eager, tmp_path / "eager" / "m.onnx")


@pytest.mark.parametrize("shape", [(1, 300, 70), (37, 53), (5000,), (3, 7, 11, 13)])
def test_quantize_in_blocks_equals_one_piece(monkeypatch: pytest.MonkeyPatch, shape: tuple[int, ...]) -> None:
    x = (np.random.default_rng(2).standard_normal(shape) * 3).astype(np.float32)
    encodings = [Encoding.from_range(x.min(), x.max(), ir.DataType.UINT16),
                 *(Encoding.symmetric_per_channel(x, axis) for axis in range(x.ndim))]
    whole = [e.quantize(x) for e in encodings]
    monkeypatch.setattr(qdq, "QUANTIZE_BLOCK", 1000)  # every tensor above is cut into several blocks
    for enc, one in zip(encodings, whole):
        got = enc.quantize(x)
        assert got.dtype == one.dtype and got.shape == one.shape and got.tobytes() == one.tobytes()


def test_parts_are_cut_by_activations_and_each_has_graph_inputs(tmp_path: Path) -> None:
    path = chain_file(tmp_path)
    assert split_float_model(path, 1) == [path]  # under both budgets: whole, no part written
    parts = split_float_model(path, 1, activation_budget=256)  # one 1x64 fp32 output per part
    assert len(parts) >= 4
    segmented = SegmentedModel(path, activation_budget=256, weight_budget=1 << 62)
    assert not segmented.segments[0].inputs  # the greedy cut alone leaves Relu(T) without graph inputs
    for part in parts:
        graph = onnx.load(str(part), load_external_data=False).graph
        assert [i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    first = onnx.load(str(parts[0]), load_external_data=False).graph
    assert [n.op_type for n in first.node][:2] == ["Relu", "MatMul"]  # merged into the part that reads it


def test_build_activation_budget_follows_the_memory_limit() -> None:
    assert build_activation_budget(None) == build_activation_budget(8 << 30)
    assert build_activation_budget(4 << 30) < build_activation_budget(8 << 30)
    assert build_activation_budget(1) >= 1


def test_parts_are_saved_and_built_one_at_a_time(tmp_path: Path) -> None:
    """The next part is made only after the last one's context is built (its weights are then on disk only)."""
    from fusionc.targets.qnn import build

    events: list[str] = []

    class Recorder(build.Contexts):
        def build(self, graph_path: Path) -> list[Path]:
            events.append(f"build {graph_path.name}")
            self.models.append(graph_path)
            return [graph_path.with_name("ctx")]

    path = chain_file(tmp_path)
    stats, config = stats_of(path), QuantConfig.for_precision("w8a16")
    plan = build_plan(ir.load(path), stats, config)

    def parts():
        for index, source in enumerate(split_float_model(path, 1, activation_budget=256)):
            events.append(f"make part{index}")
            yield build.quantize_part(source, plan, lazy=True)

    names = [f"model.part{i}.qdq.onnx" for i in range(len(split_float_model(path, 1, activation_budget=256)))]
    contexts = Recorder(None, None, (), None, tmp_path, {})
    files = build._write_and_compile(parts(), names, tmp_path / "out", contexts, True, {})
    expected = [e for i in range(len(names)) for e in (f"make part{i}", f"build model.part{i}.qdq.onnx")]
    assert events == expected
    assert files[0].name == "model.encodings.json" and len(contexts.models) == len(names)
