"""Per-op work of an ONNX graph: MACs, vector work, weight and activation bytes (`graph_stats`).

The cost model (fusionc.analysis.costmodel) and `fusionc inspect` both need, for every node of a compiled component, how
many multiply-accumulates it does, how many weight bytes it must read and how many activation elements it touches.
We count these ourselves instead of using a FLOP-counting library because the numbers must follow the compiled
graph exactly: compressed weights (int8/int4 DequantizeLinear, LUT gathers) read fewer bytes, weight-only subgraphs
(dequantize, transpose, cast of an initializer) are folded by every on-device compiler and cost nothing at run time,
and the fusionc fused units (ScaledDotProductAttention, GroupNorm, Gelu local functions) are counted as one op. A QNN
build's QDQ graph counts the work of the graph it was quantized from (QUANTIZATION_MARKS).

Graph structure, per op: `level`, the ops on the longest path from the inputs to it (what runs in sequence however
parallel the hardware), and `siblings`, the ops of its type that read the same input (what a compiler can fuse
horizontally: an Inception block's 1x1 heads, Q/K/V projections).

Shapes come from the graph's value_info, completed by onnx shape inference after symbolic dims (the dynamic batch)
are pinned (`dims`, default 1). External weight data is never loaded: only initializer shapes and dtypes are read.
onnx shape inference knows no com.microsoft contrib op, and every shape downstream of one is lost (an onnx-target
UNet scored 45 of its 49 Convs at 0 MACs). So before inference each contrib op the onnx target emits
(fusionc.passes.ort: MultiHeadAttention, Gelu, FastGelu), and a few more that only relabel their input's shape,
is stood in, on a copy used only for inference, by standard ops with the same output shape (_standin_nodes, one
documented rule per op). onnxruntime's symbolic_shape_infer knows these ops but not fusionc's local functions
(GroupNorm, ScaledDotProductAttention), is optional here, and runs per node in Python with sympy (seconds to
minutes on an SD-scale UNet) where one onnx inference pass takes a fraction of a second. An op whose shapes stay
unknown counts as zero work: GraphStats.unknown_shape_ops says how many there were, and the CLI warns.

MACs, by hand (the tests check these formulas on tiny graphs):
    Conv           out_elems * Cin/group * prod(kernel)        (= out_elems * prod(W.shape[1:]))
    ConvTranspose  in_elems * Cout/group * prod(kernel)
    MatMul         out_elems * K
    Gemm           M * N * K
    Einsum         product of the sizes of every index letter
    fusionc::ScaledDotProductAttention(q, k, v)   B*H*Sq*Sk*(D + Dv)
    com.microsoft::MultiHeadAttention(q [B,Sq,H*D], k [B,Sk,H*D], v [B,Sk,H*Dv])   B*Sq*Sk*(H*D + H*Dv), the same
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import onnx.inliner
import onnx.shape_inference

FUSED_FUNCTIONS = {("fusionc", "ScaledDotProductAttention"), ("fusionc", "GroupNorm"), ("fusionc", "Gelu")}
MS_DOMAIN = "com.microsoft"

# recurrent ops: both weight matrices are multiplied once per timestep and batch row (linear work, not vector)
RECURRENT_GATES = {"LSTM", "GRU", "RNN"}
# ops that only relabel a tensor: no work on any backend
FREE_OPS = {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Shape", "Size", "Constant", "ConstantOfShape",
            "Dropout"}
RELABELS = FREE_OPS - {"Shape", "Size", "Constant", "ConstantOfShape"}  # free ops that pass their input on as it is
# a QDQ graph's quantization marks (fusionc.passes.qnn.qdq): a QuantizeLinear -> DequantizeLinear pair on an activation
# is an encoding the QNN converter folds into the quantized ops (a weight's DequantizeLinear is a weight-only subgraph,
# folded anyway), and a Cast between a DequantizeLinear and a QuantizeLinear brackets a float island. None is an op of
# the graph the QNN pass pipeline hands to quantization, the form the cost model is fitted on and `fusionc estimate`
# counts: as "free" ops, a QNN build's QDQ graph counts the same work as the graph it was quantized from (a DQ -> Q
# 8 <-> 16-bit conversion, which QNN runs as a Convert op, goes uncounted, as the fitted graphs do not have it)
QUANTIZATION_MARKS = {"QuantizeLinear", "DequantizeLinear"}
# ops that move data without arithmetic
LAYOUT_OPS = {"Transpose", "Concat", "Slice", "Split", "Pad", "Expand", "Gather", "GatherND", "GatherElements",
              "Resize", "Upsample", "DepthToSpace", "SpaceToDepth", "Tile", "ScatterND", "Tile"}
# ops that work on feature maps (channels-first in ONNX, channels-last on an NPU), and the ops a tensor keeps its
# layout through between them (elementwise, relabels, a layer norm over channels and the rank-4 permutes around it, as
# in ConvNeXt): a rank-4 permute next to a spatial op is a layout change; elsewhere it is a transformer's K^T
SPATIAL_OPS = {"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "BatchNormalization", "InstanceNormalization",
               "GroupNormalization", "GroupNorm", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
               "LpPool", "Resize", "Upsample", "DepthToSpace", "SpaceToDepth"}
LAYOUT_TRANSPARENT = {"Add", "Sub", "Mul", "Div", "Relu", "Sigmoid", "Tanh", "Clip", "Erf", "Gelu", "HardSwish",
                      "HardSigmoid", "LeakyRelu", "PRelu", "Neg", "Sqrt", "Pow", "Cast", "Reshape", "Squeeze",
                      "Unsqueeze", "Flatten", "Identity", "Dropout", "LayerNormalization"} | QUANTIZATION_MARKS
LAYOUT_PERMS = ([0, 2, 3, 1], [0, 3, 1, 2])  # NCHW -> NHWC and back
SPATIAL_HOPS = 6
# vector ops that cost several passes over their output (normalizations, softmax)
VECTOR_WEIGHT = {"Softmax": 4, "LayerNormalization": 5, "GroupNormalization": 5, "InstanceNormalization": 5,
                 "GroupNorm": 5, "Gelu": 4, "FastGelu": 4, "BiasGelu": 4, "QuickGelu": 2, "BiasSplitGelu": 4,
                 "SkipLayerNormalization": 5, "SkipSimplifiedLayerNormalization": 4, "Erf": 3, "ReduceMean": 1,
                 "Pow": 2, "Sqrt": 2, "Exp": 2, "Tanh": 2, "Sigmoid": 2}
DTYPE_BITS = {onnx.TensorProto.FLOAT: 32, onnx.TensorProto.FLOAT16: 16, onnx.TensorProto.BFLOAT16: 16,
              onnx.TensorProto.DOUBLE: 64, onnx.TensorProto.INT8: 8, onnx.TensorProto.UINT8: 8,
              onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4, onnx.TensorProto.INT16: 16,
              onnx.TensorProto.UINT16: 16, onnx.TensorProto.INT32: 32, onnx.TensorProto.INT64: 64,
              onnx.TensorProto.BOOL: 8, onnx.TensorProto.FLOAT8E4M3FN: 8, onnx.TensorProto.FLOAT8E5M2: 8}
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}


def _perm(node: onnx.NodeProto) -> list[int] | None:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), None)


def transpose_form(node: onnx.NodeProto, shape: list | None, feature_map: bool) -> str:
    """What a Transpose moves: nchw_nhwc (a rank-4 channels-first <-> channels-last permute of a `feature_map`, a
    layout change a channels-last NPU makes anyway), keeps_last (the innermost axis stays: rows move as blocks, as in a
    head split or a window partition), moves_last (the innermost axis moves: an element-wise gather, as in K^T, which
    a transformer often writes as the same rank-4 permutation (0, 2, 3, 1) of its (batch, tokens, heads, dim) keys)."""
    perm = _perm(node)
    rank = len(perm) if perm else (len(shape) if shape else 0)
    perm = perm or list(range(rank))[::-1]
    if feature_map and perm in LAYOUT_PERMS:
        return "nchw_nhwc"
    return "keeps_last" if perm and perm[-1] == rank - 1 else "moves_last"


def _static(shape: list | tuple | None) -> bool:
    return bool(shape) and all(isinstance(d, int) and d > 0 for d in shape)


def _blocks(perm: list[int] | None, shape: list | tuple) -> list[list[int]]:
    """The data axes of a static `shape` (size-1 axes dropped) in the order a Transpose with `perm` writes them,
    grouped into blocks of axes that stay adjacent and in order: what moves as one piece."""
    perm = perm or list(range(len(shape)))[::-1]
    held = [axis for axis in perm if shape[axis] != 1]
    following = dict(zip(sorted(held), sorted(held)[1:]))  # each data axis -> the next one in the input's order
    blocks: list[list[int]] = []
    for i, axis in enumerate(held):
        if i and following.get(held[i - 1]) == axis:
            blocks[-1].append(axis)
        else:
            blocks.append([axis])
    return blocks


def permute_rank(perm: list[int] | None, shape: list | tuple | None) -> int:
    """How many blocks a Transpose reorders: its rank once size-1 axes are dropped and each run of axes that stay
    adjacent and in order is merged into one. A head split [S, H, D] -> [H, S, D] is 3, K^T [S, H*D] -> [H*D, S] is 2,
    a window partition [8, 7, 8, 7*C] -> [8, 8, 7, 7*C] is 4; a Transpose that moves no data is at most 1. Unknown
    shape: the permutation's own rank."""
    if not _static(shape):
        return len(perm) if perm else len(shape or ())
    return len(_blocks(perm, shape))


