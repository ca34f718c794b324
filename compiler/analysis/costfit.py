"""The fitted NPU latency model: per-component features of a graph, and per-chipset coefficients fitted on them.

A component's latency on one chipset, precision and runtime is modelled as a sum of work terms, each divided by
a throughput the fit learns for that chipset and precision (non-negative least squares on relative error):

    t = sum_j  theta[chipset, precision, runtime][j] * x_j

    x_j (FEATURES)   what it stands for
    gmacs            every MAC                          -> 1 / shared MAC throughput
    conv_gmacs       convolution MACs                   -> extra cost per conv MAC (>= 0, pulled towards 0)
    linear_gmacs     weight matmul MACs                 -> extra cost per matmul MAC (idem)
    attn_gmacs       activation x activation MACs      -> extra cost per attention MAC (idem)
    vector_g         elementwise / norm / softmax work  -> 1 / vector throughput
    layout_g         elements moved by layout ops       -> 1 / data-movement rate
    weight_mb        weights at the deployed precision  -> 1 / DRAM bandwidth for weights
    spill_mb         activation bytes of ops whose tensors do not fit the NPU's local memory (VTCM_BYTES)
    kilo_ops         ops launched (non-free)            -> per-op overhead
    fallback_layers  layers placed on the CPU or GPU    -> cost of one fallback + its hand-overs
    one              a fixed cost per call

The features come from fusionc.analysis.graph_stats rows (the compiled graph at batch 1, or the batch asked for).
The coefficients are fitted by benchmarks/costmodel_fit.py on Qualcomm AI Hub's published latencies and stored in
costmodel_params.json beside this module (fitted on the training split of models only, so the held-out errors
reported beside it describe exactly the model that ships). Fallback layers are known for the published rows
(AI Hub's layer counts); for a new graph they are the ops the NPU compiler is known not to place
(costmodel.FALLBACK_OPS).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

FEATURES = ("gmacs", "conv_gmacs", "linear_gmacs", "attn_gmacs", "vector_g", "layout_g", "weight_mb", "spill_mb",
            "kilo_ops", "fallback_layers", "one")
# the per-kind MAC terms are extra costs on top of the shared `gmacs` rate: pulled to 0 unless the data needs them,
# so a kind that few training graphs have (attention in a CNN-heavy set) falls back to the shared rate
EXTRA_TERMS = ("conv_gmacs", "linear_gmacs", "attn_gmacs")
VTCM_BYTES = 8 << 20  # Hexagon v73+ TCM is 8 MB (Qualcomm QNN HTP docs: "VTCM size 8 MB" on SM8550/SM8650/SM8750)
# precision -> (weight bytes per parameter, activation bytes per element)
PRECISION_BYTES = {"float": (2.0, 2.0), "w8a16": (1.0, 2.0), "w8a8": (1.0, 1.0), "w4a16": (0.5, 2.0)}
RUNTIME_GROUPS = {"QNN_CONTEXT_BINARY": "qnn", "QNN_DLC": "qnn", "QNN": "qnn", "PRECOMPILED_QNN_ONNX": "qnn",
                  "ONNX": "onnx", "TFLITE": "tflite"}
PARAMS_PATH = Path(__file__).resolve().parent / "costmodel_params.json"
OP_FIELDS = ("op_type", "kind", "macs", "vector_elems", "params", "float_weight_elems", "compressed_weight_bytes",
             "act_in_elems", "act_out_elems", "attention_scores")


def precision_group(precision: str) -> str:
    """AI Hub's precision labels -> the fitted groups (float = fp16 on the HTP; mixed int16 variants -> w8a16)."""
    p = precision.lower()
    if p in ("float", "fp16", "fp32"):
        return "float"
    if p.startswith("w8a16") or p == "w16a16":
        return "w8a16"
    if p.startswith("w8a8"):
        return "w8a8"
    if p.startswith("w4"):
        return "w4a16"
    raise ValueError(f"unknown precision {precision!r}")


