"""Latency cost model: a component's latency on a device's NPU, estimated from the compiled graph itself.

Hexagon devices (htp family) are estimated by the model fitted on Qualcomm AI Hub's published latencies of ~60
rebuilt public models (fusionc.analysis.costfit; coefficients in costmodel_params.json, fitted by
benchmarks/costmodel_fit.py, held-out errors in benchmarks/results/costmodel_fit.json and the README). The roofline
below serves Apple's Neural Engine, and Hexagon only when no fitted coefficients exist; the Snapdragon lines of the
table below are the roofline's, kept for the record (no Hexagon figure is calibrated on any more: role H).

Why our own model: no vendor tool estimates Apple Neural Engine or Hexagon latency off-device, and what users need
from `fusionc bench` is a ranking of backends, compression levels and step counts against a time budget, with an
honest error bar. The model is a per-op roofline with a fixed launch cost, fed by fusionc.analysis.graph_stats:

    t(op)  = max(t_compute, t_memory) + overhead                      (free ops: 0, layout ops: t_memory + overhead)
    t_compute = MACs / (peak(precision) * eff[kind]) + vector_elems / (peak(precision) * VECTOR_FRACTION)
    t_memory  = (weight bytes at the deployed precision + activation bytes * ACT_TRAFFIC) / bandwidth
    fallback ops (not supported on the NPU) run on the CPU at CPU_FALLBACK_MACS_PER_S plus two NPU<->CPU switches.

- weight compression: float weights are read at the precision the backend stores them (fp16 on the ANE, int8 for
  QNN W8A16); weights already compressed in the graph (int8/int4 DequantizeLinear, palettized LUT indices) are read
  at their stored size, or at `weight_bits` when given (Apple's 6-bit palettes are stored in uint8 indices).
- precision: fp16 uses the fp16 peak; W8A16 the int8 peak at half rate (16-bit activations); W8A8 the int8 peak.
- attention form: `original` graphs materialize each S x S score matrix in DRAM (charged in full), `split_einsum`
  and fused SDPA keep it on chip (charged like any activation).
- kind efficiencies (conv/linear share `eff_mac`, `eff_attention`) and `overhead` are fitted per NPU family (ane,
  htp) on published latencies (CALIBRATION), in log space with a weak pull towards the priors; other devices of a
  family scale by their peak TOPS and bandwidth (fusionc.core.devices). `calibrate()` refits them from the stored
  reference-graph statistics (benchmarks/results/reference_graphs.json.gz, written by benchmarks/backends.py).

Error on each published figure (estimate / published - 1; regenerate with `calibration_report()` or
benchmarks/backends.py). C = calibrated on, H = held out. The reference graphs are random-weight exports of the
public configurations (benchmarks/reference_models.py); our SnapFusion UNet is an approximation (743M parameters,
294 GMACs at batch 1, vs 848M in the paper).

    device               role  figure (batch)                                      published  estimate  error
    iphone-14-pro        C     SnapFusion efficient UNet, one CFG step (b2)           230 ms    229 ms    -1%
    iphone-14-pro        C     SnapFusion efficient image decoder                     116 ms    117 ms    +1%
    iphone-14-pro        C     CLIP ViT-L text encoder (SnapFusion)                     4 ms    4.8 ms   +20%
    iphone-14-pro        C     SD-2.1-base UNet (b2, 6-bit, SPLIT_EINSUM_V2; Apple)   372 ms    366 ms    -1%
    mac-m2 (iPad Pro M2) H     SD-2.1-base UNet (b2, 6-bit; Apple)                    326 ms    359 ms   +10%
    iphone-14-pro        H     SD-1.5 VAE decoder (SnapFusion)                        369 ms    399 ms    +8%
    iphone-14-pro        H     SD-1.5 UNet, one CFG step (SnapFusion, "~1.7 s")      1700 ms    395 ms   -77%
    snapdragon-8-gen-2   C     SD-1.5 text encoder / UNet / VAE decoder, W8A16     5.4/112/271  5.3/127/262  -1/+13/-3%
    snapdragon-8-gen-3   H     same                                                3.9/78/208   5.1/105/205  +30/+35/-1%
    snapdragon-8-elite   H     same                                                3.5/68/176   4.9/89/161   +41/+32/-8%

Reading it: within a family and a deployment style the model holds to about 10% on UNets and decoders of the
calibration device and about 35% on held-out devices (the held-out Snapdragons run the UNet faster than their
peak-TOPS ratio predicts: the TOPS are press estimates); small, overhead-dominated graphs (text encoders) are off
by 20-40%. SnapFusion's SD-1.5 UNet figure is far off: SnapFusion reports it as an estimate for a model that does
not fit on the phone, with 64x64 attention that Apple's ANE-optimized layouts avoid; the model follows Apple's
measured SD-2.1 figure instead. Not modelled: GPU backends, thermal throttling, the first (compile/load) call,
int8 activations on the ANE (A17 Pro+), memory limits (checked separately by chunking).
"""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