def permute_run(perm: list[int] | None, shape: list | tuple | None) -> int:
    """Elements of the innermost run a Transpose moves as one contiguous block: its last block, when that block ends
    with the input's last data axis (else 1: the last axis moves, every element on its own). A head split
    [S, H, D] -> [H, S, D] moves runs of D, a window partition [8, 7, 8, 7, C] -> [8, 8, 7, 7, C] runs of 7 * C, K^T
    runs of 1. 0 for an unknown shape."""
    if not _static(shape):
        return 0
    blocks = _blocks(perm, shape)
    if not blocks or blocks[-1][-1] != max(max(block) for block in blocks):
        return 1
    return math.prod(shape[axis] for axis in blocks[-1])


def moves_no_data(perm: list[int] | None, shape: list | tuple | None) -> bool:
    """Whether a Transpose with `perm` of a tensor of `shape` leaves every element where it is: it moves only axes of
    size 1 (batch-first <-> sequence-first swaps of one sequence, [1, 197, 768] -> [197, 1, 768]), so the axes that
    hold data keep their order and it is a Reshape (ONNX Runtime's transpose optimizer rewrites it into one)."""
    return _static(shape) and permute_rank(perm, shape) <= 1


def is_relabel(node: onnx.NodeProto, in_shape: list | tuple | None) -> bool:
    """A node that hands on its input's elements where they are: a Reshape-like op, or a Transpose of size-1 axes."""
    return node.op_type in RELABELS or (node.op_type == "Transpose" and moves_no_data(_perm(node), in_shape))


