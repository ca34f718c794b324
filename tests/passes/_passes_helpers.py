"""Helpers for the pass tests: parse golden graphs, run them on onnxruntime, compare with dtype-aware tolerances."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

# (rtol, atol) per dtype: fp32 graphs should agree to rounding, fp16 to a few ulps of the activations.
TOLERANCES = {np.dtype(np.float32): (1e-5, 1e-5), np.dtype(np.float16): (1e-2, 1e-2)}
HEADER = '<ir_version: 10, opset_import: ["" : 18]>\n'


def parse(text: str, infer_shapes: bool = True) -> ir.Model:
    """An ir.Model from a graph in ONNX text (the opset header is added), with inferred value shapes
    like an exported graph has."""
    proto = onnx.parser.parse_model(HEADER + text)
    if infer_shapes:
        proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    return ir.from_proto(proto)


def op_types(model: ir.Model) -> list[str]:
    """Op types of the main graph in order (Constant nodes skipped: they are data), fusionc ops
    prefixed with their domain."""
    return [f"{n.domain}::{n.op_type}" if n.domain else n.op_type for n in model.graph if n.op_type != "Constant"]


def histogram(model: ir.Model) -> collections.Counter:
    return collections.Counter(op_types(model))


def random_feeds(model: ir.Model, seed: int = 0, batch: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in model.graph.inputs:
        shape = [d if isinstance(d, int) else batch for d in value.shape]
        dtype = value.dtype.numpy()
        if np.issubdtype(dtype, np.integer):
            feeds[value.name] = rng.integers(0, 30, shape).astype(dtype)
        else:
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def run(model: ir.Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run an in-memory model (weights in memory) on onnxruntime CPU, optimizations off."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(ir.to_proto(model).SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def assert_same_outputs(before: list[np.ndarray], after: list[np.ndarray]) -> None:
    assert len(before) == len(after)
    for expected, got in zip(before, after):
        assert got.shape == expected.shape and got.dtype == expected.dtype
        rtol, atol = TOLERANCES.get(expected.dtype, (0, 0))
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


def check_pass(pass_factory, text: str, expected_ops: list[str] | None, *, modified: bool = True,
               feeds: dict[str, np.ndarray] | None = None) -> ir.Model:
    """The design.md checks on a golden graph: op types after the pass, the `modified` flag, numerical
    equality before/after on onnxruntime, and a second run that changes nothing."""
    model = parse(text)
    feeds = feeds if feeds is not None else random_feeds(model)
    before = run(model, feeds)
    original = op_types(model)
    result = pass_factory()(model)
    assert result.modified is modified, op_types(model)
    if expected_ops is not None:
        assert op_types(model) == expected_ops
    if not modified:
        assert op_types(model) == original
    assert_same_outputs(before, run(model, feeds))
    assert pass_factory()(model).modified is False, "second run must report modified=False"
    return model


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    rmse = float(np.sqrt(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2)))
    peak = float(np.abs(reference).max())
    return float("inf") if rmse == 0 else 20 * np.log10(peak / rmse)