from fusionc.core.devices import DEVICES, Device
from fusionc.core.errors import BadInputError
from fusionc.analysis.graph_stats import GraphStats, OpStat

VECTOR_FRACTION = 1 / 16  # vector units: elements/s as a fraction of the MAC array's MAC/s (assumption)
ACT_TRAFFIC = 0.25  # share of activation bytes that reach DRAM (the rest stays in on-chip SRAM/TCM; assumption)
CPU_FALLBACK_MACS_PER_S = 20e9  # a mobile big core with NEON fp32 (~ 4 cores x 5 GMAC/s; assumption)
SWITCH_S = 0.5e-3  # one NPU <-> CPU hand-over (sync + copy setup; assumption)

# Ops each NPU compiler does not place on the NPU (they fall back to the CPU). Deliberately short: the common
# diffusion ops all run on both NPUs; these are the ones that appear in unoptimized exports.
FALLBACK_OPS: dict[str, set[str]] = {
    "ane": {"NonZero", "Loop", "If", "Scan", "ScatterND", "ScatterElements", "TopK", "Mod", "Range", "CumSum"},
    "htp": {"NonZero", "Loop", "If", "Scan", "Range", "CumSum", "Mod"},
}

# precision -> (peak key in Device.peak_tops, rate factor, float weight bits, activation bytes)
PRECISIONS: dict[str, tuple[str, float, float, float]] = {
    "fp32": ("fp32", 1.0, 32, 4),
    "fp16": ("fp16", 1.0, 16, 2),
    "w8a16": ("int8", 0.5, 8, 2),
    "w8a8": ("int8", 1.0, 8, 1),
    "w4a16": ("int8", 0.5, 4, 2),
}
DEFAULT_PRECISION = {"ane": "fp16", "htp": "w8a16", "cpu": "fp32"}
# the precisions a QNN HTP build runs (no fp32) -> the fitted coefficient group (w4a16: w8a16's, at 4-bit weights)
HEXAGON_GROUPS = {"fp16": "float", "w8a16": "w8a16", "w8a8": "w8a8", "w4a16": "w8a16"}
# what a Hexagon estimate is for unless asked otherwise: QNN running the build's context binary (model_ctx_qnn.bin),
# the runtime of AI Hub's and Qualcomm's published Stable Diffusion figures; "onnxruntime" (the build's
# model_ctx.onnx through ONNX Runtime's QNN EP, how `fusionc bench` times a phone) is the other (costfit.QNN_RUNTIMES)
DEFAULT_QNN_RUNTIME = "context-binary"


@dataclass(frozen=True)
class FamilyParams:
    eff_conv: float  # share of the peak MAC rate reached by convolutions
    eff_linear: float  # by weight matmuls (linear layers, 1x1 projections written as MatMul/Gemm)
    eff_attention: float  # by activation x activation matmuls (attention)
    overhead_s: float  # fixed cost per op launched

    def to_json(self) -> dict[str, float]:
        return asdict(self)