def is_plain_mark(node: onnx.NodeProto) -> bool:
    """A QuantizeLinear / DequantizeLinear: an encoding QNN compiles into its quantized ops, not an op."""
    return node.op_type in QUANTIZATION_MARKS


def feeds_only_matmuls(node: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]], outputs: set[str],
                       scalars: set[str] = frozenset(),
                       is_mark: Callable[[onnx.NodeProto], bool] = is_plain_mark, shapes: dict | None = None) -> int:
    """How `node`'s output reaches MatMuls only: 1 through quantization marks at most (`is_mark`: in a QDQ graph also
    its float-island Casts), 2 also through a Mul or Div by a constant scalar (one of `scalars`: torch's SDPA export
    scales K^T before QK^T), 3 also through a Reshape that keeps the last two axes (known `shapes`: it only regroups
    the batch axes, as torchvision's attention does between its head split and QK^T), 0 when any reader is no MatMul.
    A Transpose of the last two axes there can be the MatMul's own transpose_in0 / transpose_in1 (QNN's MatMul reads
    either operand transposed), as a K^T before QK^T. A graph output is read by the caller, so it is not."""
    frontier, seen, scaled, regrouped = list(node.output), set(), False, False
    while frontier:
        name = frontier.pop()
        if name in outputs:
            return 0
        readers = consumers.get(name, [])
        if not readers:
            return 0
        for reader in readers:
            by_scalar = reader.op_type in ("Mul", "Div") and any(i in scalars for i in reader.input if i != name)
            batch_regroup = reader.op_type == "Reshape" and shapes is not None and _keeps_last_two(
                shapes.get(reader.input[0]), shapes.get(reader.output[0]))
            if (is_mark(reader) or by_scalar or batch_regroup) and id(reader) not in seen:
                seen.add(id(reader))
                scaled |= by_scalar
                regrouped |= batch_regroup
                frontier.extend(reader.output)
            elif reader.op_type != "MatMul":
                return 0
    return 3 if regrouped else 2 if scaled else 1


def graph_output_sources(outputs: set[str], producer: dict[str, onnx.NodeProto],
                         passes_on: Callable[[onnx.NodeProto], bool], elems: Callable[[str], int]) -> dict[str, int]:
    """Tensor -> elements of the graph outputs it becomes through ops that pass their first input on unmoved
    (`passes_on`: quantization marks, relabels, Transposes of size-1 axes; a QDQ graph's output is its last op's
    output, quantized and dequantized): what the op writing it hands to the caller."""
    written: dict[str, int] = defaultdict(int)
    for name in outputs:
        source = name
        while source in producer and passes_on(producer[source]) and producer[source].output[0] == source:
            source = producer[source].input[0]
        written[source] += elems(name)
    return written


def _keeps_last_two(before: Any, after: Any) -> bool:
    """Both shapes static, of rank 2+, with the same last two axes."""
    return (_static(before) and _static(after) and len(before) >= 2 and len(after) >= 2
            and tuple(before[-2:]) == tuple(after[-2:]))


def fed_only_by_matmul(node: onnx.NodeProto, producer: dict[str, onnx.NodeProto],
                       consumers: dict[str, list[onnx.NodeProto]], outputs: set[str], constants: dict,
                       is_mark: Callable[[onnx.NodeProto], bool] = is_plain_mark) -> int:
    """1 when `node` reads the output of a MatMul or Gemm through nothing but Reshapes, quantization marks and Adds,
    Muls or Divs by a constant (a projection's bias, a scale), each tensor on the way read by nothing else: the MatMul
    could write its output in the permuted order (a head split after a Q, K or V projection, a head merge after the
    product with V), 0 otherwise. A tensor also read elsewhere, or returned as a graph output, is needed in its own
    order, so it is not."""
    name = node.input[0]
    while True:
        if name in outputs or len(consumers.get(name, [])) != 1:
            return 0
        source = producer.get(name)
        if source is None:
            return 0
        if source.op_type in ("MatMul", "Gemm"):
            return 1
        variable = [i for i in source.input if i and i not in constants]
        if is_mark(source) or source.op_type == "Reshape":
            name = source.input[0]
        elif source.op_type in ("Add", "Mul", "Div") and len(variable) == 1:
            name = variable[0]
        else:
            return 0


