"""fp16 safety: find activations that overflow fp16 on real inputs, rescale them into range or keep them in fp32.

fp16 holds |x| <= 65504. Some diffusion graphs exceed it on ordinary inputs (the SD VAE decoder's residual stream
is the known case), and an fp16 build then produces Inf and NaN. We measure, we do not guess: every float value
of the main graph is reduced to max|x| on the component's tuning inputs (ctx.calibration_feeds + selection_feeds,
real denoising trajectories; never the held-out verification set, which then shows whether the margins hold) by
one onnxruntime run of the graph with an Abs -> ReduceMax tap per value (scalars only, so memory
stays that of one inference). Normalizations get a second tap, the centered input max|x - mean|, because a
GroupNorm/LayerNorm computed in fp16 squares it (the ANE form does: passes/ane/norm.py).

Remedies, in order:
1. Rescale (exact, keeps everything on the NPU). A residual stream is linear between normalizations, so dividing
   it by a power of two s changes no result: its sources (Conv/Gemm/MatMul weights and biases, a normalization's
   gamma/beta, added constants) are divided by s, and the normalizations it feeds get epsilon / s^2
   (GN(x/s, eps/s^2) = GN(x, eps); kept >= the smallest fp16 subnormal). The region is the closure over ops that commute with scaling (Add, Concat,
   Reshape, Resize, ...); it fails on a nonlinear op, a graph input or a graph output.

       before                              after (s = 4)
       h = Conv(x, W, b)        1e5        h = Conv(x, W/4, b/4)         2.5e4
       r = Add(h, skip)                    r = Add(h, skip')             (skip' rescaled the same way)
       y = GroupNorm(r, g, be, eps)        y = GroupNorm(r, g, be, eps/16)   (identical y)

   A decomposed RMSNorm (T5: Pow(x, 2) -> ReduceMean -> Add(eps) -> Sqrt -> Reciprocal -> Mul(x, .)) is scale
   invariant in the same way (x/s over sqrt(mean(x^2)/s^2 + eps/s^2)), so it bounds a region like a
   normalization: its eps is divided by s^2 and its squares no longer overflow. A constant a region starts from
   (an embedding table read by Gather) is divided by s.

2. Keep in fp32: what cannot be rescaled is marked node.metadata_props["fusionc.precision"] = "fp32" on the
   producer and every consumer of the overflowing value (the Core ML lowering computes those ops in fp32; on
   the QNN HTP, which has no fp32, they are reported as unresolved).

Mask sentinels (|x| >= 1e30: float32 min/max in attention masks) are left to the targets' mask clamping.
The pass writes its report into model.metadata_props["fusionc.fp16_safety"]; the driver moves it to the manifest.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import onnx_ir as ir

from fusionc.core.memory import MappedTensor, resident_weight_bytes
from fusionc.core.numerics import Feeds

FP16_MAX = 65504.0
FP16_TINY = 6.0e-8  # the smallest fp16 subnormal: a rescaled epsilon stays representable
SQUARE_MAX = math.sqrt(FP16_MAX)  # a centered value above this overflows when squared
SENTINEL = 1e30  # float32 min/max used as "minus infinity" in masks
VALUE_HEADROOM = 4.0  # inputs beyond the verification ones may be larger: keep values under FP16_MAX / 4
CENTERED_HEADROOM = 2.0
PRECISION_KEY = "fusionc.precision"
REPORT_KEY = "fusionc.fp16_safety"
FLOAT_TYPES = {ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE}
MAX_LISTED = 40
RESIDENT_IN_PROTO_BYTES = 256 << 20  # in-memory weights copied into the tapped graph's protobuf (2 GB limit)

# ops that commute with multiplying their data inputs by a scalar: data inputs and outputs scale together
EQUIVARIANT = {"Reshape": (0,), "Transpose": (0,), "Squeeze": (0,), "Unsqueeze": (0,), "Flatten": (0,),
               "Identity": (0,), "Resize": (0,), "Upsample": (0,), "Concat": None, "Slice": (0,), "Split": (0,),
               "Expand": (0,), "Gather": (0,), "MaxPool": (0,), "AveragePool": (0,), "DepthToSpace": (0,),
               "SpaceToDepth": (0,), "Tile": (0,), "Add": None, "Sub": None, "Neg": (0,), "ReduceMean": (0,),
               "ReduceSum": (0,), "Pad": (0,)}
LINEAR = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Mul", "Div"}  # one activation input, constants around it
NORMALIZATIONS = {("fusionc", "GroupNorm"), ("", "LayerNormalization"), ("", "GroupNormalization"),
                  ("", "InstanceNormalization")}


def _key(node: ir.Node) -> tuple[str, str]:
    return ("" if node.domain in ("", "ai.onnx") else node.domain, node.op_type)


def is_normalization(node: ir.Node) -> bool:
    return _key(node) in NORMALIZATIONS


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    if value is None:
        return None
    if value.const_value is not None:
        return value.const_value.numpy()
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and "value" in producer.attributes:
        return producer.attributes["value"].as_tensor().numpy()
    return None


# ---- measurement ---------------------------------------------------------------------------------------------

@dataclass
class Measurement:
    values: dict[str, float]  # value name -> max |x|
    centered: dict[str, float]  # name of a normalization's input x -> max |x - mean| over its groups/axes
    feeds: int


def _tap(graph: onnx.GraphProto, source: str, out: str, opset: int) -> None:
    graph.node.append(onnx.helper.make_node("Abs", [source], [out + "_abs"]))
    graph.node.append(onnx.helper.make_node("ReduceMax", [out + "_abs"], [out], keepdims=0))
    graph.output.append(onnx.helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, []))


def _centered_tap(graph: onnx.GraphProto, node: ir.Node, index: int, opset: int) -> str | None:
    """Nodes computing max|x - mean| over the normalization's groups/axes; returns the output name."""
    x = node.inputs[0]
    rank = len(x.shape) if x.shape is not None else None
    p = f"fusionc_centered_{index}"
    if node.op_type in ("GroupNorm", "GroupNormalization"):
        groups = node.attributes["num_groups"].as_int()
        graph.initializer.append(onnx.numpy_helper.from_array(np.array([0, groups, -1], np.int64), p + "_shape"))
        graph.node.append(onnx.helper.make_node("Reshape", [x.name, p + "_shape"], [p + "_r"]))
        source, axes = p + "_r", [2]
    elif node.op_type == "InstanceNormalization" and rank:
        source, axes = x.name, list(range(2, rank))
    elif node.op_type == "LayerNormalization" and rank:
        axis = node.attributes["axis"].as_int() if "axis" in node.attributes else -1
        source, axes = x.name, list(range(axis % rank, rank))
    else:
        return None
    graph.initializer.append(onnx.numpy_helper.from_array(np.array(axes, np.int64), p + "_axes"))
    mean = onnx.helper.make_node("ReduceMean", [source, p + "_axes"], [p + "_m"], keepdims=1)
    if opset < 18:
        mean = onnx.helper.make_node("ReduceMean", [source], [p + "_m"], keepdims=1, axes=axes)
    graph.node.extend([mean, onnx.helper.make_node("Sub", [source, p + "_m"], [p + "_d"])])
    if x.dtype not in (None, ir.DataType.FLOAT):
        graph.node.append(onnx.helper.make_node("Cast", [p + "_d"], [p + "_d32"], to=onnx.TensorProto.FLOAT))
        _tap(graph, p + "_d32", p, opset)
    else:
        _tap(graph, p + "_d", p, opset)
    return p


