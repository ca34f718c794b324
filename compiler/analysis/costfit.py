"""The fitted NPU latency model: per-component features of a graph, and per-chipset coefficients fitted on them.

A component's latency on one chipset, precision and runtime is modelled as a sum of work terms, each divided by
a throughput the fit learns for that chipset and precision (non-negative least squares on relative error):

    t = sum_j  theta[chipset, precision, runtime][j] * x_j      (x runtime_factor for PRECOMPILED_QNN_ONNX)

    x_j (FEATURES)     what it stands for
    gmacs              every MAC                          -> 1 / shared MAC throughput
    conv_gmacs         convolution MACs                   -> extra cost per conv MAC (>= 0, pulled towards 0)
    linear_gmacs       weight matmul MACs (LSTM/GRU too)  -> extra cost per matmul MAC (idem)
    attn_gmacs         activation x activation MACs       -> extra cost per attention MAC (idem)
    lowint_conv_gmacs  MACs of convolutions with few MACs per output (depthwise, tiny kernels: < LOWINT_MACS
                       per output element)                -> extra cost per MAC of a memory-bound conv (idem)
    vector_g           elementwise / norm / softmax work  -> 1 / vector throughput
    special_g          elements through softmax, normalizations and transcendental activations (SPECIAL_OPS: exp,
                       erf, division, multi-pass reductions), already in vector_g -> extra cost per such element
    layout_g           elements moved by layout ops, Concat left out -> 1 / data-movement rate. Every Concat is
                       free: cross-validation chose it (README step (16)); the reason, that its producers can write
                       straight into their slices of its output (Hexagon keeps activations in blocks of 32 channels,
                       and a dense block's or an Inception block's branches fill whole blocks), is a hypothesis
    norm_g             elements out of LayerNormalization ops, already in vector_g and special_g -> extra cost per
                       element of a layer norm (two reductions over a row, then a scale: a transformer's per-token cost)
    permute_rows_g     elements out of Transposes that keep the last axis in place but are not a rank-4
                       channels-first <-> channels-last permute (graph_stats.transpose_form keeps_last), already in
                       layout_g -> extra cost per element of a head merge or a window partition: rows of the last
                       axis move whole (a channels-last NPU makes the layout permutes anyway). A head split read only
                       by MatMuls (graph_stats.feeds_matmul, directly or through a scalar scale) is not charged: the
                       MatMul reads its operand strided (README step (13))
    permute_last_g     elements out of Transposes that move the last axis (moves_last), already in layout_g -> extra
                       cost per element of K^T or a [C, HW] -> [HW, C] flatten: every element is transposed
    weight_mb          weights at the deployed precision  -> 1 / DRAM bandwidth for weights
    spill_mb           activation bytes of ops whose tensors do not fit the NPU's local memory (vtcm_bytes)
    act_mb             activation bytes of every op       -> 1 / on-chip activation bandwidth
    input_mb           the graph's inputs as fp32 (elements x 4 bytes, whatever their dtype: token ids too) -> per-call
                       cost of copying them into the NPU's
                       buffers and converting them (to fp16 or integers): a fixed cost that grows with the inputs
                       (README step (17))
    kilo_ops           ops launched (non-free; a recurrent op counts RECURRENT_LAUNCHES_PER_STEP per timestep and
                       direction: the NPU unrolls it)     -> per-op overhead
    fused_kilo_ops     the same, with the ops of one type that read the same input (graph_stats.siblings: the 1x1
                       and 3x3 convolutions of a fire module, an Inception block's branch heads, Q/K/V projections)
                       counted as one launch: horizontal fusion -> per-op overhead of a compiler that fuses them
    path_kilo_ops      ops on the graph's longest path (graph_stats.level), recurrent launches added: parallel
                       branches that overlap                -> per-op overhead paid in sequence only
    fallback_layers    layers placed on the CPU or GPU    -> cost of one fallback + its hand-overs
    one                a fixed cost per call

Which of the optional terms (lowint_conv_gmacs, act_mb, special_g) a fit uses, which op count carries the per-op
overhead (OPS_TERMS), and the local-memory size that decides what spills, are modelling choices made by grouped
k-fold cross-validation over the training models only (benchmarks/costmodel_fit.py); the params file records the
choice (`features`, `vtcm_bytes`) and every prediction reads it from there.

The features come from fusionc.analysis.graph_stats rows (the compiled graph at batch 1, or the batch asked for).
The coefficients are fitted by benchmarks/costmodel_fit.py on Qualcomm AI Hub's published latencies and stored in
costmodel_params.json beside this module (fitted on the training split of models only, so the held-out errors
reported beside it describe exactly the model that ships). Fallback layers are known for the published rows
(AI Hub's layer counts); for a new graph they are the ops the NPU compiler is known not to place
(costmodel.FALLBACK_OPS). Rows that ran wholly on the CPU or GPU (no layer on the NPU) are not NPU latencies and
are left out of the fit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

# every term the model can use; a fit uses BASE_FEATURES plus the optional ones cross-validation keeps
FEATURES = ("gmacs", "conv_gmacs", "linear_gmacs", "attn_gmacs", "lowint_conv_gmacs", "vector_g", "special_g",
            "layout_g", "norm_g", "permute_rows_g", "permute_last_g", "weight_mb", "spill_mb", "act_mb", "input_mb",
            "kilo_ops", "fused_kilo_ops", "path_kilo_ops", "fallback_layers", "one")
OPTIONAL_FEATURES = ("lowint_conv_gmacs", "act_mb", "special_g")
# how ops are counted for the per-op overhead: one of these takes kilo_ops' place in a fit (cross-validation chooses)
OPS_TERMS = ("kilo_ops", "fused_kilo_ops", "path_kilo_ops")
# vector ops that are not one cheap pass per element on an NPU's vector unit: softmax and normalizations (reductions
# over a row, then a second pass), and activations built on exp / erf / division
SPECIAL_OPS = frozenset({"Softmax", "LogSoftmax", "LayerNormalization", "GroupNormalization", "InstanceNormalization",
                         "RMSNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization", "Gelu",
                         "FastGelu", "Erf", "Sigmoid", "HardSigmoid", "HardSwish", "Swish", "Silu", "Tanh", "Exp",
                         "Log", "Div", "Sqrt", "Pow", "Reciprocal", "Mish", "Softplus", "Elu"})
BASE_FEATURES = tuple(f for f in FEATURES if f not in OPTIONAL_FEATURES and f not in OPS_TERMS[1:])
# the per-kind MAC terms are extra costs on top of the shared `gmacs` rate: pulled to 0 unless the data needs them,
# so a kind that few training graphs have (attention in a CNN-heavy set) falls back to the shared rate
EXTRA_TERMS = ("conv_gmacs", "linear_gmacs", "attn_gmacs", "lowint_conv_gmacs")
# Transpose form (graph_stats.transpose_form) -> the term its elements are charged to: all but the layout permutes
# (nchw_nhwc) and the unknown ("": a row stored without the form). Cross-validated, one term for both scored 16.94 and
# these two 16.60 under step (9)'s choices; 17.03 against 16.49 under the refit's (README step (10)), 17.33 against
# 16.18 under step (13)'s
PERMUTE_FORMS = {"keeps_last": "permute_rows_g", "moves_last": "permute_last_g"}
# which part of an estimate each term is (costmodel.Estimate: compute / memory / overhead / fallback)
TERM_CLASS = {"gmacs": "compute", "conv_gmacs": "compute", "linear_gmacs": "compute", "attn_gmacs": "compute",
              "lowint_conv_gmacs": "compute", "vector_g": "compute", "special_g": "compute", "layout_g": "compute",
              "norm_g": "compute", "permute_rows_g": "compute", "permute_last_g": "compute", "weight_mb": "memory",
              "spill_mb": "memory", "act_mb": "memory", "input_mb": "overhead", "kilo_ops": "overhead",
              "fused_kilo_ops": "overhead", "path_kilo_ops": "overhead", "one": "overhead", "fallback_layers": "fallback"}
VTCM_BYTES = 8 << 20  # Hexagon v73+ TCM is 8 MB (Qualcomm QNN HTP docs: "VTCM size 8 MB" on SM8550/SM8650/SM8750)
# a convolution doing fewer MACs than this per output element (depthwise 3x3: 9) is bound by data movement
LOWINT_MACS = 32
# precision -> (weight bytes per parameter, activation bytes per element)
PRECISION_BYTES = {"float": (2.0, 2.0), "w8a16": (1.0, 2.0), "w8a8": (1.0, 1.0), "w4a16": (0.5, 2.0)}
RUNTIME_GROUPS = {"QNN_CONTEXT_BINARY": "qnn", "QNN_DLC": "qnn", "QNN": "qnn", "PRECOMPILED_QNN_ONNX": "qnn",
                  "ONNX": "onnx", "TFLITE": "tflite"}
# a runtime of the qnn group that does not run the context the way the group's coefficients describe (QNN itself
# running a context binary or a DLC): AI Hub's PRECOMPILED_QNN_ONNX is an EP-context .onnx run by ONNX Runtime's QNN
# EP (what a fusionc qnn build's model_ctx.onnx is). Its latency is the context binary's times a factor measured on
# the training rows that time one graph both ways (benchmarks/costmodel_fit.py, runtime_factors); `fusionc estimate
# --qnn-runtime` picks one of QNN_RUNTIMES
QNN_RUNTIMES = {"context-binary": "QNN_CONTEXT_BINARY", "onnxruntime": "PRECOMPILED_QNN_ONNX"}
FACTORED_RUNTIMES = {"PRECOMPILED_QNN_ONNX": "QNN_CONTEXT_BINARY"}  # runtime -> the runtime its factor is relative to
PARAMS_PATH = Path(__file__).resolve().parent / "costmodel_params.json"
OP_FIELDS = ("op_type", "kind", "macs", "vector_elems", "params", "float_weight_elems", "compressed_weight_bytes",
             "act_in_elems", "act_out_elems", "attention_scores", "timesteps", "level", "siblings", "transpose_form",
             "permute_rank", "permute_run", "feeds_matmul", "fed_by_matmul", "output_elems")
# a recurrent op (LSTM/GRU/RNN) runs one small launch group per timestep and direction (graph_stats.timesteps): QNN's
# layer count for Sequencer2D is 5,224 on the 8 Gen 3 (AI Hub, QNN_DLC) for 410 ops in our graph, 36 of them LSTMs
# with 1,408 direction-steps between them: (5224 - 374) / 1408 = 3.4 launched layers per direction-step
RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})
RECURRENT_LAUNCHES_PER_STEP = 3.4


def precision_group(precision: str) -> str:
    """AI Hub's precision labels -> the fitted groups (float = fp16 on the HTP; a mixed label goes with its base
    precision here, but the fit leaves mixed rows out: benchmarks/costmodel_fit.py, mixed_precision)."""
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
                       fields: Sequence[str] = OP_FIELDS, vtcm_bytes: float = VTCM_BYTES,
                       input_elems: float = 0.0) -> dict[str, float]:
    """The model's features of one graph, from graph_stats op rows (lists in `fields` order). `vtcm_bytes`: the
    local memory an op's activations must fit in not to spill (the fitted params record the value to use);
    `input_elems`: the graph inputs' elements (GraphStats.input_elems)."""
    index = {f: i for i, f in enumerate(fields)}
    form_column = index.get("transpose_form")  # rows stored before graph_stats recorded it: no permute terms
    wbytes, abytes = PRECISION_BYTES[precision_group(precision) if precision not in PRECISION_BYTES else precision]
    x = dict.fromkeys(FEATURES, 0.0)
    longest = 0
    x["largest_op_act_mb"] = 0.0  # not a term: how far a graph lies from the training graphs (outside_training)
    for row in rows:
        kind = row[index["kind"]]
        if kind == "free":
            continue
        macs = row[index["macs"]]
        act = (row[index["act_in_elems"]] + row[index["act_out_elems"]]) * abytes
        x["gmacs"] += macs / 1e9
        if kind == "conv":
            x["conv_gmacs"] += macs / 1e9
            if macs < LOWINT_MACS * max(row[index["act_out_elems"]], 1):
                x["lowint_conv_gmacs"] += macs / 1e9
        elif kind == "linear":
            x["linear_gmacs"] += macs / 1e9
        elif kind == "attention":
            x["attn_gmacs"] += macs / 1e9
        elif kind == "layout" and row[index["op_type"]] != "Concat":
            x["layout_g"] += row[index["act_out_elems"]] / 1e9
        x["vector_g"] += row[index["vector_elems"]] / 1e9
        if row[index["op_type"]] in SPECIAL_OPS:
            x["special_g"] += row[index["vector_elems"]] / 1e9
        if row[index["op_type"]] == "LayerNormalization":
            x["norm_g"] += row[index["act_out_elems"]] / 1e9
        if form_column is not None and row[form_column] in PERMUTE_FORMS and not read_by_matmul(row, index):
            x[PERMUTE_FORMS[row[form_column]]] += row[index["act_out_elems"]] / 1e9
        compressed = row[index["compressed_weight_bytes"]]
        x["weight_mb"] += (row[index["float_weight_elems"]] * wbytes + min(compressed, row[index["params"]] * wbytes)) / 1e6
        x["act_mb"] += act / 1e6
        x["largest_op_act_mb"] = max(x["largest_op_act_mb"], act / 1e6)
        if act > vtcm_bytes:
            x["spill_mb"] += act / 1e6
        recurrent = "timesteps" in index and row[index["op_type"]] in RECURRENT_OPS  # older feature files: one op
        launches = row[index["timesteps"]] * RECURRENT_LAUNCHES_PER_STEP if recurrent else 1
        x["kilo_ops"] += 1e-3 * launches
        if "siblings" in index:  # older feature files have no graph structure: both stay 0
            x["fused_kilo_ops"] += 1e-3 * launches / max(row[index["siblings"]], 1)
            x["path_kilo_ops"] += 1e-3 * (launches - 1)  # a recurrent op's extra launches run in sequence
            longest = max(longest, row[index["level"]])
    x["path_kilo_ops"] += 1e-3 * longest
    x["input_mb"] = input_elems * 4 / 1e6
    x["fallback_layers"] = float(fallback_layers)
    x["one"] = 1.0
    return x