def next_to_spatial_op(node: onnx.NodeProto, producer: dict[str, onnx.NodeProto],
                       consumers: dict[str, list[onnx.NodeProto]], hops: int = SPATIAL_HOPS) -> bool:
    """Whether `node` reads a tensor a spatial op (SPATIAL_OPS) wrote, or writes one a spatial op reads, through at
    most `hops` layout-transparent ops (LAYOUT_TRANSPARENT, rank-4 layout permutes): is it moving a feature map?"""
    frontier, seen = [("in", node), ("out", node)], {id(node)}
    for _ in range(hops + 1):
        following = []
        for direction, current in frontier:
            neighbours = ([producer[i] for i in current.input if i in producer] if direction == "in"
                          else [c for o in current.output for c in consumers.get(o, [])])
            for neighbour in neighbours:
                if neighbour.op_type in SPATIAL_OPS:
                    return True
                transparent = neighbour.op_type in LAYOUT_TRANSPARENT or (
                    neighbour.op_type == "Transpose" and _perm(neighbour) in LAYOUT_PERMS)
                if transparent and id(neighbour) not in seen:
                    seen.add(id(neighbour))
                    following.append((direction, neighbour))
        frontier = following
    return False


@dataclass
class OpStat:
    """Work of one node. `kind`: conv | linear | attention | vector | layout | free."""

    name: str
    op_type: str
    domain: str
    kind: str
    macs: int = 0
    vector_elems: int = 0  # elementwise work (output elements x passes)
    params: int = 0  # weight elements read by this node (after folding weight-only subgraphs)
    float_weight_elems: int = 0  # of which stored as float (a target stores them at its own precision)
    compressed_weight_bytes: float = 0.0  # bytes of weights stored compressed (int8/int4/LUT indices)
    weight_bytes: float = 0.0  # bytes as stored in this graph
    act_in_elems: int = 0  # non-constant input elements
    act_out_elems: int = 0
    attention_scores: bool = False  # output is an S x S attention matrix (materialized)
    timesteps: int = 1  # sequential steps the op runs as (recurrent ops: sequence length x directions), else 1
    level: int = 0  # ops on the longest path from the graph inputs to this op's output, itself included (free: 0 own)
    siblings: int = 1  # ops of this op's type reading the same first activation input (horizontal fusion group)
    transpose_form: str = ""  # a Transpose: nchw_nhwc (rank-4 layout permute of a feature map), keeps_last, moves_last
    permute_rank: int = 0  # a Transpose that moves data: the blocks it reorders (permute_rank); else 0
    permute_run: int = 0  # a Transpose that moves data: elements per contiguous block it moves (permute_run); else 0
    feeds_matmul: int = 0  # a Transpose read only by MatMuls: 1, 2 through a scalar scale, 3 through a batch-axes
    # Reshape (feeds_only_matmuls)
    fed_by_matmul: int = 0  # a Transpose reading only a MatMul's output, its producer alone (fed_only_by_matmul): 1
    output_elems: int = 0  # elements this op writes to graph outputs, directly or through quantization marks and
    # relabels (graph_output_sources)


