"""onnx target precisions: per-target defaults, refusals before any work, and the w8a8 int8 QDQ build."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from fusionc.cli import main
from fusionc.core.options import CompileOptions


def test_precision_defaults_per_target() -> None:
    assert CompileOptions(target="onnx").precision == "fp32"
    assert CompileOptions(target="qnn").precision == "w8a16"
    assert CompileOptions(target="qnn", precision="w8a8").precision == "w8a8"


@pytest.mark.parametrize("args, words", [
    (["--target", "onnx", "--precision", "w8a16"], ["w8a16", "16-bit", "w8a8"]),
    (["--target", "onnx", "--precision", "fp16"], ["fp16", "fp32"]),
    (["--target", "onnx", "--precision", "fp16", "--device", "cpu-arm64"], ["fp16", "conversion"]),
    (["--target", "onnx", "--precision", "w8a8", "--quantize-weights", "int4"], ["--quantize-weights", "int8"]),
    (["--target", "qnn", "--precision", "fp32"], ["fp32", "QNN"]),
    (["--target", "qnn", "--device", "pixel-8-cpu"], ["Pixel 8 CPU", "onnx"]),
])
def test_refusals_exit_2_in_one_line_before_any_work(tmp_path: Path, args: list[str], words: list[str]) -> None:
    out = tmp_path / "build"
    result = CliRunner().invoke(main, ["compile", *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fusionc: error:"), result.output
    for word in words:
        assert word in lines[0]
    assert not out.exists() and not list(tmp_path.iterdir())


def test_w8a8_build_runs_on_int8_kernels_and_verifies(tmp_path: Path) -> None:
    """The built-in (trained) UNet: w8a8 clears the gate on held-out inputs. Small tuning sets (one calibration and
    one selection trajectory of 2 steps, 4 + 2 batch-1 rows) keep it short: the torch trajectories, the
    calibration and the remedy evaluations were most of its 106 s of CPU."""
    out = tmp_path / "w8a8"
    result = CliRunner().invoke(main, ["compile", "--target", "onnx", "--precision", "w8a8",
                                       "--components", "unet", "--verify-steps", "2", "--verify-prompts", "1",
                                       "--calibration-prompts", "1", "--calibration-steps", "2",
                                       "--calibration-samples", "4", "--selection-prompts", "1",
                                       "--selection-steps", "2", "--selection-samples", "2",
                                       "--device", "cpu-arm64", "--min-psnr", "35", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    unet = manifest["components"]["unet"]
    assert manifest["options"]["precision"] == "w8a8" and manifest["device"] == "cpu-arm64"
    assert unet["precision"] == "w8a8" and unet["psnr_db"] >= 35
    assert unet["calibration_samples"] == 4 and unet["selection_samples"] == 2  # the tuning sets it was asked for
    assert set(unet["quantization"]["op_types"]) == {"Conv", "ConvTranspose", "MatMul", "Gemm"}
    graph = onnx.load(str(out / "unet" / "model.onnx"))
    ops = collections.Counter(n.op_type for n in graph.graph.node)
    assert ops["QuantizeLinear"] and ops["DequantizeLinear"] and not ops["GroupNormalization"]
    # ORT's CPU provider fuses the node units into its int8 kernels
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(str(out / "unet" / "model.onnx"), options, providers=["CPUExecutionProvider"])
    fused = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    assert fused["QLinearConv"] >= 4 and fused["QLinearMatMul"] + fused["QGemm"] + fused["MatMulIntegerToFloat"] >= 4, fused
    assert (out / "unet" / "model.ort").is_file()


def test_int4_weight_only_matmuls_run_as_matmul_nbits(tmp_path: Path) -> None:
    """--quantize-weights int4 leaves DequantizeLinear(int4, block 32) before each MatMul: ORT's CPU provider fuses
    the pair into MatMulNBits (4-bit weights stay 4-bit in memory) and the result matches the dequantized graph."""
    import numpy as np
    import onnx_ir as ir

    from fusionc.passes.compression.quantize_weights import QuantizeWeightsPass

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((128, 64)).astype(np.float32)
    text = """<ir_version: 8, opset_import: ["": 18]>
    g (float[1,16,128] x) => (float[1,16,64] y) { y = MatMul(x, w) }"""
    model = ir.from_proto(onnx.parser.parse_model(text))
    w = ir.Value(name="w", const_value=ir.tensor(weight, name="w"), shape=ir.Shape([128, 64]),
                 type=ir.TensorType(ir.DataType.FLOAT))
    model.graph.register_initializer(w)
    model.graph.node(0).replace_input_with(1, w)
    assert QuantizeWeightsPass("int4", block_size=32, min_elements=1)(model).modified
    path = tmp_path / "int4.onnx"
    ir.save(model, path)
    x = rng.standard_normal((1, 16, 128)).astype(np.float32)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    plain = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "fused.onnx")
    fused = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ops = [n.op_type for n in onnx.load(str(tmp_path / "fused.onnx")).graph.node]
    assert ops == ["MatMulNBits"], ops
    np.testing.assert_allclose(fused, plain, rtol=2e-2, atol=2e-2 * np.abs(plain).max())


def test_weights_over_the_embed_limit_are_saved_as_external_data(tmp_path: Path, monkeypatch) -> None:
    """Embedded weights cost onnxruntime a second copy while it loads a model (the protobuf and the tensors: the
    small UNet's fp32 build peaked at 345 MB, 216 MB with external data): above EMBED_LIMIT they go to .data."""
    import numpy as np
    import onnx_ir as ir

    import fusionc.targets.onnx as onnx_target

    text = """<ir_version: 8, opset_import: ["": 18]>
    g (float[1,64] x) => (float[1,64] y) { y = MatMul(x, w) }"""
    model = ir.from_proto(onnx.parser.parse_model(text))
    weight = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    w = ir.Value(name="w", const_value=ir.tensor(weight, name="w"), shape=ir.Shape([64, 64]),
                 type=ir.TensorType(ir.DataType.FLOAT))
    model.graph.register_initializer(w)
    model.graph.node(0).replace_input_with(1, w)
    assert onnx_target.save_model(model, tmp_path / "small" / "model.onnx") == [tmp_path / "small" / "model.onnx"]
    monkeypatch.setattr(onnx_target, "EMBED_LIMIT", weight.nbytes - 1)
    files = onnx_target.save_model(model, tmp_path / "large" / "model.onnx")
    assert [f.name for f in files] == ["model.onnx", "model.onnx.data"] and files[1].stat().st_size >= weight.nbytes
    x = np.ones((1, 64), np.float32)
    got = ort.InferenceSession(str(files[0]), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, x @ weight, rtol=1e-5)