def _inferred_float_values(proto: onnx.ModelProto) -> dict[str, ir.DataType]:
    """Float values whose type only shape inference knows (a graph that did not go through InferShapesPass)."""
    try:
        graph = onnx.shape_inference.infer_shapes(proto, strict_mode=False).graph
    except Exception:  # noqa: BLE001 - measure what is typed
        return {}
    types = {v.name: ir.DataType(v.type.tensor_type.elem_type) for v in graph.value_info if v.type.HasField("tensor_type")}
    return {k: t for k, t in types.items() if t in FLOAT_TYPES}


def external_folder(model: ir.Model) -> Path | None:
    """The one folder of the files the model's weights are mapped from (fusionc.core.memory.offload_weights), when
    the weights in memory are few enough to travel inside the graph's protobuf; else None (the graph is saved)."""
    folders = {Path(v.const_value.external.base_dir) for v in model.graph.initializers.values()
               if isinstance(v.const_value, MappedTensor)}
    if len(folders) != 1 or resident_weight_bytes(model) > RESIDENT_IN_PROTO_BYTES:
        return None
    return folders.pop()


def _proto_pointing_at_files(model: ir.Model) -> onnx.ModelProto:
    """The graph's protobuf with each mapped weight as a reference to its file (nothing is copied)."""
    mapped = {name: v.const_value for name, v in model.graph.initializers.items() if isinstance(v.const_value, MappedTensor)}
    try:
        for name, tensor in mapped.items():
            model.graph.initializers[name].const_value = tensor.external
        return ir.to_proto(model)
    finally:
        for name, tensor in mapped.items():
            model.graph.initializers[name].const_value = tensor