@dataclass
class GraphStats:
    ops: list[OpStat]
    attention_form: str  # fused | split_einsum | original | none
    dims: dict[str, int] = field(default_factory=dict)
    # every node of the graph, folded ones included (with the decompression functions inlined): runtime_op_counts
    # has the ops that run
    op_counts: dict[str, int] = field(default_factory=dict)
    unknown_shape_ops: int = 0  # ops with an input or output of unknown shape: counted as zero work (a lower bound)
    input_elems: int = 0  # elements of the graph's inputs (not its initializers): what a call copies in

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.ops)

    @property
    def params(self) -> int:
        return sum(op.params for op in self.ops)

    @property
    def weight_bytes(self) -> float:
        return sum(op.weight_bytes for op in self.ops)

    @property
    def runtime_op_counts(self) -> dict[str, int]:
        """Op type -> count of the ops that carry work (`ops`): a model's op mix, as `fusionc inspect` shows it.
        Unlike `op_counts` it leaves out what is computed from weights and shapes alone: Constant, the decompression
        of palettized or quantized weights (a device keeps them as stored weights, e.g. Core ML constexpr ops) and
        shape arithmetic (Shape -> Gather -> Concat feeding a Reshape; ONNX Runtime runs it, nearly free)."""
        return dict(Counter(op.op_type if op.domain in ("", "ai.onnx") else f"{op.domain}::{op.op_type}"
                            for op in self.ops))

    def by_op_type(self) -> dict[str, dict[str, float]]:
        """op type -> {count, macs, params, weight_bytes, vector_elems}, sorted by MACs."""
        table: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for op in self.ops:
            key = op.op_type if op.domain in ("", "ai.onnx") else f"{op.domain}::{op.op_type}"
            row = table[key]
            row["count"] += 1
            row["macs"] += op.macs
            row["params"] += op.params
            row["weight_bytes"] += op.weight_bytes
            row["vector_elems"] += op.vector_elems
        return {k: dict(v) for k, v in sorted(table.items(), key=lambda kv: -kv[1]["macs"])}

    def by_kind(self) -> dict[str, dict[str, float]]:
        table: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for op in self.ops:
            row = table[op.kind]
            row["count"] += 1
            row["macs"] += op.macs
            row["weight_bytes"] += op.weight_bytes
            row["vector_elems"] += op.vector_elems
            row["act_elems"] += op.act_in_elems + op.act_out_elems
        return {k: dict(v) for k, v in table.items()}

    def summary(self) -> dict[str, Any]:
        return {"macs": self.macs, "params": self.params, "weight_bytes": self.weight_bytes,
                "nodes": len(self.ops), "unknown_shape_ops": self.unknown_shape_ops,
                "attention_form": self.attention_form, "dims": self.dims,
                "by_op_type": self.by_op_type(), "by_kind": self.by_kind()}

    def to_json(self) -> dict[str, Any]:
        return self.summary() | {"op_counts": self.op_counts, "input_elems": self.input_elems,
                                 "ops": [asdict(op) for op in self.ops]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GraphStats:
        """The inverse of to_json (the summary fields are derived, not read)."""
        return cls([OpStat(**op) for op in data["ops"]], data["attention_form"], dict(data.get("dims", {})),
                   dict(data.get("op_counts", {})), int(data.get("unknown_shape_ops", 0)),
                   int(data.get("input_elems", 0)))


def unknown_shapes_warning(counts: dict[str, int]) -> str | None:
    """One line for the CLI when some component's graph kept ops of unknown shape ({component: ops}), else None."""
    parts = [f"{name} {n}" for name, n in counts.items() if n]
    if not parts:
        return None
    return (f"warning: ops of unknown shape counted as zero work, MACs and estimates are a lower bound: "
            f"{', '.join(parts)} op(s)")


def load_proto(model: Any) -> onnx.ModelProto:
    """A ModelProto without external weight data from a path, a ModelProto or an onnx_ir Model."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (str, Path)):
        return onnx.load(str(model), load_external_data=False)
    import onnx_ir as ir

    from fusionc.core.memory import SMALL_BYTES, weightless_proto

    if isinstance(model, ir.Model):  # stats read dims and dtypes; small constants (shapes, axes) feed shape inference
        return weightless_proto(model, min_bytes=SMALL_BYTES)
    raise TypeError(f"graph_stats takes a path, an onnx.ModelProto or an onnx_ir.Model, not {type(model).__name__}")


def _pin_dims(model: onnx.ModelProto, dims: dict[str, int]) -> dict[str, int]:
    """Pin symbolic dims of graph inputs to `dims` (unknown names -> 1); returns the mapping used.

    Intermediate shapes with symbolic dims (derived ones such as "2*batch") are dropped and re-inferred from the
    pinned inputs."""
    used: dict[str, int] = {}
    graph = model.graph
    for value in graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                size = dims.get(dim.dim_param, 1)
                used[dim.dim_param] = size
                dim.dim_value = size

    def symbolic(value: onnx.ValueInfoProto) -> bool:
        return any(d.HasField("dim_param") for d in value.type.tensor_type.shape.dim)

    kept = [v for v in graph.value_info if not symbolic(v)]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    for value in graph.output:
        if symbolic(value):
            value.type.tensor_type.ClearField("shape")
    return used


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - partial shapes are better than none; ops missing one: unknown_shape_ops
        return model


def _static_shapes(graph: onnx.GraphProto) -> dict[str, tuple[int, ...] | None]:
    """Every typed value of `graph` (inputs, outputs, value_info) -> its shape, None where a dim is not a number."""
    shapes: dict[str, tuple[int, ...] | None] = {}
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        tensor = value.type.tensor_type
        dims = tensor.shape.dim
        shapes[value.name] = (tuple(d.dim_value for d in dims)
                              if tensor.HasField("shape") and all(d.HasField("dim_value") for d in dims) else None)
    return shapes


# integer ops that shape arithmetic is made of (torch.export writes a Reshape's target as Shape -> Squeeze -> Div ->
# Add -> Concat of the pinned batch); at most this many elements is a shape value, not a tensor of data
SHAPE_VALUE_OPS = frozenset({"Shape", "Size", "Squeeze", "Unsqueeze", "Concat", "Gather", "Slice", "Cast", "Add",
                             "Sub", "Mul", "Div", "Mod", "Neg", "Abs", "Max", "Min", "Floor", "Ceil", "Identity",
                             "Reshape", "Equal", "Where", "Range", "Expand"})
SHAPE_VALUE_ELEMS = 64


def _infer_folding_shape_values(model: onnx.ModelProto, rounds: int = 3) -> onnx.ModelProto:
    """onnx shape inference, then, while some op's output shape is still unknown, the shape arithmetic it could not
    propagate (its data propagation stops at Div and Mod: an exported SD3 transformer lost 32 ops of each block's
    output projections that way) evaluated with the pinned input shapes and fed back as constants."""
    inferred = _infer(model)
    for _ in range(rounds):
        folded = _fold_shape_values(model, inferred)
        if folded is None:
            break
        model, inferred = folded, _infer(folded)
    return inferred


def _fold_shape_values(model: onnx.ModelProto, inferred: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy of `model` (for inference only) whose small integer values computable from initializers and known
    shapes are initializers, or None when no op output lacks a shape or nothing new folds."""
    from onnx import numpy_helper

    shapes = {name: shape for name, shape in _static_shapes(inferred.graph).items() if shape is not None}
    graph = model.graph
    if all(o in shapes or not o for node in graph.node for o in node.output[:1] if node.op_type != "Constant"):
        return None
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer
              if init.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32)
              and math.prod(init.dims) <= SHAPE_VALUE_ELEMS
              and init.data_location != onnx.TensorProto.EXTERNAL}  # weights are never read (load_proto)
    new: dict[str, Any] = {}
    for node in graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type == "Shape" and node.input[0] in shapes:
            start = next((a.i for a in node.attribute if a.name == "start"), 0)
            end = next((a.i for a in node.attribute if a.name == "end"), None)
            out = [np.array(shapes[node.input[0]][start:end], dtype=np.int64)]
        elif node.op_type == "Constant" and all(math.prod(a.t.dims) <= SHAPE_VALUE_ELEMS for a in node.attribute
                                                if a.name == "value"):
            out = _run_node(node, {})
        elif node.op_type in SHAPE_VALUE_OPS and node.domain in ("", "ai.onnx") and inputs and \
                all(i in values for i in inputs):
            out = _run_node(node, {i: values[i] for i in inputs})
        else:
            continue
        arrays = [np.asarray(v) for v in out or []]
        if arrays and len(arrays) == len(node.output) and all(
                v.dtype.kind in "iub" and v.size <= SHAPE_VALUE_ELEMS for v in arrays):
            for name, array in zip(node.output, arrays):
                values[name] = new[name] = array
    stored = {init.name for init in graph.initializer}
    fresh = {name: array for name, array in new.items() if name not in stored}
    if not fresh:
        return None
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    kept = [node for node in copy.graph.node if not any(o in fresh for o in node.output)]  # all or none folded
    del copy.graph.node[:]
    copy.graph.node.extend(kept)
    copy.graph.initializer.extend(numpy_helper.from_array(array, name) for name, array in fresh.items())
    return copy


