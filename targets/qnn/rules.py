"""QNN HTP quantization rules: from calibration statistics and a precision choice to a QdqPlan.

The rules are onnxruntime's QNN ones (`execution_providers.qnn.quant_config`: 16-bit Sigmoid/Tanh get the
fixed encodings the HTP requires; 8-bit weights beside 16-bit activations) plus what fusionc adds:

- data-movement ops (Reshape, Transpose, Slice, Split, Gather, Resize-nearest, ...) share their input's
  encoding, so the HTP never requantizes a copy;
- bounded outputs get fixed encodings (Softmax [0, 1], Sigmoid, Tanh) instead of calibrated ones;
- the second operand of activation x activation MatMuls (attention K^T, V) is symmetric uint16, the form
  the HTP's MatMul wants (the QNN EP would otherwise requantize it: see `symmetric_operands`);
- Conv / ConvTranspose weights are signed symmetric per output channel (the HTP's per-channel form),
  biases int32 at input scale x weight scale; MatMul/Gemm weights signed symmetric per tensor. The QNN EP
  accepts per-channel MatMul weights and a probe graph gains 2 dB with them, but on the tiny UNet the HTP
  emulator runs its attention projections at 10 dB where the CPU gives 52 (found with debug.py): opt-in
  only (`per_channel_matmul`); 16-bit weights are the MatMul remedy instead;
- per-node precision: every node runs at the default activation width unless `node_bits` raises it (the
  remedies put sensitive nodes at 16 bits in w8a8) or `float_nodes` keeps it in float (fp16 on the HTP);
  a tensor crossing widths gets a Convert (DQ->Q) in front of the consumer that needs the other width;
- `weight_bits` per node (16-bit weights for the few layers the remedies find sensitive).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from fusionc.passes.qnn.qdq import Encoding, QdqPlan
from fusionc.targets.qnn.calibrate import TensorStats

ACT_TYPES = {8: ir.DataType.UINT8, 16: ir.DataType.UINT16}
WEIGHT_TYPES = {8: ir.DataType.INT8, 16: ir.DataType.INT16}
PASSTHROUGH = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Split", "Gather", "Expand",
               "DepthToSpace", "SpaceToDepth", "MaxPool", "Tile", "Identity", "GatherND", "GatherElements"}
# inputs that are shapes, indices, axes or attributes-as-inputs: never quantized
NON_DATA = {"Reshape": {1}, "Expand": {1}, "Tile": {1}, "Split": {1}, "Squeeze": {1}, "Unsqueeze": {1},
            "Slice": {1, 2, 3, 4}, "Resize": {1, 2, 3}, "Pad": {1, 3}, "Clip": {1, 2}, "ReduceMean": {1},
            "ReduceSum": {1}, "ReduceMax": {1}, "ReduceMin": {1}, "Gather": {1}, "GatherND": {1},
            "GatherElements": {1}, "TopK": {1}, "Range": {0, 1, 2}, "ConstantOfShape": {0}, "Where": {0},
            "CumSum": {1}, "OneHot": {1}}
NOT_QUANTIZED = {"Shape", "Size", "Cast", "Equal", "Greater", "Less", "ArgMax", "ArgMin", "IsNaN", "IsInf",
                 "NonZero", "Not", "And", "Or", "Constant", "ConstantOfShape", "Range"}
BIAS_SLOTS = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2}


@dataclass
class QuantConfig:
    """What to quantize how. Node names refer to the prepared float model."""

    activation_bits: int = 16
    weight_bits: int = 8
    per_channel: bool = True  # Conv / ConvTranspose weights
    per_channel_matmul: bool = False  # accepted by the HTP, mis-executed by its emulator (see module docstring)
    node_bits: dict[str, int] = field(default_factory=dict)  # node -> activation bits (raise sensitive nodes)
    weight_bits_by_node: dict[str, int] = field(default_factory=dict)  # node -> weight bits
    float_nodes: set[str] = field(default_factory=set)  # kept in float (fp16 on the HTP)
    # how float nodes compute: "fp16" between Casts (the HTP's float islands), "fp32" as they are (a CPU has
    # fast fp32 kernels and no 16-bit integer ones: the onnx target's remedies keep raised nodes in fp32)
    float_islands: str = "fp16"
    fixed_bounded: bool = True  # Softmax/Sigmoid/Tanh fixed encodings
    clip_percentile: dict[str, float] = field(default_factory=dict)  # tensor -> percentile of |x| (8-bit)
    range_overrides: dict[str, tuple[float, float]] = field(default_factory=dict)  # tensor -> (min, max)
    # 16-bit ranges are widened: inputs beyond the calibration set (other prompts, seeds, timesteps) clip
    # otherwise, and clipping costs far more than resolution (3x the range: -9.5 dB of ~96; measured on the
    # built-in UNet, 4 calibration inputs, 12 verification inputs: worst input 27 dB at 1x, 40 dB at 3x)
    range_margin_16bit: float = 3.0  # CompileOptions.qnn_range_margin
    range_margin_8bit: float = 1.0  # the same for 8-bit activations (onnx w8a8: see targets/onnx/quantized.py)
    # only these op types run quantized (None: every op with a float activation, the HTP's whole-graph form).
    # ONNX Runtime's CPU provider has int8 kernels for few ops (QLinearConv, QLinearMatMul/MatMulIntegerToFloat):
    # Q/DQ around the others would only add work, so the onnx target quantizes Conv/MatMul/Gemm alone.
    op_types: frozenset[str] | None = None

    @staticmethod
    def for_precision(precision: str, range_margin_16bit: float = 3.0) -> "QuantConfig":
        if precision == "w8a16":
            return QuantConfig(16, 8, range_margin_16bit=range_margin_16bit)
        if precision == "w8a8":
            return QuantConfig(8, 8, range_margin_16bit=range_margin_16bit)
        raise ValueError(f"no QDQ config for precision {precision}")

    def to_json(self) -> dict:
        return {"activation_bits": self.activation_bits, "weight_bits": self.weight_bits,
                "per_channel": self.per_channel, "node_bits": dict(sorted(self.node_bits.items())),
                "weight_bits_by_node": dict(sorted(self.weight_bits_by_node.items())),
                "float_nodes": sorted(self.float_nodes),
                **({"op_types": sorted(self.op_types)} if self.op_types is not None else {}),
                **({"range_margin_8bit": self.range_margin_8bit} if self.range_margin_8bit != 1.0 else {}),
                **({"float_islands": self.float_islands} if self.float_islands != "fp16" else {}),
                **({"clip_percentile": sorted(set(self.clip_percentile.values()))} if self.clip_percentile else {})}


def is_float(value: ir.Value | None) -> bool:
    return value is not None and value.dtype in (ir.DataType.FLOAT, ir.DataType.FLOAT16)


def is_activation(value: ir.Value) -> bool:
    return is_float(value) and value.const_value is None


def quantized_nodes(graph: ir.Graph, config: QuantConfig) -> list[ir.Node]:
    """Nodes that run quantized: any node with a float activation in or out, except the float ones."""
    out = []
    for node in graph:
        if node.op_type in NOT_QUANTIZED or node.name in config.float_nodes:
            continue
        if config.op_types is not None and node.op_type not in config.op_types:
            continue
        if any(is_activation(v) for v in node.outputs):
            out.append(node)
    return out


def fixed_encoding(node: ir.Node, bits: int) -> Encoding | None:
    """The encoding the HTP requires (Sigmoid/Tanh at 16 bits) or that a bounded output deserves."""
    dtype = ACT_TYPES[bits]
    if node.op_type == "Sigmoid":
        return Encoding.fixed(1.0 / 65536.0, 0, dtype) if bits == 16 else Encoding.fixed(1.0 / 256.0, 0, dtype)
    if node.op_type == "Tanh":
        return Encoding.fixed(1.0 / 32768.0, 32768, dtype) if bits == 16 else Encoding.fixed(1.0 / 128.0, 128, dtype)
    if node.op_type == "Softmax":
        return Encoding.from_range(0.0, 1.0, dtype)
    return None


def _range(name: str, stats: dict[str, TensorStats], config: QuantConfig, bits: int) -> tuple[float, float]:
    if name in config.range_overrides:
        return config.range_overrides[name]
    s = stats.get(name)
    if s is None or not np.isfinite(s.min) or not np.isfinite(s.max):
        raise KeyError(f"no calibration range for tensor '{name}'")
    if bits == 8 and name in config.clip_percentile:
        bound = s.percentile_absmax(config.clip_percentile[name])
        return max(s.min, -bound), min(s.max, bound)
    margin = config.range_margin_16bit if bits == 16 else config.range_margin_8bit
    return s.min * margin if s.min < 0 else s.min, s.max * margin if s.max > 0 else s.max


def symmetric_operands(graph: ir.Graph, float_nodes: set[str] = frozenset()) -> set[str]:
    """Tensors whose encoding should be symmetric: the second operand of MatMuls with two activation
    inputs (K^T and V in attention), traced up through data-movement ops to the op that computes it.

    For uint16 x uint16 MatMuls the QNN EP inserts a Convert of input 1 to a *symmetric* uint16 encoding
    unless it already is one (onnxruntime-qnn matmul_op_builder); that requantization cost the built-in
    text encoder 7 dB on its attention scores (debug.py: CPU 53.5 dB, HTP 46.0 dB)."""
    out: set[str] = set()
    for node in graph:
        if node.op_type != "MatMul" or node.name in float_nodes or not all(is_activation(v) for v in node.inputs[:2]):
            continue
        value = node.inputs[1]
        while value is not None:
            out.add(value.name)
            producer = value.producer()
            if producer is None or producer.op_type not in PASSTHROUGH:
                break
            value = producer.inputs[0]
    return out


def build_plan(model: ir.Model, stats: dict[str, TensorStats], config: QuantConfig, weights: bool = True) -> QdqPlan:
    """The QdqPlan for `model` (a prepared float graph, topologically sorted) under `config`; `weights=False`
    plans the activations only (reads no weight data: the remedies' fake-quant evaluator re-plans per config)."""
    graph = model.graph
    plan = QdqPlan(fp16_nodes=set(config.float_nodes) if config.float_islands == "fp16" else set())
    qnodes = quantized_nodes(graph, config)
    qset = {id(n) for n in qnodes}
    symmetric = symmetric_operands(graph, config.float_nodes)
    bits_of: dict[str, int] = {}  # tensor -> activation bits it is encoded with

    def act_bits(node: ir.Node) -> int:
        return config.node_bits.get(node.name, config.activation_bits)

    for value in graph.inputs:
        if is_activation(value) and any(id(u.node) in qset for u in value.uses()):
            users = [u.node for u in value.uses() if id(u.node) in qset]
            bits = max(act_bits(u) for u in users)
            lo, hi = _range(value.name, stats, config, bits)
            plan.activations[value.name] = Encoding.from_range(lo, hi, ACT_TYPES[bits])
            bits_of[value.name] = bits
    for node in qnodes:
        data_in = [v for i, v in enumerate(node.inputs) if i not in NON_DATA.get(node.op_type, ()) and is_activation(v)]
        passthrough = node.op_type in PASSTHROUGH and data_in and data_in[0].name in plan.activations
        bits = bits_of[data_in[0].name] if passthrough else act_bits(node)
        for out in node.outputs:
            if not is_activation(out) or not out.name:
                continue
            if passthrough:
                plan.activations[out.name] = plan.activations[data_in[0].name]
            else:
                enc = fixed_encoding(node, bits) if config.fixed_bounded or node.op_type in ("Sigmoid", "Tanh") else None
                if enc is None:
                    lo, hi = _range(out.name, stats, config, bits)
                    enc = Encoding.from_range(lo, hi, ACT_TYPES[bits], symmetric=bits == 16 and out.name in symmetric)
                plan.activations[out.name] = enc
            bits_of[out.name] = bits
        if passthrough:
            continue
        for value in data_in:  # produced by a float node (or unplanned): quantize it for this node
            if value.name not in plan.activations:
                lo, hi = _range(value.name, stats, config, bits)
                plan.activations[value.name] = Encoding.from_range(lo, hi, ACT_TYPES[bits])
                bits_of[value.name] = bits
        for value in data_in:  # an input encoded at another width: convert it for this node
            if value.name in bits_of and bits_of[value.name] != bits:
                lo, hi = _range(value.name, stats, config, bits)
                plan.conversions[(value.name, node.name)] = Encoding.from_range(lo, hi, ACT_TYPES[bits])
        if weights:
            _weights(node, plan, config, bits)
    return plan


def _weights(node: ir.Node, plan: QdqPlan, config: QuantConfig, bits: int) -> None:
    op = node.op_type
    wbits = config.weight_bits_by_node.get(node.name, config.weight_bits)
    for index, value in enumerate(node.inputs):
        if value is None or value.const_value is None or not is_float(value):
            continue
        if index in NON_DATA.get(op, ()) or BIAS_SLOTS.get(op) == index:
            continue
        array = value.const_value.numpy()
        if op in ("Conv", "ConvTranspose") and index == 1:
            axis = 0 if op == "Conv" else 1
            enc = Encoding.symmetric_per_channel(array, axis, WEIGHT_TYPES[wbits]) if config.per_channel else \
                Encoding.from_range(array.min(), array.max(), WEIGHT_TYPES[wbits], symmetric=True)
        elif op in ("MatMul", "Gemm") and index == 1 and array.ndim == 2 and config.per_channel_matmul:
            trans_b = op == "Gemm" and node.attributes.get("transB") is not None and node.attributes["transB"].as_int()
            axis = 0 if trans_b else 1  # the output-channel axis of the weight
            enc = Encoding.symmetric_per_channel(array, axis, WEIGHT_TYPES[wbits])
        elif op in ("MatMul", "Gemm", "LayerNormalization", "GroupNormalization", "InstanceNormalization") \
                and index == 1:
            enc = Encoding.from_range(array.min(), array.max(), WEIGHT_TYPES[wbits], symmetric=True)
        else:  # constant operands (Add/Mul/Concat/Where, norm biases, embedding tables): activation width
            enc = Encoding.from_range(array.min(), array.max(), ACT_TYPES[bits])
        plan.weights[(node.name, index)] = enc
    slot = BIAS_SLOTS.get(op)
    if slot is not None and len(node.inputs) > slot and node.inputs[slot] is not None \
            and node.inputs[slot].const_value is not None:
        w_enc = plan.weights.get((node.name, 1))
        x_enc = plan.activations.get(node.inputs[0].name) if node.inputs[0] is not None else None
        if w_enc is None or x_enc is None:
            return
        x_enc = plan.conversions.get((node.inputs[0].name, node.name), x_enc)
        # int32 bias at scale s_x*s_w: with 16-bit weights s_w is small enough for |b|/scale to pass 2^31;
        # widen those weight scales just enough (ORT's quantizer does the same), a negligible weight loss
        bias = np.abs(node.inputs[slot].const_value.numpy().astype(np.float64))
        need = bias / (float(x_enc.scale) * 0.99 * np.iinfo(np.int32).max)
        if np.any(need > w_enc.scale):
            widened = np.maximum(w_enc.scale.astype(np.float64), need if w_enc.axis is not None else need.max())
            w_enc = Encoding(w_enc.dtype, widened.astype(np.float32), w_enc.zero_point, w_enc.axis)
            plan.weights[(node.name, 1)] = w_enc
        scale = (x_enc.scale.astype(np.float64) * w_enc.scale.astype(np.float64)).astype(np.float32)
        axis = 0 if scale.ndim else None
        plan.weights[(node.name, slot)] = Encoding(ir.DataType.INT32, scale, np.zeros(scale.shape, np.int32), axis)