PRIORS = {"ane": FamilyParams(0.5, 0.5, 0.25, 20e-6), "htp": FamilyParams(0.5, 0.5, 0.25, 10e-6)}
# Fitted by calibrate() on CALIBRATION's "C" figures (benchmarks/backends.py --calibrate rewrites these lines).
FAMILY_PARAMS: dict[str, FamilyParams] = {
    "ane": FamilyParams(eff_conv=0.4406, eff_linear=0.2534, eff_attention=0.2127, overhead_s=1.676e-06),
    "htp": FamilyParams(eff_conv=0.9016, eff_linear=1.0, eff_attention=0.551, overhead_s=8.77e-06),
}
# Families no published figure calibrates: phone CPUs under ONNX Runtime (nobody publishes SD latency on them).
# Priors, not fits: MLAS GEMM/conv kernels reach about half the SIMD peak on large shapes; a CPU op launch costs
# a few microseconds. Estimates for `cpu` devices carry that uncertainty (see benchmarks/ort_cpu.py for the
# measured host figure against the `cpu` profile's estimate).
UNFITTED_PARAMS: dict[str, FamilyParams] = {
    "cpu": FamilyParams(eff_conv=0.5, eff_linear=0.5, eff_attention=0.35, overhead_s=5e-06),
}


@dataclass(frozen=True)
class Published:
    """One published on-device latency of a component whose architecture we can rebuild."""

    graph: str  # reference graph (benchmarks/reference_models.py)
    device: str
    latency_ms: float
    source: str
    role: str  # C (calibrated on) | H (held out)
    batch: int = 1
    precision: str | None = None
    weight_bits: float | None = None
    attention_form: str | None = None  # how the publisher deployed attention, when it differs from our export


CALIBRATION: list[Published] = [
    # SnapFusion (Li et al., NeurIPS 2023, arXiv 2306.00980) Tab. 1, iPhone 14 Pro, Core ML: efficient UNet 230 ms
    # per step, efficient image decoder 116 ms, CLIP text encoder 4 ms. The table counts the text encoder twice
    # (classifier-free guidance) and 8 x 230 ms of UNet in its 1.96 s total, so we read one step as one UNet call
    # at batch 2 (cond + uncond).
    Published("snapfusion_unet", "iphone-14-pro", 230, "SnapFusion Tab. 1 (arXiv 2306.00980)", "C", batch=2),
    Published("snapfusion_vae_decoder", "iphone-14-pro", 116, "SnapFusion Tab. 1", "C"),
    Published("clip_text_encoder", "iphone-14-pro", 4, "SnapFusion Tab. 1", "C"),
    # apple/ml-stable-diffusion README, iOS 17 benchmark (Aug 2023): stable-diffusion-2-1-base, iPhone 14 Pro Max
    # (A16), CPU_AND_NE, SPLIT_EINSUM_V2, 2.69 iter/s; one iteration = one UNet call at batch 2 (classifier-free
    # guidance), weights 6-bit palettized in that benchmark.
    Published("sd21base_unet", "iphone-14-pro", 1000 / 2.69, "apple/ml-stable-diffusion README (iPhone 14 Pro Max)",
              "C", batch=2, weight_bits=6, attention_form="split_einsum"),
    # same table, iPad Pro (M2), 3.07 iter/s: held out (another device of the family).
    Published("sd21base_unet", "mac-m2", 1000 / 3.07, "apple/ml-stable-diffusion README (iPad Pro M2)", "H",
              batch=2, weight_bits=6, attention_form="split_einsum"),
    # SnapFusion Tab. 1, Stable Diffusion v1.5 on iPhone 14 Pro: UNet ~1.7 s per step (their estimate), VAE decoder
    # 369 ms. Held out. (Recalled from the paper's table; the stored copies we could search do not show it.)
    Published("sd15_unet", "iphone-14-pro", 1700, "SnapFusion Tab. 1 (SD-v1.5 baseline)", "H", batch=2),
    Published("sd_vae_decoder", "iphone-14-pro", 369, "SnapFusion Tab. 1 (SD-v1.5 baseline)", "H"),
    # Qualcomm AI Hub, Stable-Diffusion-v1.5 W8A16, QNN context binary: quic/ai-hub-models
    # qai_hub_models/models/stable_diffusion_v1_5/perf.yaml (commit 4341d5d): Samsung Galaxy S23 (8 Gen 2) text
    # encoder 5.413 ms, UNet 111.871 ms, VAE decoder 271.182 ms; Galaxy S24 (8 Gen 3) 3.909 / 78.019 / 207.636;
    # Snapdragon 8 Elite QRD 3.501 / 67.577 / 175.815.
    Published("clip_text_encoder", "snapdragon-8-gen-2", 5.413, "Qualcomm AI Hub perf.yaml (Galaxy S23)", "H"),
    Published("sd15_unet", "snapdragon-8-gen-2", 111.871, "Qualcomm AI Hub perf.yaml (Galaxy S23)", "H"),
    Published("sd_vae_decoder", "snapdragon-8-gen-2", 271.182, "Qualcomm AI Hub perf.yaml (Galaxy S23)", "H"),
    Published("clip_text_encoder", "snapdragon-8-gen-3", 3.909, "Qualcomm AI Hub perf.yaml (Galaxy S24)", "H"),
    Published("sd15_unet", "snapdragon-8-gen-3", 78.019, "Qualcomm AI Hub perf.yaml (Galaxy S24)", "H"),
    Published("sd_vae_decoder", "snapdragon-8-gen-3", 207.636, "Qualcomm AI Hub perf.yaml (Galaxy S24)", "H"),
    Published("clip_text_encoder", "snapdragon-8-elite", 3.501, "Qualcomm AI Hub perf.yaml (8 Elite QRD)", "H"),
    Published("sd15_unet", "snapdragon-8-elite", 67.577, "Qualcomm AI Hub perf.yaml (8 Elite QRD)", "H"),
    Published("sd_vae_decoder", "snapdragon-8-elite", 175.815, "Qualcomm AI Hub perf.yaml (8 Elite QRD)", "H"),
]