def read_by_matmul(row: Sequence[Any], index: dict[str, int]) -> bool:
    """A head split (keeps_last) that only MatMuls read, directly or through a constant scalar scale
    (graph_stats.feeds_matmul 1 or 2): left to the MatMul, not charged to permute_rows_g. Rows stored before
    feeds_matmul was recorded charge every head split, as before."""
    return (row[index["transpose_form"]] == "keeps_last" and "feeds_matmul" in index
            and row[index["feeds_matmul"]] in (1, 2))


def features_from_stats(stats: Any, precision: str, fallback_layers: float = 0.0,
                        vtcm_bytes: float = VTCM_BYTES) -> dict[str, float]:
    """Features of a fusionc.analysis.graph_stats.GraphStats."""
    rows = ([getattr(op, f) for f in OP_FIELDS] for op in stats.ops)
    return features_from_rows(rows, precision, fallback_layers, vtcm_bytes=vtcm_bytes, input_elems=stats.input_elems)


def stored_input_elems(entry: dict[str, Any]) -> int:
    """The input elements of a stored graph: an entry of benchmarks/results/latency_features.json.gz (its input shapes,
    "inputs") or of reference_graphs.json.gz (its "input_elems"). One with neither is refused (KeyError), not counted
    as a graph without inputs."""
    if "input_elems" in entry:
        return int(entry["input_elems"])
    return sum(int(np.prod(shape)) for shape in entry["inputs"].values())