def measure(model: ir.Model, feeds_list: Sequence[Feeds], work_dir: Path | None = None) -> Measurement:
    """max|x| of every float value of the main graph (and centered maxima of normalizations) over the feeds.

    The weights are streamed to `work_dir` (external data) rather than copied into a protobuf: at SD-1.5 scale
    that copy alone would be 3.4 GB. A graph whose weights are external data already is not written again: the
    tapped graph goes beside them and onnxruntime maps them (no pre-packed copies).
    """
    import onnxruntime as ort

    input_names = {v.name for v in model.graph.inputs}
    feeds_list = [{k: v for k, v in f.items() if k in input_names} for f in feeds_list]
    feeds_list = [f for f in feeds_list if set(f) == input_names]
    count = len(feeds_list)
    feeds_list = [row for f in feeds_list for row in batch_rows(model, f)]
    values: dict[str, float] = {}
    centered: dict[str, float] = {}
    if not feeds_list:
        return Measurement(values, centered, 0)
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    external = external_folder(model)
    with tempfile.TemporaryDirectory(prefix="fusionc-fp16-", dir=external or work_dir) as tmp:
        if external is not None:  # the weights are already on disk: only the graph is written, beside them
            proto = _proto_pointing_at_files(model)
            graph_path = external / (Path(tmp).name + "-taps.onnx")
        else:
            ir.save(model, Path(tmp) / "graph.onnx", external_data="graph.onnx.data")  # the model is left unchanged
            proto = onnx.load(str(Path(tmp) / "graph.onnx"), load_external_data=False)
            graph_path = Path(tmp) / "taps.onnx"  # beside graph.onnx.data, which it still points to
        original = len(proto.graph.node)
        taps, names = _add_taps(model, proto)
        interleave_taps(proto.graph, original)
        if not (taps or names):
            return Measurement(values, centered, 0)
        onnx.save(proto, str(graph_path))
        del proto
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # measure the graph as it is
        # onnxruntime maps external weights (file pages, dropped under pressure) but pre-packs MatMul weights into
        # new buffers: a second resident copy of most of a UNet's weights (7 GB at SDXL size) for one measurement
        options.add_session_config_entry("session.disable_prepacking", "1")
        # the stored order (taps interleaved, interleave_taps): onnxruntime's default order ran the taps last
        options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
        try:
            session = ort.InferenceSession(str(graph_path), options, providers=["CPUExecutionProvider"])
        finally:
            if external is not None:
                graph_path.unlink()
        outputs = [o.name for o in session.get_outputs()]
        for feeds in feeds_list:
            for name, result in zip(outputs, session.run(outputs, feeds)):
                result = float(np.nan_to_num(result, nan=np.inf))
                target = values if name in taps else centered
                key = taps.get(name) or names[name]
                target[key] = max(target.get(key, 0.0), result)
        del session
    return Measurement(values, centered, count)


def interleave_taps(graph: onnx.GraphProto, original: int) -> None:
    """Move each tap node (appended after the `original` nodes) to just after the node whose value it reads.

    onnxruntime keeps a value alive until its last reader runs. With the taps last, every activation of the graph
    stayed alive at once (30 chained 64 MB values: 2.2 GB peak; the SD-1.5 UNet's measurement took 7.7 GB over
    its weights). Placed right after its producer, and run in the stored order (ExecutionOrder.PRIORITY_BASED;
    the default order still ran them last), each tap lets its value go: 0.28 GB for the chain."""
    position = {out: i for i, node in enumerate(graph.node[:original]) for out in node.output}
    keys = []
    for seq, node in enumerate(graph.node[original:]):
        key = max((position.get(name, -1) for name in node.input), default=-1)
        for out in node.output:
            position[out] = key
        keys.append((key, 1, seq))
    order = [(i, 0, 0) for i in range(original)] + keys
    nodes = list(graph.node)
    ranked = sorted(range(len(nodes)), key=lambda i: order[i])
    del graph.node[:]
    graph.node.extend(nodes[i] for i in ranked)