REFERENCE_GRAPHS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "reference_graphs.json.gz"
# the SD-1.5 components as a QNN build sees them (after the QNN target's passes, with graph structure), stored by
# benchmarks/latency_graphs.py beside the graphs the Hexagon model is fitted on: what Hexagon figures are estimated from
QNN_GRAPHS = REFERENCE_GRAPHS.with_name("latency_features.json.gz")
QNN_REFERENCE = {"clip_text_encoder@b1": "stable_diffusion_v1_5/text_encoder", "sd15_unet@b1": "stable_diffusion_v1_5/unet",
                 "sd_vae_decoder@b1": "stable_diffusion_v1_5/vae_decoder"}


@dataclass
class Estimate:
    device: str
    backend: str  # e.g. coreml/ne, qnn/htp
    precision: str
    latency_s: float
    compute_s: float
    memory_s: float
    overhead_s: float
    fallback_s: float
    fallback_ops: dict[str, int] = field(default_factory=dict)
    bound: str = "compute"  # which term dominates the total
    weight_bytes: float = 0.0  # as read on the device
    macs: int = 0
    model: str = "roofline"  # roofline (module docstring) | fitted (fusionc.analysis.costfit on AI Hub latencies)
    # fitted estimates: [low, high] seconds holding the published latency for range_coverage of the fit's
    # cross-validated training rows (models it had not seen); None for the roofline, which has no such measure
    range_s: list[float] | None = None
    range_coverage: float | None = None
    # fitted estimates: the runtime the figure is for (costfit.QNN_RUNTIMES: QNN running the context binary, or
    # ONNX Runtime's QNN EP running the build's EP-context model); None for the roofline
    runtime: str | None = None
    # fitted estimates: where the graph lies beyond every graph the fit was trained on (costfit.outside_training):
    # the estimate extrapolates there; [] inside the training range and for the roofline
    outside_training: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def backend_of(device: Device) -> str:
    return f"{device.target}/{device.npu}"


def estimate(stats: GraphStats, device: Device, precision: str | None = None, weight_bits: float | None = None,
             attention_form: str | None = None, params: FamilyParams | None = None,
             runtime: str = "qnn", qnn_runtime: str = DEFAULT_QNN_RUNTIME) -> Estimate:
    """Estimated latency of one call of the graph behind `stats` on `device`'s NPU.

    Hexagon devices use the model fitted on AI Hub's published latencies (fusionc.analysis.costfit, coefficients per
    chipset and precision), for the runtime `qnn_runtime` (a key of costfit.QNN_RUNTIMES); Apple devices, and any
    call that passes roofline `params`, use the roofline below.
    """
    if params is None and device.family == "htp":
        theta = fitted_coefficients(device.name, precision or DEFAULT_PRECISION["htp"], runtime)
        if theta is not None:
            return _fitted_estimate(stats, device, precision or DEFAULT_PRECISION["htp"], weight_bits, theta,
                                    qnn_runtime if runtime == "qnn" else None)
    return roofline_estimate(stats, device, precision, weight_bits, attention_form, params)


