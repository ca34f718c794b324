"""fp16 safety (passes/precision/fp16_safety.py): overflowing activations are rescaled exactly, or kept in fp32, and reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx.inliner
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from onnx_ir.passes.common import TopologicalSortPass
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnxruntime.transformers.float16 import convert_float_to_float16

from fusionc.passes.generic.fused_ops import function_proto
from fusionc.passes.precision.fp16_safety import (
    FP16_MAX,
    REPORT_KEY,
    KeepFp16InRangePass,
    fp32_nodes,
    measure,
    protect_fp16,
)

RESIDUAL = """
<ir_version: 10, opset_import: ["" : 18, "fusionc" : 1]>
residual (float[N,4,8,8] x) => (float[N,4,8,8] y) {
  h = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
  skip = Conv (x, w2, b2)
  r = Add (h, skip)
  up = Resize <mode = "nearest"> (r, , scales)
  n = fusionc.GroupNorm <num_groups = 2, epsilon = 0.00001> (up, gamma, beta)
  a = Sigmoid (n)
  y8 = Conv <pads = [1, 1, 1, 1], strides = [2, 2]> (a, w3, b3)
  y = Identity (y8)
}
"""

NONLINEAR = """
<ir_version: 10, opset_import: ["" : 18]>
nonlinear (float[N,4,8,8] x) => (float[N,4,8,8] y) {
  h = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
  s = Sigmoid (h)
  g = Mul (h, s)
  y = Mul (g, c)
}
"""


def build(text: str, scale: float = 4000.0) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    proto = onnx.parser.parse_model(text)
    weights = {
        "w1": rng.standard_normal((4, 4, 3, 3)) * scale, "b1": rng.standard_normal(4) * scale,
        "w2": rng.standard_normal((4, 4, 1, 1)) * scale, "b2": rng.standard_normal(4),
        "scales": np.array([1, 1, 2, 2]), "gamma": rng.standard_normal(4), "beta": rng.standard_normal(4),
        "w3": rng.standard_normal((4, 4, 3, 3)) * 0.3, "b3": rng.standard_normal(4) * 0.1, "c": np.array(1e-3),
    }
    for i, node in enumerate(proto.graph.node):
        node.name = f"{node.op_type}_{i}"  # the exporter names every node; so do we
    used = {name for node in proto.graph.node for name in node.input}
    for name, arr in weights.items():
        if name in used:
            proto.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(arr, np.float32), name))
    if any(n.domain == "fusionc" for n in proto.graph.node):
        proto.functions.append(function_proto("GroupNorm"))
    onnx.checker.check_model(proto)
    return proto


def feeds(n: int = 3) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((2, 4, 8, 8)).astype(np.float32)} for _ in range(n)]


def run(proto: onnx.ModelProto, feeds_list: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return [session.run(None, f)[0] for f in feeds_list]


class InstanceNormalization(OpRun):
    """fp16 in and out, fp32 accumulation inside (numpy's fp16 np.var would overflow its own running sum)."""

    def _run(self, x, scale, bias, epsilon=None):  # noqa: ANN001, ANN202 - OpRun's signature
        axes = tuple(range(2, x.ndim))
        x32 = x.astype(np.float32)
        shape = (-1,) + (1,) * (x.ndim - 2)
        y = (x32 - x32.mean(axis=axes, keepdims=True)) / np.sqrt(x32.var(axis=axes, keepdims=True) + epsilon)
        return ((y * scale.reshape(shape) + bias.reshape(shape)).astype(x.dtype),)


def run_fp16(model: ir.Model, feeds_list: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """The graph computed in fp16, fp32 at the interface (for rescaled graphs: the converter would round-trip
    values between fp32-marked nodes through fp16, which the Core ML lowering does not)."""
    proto = onnx.inliner.inline_local_functions(ir.to_proto(model))  # the converter skips function bodies
    half = convert_float_to_float16(proto, keep_io_types=True)
    # numpy computes fp16 in fp16 (onnxruntime's CPU EP would upcast fp16 ops to fp32 and hide overflows)
    sorted_model = ir.from_proto(half)
    TopologicalSortPass()(sorted_model)  # the converter appends its casts at the end
    evaluator = ReferenceEvaluator(ir.to_proto(sorted_model), new_ops=[InstanceNormalization])
    with np.errstate(all="ignore"):
        return [evaluator.run(None, f)[0] for f in feeds_list]


def test_the_golden_graph_overflows_fp16_without_the_pass() -> None:
    model = ir.from_proto(build(RESIDUAL))
    peaks = measure(model, feeds()).values
    assert max(peaks.values()) > FP16_MAX
    assert not all(np.isfinite(out).all() for out in run_fp16(model, feeds()))


def test_residual_stream_is_rescaled_exactly() -> None:
    proto = build(RESIDUAL)
    model = ir.from_proto(proto)
    before = run(proto, feeds())
    result = KeepFp16InRangePass(feeds())(model)
    assert result.modified
    report = json.loads(model.metadata_props[REPORT_KEY])
    assert report["rescaled"] and not report["fp32_nodes"] and not report.get("not_rescaled")
    assert report["max_abs_after"] < FP16_MAX / 4
    assert {o["value"] for o in report["overflows"]} >= {"h", "r"}
    # the same ops, rescaled weights and epsilon: outputs equal in fp32 ...
    assert [n.op_type for n in model.graph] == [n.op_type for n in proto.graph.node]
    after = run(ir.to_proto(model), feeds())
    for a, b in zip(before, after):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # ... and finite, close to fp32, when computed in fp16
    for a, b in zip(before, run_fp16(model, feeds())):
        assert np.isfinite(b).all()
        np.testing.assert_allclose(a, b, rtol=0.05, atol=0.05)
    norm = next(n for n in model.graph if n.op_type == "GroupNorm")
    assert norm.attributes["epsilon"].as_float() < 1e-5  # eps / s^2 keeps GroupNorm(x / s) == GroupNorm(x)


def test_second_run_changes_nothing() -> None:
    model = ir.from_proto(build(RESIDUAL))
    KeepFp16InRangePass(feeds())(model)
    snapshot = ir.to_proto(model).SerializeToString()
    assert not KeepFp16InRangePass(feeds())(model).modified
    assert ir.to_proto(model).SerializeToString() == snapshot


def test_nonlinear_consumer_is_kept_in_fp32() -> None:
    proto = build(NONLINEAR)
    model = ir.from_proto(proto)
    report = protect_fp16(model, feeds())
    assert report["not_rescaled"] and "Sigmoid" in report["not_rescaled"][0]["why"]
    marked = fp32_nodes(model)
    assert {n.op_type for n in model.graph if n.name in marked} == {"Conv", "Sigmoid", "Mul"}  # SiLU of h
    # (that the marked ops then run in fp32 and the result is finite: test_coreml_fp16_program_is_finite_after_the_pass)


def test_without_fp32_the_overflow_is_reported_unresolved() -> None:
    model = ir.from_proto(build(NONLINEAR))
    report = protect_fp16(model, feeds(), allow_fp32=False)
    assert report["unresolved"] == ["g", "h"] and not fp32_nodes(model)


def test_a_graph_in_range_is_left_alone() -> None:
    proto = build(RESIDUAL, scale=0.1)
    model = ir.from_proto(proto)
    untouched = ir.to_proto(ir.from_proto(proto)).graph
    report = protect_fp16(model, feeds())
    assert report["overflows"] == [] and report["rescaled"] == [] and report["inputs"] == 3
    assert ir.to_proto(model).graph == untouched


def test_feeds_that_do_not_match_are_reported_not_guessed() -> None:
    model = ir.from_proto(build(RESIDUAL))
    report = protect_fp16(model, [{"sample": np.zeros((1, 4, 8, 8), np.float32)}])
    assert report["skipped"] and report["inputs"] == 0


def test_target_pipelines_hand_the_pass_the_component_feeds() -> None:
    from fusionc.core.context import ComponentContext
    from fusionc.core.options import CompileOptions
    from fusionc.targets import get_target

    options = CompileOptions(target="coreml")
    entry = next(e for e in get_target("coreml").pipeline(options) if e.name == "KeepFp16InRangePass")
    model = ir.from_proto(build(RESIDUAL))
    entry.make(ComponentContext("vae_decoder", options, None, feeds()))(model)
    assert json.loads(model.metadata_props[REPORT_KEY])["rescaled"]


@pytest.mark.parametrize("target", ["coreml", "qnn"])
def test_fp16_targets_run_the_pass(target: str) -> None:
    from fusionc.core.options import CompileOptions
    from fusionc.targets import get_target

    from fusionc.core.context import ComponentContext
    from fusionc.passes.entry import enabled

    options = CompileOptions(target=target, precision="fp16")
    ctx = ComponentContext.for_options(options)
    names = [type(e.make(ctx)).__name__ for e in enabled(get_target(target).pipeline(options), options)]
    assert "KeepFp16InRangePass" in names
    if target == "qnn":
        quantized = CompileOptions(target=target, precision="w8a16")
        assert "KeepFp16InRangePass" not in [e.name for e in enabled(get_target(target).pipeline(quantized), quantized)]


def run_coreml_fp16(model: ir.Model, feeds_list: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """Lower to an fp16 MIL program (fp32-marked ops in fp32) and run it with the MIL executor."""
    from fusionc.targets.coreml.executor import MILExecutor
    from fusionc.targets.coreml.lowering.table import LoweringOptions, lower_model

    static = ir.from_proto(ir.to_proto(model))
    static.graph.inputs[0].shape = ir.Shape([2, 4, 8, 8])
    executor = MILExecutor(lower_model(static, LoweringOptions(compute_precision="fp16")))
    with np.errstate(all="ignore"):
        return [executor(f)[executor.output_names[0]] for f in feeds_list]


@pytest.mark.parametrize("text", [RESIDUAL, NONLINEAR])
def test_coreml_fp16_program_is_finite_after_the_pass(text: str) -> None:
    proto = build(text, scale=8000.0)
    expected = run(proto, feeds(1))
    assert not np.isfinite(run_coreml_fp16(ir.from_proto(proto), feeds(1))[0]).all()  # the overflow is real
    model = ir.from_proto(proto)
    KeepFp16InRangePass(feeds())(model)
    got = run_coreml_fp16(model, feeds(1))
    assert np.isfinite(got[0]).all()
    np.testing.assert_allclose(expected[0], got[0], rtol=0.05, atol=0.05)


def test_coreml_build_of_an_overflowing_vae(tiny_pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: a VAE decoder whose residual stream leaves fp16 range compiles to a correct fp16 Core ML build,
    and would not without the pass."""
    import shutil

    from safetensors.torch import load_file, save_file

    import fusionc.targets.coreml.target as coreml_target
    from fusionc.core.options import CompileOptions
    from fusionc.pipeline import compile_checkpoint

    ckpt = Path(shutil.copytree(tiny_pipeline("sd15"), tmp_path / "hot"))
    weights = ckpt / "vae" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    for key in ("decoder.conv_in.weight", "decoder.conv_in.bias"):  # the stream GroupNorms later normalize
        state[key] = state[key] * 3000
    save_file(state, weights)
    options = CompileOptions(target="coreml", components=("vae_decoder",), verify_steps=1, verify_prompts=1,
                             calibration_steps=1, calibration_prompts=1)  # ranges from other prompts than verified
    entry = compile_checkpoint(ckpt, options, tmp_path / "safe")["components"]["vae_decoder"]
    assert entry["fp16_safety"]["rescaled"] and entry["fp16_safety"]["max_abs_after"] < 256
    assert entry["psnr_db"] > 50
    monkeypatch.setattr(coreml_target, "fp16_safety", lambda options: [])
    monkeypatch.delenv("FUSIONC_CACHE", raising=False)  # the session cache would return the rescaled graph
    unsafe = compile_checkpoint(ckpt, options, tmp_path / "unsafe")["components"]["vae_decoder"]
    assert unsafe["psnr_db"] < 30  # the overflow is real


T5_LIKE = """
<ir_version: 10, opset_import: ["" : 18]>
t5like (int64[N,6] ids) => (float[N,6,8] y) {
  e = Gather (table, ids)
  h = MatMul (e, w_in)
  f = MatMul (h, w_out)
  r = Add (e, f)
  sq = Pow (r, two)
  m = ReduceMean <keepdims = 1> (sq, axes)
  v = Add (m, eps)
  s = Sqrt (v)
  inv = Reciprocal (s)
  n = Mul (r, inv)
  y = Mul (n, gamma)
}
"""


def t5_like(ff_scale: float = 100.0) -> onnx.ModelProto:
    """T5's residual stream: an embedding, a feed-forward output far past fp16 (~3e5), a decomposed RMSNorm."""
    rng = np.random.default_rng(0)
    proto = onnx.parser.parse_model(T5_LIKE)
    weights = {"table": rng.standard_normal((20, 8)), "w_in": rng.standard_normal((8, 16)) * ff_scale,
               "w_out": rng.standard_normal((16, 8)) * ff_scale,
               "two": np.array(2.0), "axes": np.array([-1]), "eps": np.array(1e-6), "gamma": rng.standard_normal(8)}
    for i, node in enumerate(proto.graph.node):
        node.name = f"{node.op_type}_{i}"
    for name, arr in weights.items():
        proto.graph.initializer.append(onnx.numpy_helper.from_array(
            np.asarray(arr, np.int64 if name == "axes" else np.float32), name))
    onnx.checker.check_model(proto)
    return proto


def t5_feeds(n: int = 3) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"ids": rng.integers(0, 20, (2, 6)).astype(np.int64)} for _ in range(n)]


def test_t5_rmsnorm_overflow_is_fixed_without_fp32() -> None:
    """The HTP has no fp32: the residual stream is rescaled through its RMSNorm (eps / s^2) and the RMSNorm whose
    squares still overflow is rewritten max-normalized; nothing is left unresolved, the numbers stay the same."""
    proto = t5_like()
    model = ir.from_proto(proto)
    assert max(measure(model, t5_feeds()).values.values()) > 1e5
    assert not all(np.isfinite(out).all() for out in run_fp16(model, t5_feeds()))  # it does overflow
    before = run(proto, t5_feeds())
    report = protect_fp16(model, t5_feeds(), allow_fp32=False)
    assert report["rescaled"] and report["rms_max_normalized"] == ["r"]
    assert not report["unresolved"] and not fp32_nodes(model)
    for a, b in zip(before, run(ir.to_proto(model), t5_feeds())):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    for a, b in zip(before, run_fp16(model, t5_feeds())):
        assert np.isfinite(b).all()
        np.testing.assert_allclose(a, b, rtol=0.02, atol=0.02)


def test_rmsnorm_in_range_is_left_alone() -> None:
    model = ir.from_proto(t5_like(ff_scale=0.5))
    report = protect_fp16(model, t5_feeds(), allow_fp32=False)
    assert not report["overflows"] and "rms_max_normalized" not in report
    assert [n.op_type for n in model.graph] == [n.op_type for n in t5_like(0.5).graph.node]