def batch_rows(model: ir.Model, feeds: Feeds) -> list[Feeds]:
    """The feeds one batch row at a time, when the graph's batch axis is symbolic: the same maxima (the graph
    computes each row alone) at a fraction of the activation memory (at SD-1.5 size the batch-2 measurement
    took 8.7 GB over the graph's weights, most of it activations)."""
    batched = {v.name for v in model.graph.inputs
               if v.shape is not None and len(v.shape) and not isinstance(v.shape[0], int)}
    sizes = {feeds[name].shape[0] for name in batched if name in feeds and getattr(feeds[name], "ndim", 0)}
    if len(sizes) != 1 or (rows := sizes.pop()) <= 1:
        return [feeds]
    return [{k: (v[i:i + 1] if k in batched else v) for k, v in feeds.items()} for i in range(rows)]


def _add_taps(model: ir.Model, proto: onnx.ModelProto) -> tuple[dict[str, str], dict[str, str]]:
    """Replace the outputs of `proto` by the scalar taps; returns {tap: value} and {centered tap: norm input}."""
    opset = model.opset_imports.get("", 18)
    inferred = _inferred_float_values(proto)
    graph = proto.graph
    del graph.output[:]
    taps: dict[str, str] = {}
    names: dict[str, str] = {}
    for i, node in enumerate(model.graph):
        for value in node.outputs:
            dtype = value.dtype or inferred.get(value.name or "")
            if value.name and dtype in FLOAT_TYPES and node.op_type != "Constant":
                out = f"fusionc_max_{len(taps)}"
                source = value.name
                if dtype != ir.DataType.FLOAT:
                    graph.node.append(onnx.helper.make_node("Cast", [source], [out + "_f"], to=onnx.TensorProto.FLOAT))
                    source = out + "_f"
                _tap(graph, source, out, opset)
                taps[out] = value.name
        if is_normalization(node):
            out = _centered_tap(graph, node, i, opset)
            if out:
                names[out] = node.inputs[0].name
    return taps, names


# ---- rescaling -------------------------------------------------------------------------------------------------

@dataclass
class Region:
    """Values divided together by `scale`."""

    values: set[ir.Value] = field(default_factory=set)
    scale: float = 1.0
    seeds: list[str] = field(default_factory=list)
    failure: str | None = None


def _data_inputs(node: ir.Node) -> list[ir.Value]:
    """The activation inputs of an op that scales with its inputs (constants excluded)."""
    indices = EQUIVARIANT.get(node.op_type)
    inputs = [v for v in node.inputs if v is not None] if indices is None else [
        node.inputs[i] for i in indices if i < len(node.inputs) and node.inputs[i] is not None]
    return [v for v in inputs if constant_array(v) is None]


def _linear_activation(node: ir.Node) -> ir.Value | None:
    """The single non-constant input of a LINEAR op (None if it has more than one, e.g. attention MatMul)."""
    if node.op_type in ("Conv", "ConvTranspose", "Gemm"):
        ok = all(constant_array(v) is not None for v in node.inputs[1:] if v is not None)
        return node.inputs[0] if ok else None
    live = [v for v in node.inputs if v is not None and constant_array(v) is None]
    if len(live) != 1 or (node.op_type == "Div" and node.inputs[0] is not live[0]):
        return None
    return live[0]


@dataclass
class RmsNorm:
    """A decomposed RMSNorm of x: the nodes that read x (the square, the final scaling) and the eps Add."""

    readers: tuple[ir.Node, ir.Node]
    mean: ir.Node
    eps_add: ir.Node
    eps_index: int
    internal: tuple[ir.Value, ...]  # mean(x^2), + eps, sqrt, 1/sqrt: in range once x is


def _sole_consumer(value: ir.Value, op_types: tuple[str, ...]) -> ir.Node | None:
    uses = list(value.uses())
    if len(uses) == 1 and uses[0][0].op_type in op_types and uses[0][1] == 0:
        return uses[0][0]
    return None