def _run_node(node: onnx.NodeProto, feeds: dict[str, Any]) -> list[Any] | None:
    """The outputs of one standard op on constant inputs (onnx's reference implementation), or None."""
    from onnx.reference import ReferenceEvaluator

    try:
        return ReferenceEvaluator(node).run(None, feeds)
    except Exception:  # noqa: BLE001 - an op the reference cannot run here: its value stays unknown
        return None


# com.microsoft ops whose every shape-bearing output has the shape of input 0 (ORT's ContribOperators.md):
# the GELU family (Gelu, FastGelu with or without bias, BiasGelu, QuickGelu), BiasAdd (input + bias + skip),
# GroupNorm (NHWC in, NHWC out) and Skip[Simplified]LayerNormalization (output 0, and output 3, the
# input+skip+bias sum; outputs 1-2, mean and inv_std_var, are training-only and left unshaped)
SAME_SHAPE_OUTPUTS = {"Gelu": (0,), "FastGelu": (0,), "BiasGelu": (0,), "QuickGelu": (0,), "BiasAdd": (0,),
                      "GroupNorm": (0,), "SkipLayerNormalization": (0, 3), "SkipSimplifiedLayerNormalization": (0, 3)}


def _standin_nodes(node: onnx.NodeProto, opset: int, index: int) -> list[onnx.NodeProto] | None:
    """Standard ops giving a com.microsoft `node`'s outputs the same shapes (for shape inference only), or None.

    SAME_SHAPE_OUTPUTS        Identity(input 0) -> each listed output
    BiasSplitGelu(x [N,S,D])  -> [N,S,D/2]: the first half of Split(x, 2 parts, last axis)
    MultiHeadAttention(q [B,Sq,Cq], k [B,Sk,Cq], v [B,Sk,Cv]) -> [B,Sq,Cv]: Einsum("bqc,bkd->bqd", q, v)
        (3-D projections, the form fusionc.passes.ort.attention emits; packed QKV and BNSH key/value are left out)"""
    from onnx import helper

    inputs, outputs = list(node.input), list(node.output)
    tag = f"__graph_stats_standin_{index}"
    if node.op_type in SAME_SHAPE_OUTPUTS and inputs and inputs[0]:
        return [helper.make_node("Identity", [inputs[0]], [outputs[i]], name=f"{tag}_{i}")
                for i in SAME_SHAPE_OUTPUTS[node.op_type] if i < len(outputs) and outputs[i]]
    if node.op_type == "BiasSplitGelu" and inputs and inputs[0] and outputs:
        extra = {"num_outputs": 2} if opset >= 18 else {}
        return [helper.make_node("Split", [inputs[0]], [outputs[0], f"{tag}_half"], name=tag, axis=-1, **extra)]
    if node.op_type == "MultiHeadAttention" and len(inputs) >= 3 and inputs[1] and inputs[2] and outputs:
        return [helper.make_node("Einsum", [inputs[0], inputs[2]], [outputs[0]], name=tag, equation="bqc,bkd->bqd")]
    return None


