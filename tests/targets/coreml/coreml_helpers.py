"""Shared helpers for the Core ML target tests: lower an ONNX model, round-trip it through an .mlpackage,
run it with the MIL executor, and compare with onnxruntime."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from fusionc.targets.coreml.executor import MILExecutor, load_program
from fusionc.targets.coreml.lowering.table import LoweringOptions, lower_model
from fusionc.targets.coreml.package import save_mlpackage


def psnr(ref: np.ndarray, test: np.ndarray) -> float:
    ref = np.asarray(ref, np.float64)
    rmse = np.sqrt(np.mean((ref - np.asarray(test, np.float64)) ** 2))
    peak = np.max(np.abs(ref)) or 1.0
    return 200.0 if rmse == 0 else float(20 * np.log10(peak / rmse))


def run_ort(model: onnx.ModelProto | str | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def coreml_feeds(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.astype(np.int32) if v.dtype == np.int64 else v for k, v in feeds.items()}


def run_coreml(model: onnx.ModelProto | ir.Model, feeds: dict[str, np.ndarray], precision: str = "fp32",
               deployment: str = "iOS17", roundtrip: bool = True) -> list[np.ndarray]:
    """Lower -> (.mlpackage -> load) -> MIL executor; outputs in graph order."""
    ir_model = ir.serde.deserialize_model(model) if isinstance(model, onnx.ModelProto) else model
    program = lower_model(ir_model, LoweringOptions(compute_precision=precision, deployment_target=deployment))
    if roundtrip:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.mlpackage"
            save_mlpackage(program, path, deployment)
            program = load_program(path)
            executor = MILExecutor(program)
    else:
        executor = MILExecutor(program)
    out = executor(coreml_feeds(feeds))
    return [out[name] for name in executor.output_names]


def random_feeds(model: onnx.ModelProto, seed: int = 0, int_high: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in model.graph.input:
        t = value.type.tensor_type
        shape = [d.dim_value for d in t.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
        if dtype.kind == "f":
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[value.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feeds[value.name] = rng.integers(0, int_high, shape).astype(dtype)
    return feeds