def features_from_rows(rows: Iterable[Sequence[Any]], precision: str, fallback_layers: float = 0.0,
                       fields: Sequence[str] = OP_FIELDS) -> dict[str, float]:
    """The model's features of one graph, from graph_stats op rows (lists in `fields` order)."""
    index = {f: i for i, f in enumerate(fields)}
    wbytes, abytes = PRECISION_BYTES[precision_group(precision) if precision not in PRECISION_BYTES else precision]
    x = dict.fromkeys(FEATURES, 0.0)
    for row in rows:
        kind = row[index["kind"]]
        if kind == "free":
            continue
        macs = row[index["macs"]]
        act = (row[index["act_in_elems"]] + row[index["act_out_elems"]]) * abytes
        x["gmacs"] += macs / 1e9
        if kind == "conv":
            x["conv_gmacs"] += macs / 1e9
        elif kind == "linear":
            x["linear_gmacs"] += macs / 1e9
        elif kind == "attention":
            x["attn_gmacs"] += macs / 1e9
        elif kind == "layout":
            x["layout_g"] += row[index["act_out_elems"]] / 1e9
        x["vector_g"] += row[index["vector_elems"]] / 1e9
        compressed = row[index["compressed_weight_bytes"]]
        x["weight_mb"] += (row[index["float_weight_elems"]] * wbytes + min(compressed, row[index["params"]] * wbytes)) / 1e6
        if act > VTCM_BYTES:
            x["spill_mb"] += act / 1e6
        x["kilo_ops"] += 1e-3
    x["fallback_layers"] = float(fallback_layers)
    x["one"] = 1.0
    return x


def features_from_stats(stats: Any, precision: str, fallback_layers: float = 0.0) -> dict[str, float]:
    """Features of a fusionc.analysis.graph_stats.GraphStats."""
    rows = ([getattr(op, f) for f in OP_FIELDS] for op in stats.ops)
    return features_from_rows(rows, precision, fallback_layers)


def vector(x: dict[str, float]) -> np.ndarray:
    return np.array([x[f] for f in FEATURES], dtype=float)


def fit_group(X: np.ndarray, y: np.ndarray, prior: np.ndarray | None = None, ridge: float | np.ndarray = 0.0,
              iterations: int = 6, absolute: bool = False) -> np.ndarray:
    """Non-negative coefficients minimising relative error |X theta / y - 1| (IRLS towards an L1 fit).

    `prior` (same shape as theta) with `ridge` > 0 pulls each coefficient towards the pooled fit, so a chipset with
    few rows borrows the shape of the others instead of fitting noise. The pull is measured relative to each
    feature's range in the data, or, with `absolute`, in the coefficient's own units (ms per unit: how the per-kind
    extra MAC costs are held near 0 when the training graphs barely exercise a kind).
    """
    from scipy.optimize import nnls

    A = X / y[:, None]
    b = np.ones(len(y))
    scale = np.maximum(np.abs(A).max(axis=0), 1e-12)  # column scaling: nnls is scale-sensitive
    A_s = A / scale
    weights = np.ones(len(y))
    theta = np.zeros(X.shape[1])
    for _ in range(iterations):
        W = np.sqrt(weights)[:, None]
        lhs, rhs = A_s * W, b * W[:, 0]
        lam = np.sqrt(np.broadcast_to(np.asarray(ridge, dtype=float), (X.shape[1],)) * len(y))
        if lam.any():  # ridge (a scalar or one weight per feature) towards `prior` (zeros when None)
            target = np.zeros(X.shape[1]) if prior is None else prior
            if absolute:  # penalty lam * theta_real = lam / scale * theta_scaled
                lhs = np.vstack([lhs, np.diag(lam / scale)])
                rhs = np.concatenate([rhs, lam * target])
            else:
                lhs = np.vstack([lhs, np.diag(lam)])
                rhs = np.concatenate([rhs, lam * target * scale])
        sol, _ = nnls(lhs, rhs, maxiter=50 * X.shape[1])
        theta = sol / scale
        residual = np.abs(A @ theta - 1)
        weights = 1 / np.maximum(residual, 0.02)  # IRLS: L2 -> approximately L1 (median-oriented)
    return theta


def extra_ridge(strength: float) -> np.ndarray:
    """Per-feature ridge weights: `strength` on the per-kind extra MAC terms, 0 elsewhere."""
    return np.array([strength if f in EXTRA_TERMS else 0.0 for f in FEATURES])


def load_params(path: Path = PARAMS_PATH) -> dict[str, Any]:
    """The fitted coefficients: {"features", "groups": {"chipset|precision|runtime": [theta...]}, ...}."""
    return json.loads(path.read_text())


def predict(x: dict[str, float], theta: Sequence[float]) -> float:
    """Latency in ms of a component with features `x` under coefficients `theta` (ms per feature unit)."""
    return float(vector(x) @ np.asarray(theta, dtype=float))


def breakdown(x: dict[str, float], theta: Sequence[float]) -> dict[str, float]:
    """ms per term; the `bound` of an estimate is the largest."""
    return {f: x[f] * t for f, t in zip(FEATURES, theta)}