def check_qnn_runtime(qnn_runtime: str | None, devices: Iterable[Device], remedy: str) -> None:
    """--qnn-runtime names the runtime of a Hexagon estimate: refused when no Hexagon profile is estimated
    (`remedy`: what the command's user can do instead, e.g. "add a Snapdragon --device")."""
    if qnn_runtime is not None and not any(d.family == "htp" for d in devices):
        raise BadInputError(f"--qnn-runtime {qnn_runtime}: no Hexagon device is estimated, so it has no effect; "
                            f"{remedy} or drop it")


def extrapolation_lines(rows: Iterable[dict[str, Any]]) -> list[str]:
    """One line per component and precision whose Hexagon estimate lies beyond every training graph of the fit
    (rows: {"component", "precision", "outside_training"}, as `fusionc estimate` and `bench` hold them)."""
    seen: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        if r.get("outside_training"):
            seen.setdefault((r["component"], r["precision"]), r["outside_training"])
    return [f"{component} ({precision}): beyond every graph the Hexagon model was fitted on ({'; '.join(why)}): an "
            "extrapolation, see the README's 'Estimating latency without a device'" for (component, precision), why
            in seen.items()]


_FITTED: dict[str, Any] | None = None


def fitted_coefficients(device_name: str, precision: str, runtime: str = "qnn") -> list[float] | None:
    """The fitted coefficients for a Hexagon chipset (costmodel_params.json), or the pooled ones scaled by the
    chipset's relative speed when the fit had too few rows for it; None without a params file or for unknown chips."""
    global _FITTED
    from fusionc.analysis import costfit

    if _FITTED is None:
        _FITTED = costfit.load_params() if costfit.PARAMS_PATH.exists() else {}
    if not _FITTED:
        return None
    group = HEXAGON_GROUPS.get(precision)
    if group is None:
        raise ValueError(f"no Hexagon coefficients for precision {precision!r}: pick one of {', '.join(HEXAGON_GROUPS)}")
    theta = _FITTED["groups"].get(f"{device_name}|{group}|{runtime}")
    if theta is None and device_name in _FITTED.get("chipset_speed", {}):
        pooled = _FITTED["groups"].get(f"*|{group}|{runtime}")
        theta = [v * _FITTED["chipset_speed"][device_name] for v in pooled] if pooled else None
    return theta


def _fitted_estimate(stats: GraphStats, device: Device, precision: str, weight_bits: float | None,
                     theta: list[float], qnn_runtime: str | None = DEFAULT_QNN_RUNTIME) -> Estimate:
    """`qnn_runtime`: the QNN runtime the figure is for (None: the coefficients are another runtime group's)."""
    from fusionc.analysis import costfit

    if qnn_runtime is not None and qnn_runtime not in costfit.QNN_RUNTIMES:
        raise ValueError(f"unknown QNN runtime {qnn_runtime!r}: pick one of {', '.join(costfit.QNN_RUNTIMES)}")
    fallback = {}
    for op in stats.ops:
        if op.op_type in FALLBACK_OPS["htp"] and op.domain in ("", "ai.onnx"):
            fallback[op.op_type] = fallback.get(op.op_type, 0) + 1
    group = {"fp16": "float", "w4a16": "w4a16"}.get(precision, precision)
    fitted = _FITTED or {}
    names = fitted.get("features", costfit.FEATURES)
    x = costfit.features_from_stats(stats, group, sum(fallback.values()), fitted.get("vtcm_bytes", costfit.VTCM_BYTES))
    if weight_bits is not None:  # e.g. palettized / 4-bit weights: only the weight traffic changes
        x["weight_mb"] *= weight_bits / (costfit.PRECISION_BYTES[group][0] * 8)
    factor = costfit.runtime_factor(fitted, costfit.QNN_RUNTIMES[qnn_runtime]) if qnn_runtime else 1.0
    parts = {k: v * factor / 1000 for k, v in costfit.breakdown(x, theta, names).items()}  # seconds
    share = {c: sum(v for k, v in parts.items() if costfit.TERM_CLASS[k] == c)
             for c in ("compute", "memory", "overhead", "fallback")}
    compute, memory, overhead = share["compute"], share["memory"], share["overhead"]
    est = Estimate(device.name, backend_of(device), precision, compute + memory + overhead + share["fallback"],
                   compute, memory, overhead, share["fallback"], fallback, macs=stats.macs,
                   weight_bytes=x["weight_mb"] * 1e6)
    terms = {"compute": compute, "memory": memory, "overhead": overhead, "fallback": share["fallback"]}
    est.bound = max(terms, key=terms.get)
    est.model = "fitted"
    est.runtime = qnn_runtime
    est.outside_training = costfit.outside_training(x, group, fitted)
    if fitted.get("interval"):
        est.range_s = [est.latency_s * f for f in costfit.interval_of(fitted["interval"], device.name)]
        est.range_coverage = fitted["interval"]["coverage"]
    return est


