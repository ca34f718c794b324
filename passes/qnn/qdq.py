"""Q/DQ insertion on onnx_ir from a precomputed plan: the QDQ format that QNN (and other NPU EPs) consume.

Why not onnxruntime.quantization: its quantizer works on an onnx ModelProto (serialized whole, so > 2 GB
models must round-trip through external data and its opset-21 conversion fails on protobuf's 2 GB limit),
and it decides encodings, calibration and insertion in one pass. Here the *plan* (which tensor gets which
encoding, computed by a target's rules from streaming calibration statistics) is separate from the
*rewrite*, which is a plain onnx_ir pass: weights stay lazy until their own turn to be quantized, and the
result is saved with external data like any other model.

    before                                after
    x ──Conv(W, b)── y ──Sigmoid── z      x─Q─DQ─┐
                                          Wq─DQ──Conv─ y ─Q─DQ─ Sigmoid ─ z ─Q─DQ─ (z)
                                          bq─DQ──┘

- `activations[name]`: the encoding of a float value at its producer (Q then DQ right after it; every
  consumer reads the DQ output; a graph output keeps its name on the DQ output).
- `conversions[(name, node)]`: a consumer that reads `name` with another encoding (8 <-> 16 bit): a second
  Q/DQ pair before that consumer only (QNN turns DQ->Q into a Convert op).
- `weights[(node, index)]`: a constant input quantized into a new initializer plus one DQ (per-channel
  when the encoding has an axis; int32 biases use scale = input scale x weight scale, computed by the plan).
- `fp16_nodes`: float islands: the node computes in fp16 between Cast nodes (DQ->Cast->op->Cast->Q).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

QDQ_MIN_OPSET = 21  # 16-bit (u)int Q/DQ in the default domain
TENSOR_KEY = "fusionc.tensor"  # metadata on each Q (activation) / weight DQ: the float tensor it encodes

QUANTIZE_BLOCK = 1 << 22  # elements quantized at a time (Encoding.quantize)

_NP = {ir.DataType.UINT8: np.uint8, ir.DataType.INT8: np.int8, ir.DataType.UINT16: np.uint16,
       ir.DataType.INT16: np.int16, ir.DataType.INT32: np.int32}


@dataclass(frozen=True, eq=False)
class Encoding:
    """Affine integer encoding: real = (q - zero_point) * scale; per-channel along `axis` when set."""

    dtype: ir.DataType
    scale: np.ndarray  # float32, shape () or (C,)
    zero_point: np.ndarray  # integer, same shape as scale
    axis: int | None = None

    @property
    def bits(self) -> int:
        return np.dtype(_NP[self.dtype]).itemsize * 8

    @property
    def qrange(self) -> tuple[int, int]:
        info = np.iinfo(_NP[self.dtype])
        return int(info.min), int(info.max)

    def _bcast(self, array: np.ndarray, rank: int) -> np.ndarray:
        if self.axis is None or array.ndim == 0:
            return array
        shape = [1] * rank
        shape[self.axis] = -1
        return array.reshape(shape)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """The integer tensor of `x`, computed a block of rows at a time: the float64 temporaries of one block,
        not of the whole tensor (an SD3 position table is 226 MB in fp32, 0.9 GB of temporaries at once);
        every element is computed exactly as in one piece."""
        lo, hi = self.qrange
        scale = self._bcast(self.scale.astype(np.float32), x.ndim)
        zp = self._bcast(self.zero_point.astype(np.int64), x.ndim)
        if x.ndim == 0 or x.size <= QUANTIZE_BLOCK:
            return self._quantize_block(x, scale, zp, lo, hi)
        if scale.size == 1 and zp.size == 1:  # one encoding for the whole tensor: any cut of its elements
            flat, out = x.reshape(-1), np.empty(x.size, _NP[self.dtype])
            for start in range(0, x.size, QUANTIZE_BLOCK):
                out[start:start + QUANTIZE_BLOCK] = self._quantize_block(flat[start:start + QUANTIZE_BLOCK], scale,
                                                                         zp, lo, hi)
            return out.reshape(x.shape)
        if x.shape[0] < 2:
            return self._quantize_block(x, scale, zp, lo, hi)
        out = np.empty(x.shape, _NP[self.dtype])
        rows = max(1, QUANTIZE_BLOCK // (x.size // x.shape[0]))
        for start in range(0, x.shape[0], rows):
            block = slice(start, start + rows)
            out[block] = self._quantize_block(x[block], scale[block] if scale.ndim and scale.shape[0] != 1 else scale,
                                              zp[block] if zp.ndim and zp.shape[0] != 1 else zp, lo, hi)
        return out

    def _quantize_block(self, x: np.ndarray, scale: np.ndarray, zp: np.ndarray, lo: int, hi: int) -> np.ndarray:
        q = np.rint(x.astype(np.float32) / scale) + zp
        return np.clip(q, lo, hi).astype(_NP[self.dtype])

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        scale = self._bcast(self.scale.astype(np.float32), q.ndim)
        zp = self._bcast(self.zero_point.astype(np.int64), q.ndim)
        return ((q.astype(np.int64) - zp) * scale).astype(np.float32)

    @staticmethod
    def from_range(rmin: float, rmax: float, dtype: ir.DataType, symmetric: bool = False,
                   min_range: float = 1e-4) -> "Encoding":
        """Per-tensor encoding covering [rmin, rmax] (widened to include 0 and at least min_range)."""
        info = np.iinfo(_NP[dtype])
        rmin, rmax = min(float(rmin), 0.0), max(float(rmax), 0.0)
        if symmetric:
            bound = max(abs(rmin), abs(rmax), min_range / 2)
            if info.min < 0:
                scale, zp = bound / info.max, 0
            else:
                scale, zp = 2 * bound / (info.max - info.min), (info.max + 1) // 2
        else:
            if rmax - rmin < min_range:
                rmax = rmin + min_range
            scale = (rmax - rmin) / (info.max - info.min)
            zp = int(np.clip(np.rint(info.min - rmin / scale), info.min, info.max))
        return Encoding(dtype, np.array(scale, np.float32), np.array(zp, _NP[dtype]))

    @staticmethod
    def fixed(scale: float, zero_point: int, dtype: ir.DataType) -> "Encoding":
        return Encoding(dtype, np.array(scale, np.float32), np.array(zero_point, _NP[dtype]))

    @staticmethod
    def symmetric_per_channel(w: np.ndarray, axis: int, dtype: ir.DataType = ir.DataType.INT8) -> "Encoding":
        """Signed symmetric per-channel weight encoding (zero points 0), one scale per slice of `axis`."""
        info = np.iinfo(_NP[dtype])
        other = tuple(i for i in range(w.ndim) if i != axis)
        bound = np.abs(w).max(axis=other) if other else np.abs(w)
        scale = np.maximum(bound.astype(np.float32), 1e-12) / info.max
        return Encoding(dtype, scale.astype(np.float32), np.zeros(scale.shape, _NP[dtype]), axis)


@dataclass
class QdqPlan:
    activations: dict[str, Encoding] = field(default_factory=dict)
    conversions: dict[tuple[str, str], Encoding] = field(default_factory=dict)  # (value, consumer node)
    weights: dict[tuple[str, int], Encoding] = field(default_factory=dict)  # (node name, input index)
    fp16_nodes: set[str] = field(default_factory=set)  # float islands, computed in fp16 between Casts


def _const(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    value = ir.Value(name=name, const_value=ir.tensor(array, name=name))
    value.shape = ir.Shape(array.shape)
    value.type = ir.TensorType(ir.DataType.from_numpy(array.dtype))
    graph.register_initializer(value)
    return value


def _lazy_quantized(graph: ir.Graph, name: str, enc: Encoding, source: ir.TensorProtocol) -> ir.Value:
    """An initializer `name` whose data is enc.quantize(source), computed on each read and then dropped."""
    def compute() -> ir.Tensor:
        return ir.tensor(enc.quantize(source.numpy()), name=name)

    shape = ir.Shape(source.shape.numpy())
    value = ir.Value(name=name, const_value=ir.LazyTensor(compute, dtype=enc.dtype, shape=shape, name=name))
    value.shape = shape
    value.type = ir.TensorType(enc.dtype)
    graph.register_initializer(value)
    return value


def _encoding_inputs(graph: ir.Graph, base: str, enc: Encoding, cache: dict) -> tuple[ir.Value, ir.Value]:
    key = id(enc)
    if key not in cache:
        cache[key] = (_const(graph, f"{base}_scale", enc.scale.astype(np.float32)),
                      _const(graph, f"{base}_zero_point", enc.zero_point))
    return cache[key]


def _qdq_nodes(graph: ir.Graph, value: ir.Value, enc: Encoding, base: str, cache: dict) -> tuple[list[ir.Node], ir.Value]:
    scale, zp = _encoding_inputs(graph, base, enc, cache)
    attrs = [ir.AttrInt64("axis", enc.axis)] if enc.axis is not None else []
    q = ir.Node("", "QuantizeLinear", [value, scale, zp], attributes=attrs, name=f"{base}_QuantizeLinear")
    q.outputs[0].name = f"{base}_quantized"
    q.outputs[0].dtype = enc.dtype
    q.outputs[0].shape = value.shape
    dq = ir.Node("", "DequantizeLinear", [q.outputs[0], scale, zp], attributes=attrs, name=f"{base}_DequantizeLinear")
    dq.outputs[0].name = f"{base}_dq"
    dq.outputs[0].dtype = ir.DataType.FLOAT
    dq.outputs[0].shape = value.shape
    q.metadata_props[TENSOR_KEY] = value.name
    return [q, dq], dq.outputs[0]


def _cast(value: ir.Value, to: ir.DataType, name: str) -> ir.Node:
    node = ir.Node("", "Cast", [value], attributes=[ir.AttrInt64("to", to.value)], name=name)
    node.outputs[0].name, node.outputs[0].dtype, node.outputs[0].shape = name, to, value.shape
    return node


def _fp16_island(graph: ir.Graph, node: ir.Node) -> None:
    """Run `node` in fp16 between Casts. Without them a float op between DQ and Q is a QDQ node unit to the
    QNN EP and runs quantized anyway; with them the HTP computes it in fp16."""
    for index, value in enumerate(node.inputs):
        if value is None or value.dtype != ir.DataType.FLOAT:
            continue
        if value.const_value is not None:
            array = value.const_value.numpy().astype(np.float16)
            node.replace_input_with(index, _const(graph, f"{value.name}_fp16_{node.name}", array))
            continue
        cast = _cast(value, ir.DataType.FLOAT16, f"{value.name}_to_fp16_{node.name}")
        graph.insert_before(node, cast)
        node.replace_input_with(index, cast.outputs[0])
    for out in node.outputs:
        if out.dtype != ir.DataType.FLOAT:
            continue
        users = list(out.uses())
        back = _cast(out, ir.DataType.FLOAT, f"{out.name}_fp32")
        graph.insert_after(node, back)
        is_output = any(v is out for v in graph.outputs)
        for user, index in users:
            user.replace_input_with(index, back.outputs[0])
        if is_output:
            name = out.name
            out.name, back.outputs[0].name = f"{name}_fp16", name
            graph.outputs[[i for i, v in enumerate(graph.outputs) if v is out][0]] = back.outputs[0]
        out.dtype = ir.DataType.FLOAT16


class InsertQdqPass(ir.passes.InPlacePass):
    """Insert the Q/DQ pairs and quantized weights of a QdqPlan (see the module docstring)."""

    def __init__(self, plan: QdqPlan, lazy_weights: bool = False) -> None:
        """`lazy_weights`: each quantized weight is computed from its float weight when it is read (saved), not
        held in memory: a graph about to be saved with external data then never holds its integer weights
        (2 GB for SD3-medium's transformer in 8 bits); each read quantizes again, so it suits one save."""
        super().__init__()
        self.plan = plan
        self.lazy_weights = lazy_weights

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        plan = self.plan
        if not (plan.activations or plan.weights) or any(TENSOR_KEY in n.metadata_props for n in graph):
            return ir.passes.PassResult(model, modified=False)  # nothing planned, or already quantized
        if model.opset_imports.get("", 0) < QDQ_MIN_OPSET:
            model.opset_imports[""] = QDQ_MIN_OPSET  # callers convert the graph first; Q/DQ need 21 for 16 bit
        cache: dict = {}
        nodes = {node.name: node for node in graph}
        self._weights(graph, cache)
        values = {v.name: v for v in graph.inputs}
        values.update({out.name: out for node in graph for out in node.outputs})
        outputs = {v.name: i for i, v in enumerate(graph.outputs)}
        for name, enc in plan.activations.items():
            value = values.get(name)
            if value is None:
                continue
            users = [(n, i) for n, i in value.uses()]
            new_nodes, dq_out = _qdq_nodes(graph, value, enc, name, cache)
            producer = value.producer()
            if producer is None:
                graph.insert_before(next(iter(graph)), new_nodes)
            else:
                graph.insert_after(producer, new_nodes)
            for user, index in users:
                user.replace_input_with(index, dq_out)
            if name in outputs:  # keep the interface name on the dequantized output
                value.name, dq_out.name = f"{name}_float", name
                graph.outputs[outputs[name]] = dq_out
            values[name] = dq_out
        for (name, consumer), enc in plan.conversions.items():
            node, value = nodes.get(consumer), values.get(name)
            if node is None or value is None:
                continue
            indices = [i for i, inp in enumerate(node.inputs) if inp is value]
            new_nodes, dq_out = _qdq_nodes(graph, value, enc, f"{name}_to_{consumer}", cache)
            new_nodes[0].metadata_props[TENSOR_KEY] = f"{name}@{consumer}"  # a Convert, not a tensor encoding
            graph.insert_before(node, new_nodes)
            for index in indices:
                node.replace_input_with(index, dq_out)
        for node in [n for n in graph if n.name in plan.fp16_nodes]:
            _fp16_island(graph, node)
        return ir.passes.PassResult(model, modified=True)

    def _weights(self, graph: ir.Graph, cache: dict) -> None:
        made: dict[tuple[str, int], ir.Value] = {}
        slots = [(node, i, self.plan.weights[(node.name, i)]) for node in list(graph)
                 for i in range(len(node.inputs)) if (node.name, i) in self.plan.weights]
        for node, index, enc in slots:  # graph order: a shared DQ sits before its first consumer
            node_name = node.name
            value = node.inputs[index]
            if value is None:
                continue
            if value.const_value is None:
                raise ValueError(f"input {index} of {node_name} is not a constant: cannot quantize it as a weight")
            key = (value.name, id(enc))
            if key not in made:
                base = f"{value.name}_{enc.bits}b" if key[0] not in {k[0] for k in made} else f"{value.name}_{node_name}"
                if self.lazy_weights:
                    q = _lazy_quantized(graph, f"{base}_quantized", enc, value.const_value)
                else:
                    q = _const(graph, f"{base}_quantized", enc.quantize(value.const_value.numpy()))
                scale, zp = _encoding_inputs(graph, base, enc, cache)
                attrs = [ir.AttrInt64("axis", enc.axis)] if enc.axis is not None else []
                dq = ir.Node("", "DequantizeLinear", [q, scale, zp], attributes=attrs, name=f"{base}_DequantizeLinear")
                dq.outputs[0].name = f"{base}_dq"
                dq.outputs[0].dtype = ir.DataType.FLOAT
                dq.outputs[0].shape = value.shape
                dq.metadata_props[TENSOR_KEY] = value.name
                graph.insert_before(node, dq)
                made[key] = dq.outputs[0]
            node.replace_input_with(index, made[key])
        for value in list(graph.initializers.values()):
            if not value.uses() and value not in graph.inputs and value not in graph.outputs:
                graph.initializers.pop(value.name)