def rms_norms_of(x: ir.Value) -> list[RmsNorm]:
    """Every decomposed RMSNorm reading x: Pow(x, 2) | Mul(x, x) -> ReduceMean -> Add(eps) -> Sqrt ->
    Reciprocal -> Mul(x, r) (either operand order), or -> Sqrt -> Div(x, sqrt)."""
    found = []
    for square, _ in x.uses():
        exponent = constant_array(square.inputs[1]) if square.op_type == "Pow" and len(square.inputs) > 1 else None
        if not ((square.op_type == "Pow" and square.inputs[0] is x and exponent is not None and exponent.size == 1
                 and float(exponent.reshape(-1)[0]) == 2.0)
                or (square.op_type == "Mul" and square.inputs[0] is x and square.inputs[1] is x)):
            continue
        mean = _sole_consumer(square.outputs[0], ("ReduceMean",))
        uses = list(mean.outputs[0].uses()) if mean is not None else []
        eps_add = uses[0][0] if len(uses) == 1 and uses[0][0].op_type == "Add" else None
        if eps_add is None:
            continue
        eps_index = next((i for i, v in enumerate(eps_add.inputs) if constant_array(v) is not None), None)
        sqrt = _sole_consumer(eps_add.outputs[0], ("Sqrt",))
        if eps_index is None or sqrt is None:
            continue
        internal = [mean.outputs[0], eps_add.outputs[0], sqrt.outputs[0]]
        scaling = None
        reciprocal = _sole_consumer(sqrt.outputs[0], ("Reciprocal",))
        if reciprocal is not None:
            internal.append(reciprocal.outputs[0])
            uses = list(reciprocal.outputs[0].uses())
            if len(uses) == 1 and uses[0][0].op_type == "Mul" and x in uses[0][0].inputs:
                scaling = uses[0][0]
        else:
            uses = list(sqrt.outputs[0].uses())
            if len(uses) == 1 and uses[0][0].op_type == "Div" and uses[0][0].inputs[0] is x and uses[0][1] == 1:
                scaling = uses[0][0]
        if scaling is not None:
            found.append(RmsNorm((square, scaling), mean, eps_add, eps_index, (square.outputs[0], *internal)))
    return found


RMS_FLOOR = 1.0 / 64  # the max-normalized RMSNorm divides by max(max|x|, this): eps / floor^2 stays small


def max_normalize_rms(graph: ir.Graph, x: ir.Value, rms: RmsNorm) -> None:
    """Rewrite an RMSNorm of x whose square overflows fp16 into the same function of y = x / m, with m the
    per-row max|x| (floored): x / sqrt(mean(x^2) + eps) = y / sqrt(mean(y^2) + eps / m^2) exactly, and
    mean(y^2) lies in [1/n, 1] whatever the magnitude of x (no overflow, no underflow of the squares).

        before: Pow(x, 2) -> ReduceMean -> Add(eps) -> Sqrt -> Reciprocal -> Mul(x, .)
        after:  m = Max(ReduceMax(Abs(x)), floor); y = Div(x, m); q = Div(sqrt(eps), m)
                Pow(y, 2) -> ReduceMean -> Add(q * q) -> Sqrt -> Reciprocal -> Mul(y, .)
    """
    square, scaling = rms.readers
    dtype = x.dtype or ir.DataType.FLOAT
    np_dtype = dtype.numpy()
    prefix = f"{x.name}_rms_safe_{len(graph.initializers)}"

    def constant(name: str, array: np.ndarray) -> ir.Value:
        value = ir.Value(name=f"{prefix}_{name}", shape=ir.Shape(array.shape), type=ir.TensorType(dtype),
                         const_value=ir.tensor(array.astype(np_dtype)))
        graph.register_initializer(value)
        return value

    reduce_inputs: list[ir.Value | None] = [None]
    attributes = []
    if "keepdims" in rms.mean.attributes:
        attributes.append(ir.AttrInt64("keepdims", rms.mean.attributes["keepdims"].as_int()))
    if "axes" in rms.mean.attributes:
        attributes.append(ir.AttrInt64s("axes", list(rms.mean.attributes["axes"].as_ints())))
    if len(rms.mean.inputs) > 1 and rms.mean.inputs[1] is not None:
        reduce_inputs.append(rms.mean.inputs[1])
    absolute = ir.Node("", "Abs", [x], name=f"{prefix}_abs")
    reduce_inputs[0] = absolute.outputs[0]
    peak = ir.Node("", "ReduceMax", reduce_inputs, attributes=attributes, name=f"{prefix}_max")
    floored = ir.Node("", "Max", [peak.outputs[0], constant("floor", np.array(RMS_FLOOR))], name=f"{prefix}_floor")
    m = floored.outputs[0]
    y_node = ir.Node("", "Div", [x, m], name=f"{prefix}_y")
    old_eps = rms.eps_add.inputs[rms.eps_index]
    root = np.sqrt(np.asarray(constant_array(old_eps), np.float64))  # eps / m^2 as (sqrt(eps) / m)^2: m^2 overflows
    q = ir.Node("", "Div", [constant("sqrt_eps", root), m], name=f"{prefix}_q")
    eps_node = ir.Node("", "Mul", [q.outputs[0], q.outputs[0]], name=f"{prefix}_eps")
    for node in (absolute, peak, floored, y_node, q, eps_node):
        for out in node.outputs:
            out.name = f"{node.name}_out"
            out.dtype = dtype
    graph.insert_before(square, [absolute, peak, floored, y_node, q, eps_node])
    y = y_node.outputs[0]
    for node in (square, scaling):
        for index, value in enumerate(node.inputs):
            if value is x:
                node.replace_input_with(index, y)
    rms.eps_add.replace_input_with(rms.eps_index, eps_node.outputs[0])
    if old_eps is not None and old_eps.is_initializer() and not old_eps.uses() and old_eps.name in graph.initializers:
        graph.initializers.pop(old_eps.name)