def roofline_estimate(stats: GraphStats, device: Device, precision: str | None = None,
                      weight_bits: float | None = None, attention_form: str | None = None,
                      params: FamilyParams | None = None) -> Estimate:
    """The per-op roofline of the module docstring (Apple's ANE; Hexagon devices without fitted coefficients)."""
    family = device.family
    params = params or FAMILY_PARAMS.get(family) or UNFITTED_PARAMS[family]
    precision = precision or DEFAULT_PRECISION[family]
    peak_key, rate_factor, float_bits, act_bytes = PRECISIONS[precision]
    if peak_key not in device.peak_tops:  # e.g. w8a16 on an ANE without an int8 path: computes in fp16
        peak_key, rate_factor = ("fp16" if "fp16" in device.peak_tops else "fp32"), 1.0
    rate = device.npu_macs_per_s(peak_key) * rate_factor
    bandwidth = device.memory_bandwidth_gbs * 1e9
    form = attention_form or stats.attention_form
    fallback_set = FALLBACK_OPS.get(family, set())
    total = Estimate(device.name, backend_of(device), precision, 0.0, 0.0, 0.0, 0.0, 0.0, macs=stats.macs)
    for op in stats.ops:
        if op.kind == "free":
            continue
        wbytes = _weight_bytes(op, float_bits, weight_bits)
        total.weight_bytes += wbytes
        act = (op.act_in_elems + op.act_out_elems) * act_bytes
        traffic = act if (op.attention_scores and form == "original") else act * ACT_TRAFFIC
        t_memory = (wbytes + traffic) / bandwidth
        if op.op_type in fallback_set and op.domain in ("", "ai.onnx"):
            t = (op.macs + op.vector_elems) / CPU_FALLBACK_MACS_PER_S + t_memory + 2 * SWITCH_S
            total.fallback_s += t
            total.fallback_ops[op.op_type] = total.fallback_ops.get(op.op_type, 0) + 1
            continue
        eff = {"attention": params.eff_attention, "conv": params.eff_conv}.get(op.kind, params.eff_linear)
        t_compute = (op.macs / (rate * eff) if op.macs else 0.0) + op.vector_elems / (rate * VECTOR_FRACTION)
        if t_compute >= t_memory:
            total.compute_s += t_compute
        else:
            total.memory_s += t_memory
        total.overhead_s += params.overhead_s
    total.latency_s = total.compute_s + total.memory_s + total.overhead_s + total.fallback_s
    terms = {"compute": total.compute_s, "memory": total.memory_s, "overhead": total.overhead_s,
             "fallback": total.fallback_s}
    total.bound = max(terms, key=terms.get)
    return total


def _weight_bytes(op: OpStat, float_bits: float, weight_bits: float | None) -> float:
    if weight_bits is not None:  # the publisher's storage, e.g. 6-bit palettes
        return op.params * weight_bits / 8
    return op.float_weight_elems * float_bits / 8 + op.compressed_weight_bytes


# ---- calibration -----------------------------------------------------------------------------------------------

