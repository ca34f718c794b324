"""AIMET-format encodings (version 0.6.1) of a QDQ model, for Qualcomm's own converter.

`qnn-onnx-converter --input_network model.onnx --quantization_overrides model.encodings.json` takes this
file to reuse fusionc's calibration: `activation_encodings` and `param_encodings` map tensor names of the
float graph (the Q inputs and quantized weights of model.qdq.onnx: strip its Q/DQ pairs to get that graph)
to a list of encodings, one per channel for per-channel weights. AIMET's convention is
real = (q + offset) * scale on an unsigned grid of `bitwidth` bits, so offset = -zero_point for unsigned
encodings and offset = -2^(b-1) for signed symmetric ones. int32 biases are left to the converter
(--bias_bw 32 derives them from input and weight scales, as the QDQ graph does); Converts between widths
are implied by the encodings on either side.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from fusionc.passes.qnn.qdq import TENSOR_KEY

VERSION = "0.6.1"


def _entries(scale: np.ndarray, zero_point: np.ndarray, dtype: ir.DataType) -> list[dict[str, Any]]:
    bits = int(dtype.itemsize * 8)
    signed = dtype in (ir.DataType.INT8, ir.DataType.INT16, ir.DataType.INT32)
    out = []
    for s, z in zip(np.atleast_1d(scale).astype(np.float64), np.atleast_1d(zero_point).astype(np.int64)):
        offset = int(-z - (1 << (bits - 1))) if signed else int(-z)
        out.append({"bitwidth": bits, "dtype": "int", "is_symmetric": str(bool(signed and z == 0)),
                    "min": float(offset * s), "max": float((offset + (1 << bits) - 1) * s),
                    "offset": offset, "scale": float(s)})
    return out


def _encoding_of(node: ir.Node) -> list[dict[str, Any]] | None:
    scale, zp = node.inputs[1], node.inputs[2] if len(node.inputs) > 2 else None
    if scale is None or scale.const_value is None:
        return None
    dtype = node.outputs[0].dtype if node.op_type == "QuantizeLinear" else node.inputs[0].dtype
    zero = zp.const_value.numpy() if zp is not None and zp.const_value is not None else np.zeros(1, np.int64)
    return _entries(scale.const_value.numpy(), zero, dtype)


def model_encodings(model: ir.Model) -> dict[str, Any]:
    activations: dict[str, list] = {}
    params: dict[str, list] = {}
    for node in model.graph:
        name = node.metadata_props.get(TENSOR_KEY)
        if not name or "@" in name:
            continue
        if node.op_type == "QuantizeLinear":
            enc = _encoding_of(node)
            if enc is not None:
                activations[name] = enc
        elif node.op_type == "DequantizeLinear" and node.inputs[0] is not None \
                and node.inputs[0].dtype != ir.DataType.INT32:
            enc = _encoding_of(node)
            if enc is not None:
                params[name] = enc
    bits = sorted({e[0]["bitwidth"] for e in activations.values()})
    return {"version": VERSION, "activation_encodings": activations, "param_encodings": params,
            "quantizer_args": {"activation_bitwidth": bits[-1] if bits else 16, "dtype": "int",
                               "is_symmetric": "False", "param_bitwidth": 8,
                               "per_channel_quantization": str(any(len(v) > 1 for v in params.values())),
                               "quant_scheme": "post_training_tf"}}


def merged_encodings(models: list[ir.Model]) -> dict[str, Any]:
    """One encodings file for a component split into several graphs (tensor names are unique)."""
    return merge_encodings([model_encodings(model) for model in models])


def merge_encodings(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The encodings of a component's parts (model_encodings of each, in order) as one file's content."""
    merged = parts[0]
    for more in parts[1:]:
        merged["activation_encodings"].update(more["activation_encodings"])
        merged["param_encodings"].update(more["param_encodings"])
    return merged


def write_json(encodings: dict[str, Any], path: Path) -> Path:
    Path(path).write_text(json.dumps(encodings, indent=1), encoding="utf-8")
    return Path(path)