def features_from_entry(entry: dict[str, Any], precision: str, vtcm_bytes: float = VTCM_BYTES) -> dict[str, float]:
    """Features of one stored graph (its op rows, and its inputs as stored_input_elems reads them)."""
    return features_from_rows(entry["ops"], precision, 0.0, entry["fields"], vtcm_bytes, stored_input_elems(entry))


def vector(x: dict[str, float], names: Sequence[str] = FEATURES) -> np.ndarray:
    return np.array([x[f] for f in names], dtype=float)


def fit_group(X: np.ndarray, y: np.ndarray, prior: np.ndarray | None = None, ridge: float | np.ndarray = 0.0,
              iterations: int = 6, absolute: bool = False, floor: np.ndarray | None = None,
              sample_weight: np.ndarray | None = None) -> np.ndarray:
    """Coefficients >= `floor` (default 0) minimising relative error |X theta / y - 1| (IRLS towards an L1 fit).

    `prior` (same shape as theta) with `ridge` > 0 pulls each coefficient towards the pooled fit, so a chipset with
    few rows borrows the shape of the others instead of fitting noise. The pull is measured relative to each
    feature's range in the data, or, with `absolute`, in the coefficient's own units (ms per unit: how the per-kind
    extra MAC costs are held near 0 when the training graphs barely exercise a kind). `floor`: physical lower bounds
    (e.g. weight bytes cannot stream faster than the chipset's DRAM bandwidth); the fit solves for theta - floor.
    `sample_weight`: how much each row counts (normalised to mean 1; default all alike).
    """
    from scipy.optimize import nnls

    floor = np.zeros(X.shape[1]) if floor is None else np.asarray(floor, dtype=float)
    A = X / y[:, None]
    b = 1 - A @ floor  # what the floored terms leave to explain
    scale = np.maximum(np.abs(A).max(axis=0), 1e-12)  # column scaling: nnls is scale-sensitive
    A_s = A / scale
    rows_weight = np.ones(len(y)) if sample_weight is None else sample_weight / np.mean(sample_weight)
    weights = rows_weight.copy()
    theta = floor.copy()
    for _ in range(iterations):
        W = np.sqrt(weights)[:, None]
        lhs, rhs = A_s * W, b * W[:, 0]
        lam = np.sqrt(np.broadcast_to(np.asarray(ridge, dtype=float), (X.shape[1],)) * len(y))
        if lam.any():  # ridge (a scalar or one weight per feature) towards `prior` (zeros when None)
            target = np.maximum((np.zeros(X.shape[1]) if prior is None else prior) - floor, 0)
            if absolute:  # penalty lam * theta_real = lam / scale * theta_scaled
                lhs = np.vstack([lhs, np.diag(lam / scale)])
                rhs = np.concatenate([rhs, lam * target])
            else:
                lhs = np.vstack([lhs, np.diag(lam)])
                rhs = np.concatenate([rhs, lam * target * scale])
        sol, _ = nnls(lhs, rhs, maxiter=50 * X.shape[1])
        theta = floor + sol / scale
        residual = np.abs(A @ theta - 1)
        weights = rows_weight / np.maximum(residual, 0.02)  # IRLS: L2 -> approximately L1 (median-oriented)
    return theta


