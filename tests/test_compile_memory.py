"""What a compile holds through its passes: at SDXL size the torch module and resident weights are the peak.

The fixes are checked on tiny models with the size thresholds set to 0: the torch module is gone and every
large weight is memory-mapped external data once the driver's after-export step ran (before the first pass); the fp16 measurement maps
those weights instead of writing them again, and asks onnxruntime not to pre-pack a second copy.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch

import fusionc.pipeline as pipeline
from fusionc.checkpoint import load_checkpoint
from fusionc.core.context import ComponentContext
from fusionc.core.memory import SMALL_BYTES, MappedTensor, offload_weights, resident_weight_bytes
from fusionc.core.options import CompileOptions
from fusionc.passes.precision import fp16_safety


def _matmul_model(weight: ir.TensorProtocol) -> ir.Model:
    x = ir.Value(name="x", shape=ir.Shape([2, 64]), type=ir.TensorType(ir.DataType.FLOAT))
    w = ir.Value(name="w", shape=ir.Shape([64, 64]), type=ir.TensorType(ir.DataType.FLOAT), const_value=weight)
    node = ir.node("MatMul", [x, w])
    node.outputs[0].name, node.outputs[0].dtype = "y", ir.DataType.FLOAT
    node.outputs[0].shape = ir.Shape([2, 64])
    graph = ir.Graph([x], node.outputs, nodes=[node], initializers=[w], opset_imports={"": 18})
    return ir.Model(graph, ir_version=10)


def test_offloaded_weights_are_external_and_the_torch_tensor_is_freed(tmp_path) -> None:
    param = torch.randn(64, 64)
    expected = param.numpy().copy()
    alive = weakref.ref(param)
    model = _matmul_model(ir.tensor(param, name="w"))  # a TorchTensor: the exporter's initializers share torch memory
    del param
    gc.collect()
    assert alive() is not None
    assert offload_weights(model, tmp_path, min_bytes=1 << 30) == 0  # under the threshold: left alone
    assert offload_weights(model, tmp_path) == 64 * 64 * 4
    gc.collect()
    assert alive() is None and resident_weight_bytes(model) == 0
    tensor = model.graph.initializers["w"].const_value
    assert isinstance(tensor, MappedTensor) and np.array_equal(tensor.numpy(), expected)
    proto = ir.to_proto(model)  # writers see an ordinary tensor: its bytes, never a reference to the scratch file
    assert proto.graph.initializer[0].data_location == 0 and len(proto.graph.initializer[0].raw_data) == 64 * 64 * 4


def test_a_second_offload_writes_only_what_is_resident(tmp_path) -> None:
    """A pass that adds one constant after the offload: the next offload writes that constant, not the mapped
    weights again (onnx_ir's unload_from_model rewrites every initializer: T5-XXL's 19 GB for one folded bias)."""
    model = _matmul_model(ir.tensor(np.ones((64, 64), np.float32), name="w"))
    offload_weights(model, tmp_path)
    first = tmp_path / "weights-0.data"
    size = first.stat().st_size
    bias = ir.Value(name="b", shape=ir.Shape([64, 64]), type=ir.TensorType(ir.DataType.FLOAT),
                    const_value=ir.tensor(np.full((64, 64), 2.0, np.float32), name="b"))
    model.graph.register_initializer(bias)
    shape = ir.Value(name="shape", shape=ir.Shape([2]), type=ir.TensorType(ir.DataType.INT64),
                     const_value=ir.tensor(np.array([64, 64], np.int64), name="shape"))
    model.graph.register_initializer(shape)  # small: stays in memory, and is not counted as moved
    assert offload_weights(model, tmp_path) == 64 * 64 * 4
    assert not isinstance(model.graph.initializers["shape"].const_value, MappedTensor)
    assert first.stat().st_size == size and (tmp_path / "weights-1.data").stat().st_size == 64 * 64 * 4
    assert model.graph.initializers["w"].const_value.external.location == "weights-0.data"
    np.testing.assert_array_equal(model.graph.initializers["b"].const_value.numpy(), np.full((64, 64), 2.0))


def test_fp16_measurement_maps_external_weights_without_prepacking(tmp_path, monkeypatch) -> None:
    """Same maxima as on the in-memory graph; no second copy of the weights written; pre-packing off."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((64, 64)).astype(np.float32) * 100
    feeds = [{"x": rng.standard_normal((2, 64)).astype(np.float32)}]
    in_memory = fp16_safety.measure(_matmul_model(ir.tensor(weight, name="w")), feeds, tmp_path / "a")

    model = _matmul_model(ir.tensor(weight, name="w"))
    offload_weights(model, tmp_path / "weights")
    sessions: list[ort.SessionOptions] = []
    real_session = ort.InferenceSession

    def spy_session(path, options, **kwargs):  # noqa: ANN001, ANN202
        sessions.append(options)
        return real_session(path, options, **kwargs)

    def no_save(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the external weights were written again")

    monkeypatch.setattr(ort, "InferenceSession", spy_session)
    monkeypatch.setattr(fp16_safety.ir, "save", no_save)
    mapped = fp16_safety.measure(model, feeds, tmp_path / "b")
    assert mapped.values == pytest.approx(in_memory.values) and mapped.feeds == 1
    assert [o.get_session_config_entry("session.disable_prepacking") for o in sessions] == ["1"]
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == ["weights-0.data"]  # the graph was removed


def test_after_export_the_torch_module_is_freed_and_the_weights_are_mapped(tiny_pipeline, tmp_path,
                                                                          monkeypatch) -> None:
    """The driver's step between the export and the first pass, on a graph sharing the UNet's torch parameters
    (as the dynamo exporter's initializers do): the module leaves the checkpoint, its memory is freed, and every
    weight above the small-constant size is mapped from the scratch folder."""
    monkeypatch.setattr(pipeline, "OFFLOAD_MIN_BYTES", 0)  # a tiny UNet's weights take the SDXL path
    checkpoint = load_checkpoint(tiny_pipeline("sd15"))
    params = dict(checkpoint.models["unet"].named_parameters())
    x = ir.Value(name="x", shape=ir.Shape([1]), type=ir.TensorType(ir.DataType.FLOAT))
    inits = [ir.Value(name=n, shape=ir.Shape(p.shape), type=ir.TensorType(ir.DataType.FLOAT),
                      const_value=ir.tensor(p.detach(), name=n)) for n, p in params.items()]
    node = ir.node("Identity", [x])
    model = ir.Model(ir.Graph([x], node.outputs, nodes=[node], initializers=inits, opset_imports={"": 18}), ir_version=10)
    biggest = max(params.values(), key=lambda p: p.numel())
    alive, expected = weakref.ref(biggest), biggest.detach().numpy().copy()
    del params, inits, biggest
    options = CompileOptions(target="onnx", components=("unet",))
    spec = pipeline.LazySpec(checkpoint, "unet", options, release=lambda: pipeline._release_torch_modules(checkpoint, []))
    ctx = ComponentContext("unet", options, tmp_path / "unet", [], None, [])
    pipeline._after_export(model, spec, ctx, {})
    gc.collect()
    assert "unet" not in checkpoint.models and alive() is None
    large = [v.const_value for v in model.graph.initializers.values() if v.const_value.nbytes > SMALL_BYTES]
    assert large and all(isinstance(t, MappedTensor) for t in large)
    assert any(np.array_equal(t.numpy(), expected) for t in large)
    with pytest.raises(RuntimeError, match="released after its export"):
        spec()  # a pass asking torch for inputs outside the recorded trajectories is an error, not a silent reload


def test_fp16_measurement_runs_one_batch_row_at_a_time(tmp_path, monkeypatch) -> None:
    """The batch-2 guidance feeds are measured row by row (half the activation memory), with the same maxima."""
    rng = np.random.default_rng(1)
    model = _matmul_model(ir.tensor(rng.standard_normal((64, 64)).astype(np.float32), name="w"))
    model.graph.inputs[0].shape = ir.Shape(["batch", 64])
    feeds = [{"x": np.stack([rng.standard_normal(64), 100 * rng.standard_normal(64)]).astype(np.float32)}]
    shapes: list[tuple[int, ...]] = []
    real_run = ort.InferenceSession.run

    def spy_run(self, outputs, run_feeds, *args):  # noqa: ANN001, ANN202
        shapes.append(run_feeds["x"].shape)
        return real_run(self, outputs, run_feeds, *args)

    monkeypatch.setattr(ort.InferenceSession, "run", spy_run)
    measured = fp16_safety.measure(model, feeds, tmp_path)
    assert shapes == [(1, 64), (1, 64)] and measured.feeds == 1
    expected = float(np.max(np.abs(feeds[0]["x"] @ model.graph.initializers["w"].const_value.numpy())))
    assert measured.values["y"] == pytest.approx(expected, rel=1e-5)


def test_fp16_taps_run_right_after_the_value_they_read(tmp_path, monkeypatch) -> None:
    """Each Abs/ReduceMax tap follows its value's producer, and onnxruntime runs the stored order: with the taps
    last (onnxruntime's default order ran them last even when interleaved), every activation stayed alive at once
    (2.2 GB instead of 0.3 GB for 30 chained 64 MB values)."""
    import onnx

    x = ir.Value(name="x", shape=ir.Shape([1, 8]), type=ir.TensorType(ir.DataType.FLOAT))
    nodes, current = [], x
    for i in range(3):
        node = ir.node("Sigmoid" if i % 2 else "Neg", [current])
        current = node.outputs[0]
        current.name, current.dtype, current.shape = f"v{i}", ir.DataType.FLOAT, ir.Shape([1, 8])
        nodes.append(node)
    model = ir.Model(ir.Graph([x], [current], nodes=nodes, opset_imports={"": 18}), ir_version=10)
    seen: list[tuple[list[str], object]] = []
    real_session = ort.InferenceSession

    def spy_session(path, options, **kwargs):  # noqa: ANN001, ANN202
        proto = onnx.load(str(path), load_external_data=False)
        seen.append(([n.op_type for n in proto.graph.node], options.execution_order))
        return real_session(path, options, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", spy_session)
    measured = fp16_safety.measure(model, [{"x": np.ones((1, 8), np.float32)}], tmp_path)
    order, execution = seen[0]
    assert order == ["Neg", "Abs", "ReduceMax", "Sigmoid", "Abs", "ReduceMax", "Neg", "Abs", "ReduceMax"]
    assert execution == ort.ExecutionOrder.PRIORITY_BASED
    assert measured.values["v0"] == pytest.approx(1.0) and measured.values["v1"] == pytest.approx(1 / (1 + np.exp(1)))


def test_after_export_forgets_replaced_graph_inputs(tiny_pipeline, tmp_path) -> None:
    """A weight the exporter first made a graph input and then replaced stays pinned by onnx_ir's input counter,
    with its torch tensor (8 GB at SDXL size through the generic passes): the after-export step drops it."""
    checkpoint = load_checkpoint(tiny_pipeline("sd15"))
    param = torch.randn(64)
    alive = weakref.ref(param)
    x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([64]))
    old = ir.Value(name="w", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([64]), const_value=ir.tensor(param))
    add = ir.node("Add", [x, old])
    model = ir.Model(ir.Graph([x, old], add.outputs, nodes=[add], opset_imports={"": 18}), ir_version=10)
    model.graph.inputs.remove(old)
    add.replace_input_with(1, ir.Value(name="w2", const_value=ir.tensor(np.zeros(64, np.float32))))
    model.graph.register_initializer(add.inputs[1])
    del param, old
    options = CompileOptions(target="onnx", components=("unet",))
    spec = pipeline.LazySpec(checkpoint, "unet", options, release=lambda: pipeline._release_torch_modules(checkpoint, []))
    pipeline._after_export(model, spec, ComponentContext("unet", options, tmp_path / "unet", [], None, []), {})
    gc.collect()
    assert alive() is None