def grow_region(seeds: dict[ir.Value, float], graph: ir.Graph) -> Region:
    """The closure of values that must scale with the seeds; `failure` says why it cannot be rescaled."""
    region = Region(seeds=[v.name or "" for v in seeds], scale=max(seeds.values()))
    outputs = set(graph.outputs)
    stack = list(seeds)
    while stack:
        value = stack.pop()
        if value in region.values:
            continue
        region.values.add(value)
        if value in outputs:
            region.failure = f"'{value.name}' is a graph output"
            return region
        producer = value.producer()
        if producer is None:
            region.failure = f"'{value.name}' is a graph input"
            return region
        if producer.op_type in EQUIVARIANT and not (producer.op_type == "Pad" and _pad_value(producer)):
            stack += _data_inputs(producer) + [o for o in producer.outputs if o is not value]
        elif is_normalization(producer):
            if any(constant_array(v) is None for v in producer.inputs[1:3]):
                region.failure = f"'{value.name}' comes from {producer.op_type} '{producer.name}' with a non-constant affine"
                return region
        elif not (producer.op_type in LINEAR and _linear_activation(producer) is not None):
            region.failure = f"'{value.name}' comes from {producer.op_type} '{producer.name}', which does not scale linearly"
            return region
        rms_readers = {node for rms in rms_norms_of(value) for node in rms.readers}
        for consumer, index in value.uses():
            if (is_normalization(consumer) and index == 0) or consumer in rms_readers:
                continue  # epsilon / s^2
            if consumer.op_type in EQUIVARIANT and value in _data_inputs(consumer):
                stack += _data_inputs(consumer) + list(consumer.outputs)
            elif consumer.op_type in LINEAR and _linear_activation(consumer) is value:
                stack += list(consumer.outputs)
            else:
                region.failure = (f"'{value.name}' feeds {consumer.op_type} '{consumer.name}' (input {index}), "
                                  "which does not scale linearly")
                return region
    return region


def _pad_value(node: ir.Node) -> bool:
    """True if a Pad fills with a nonzero constant (it would not scale)."""
    mode = node.attributes["mode"].as_string() if "mode" in node.attributes else "constant"
    fill = constant_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    return mode == "constant" and fill is not None and bool(np.any(fill != 0))


def _scaled_input(graph: ir.Graph, node: ir.Node, index: int, factor: float) -> None:
    """Replace node input `index` (a constant) by a new initializer holding constant * factor."""
    value = node.inputs[index]
    arr = constant_array(value)
    if value is None or arr is None:
        return
    new = ir.Value(name=f"{value.name}_fp16scaled_{len(graph.initializers)}", shape=ir.Shape(arr.shape),
                   type=ir.TensorType(ir.DataType.from_numpy(arr.dtype)),
                   const_value=ir.tensor((arr * np.asarray(factor, arr.dtype)).astype(arr.dtype)))
    graph.register_initializer(new)
    node.replace_input_with(index, new)
    if value.is_initializer() and not value.uses() and value not in graph.outputs:
        graph.initializers.pop(value.name)