def extra_ridge(strength: float, names: Sequence[str] = FEATURES) -> np.ndarray:
    """Per-feature ridge weights: `strength` on the per-kind extra MAC terms, 0 elsewhere."""
    return np.array([strength if f in EXTRA_TERMS else 0.0 for f in names])


def load_params(path: Path = PARAMS_PATH) -> dict[str, Any]:
    """The fitted coefficients: {"features": [names], "vtcm_bytes", "groups": {"chipset|precision|runtime":
    [theta per name...]}, "chipset_speed", "interval": the error range of an estimate (interval_of)}."""
    params = json.loads(path.read_text(encoding="utf-8"))
    unknown = set(params["features"]) - set(FEATURES)
    if unknown:
        raise ValueError(f"{path}: unknown cost-model features {sorted(unknown)}; refit with benchmarks/costmodel_fit.py")
    return params


def interval_of(interval: dict[str, Any], chipset: str) -> list[float]:
    """[low, high] factors on an estimate for `chipset`: the published latency of a model the fit never saw lay
    within estimate x [low, high] for interval["coverage"] of the cross-validated training rows (the chipset's own
    factors, else those pooled over every chipset; benchmarks/costmodel_cv.error_interval)."""
    return list(interval["by_chipset"].get(chipset, interval["pooled"]))