def _with_standins(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model`, or a copy with its com.microsoft nodes stood in by standard ops (_standin_nodes) for inference."""
    if not any(node.domain == MS_DOMAIN for node in model.graph.node):
        return model
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    nodes = []
    for index, node in enumerate(model.graph.node):
        standin = _standin_nodes(node, opset, index) if node.domain == MS_DOMAIN else None
        nodes.extend(standin if standin is not None else [node])
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.node[:]
    copy.graph.node.extend(nodes)
    return copy


def _einsum_macs(equation: str, shapes: list[tuple[int, ...] | None]) -> int:
    lhs = equation.replace(" ", "").split("->")[0]
    sizes: dict[str, int] = {}
    for term, shape in zip(lhs.split(","), shapes):
        if shape is None or "." in term:
            return 0
        for letter, size in zip(term, shape):
            sizes[letter] = max(sizes.get(letter, 1), size)
    return math.prod(sizes.values()) if sizes else 0


def recurrent_timesteps(node: onnx.NodeProto, in_shapes: list) -> int:
    """Sequential steps of an LSTM / GRU / RNN node: sequence length x directions (X is [seq, batch, input], or
    [batch, seq, input] with layout=1; W is [directions, gates*hidden, input]). Each step waits for the previous
    one's hidden state, so an NPU runs it as that many small launches (QNN unrolls the recurrence)."""
    x, w = (in_shapes + [None, None])[:2]
    if not x or not w:
        return 1
    layout = next((attr.i for attr in node.attribute if attr.name == "layout"), 0)
    return max(int(x[1] if layout else x[0]) * int(w[0]), 1)


def graph_stats(model: Any, dims: dict[str, int] | None = None) -> GraphStats:
    """Per-op MACs/params/bytes of `model` (path, ModelProto or onnx_ir Model); symbolic dims pinned to `dims`."""
    proto = onnx.ModelProto()
    proto.CopyFrom(load_proto(model))
    keep = [(f.domain, f.name) for f in proto.functions if (f.domain, f.name) in FUSED_FUNCTIONS]
    if proto.functions:
        proto = onnx.inliner.inline_selected_functions(proto, keep, exclude=True)
    used = _pin_dims(proto, dims or {})
    inferred = _infer_folding_shape_values(_with_standins(proto)).graph  # value_info only: the nodes counted are
    # the graph's own
    graph = proto.graph

    shapes = _static_shapes(inferred)
    dtypes = {value.name: value.type.tensor_type.elem_type
              for value in list(inferred.input) + list(inferred.output) + list(inferred.value_info)}
    # constant sources: initializer name -> (elements, bits, is_float)
    sources: dict[str, tuple[int, int, bool]] = {}
    for init in graph.initializer:
        shapes[init.name] = tuple(init.dims)
        dtypes[init.name] = init.data_type
        sources[init.name] = (math.prod(init.dims), DTYPE_BITS.get(init.data_type, 32), init.data_type in FLOAT_TYPES)
    const_sources: dict[str, set[str]] = {name: {name} for name in sources}  # constant value -> initializers
    charged: set[str] = set()

    def elems(name: str) -> int:
        shape = shapes.get(name)
        return math.prod(shape) if shape is not None else 0

    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in set(node.input):
            consumers[name].append(node)
    graph_outputs = {o.name for o in graph.output}
    scalars = {init.name for init in graph.initializer if math.prod(init.dims) <= 1} | {
        node.output[0] for node in graph.node if node.op_type == "Constant" and any(
            a.name == "value" and math.prod(a.t.dims) <= 1 or a.name in ("value_float", "value_int")
            for a in node.attribute)}
    ops: list[OpStat] = []
    forms: set[str] = set()
    level_of: dict[str, int] = {}  # tensor -> ops on the longest path that produces it (graph inputs: 0)
    first_inputs: list[str | None] = []  # per op: its first activation input (the horizontal fusion group key)
    unknown = 0  # ops with an activation input or first output of unknown shape
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    quantized = {node.input[0] for node in graph.node if node.op_type == "QuantizeLinear"}

    def is_mark(node: onnx.NodeProto) -> bool:  # a QDQ pair, or a Cast into or out of one (a float island's edge)
        return node.op_type in QUANTIZATION_MARKS or (node.op_type == "Cast" and (
            node.input[0] in dequantized or node.output[0] in quantized))
    for node in graph.node:  # a scalar through its quantization marks (a QDQ graph's scale) is still a scalar
        if is_mark(node) and node.input[0] in scalars:
            scalars.add(node.output[0])
    marked: dict[str, str] = {}  # output of a quantization mark -> the activation it marks
    written_out = graph_output_sources(graph_outputs, producer, lambda node: is_mark(node) or is_relabel(
        node, shapes.get(node.input[0])), elems)
    for node in graph.node:
        inputs = [i for i in node.input if i]
        constant_inputs = [i for i in inputs if i in const_sources]
        if node.op_type in ("Constant", "Shape", "Size") or (inputs and len(constant_inputs) == len(inputs)) or (
                not inputs):
            # weight-only subgraph: folded at compile time; its initializers are charged to the consumer
            merged = set().union(*(const_sources[i] for i in constant_inputs)) if constant_inputs else set()
            for out in node.output:
                const_sources[out] = merged
            continue
        op = OpStat(node.name, node.op_type, node.domain, "vector")
        # an embedding lookup (Gather from a constant table) reads only the rows it gathers
        lookup = node.op_type == "Gather" and node.input[0] in const_sources
        for name in constant_inputs:
            for source in sorted(const_sources[name] - charged):
                charged.add(source)
                count, bits, is_float = sources[source]
                if count <= 1:
                    continue
                op.params += count
                read = min(count, elems(node.output[0])) if lookup and name == node.input[0] else count
                op.weight_bytes += read * bits / 8
                if is_float:
                    op.float_weight_elems += read
                else:
                    op.compressed_weight_bytes += read * bits / 8
        activation_inputs = [i for i in inputs if i not in const_sources]
        if any(shapes.get(i) is None for i in activation_inputs + list(node.output[:1])):
            unknown += 1
        op.act_in_elems = sum(elems(i) for i in activation_inputs)
        op.act_out_elems = sum(elems(o) for o in node.output if o)
        op.output_elems = sum(written_out.get(o, 0) for o in node.output if o)
        out_elems = elems(node.output[0]) if node.output else 0
        in_shapes = [shapes.get(i) for i in node.input]
        kind, macs = _classify(node, in_shapes, out_elems, len(activation_inputs))
        if is_mark(node):
            kind, macs = "free", 0
            for out in node.output:  # its consumers read the tensor it marks (one DequantizeLinear per consumer
                marked[out] = marked.get(node.input[0], node.input[0])  # would hide a horizontal fusion group)
        op.kind, op.macs = kind, macs
        if node.op_type in RECURRENT_GATES:
            op.timesteps = recurrent_timesteps(node, in_shapes)
        if kind == "attention":
            fused = node.domain in ("fusionc", MS_DOMAIN)  # the scores stay inside the kernel
            forms.add("fused" if fused else "split_einsum" if node.op_type == "Einsum" else "original")
            out_shape = shapes.get(node.output[0])
            op.attention_scores = bool(not fused and out_shape and len(out_shape) >= 2
                                       and out_shape[-1] == out_shape[-2] and out_shape[-1] >= 64)
        if node.op_type == "Transpose" and kind != "free":
            perm = _perm(node)
            feature_map = perm in LAYOUT_PERMS and next_to_spatial_op(node, producer, consumers)
            op.transpose_form = transpose_form(node, in_shapes[0], feature_map)
            op.permute_rank = permute_rank(perm, in_shapes[0])
            op.permute_run = permute_run(perm, in_shapes[0])
            op.feeds_matmul = feeds_only_matmuls(node, consumers, graph_outputs, scalars, is_mark, shapes)
            op.fed_by_matmul = fed_only_by_matmul(node, producer, consumers, graph_outputs, const_sources, is_mark)
        if kind in ("vector",):
            op.vector_elems = out_elems * VECTOR_WEIGHT.get(node.op_type, 1)
        op.level = max((level_of.get(i, 0) for i in activation_inputs), default=0) + (kind != "free")
        for out in node.output:
            level_of[out] = op.level
        ops.append(op)
        first = marked.get(activation_inputs[0], activation_inputs[0]) if activation_inputs else None
        first_inputs.append(first if kind != "free" else None)
    groups = Counter((op.op_type, first) for op, first in zip(ops, first_inputs) if first)
    for op, first in zip(ops, first_inputs):
        op.siblings = groups[(op.op_type, first)] if first else 1
    form = next((f for f in ("fused", "split_einsum", "original") if f in forms), "none")
    counts: dict[str, int] = defaultdict(int)
    for node in graph.node:
        counts[node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"] += 1
    input_elems = sum(elems(value.name) for value in graph.input if value.name not in sources)
    return GraphStats(ops, form, used, dict(counts), unknown, input_elems)


def _classify(node: onnx.NodeProto, in_shapes: list, out_elems: int, n_activations: int) -> tuple[str, int]:
    op_type = node.op_type
    if (node.domain, op_type) == ("fusionc", "ScaledDotProductAttention"):
        q, k, v = (in_shapes + [None, None, None])[:3]
        if q is None or k is None or v is None:
            return "attention", 0
        return "attention", math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1])
    if (node.domain, op_type) == (MS_DOMAIN, "MultiHeadAttention"):
        return "attention", _mha_macs(in_shapes)
    if node.domain == "fusionc":
        return "vector", 0
    if op_type == "Conv":
        weight = in_shapes[1]
        return "conv", out_elems * math.prod(weight[1:]) if weight else 0
    if op_type == "ConvTranspose":
        data, weight = in_shapes[0], in_shapes[1]
        return "conv", math.prod(data) * math.prod(weight[1:]) if data and weight else 0
    if op_type in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        a = in_shapes[0]
        k = a[-1] if a else 0
        return ("attention" if n_activations >= 2 else "linear"), out_elems * k
    if op_type == "Gemm":
        a = in_shapes[0]
        trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
        k = (a[0] if trans_a else a[-1]) if a else 0
        return ("attention" if n_activations >= 2 else "linear"), out_elems * k
    if op_type == "Einsum":
        equation = next(attr.s.decode() for attr in node.attribute if attr.name == "equation")
        return ("attention" if n_activations >= 2 else "linear"), _einsum_macs(equation, in_shapes)
    if op_type in RECURRENT_GATES:
        # LSTM / GRU / RNN: X [seq, batch, input], W [dirs, gates*hidden, input], R [dirs, gates*hidden, hidden]:
        # every timestep multiplies both weight matrices once per batch row
        x, w, r = (in_shapes + [None, None, None])[:3]
        if not (x and w and r):
            return "linear", 0
        return "linear", x[0] * x[1] * (math.prod(w) + math.prod(r))
    if op_type in FREE_OPS or is_relabel(node, in_shapes[0]):
        return "free", 0
    if op_type in LAYOUT_OPS:
        return "layout", 0
    return "vector", 0


def _mha_macs(in_shapes: list) -> int:
    """com.microsoft::MultiHeadAttention: B*Sq*Sk*(Cq + Cv), Cq = H*D and Cv = H*Dv, as fusionc's SDPA counts it
    (q [B,Sq,H*D]; k, v [B,Sk,H*D] / [B,Sk,H*Dv], or BNSH [B,H,Sk,D]); 0 when a shape is unknown or packed."""
    q, k, v = (in_shapes + [None, None, None])[:3]
    if not q or not k or not v or len(q) != 3 or len(k) != len(v) or len(k) not in (3, 4):
        return 0
    sk, cv = (k[1], v[2]) if len(k) == 3 else (k[2], v[1] * v[3])
    return q[0] * q[1] * sk * (q[2] + cv)