def apply_region(region: Region, graph: ir.Graph) -> list[str]:
    """Divide every value of the region by region.scale; returns the names of the nodes changed."""
    s = region.scale
    changed: list[str] = []
    producers = {v.producer() for v in region.values if v.producer() is not None}
    for node in producers:
        op = node.op_type
        if is_normalization(node):
            for index in (1, 2):  # y/s = norm(x) * (gamma/s) + beta/s
                _scaled_input(graph, node, index, 1 / s)
        elif op in ("Conv", "ConvTranspose", "Gemm"):
            activation_scaled = node.inputs[0] in region.values
            for index in ((2,) if activation_scaled else (1, 2)):
                if index < len(node.inputs):
                    _scaled_input(graph, node, index, 1 / s)
        elif op in ("MatMul", "Mul") and _linear_activation(node) not in region.values:
            _scaled_input(graph, node, next(i for i, v in enumerate(node.inputs) if constant_array(v) is not None), 1 / s)
        elif op == "Div" and _linear_activation(node) not in region.values:
            _scaled_input(graph, node, 1, s)
        elif op in ("Add", "Sub") or (op == "Concat"):
            for index, value in enumerate(node.inputs):
                if constant_array(value) is not None:
                    _scaled_input(graph, node, index, 1 / s)
        elif op in EQUIVARIANT and not _data_inputs(node):  # a constant's rows (an embedding Gather)
            for index in EQUIVARIANT[op] or range(len(node.inputs)):
                if index < len(node.inputs) and constant_array(node.inputs[index]) is not None:
                    _scaled_input(graph, node, index, 1 / s)
        else:
            continue
        changed.append(node.name or node.op_type)
    for value in region.values:
        for consumer, index in value.uses():
            if is_normalization(consumer) and index == 0:
                eps = consumer.attributes["epsilon"].as_float() if "epsilon" in consumer.attributes else 1e-5
                consumer.attributes["epsilon"] = ir.AttrFloat32("epsilon", max(eps / (s * s), FP16_TINY))
                changed.append(consumer.name or consumer.op_type)
        for rms in rms_norms_of(value):
            eps = constant_array(rms.eps_add.inputs[rms.eps_index])
            factor = max(float(np.max(eps)) / (s * s), FP16_TINY) / max(float(np.max(eps)), 1e-30)
            _scaled_input(graph, rms.eps_add, rms.eps_index, factor)
            changed.append(rms.eps_add.name or rms.eps_add.op_type)
    return sorted(set(changed))


def _power_of_two(ratio: float) -> float:
    return float(2 ** max(1, math.ceil(math.log2(ratio))))


# ---- the remedy --------------------------------------------------------------------------------------------------

def protect_fp16(model: ir.Model, feeds_list: Sequence[Feeds], allow_fp32: bool = True,
                 work_dir: Path | None = None) -> dict[str, Any]:
    """Measure, rescale what can be rescaled, mark the rest fp32 (if allowed); returns the report (also in metadata)."""
    graph = model.graph
    first = measure(model, feeds_list, work_dir)
    report: dict[str, Any] = {"threshold": FP16_MAX, "inputs": first.feeds, "overflows": [], "mask_sentinels": [],
                              "rescaled": [], "fp32_nodes": [], "unresolved": []}
    if first.feeds == 0:
        report["skipped"] = "no verification inputs match the graph inputs"
        return _store(model, report)
    by_name = {v.name: v for node in graph for v in node.outputs}
    seeds: dict[ir.Value, float] = {}
    for name, peak in first.values.items():
        if peak >= SENTINEL:
            report["mask_sentinels"].append(name)
        elif peak > FP16_MAX / VALUE_HEADROOM:
            seeds[by_name[name]] = _power_of_two(peak * VALUE_HEADROOM / FP16_MAX)
            report["overflows"].append({"value": name, "max_abs": round(peak, 1), "kind": "value",
                                        "op": by_name[name].producer().op_type})
    for name, peak in first.centered.items():
        if SQUARE_MAX / CENTERED_HEADROOM < peak < SENTINEL and name in by_name:
            x = by_name[name]
            need = _power_of_two(peak * CENTERED_HEADROOM / SQUARE_MAX)
            seeds[x] = max(seeds.get(x, 1.0), need)
            report["overflows"].append({"value": name, "max_abs": round(peak, 1), "kind": "centered (x - mean, squared)",
                                        "op": next(c.op_type for c, i in x.uses() if is_normalization(c) and i == 0)})
    remaining = dict(seeds)
    while remaining:
        seed = next(iter(remaining))
        region = grow_region({seed: remaining[seed]}, graph)
        members = {v: s for v, s in remaining.items() if v in region.values}
        for value in members:
            remaining.pop(value)
        if region.failure is None:
            region.scale = max(members.values())
            for inside in {v for x in region.values for rms in rms_norms_of(x) for v in rms.internal}:
                remaining.pop(inside, None)  # an RMSNorm's square and mean: in range once its input is
            changed = apply_region(region, graph)
            report["rescaled"].append({"scale": region.scale, "seeds": sorted(v.name for v in members),
                                       "values": len(region.values), "nodes_changed": len(changed)})
        else:
            report.setdefault("not_rescaled", []).append({"value": seed.name, "why": region.failure})
    if report["rescaled"] or report.get("not_rescaled"):
        after = measure(model, feeds_list, work_dir)
        left = {n for n, p in after.values.items() if FP16_MAX / VALUE_HEADROOM < p < SENTINEL}
        left |= {n for n, p in after.centered.items() if SQUARE_MAX / CENTERED_HEADROOM < p < SENTINEL}
        if _max_normalize_overflowing_rms(graph, left, by_name, report):
            after = measure(model, feeds_list, work_dir)
            left = {n for n, p in after.values.items() if FP16_MAX / VALUE_HEADROOM < p < SENTINEL}
            left |= {n for n, p in after.centered.items() if SQUARE_MAX / CENTERED_HEADROOM < p < SENTINEL}
            by_name = {v.name: v for node in graph for v in node.outputs}
        report["max_abs_after"] = round(max([p for p in after.values.values() if p < SENTINEL], default=0.0), 1)
        _keep_fp32(graph, left, by_name, report, allow_fp32)
    for key in ("overflows", "rescaled", "fp32_nodes", "unresolved", "mask_sentinels"):
        if len(report[key]) > MAX_LISTED:
            report[f"{key}_count"] = len(report[key])
            report[key] = report[key][:MAX_LISTED]
    return _store(model, report)