# what a graph is compared on with the training graphs: beyond the largest of these a fitted estimate extrapolates
RANGE_TERMS = {"gmacs": ("MACs", "G"), "weight_mb": ("weights", "MB"), "spill_mb": ("spilled activations", "MB"),
               "largest_op_act_mb": ("largest op's activations", "MB"), "input_mb": ("inputs", "MB")}


def training_range(graphs: Iterable[tuple[str, str, dict[str, float]]]) -> dict[str, dict[str, list]]:
    """precision -> term -> [largest value, the graph that has it] over (graph key, precision, features) of the
    training rows."""
    out: dict[str, dict[str, list]] = {}
    for key, precision, x in graphs:
        mine = out.setdefault(precision, {})
        for term in RANGE_TERMS:
            if term not in mine or x[term] > mine[term][0]:
                mine[term] = [round(x[term], 3), key]
    return out


def outside_training(x: dict[str, float], precision: str, params: dict[str, Any]) -> list[str]:
    """Where a graph (features `x` at `precision`) lies beyond every training graph: '... 402 G vs at most 193 G
    (whisper_small/HfWhisperEncoder)', one entry per term; [] inside the range, or without a recorded range."""
    largest = params.get("training_range", {}).get(precision_group(precision), {})
    out = []
    for term, (label, unit) in RANGE_TERMS.items():
        if term in largest and x.get(term, 0.0) > largest[term][0] > 0:
            out.append(f"{label} {_figure(x[term])} {unit} vs at most {_figure(largest[term][0])} {unit} "
                       f"({largest[term][1]})")
    return out


def _figure(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def runtime_factor(params: dict[str, Any], runtime: str) -> float:
    """Latency of `runtime` / the context binary's for the same graph and chipset (1 for QNN's own runtimes, and for
    a params file fitted before runtime factors existed)."""
    return float(params.get("runtime_factors", {}).get(runtime, 1.0))


def predict(x: dict[str, float], theta: Sequence[float], names: Sequence[str] = FEATURES) -> float:
    """Latency in ms of a component with features `x` under coefficients `theta` (ms per unit of each of `names`)."""
    return float(vector(x, names) @ np.asarray(theta, dtype=float))


def breakdown(x: dict[str, float], theta: Sequence[float], names: Sequence[str] = FEATURES) -> dict[str, float]:
    """ms per term; the `bound` of an estimate is the largest."""
    if len(theta) != len(names):
        raise ValueError(f"{len(theta)} coefficients for {len(names)} features")
    return {f: x[f] * t for f, t in zip(names, theta)}