def save_reference_stats(stats: dict[str, GraphStats], path: Path = REFERENCE_GRAPHS) -> None:
    """Store the per-op rows of reference graphs (key "<graph>@b<batch>") so calibrate() runs without exports: the
    fitted model's op fields (costfit.OP_FIELDS), plus the domain and stored weight bytes the roofline reads."""
    from fusionc.analysis import costfit

    fields = [*costfit.OP_FIELDS, "domain", "weight_bytes"]
    payload = {key: {"attention_form": s.attention_form, "fields": fields, "input_elems": s.input_elems,
                     "ops": [[getattr(op, f) for f in fields] for op in s.ops if op.kind != "free"]}
               for key, s in stats.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump(payload, f, separators=(",", ":"))


def stats_of(entry: dict[str, Any]) -> GraphStats:
    """A stored graph ({"fields", "ops": rows in fields order, "attention_form", and "input_elems" or "inputs":
    reference_graphs.json.gz, latency_features.json.gz) as GraphStats; rows without a domain are default-domain ops."""
    from fusionc.analysis import costfit

    ops = [OpStat(name="", **{"domain": "", **dict(zip(entry["fields"], row))}) for row in entry["ops"]]
    return GraphStats(ops, entry.get("attention_form", "none"), input_elems=costfit.stored_input_elems(entry))


def load_reference_stats(path: Path = REFERENCE_GRAPHS) -> dict[str, GraphStats]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        payload = json.load(f)
    return {key: stats_of(entry) for key, entry in payload.items()}


def load_qnn_reference_stats(path: Path = QNN_GRAPHS) -> dict[str, GraphStats]:
    """The reference graphs (QNN_REFERENCE keys) as the QNN pipeline leaves them, where latency_graphs.py stored them."""
    if not path.exists():
        return {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        payload = json.load(f)
    return {key: stats_of(payload[name]) for key, name in QNN_REFERENCE.items() if name in payload}


def _predict(point: Published, stats: dict[str, GraphStats], params: FamilyParams | None = None,
             qnn_stats: dict[str, GraphStats] | None = None) -> float:
    device = DEVICES[point.device]
    key = f"{point.graph}@b{point.batch}"
    graph = (qnn_stats or {}).get(key, stats[key]) if device.family == "htp" else stats[key]
    est = estimate(graph, device, point.precision, point.weight_bits, point.attention_form, params)
    return est.latency_s * 1000


def calibrate(stats: dict[str, GraphStats] | None = None, prior_weight: float = 0.1) -> dict[str, FamilyParams]:
    """Fit FamilyParams per family on the "C" figures: least squares on log(estimate / published)."""
    import numpy as np
    from scipy.optimize import least_squares

    stats = stats or load_reference_stats()
    fitted = {}
    fitted = dict(FAMILY_PARAMS)  # htp: Hexagon devices use the fitted model (fusionc.analysis.costfit) instead
    for family, prior in PRIORS.items():
        points = [p for p in CALIBRATION if p.role == "C" and DEVICES[p.device].family == family]
        if not points:
            continue
        x0 = np.log([prior.eff_conv, prior.eff_linear, prior.eff_attention, prior.overhead_s])

        def residuals(x: np.ndarray) -> np.ndarray:
            params = FamilyParams(*np.exp(x))
            errors = [math.log(_predict(p, stats, params) / p.latency_ms) for p in points]
            return np.concatenate([errors, prior_weight * (x - x0)])

        lower = np.log([0.02, 0.02, 0.005, 1e-7])
        upper = np.log([1.0, 1.0, 1.0, 1e-3])
        result = least_squares(residuals, x0, bounds=(lower, upper))
        fitted[family] = FamilyParams(*(float(f"{v:.4g}") for v in np.exp(result.x)))
    return fitted


def calibration_report(stats: dict[str, GraphStats] | None = None,
                       params: dict[str, FamilyParams] | None = None) -> list[dict[str, Any]]:
    """Every published figure with our estimate and the relative error (role C = calibrated on, H = held out)."""
    stats = stats or load_reference_stats()
    params = params or FAMILY_PARAMS
    qnn_stats = load_qnn_reference_stats()
    rows = []
    for p in CALIBRATION:
        family = DEVICES[p.device].family
        # Hexagon: the AI Hub fit (params None selects it) on the graph a QNN build sees; Apple: the roofline with
        # the family's efficiencies on the plain export
        predicted = _predict(p, stats, params[family] if family == "ane" else None, qnn_stats)
        rows.append(asdict(p) | {"estimate_ms": round(predicted, 2),
                                 "error": round(predicted / p.latency_ms - 1, 3)})
    return rows


__all__ = ["estimate", "Estimate", "FamilyParams", "FAMILY_PARAMS", "CALIBRATION", "calibrate",
           "calibration_report", "replace"]