def _max_normalize_overflowing_rms(graph: ir.Graph, left: set[str], by_name: dict[str, ir.Value],
                                   report: dict[str, Any]) -> bool:
    """Give every RMSNorm whose squares still overflow the max-normalized form; True if any was rewritten."""
    done = False
    for node in list(graph):
        for x in node.outputs:
            for rms in rms_norms_of(x):
                if any(v.name in left for v in rms.internal):
                    max_normalize_rms(graph, x, rms)
                    report.setdefault("rms_max_normalized", []).append(x.name)
                    done = True
    return done


def _keep_fp32(graph: ir.Graph, names: set[str], by_name: dict[str, ir.Value], report: dict[str, Any],
               allow_fp32: bool) -> None:
    for name in sorted(names):
        value = by_name.get(name)
        if value is None:
            continue
        touched = [value.producer()] + [c for c, _ in value.uses()]
        if not allow_fp32:
            report["unresolved"].append(name)
            continue
        for node in touched:
            if node is not None and node.metadata_props.get(PRECISION_KEY) != "fp32":
                node.metadata_props[PRECISION_KEY] = "fp32"
                report["fp32_nodes"].append(node.name or node.op_type)


def _store(model: ir.Model, report: dict[str, Any]) -> dict[str, Any]:
    model.metadata_props[REPORT_KEY] = json.dumps(report, sort_keys=True)
    return report


def fp32_nodes(model: ir.Model) -> list[str]:
    return [n.name for n in model.graph if n.metadata_props.get(PRECISION_KEY) == "fp32"]


class KeepFp16InRangePass(ir.passes.InPlacePass):
    """Rescale (or keep in fp32) the activations that overflow fp16 on the given verification inputs.

    `allow_fp32=False` for backends without fp32 compute (QNN HTP): unfixable overflows are only reported.
    `work_dir`: scratch space on the build's disk for the weights the measurement streams out.
    Runs once per model: a model that already carries a report is left alone (modified=False).
    """

    def __init__(self, feeds: Sequence[Feeds] | None, allow_fp32: bool = True, work_dir: Path | None = None) -> None:
        super().__init__()
        self.feeds = list(feeds or [])
        self.allow_fp32 = allow_fp32
        self.work_dir = Path(work_dir) if work_dir is not None else None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if REPORT_KEY in model.metadata_props:
            return ir.passes.PassResult(model, modified=False)
        protect_fp16(model, self.feeds, self.allow_fp32, self.work_dir)
        return ir.passes.PassResult(model, modified=True)  # at least the report is written into the metadata
