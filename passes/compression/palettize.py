"""Palettization: n-bit look-up tables (1, 2, 3, 4, 6, 8 bits) for weights, per tensor or per grouped channel.

Each weight becomes a call to the model-local function `fusionc::LutToDense`, so the graph stays runnable on
onnxruntime (which measures the fidelity) and each target lowers the call to its own storage (Core ML:
`constexpr_lut_to_dense`). Indices are stored packed (Core ML's LSB-first bit stream), the LUT in the
weight's dtype with fp16-exact values.

    before                                   after
    W: float[1280,2560,3,3] (initializer)    packed: uint8[M]  lut: float[G,2^n]  shape: int64[4]  offsets: int64[C,1,1,1]
    Conv(x, W, b)                            W = fusionc::LutToDense<nbits=n>(packed, lut, shape, offsets)
                                             Conv(x, W, b)

Inside the function: 3 packed bytes -> one 24-bit word -> 24/n indices (every width divides 24), the first
prod(shape) indices reshaped to `shape`, plus `offsets` (group g of the grouped axis reads LUT entries
g*2^n .. g*2^n + 2^n - 1), then Gather from the flattened LUT.

The clustering (passes/compression/lut.py) is k-means on the distinct fp16 values weighted by their counts; weights are
loaded one at a time (lazy external-data tensors stay lazy), so peak memory is one dense tensor.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from fusionc.passes.compression import lut as lutlib
from fusionc.passes.compression.weights import Weight, find_weights, node_order, replace_weight

DOMAIN = "fusionc"
OP = "LutToDense"
METADATA_KEY = "fusionc.compression"
FP16_BITS = 16  # recipe value meaning "leave this layer uncompressed"

log = logging.getLogger(__name__)


def lut_function(opset: int) -> ir.Function:
    """The body of fusionc::LutToDense(packed, lut, shape, offsets) with attribute nbits."""
    packed, lut, shape, offsets = (ir.Value(name=n) for n in ("packed", "lut", "shape", "offsets"))
    nodes: list[ir.Node] = []

    def op(op_type: str, *inputs: ir.Value, **attrs: Any) -> ir.Value:
        node = ir.node(op_type, list(inputs), attributes=attrs)
        nodes.append(node)
        return node.outputs[0]

    def const(value: Any) -> ir.Value:
        return op("Constant", value=ir.tensor(np.asarray(value, dtype=np.int64)))

    # n = log2(K) from the LUT's width, so the body needs no attribute reference (which onnxscript's version
    # converter cannot handle); the `nbits` attribute on the call is what lowerings read.
    k = op("Gather", op("Shape", lut), const(1), axis=0)
    ln_k = op("Log", op("Cast", k, to=ir.DataType.FLOAT))
    ln_2 = op("Constant", value=ir.tensor(np.asarray(np.log(2.0), np.float32)))
    n = op("Cast", op("Round", op("Div", ln_k, ln_2)), to=ir.DataType.INT64)
    per_word = op("Div", const(24), n)
    words = op("Cast", op("Reshape", packed, const([-1, 3])), to=ir.DataType.INT64)
    word = op("ReduceSum", op("Mul", words, const([1, 256, 65536])), const([1]), keepdims=1)
    shifts = op("Mul", op("Range", const(0), per_word, const(1)), n)
    two = const(2)
    values = op("Mod", op("Div", word, op("Pow", two, shifts)), k)
    flat = op("Reshape", values, const([-1]))
    count = op("ReduceProd", shape, keepdims=1)
    indices = op("Reshape", op("Slice", flat, const([0]), count), shape)
    out = op("Gather", op("Reshape", lut, const([-1])), op("Add", indices, offsets), axis=0)
    out.name = "dense"
    for i, node in enumerate(nodes):
        node.name = f"n{i}"
        for j, o in enumerate(node.outputs):
            o.name = o.name or f"t{i}_{j}"
    graph = ir.Graph([packed, lut, shape, offsets], [out], nodes=nodes, opset_imports={"": opset}, name=OP)
    return ir.Function(DOMAIN, OP, "", graph=graph, attributes=[ir.Attr("nbits", ir.AttributeType.INT, 8)])


def ensure_function(model: ir.Model) -> None:
    """Register fusionc::LutToDense and the fusionc opset in `model` (idempotent)."""
    if (DOMAIN, OP, "") not in model.functions:
        model.functions[(DOMAIN, OP, "")] = lut_function(model.opset_imports.get("", 18))
    model.opset_imports.setdefault(DOMAIN, 1)


def lut_node(weight: Weight, palette: lutlib.Palette) -> tuple[list[ir.Node], list[ir.Value]]:
    """The LutToDense call and its four initializers for one palettized weight."""
    base = weight.value.name
    dtype = weight.value.dtype.numpy()
    k = 1 << palette.nbits
    rank = len(weight.shape)
    offset_shape = [1] * rank
    offset_shape[palette.axis] = weight.shape[palette.axis]
    group_ids = np.arange(weight.shape[palette.axis]) // palette.group_size
    arrays = {
        "packed": lutlib.pack(palette.indices, palette.nbits),
        "lut": palette.lut.astype(dtype),
        "shape": np.asarray(weight.shape, np.int64),
        "offsets": (group_ids * k).astype(np.int64).reshape(offset_shape),
    }
    inits = [ir.Value(name=f"{base}__{key}", const_value=ir.tensor(arr, name=f"{base}__{key}"),
                      shape=ir.Shape(arr.shape), type=ir.TensorType(ir.DataType.from_numpy(arr.dtype)))
             for key, arr in arrays.items()]
    node = ir.Node(DOMAIN, OP, inits, [ir.AttrInt64("nbits", palette.nbits)], name=f"{base}__lut_to_dense")
    return [node], inits


def read_lut_node(node: ir.Node) -> lutlib.Palette:
    """The Palette stored by a LutToDense call (for lowerings and tests)."""
    packed, lut, shape, offsets = (v.const_value.numpy() for v in node.inputs)
    nbits = node.attributes["nbits"].as_int()
    k = 1 << nbits
    shape = tuple(int(d) for d in shape)
    indices = lutlib.unpack(packed, nbits, int(np.prod(shape))).reshape(shape)
    axis = int(np.argmax(offsets.shape)) if offsets.size > 1 else 0
    if lut.shape[1] != k:
        raise ValueError(f"{node.name}: LUT width {lut.shape[1]} does not match nbits={nbits}")
    return lutlib.Palette(indices, lut, nbits, axis, shape[axis] // lut.shape[0])


def choose_group(weight: Weight, granularity: str, group_size: int) -> int | None:
    """Channels per LUT for `weight`: None (per tensor) or a size that divides its output channels."""
    if granularity == "per_tensor":
        return None
    channels = weight.shape[weight.out_axis]
    if group_size <= 0 or channels % min(group_size, channels):
        return None  # uneven groups cannot be expressed by Core ML: one LUT for the tensor
    return min(group_size, channels)


@dataclass
class LayerReport:
    layer: str
    elements: int
    nbits: int
    groups: int
    rel_mse: float
    bytes_before: int
    bytes_after: int

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 9) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


class PalettizeWeightsPass(ir.passes.InPlacePass):
    """Replace each weight by an n-bit LUT call (fusionc::LutToDense); `recipe` gives per-layer bits (16 = keep).

    Layers with fewer than `min_elements` elements, and embeddings unless `include_embeddings`, are left alone.
    """

    def __init__(self, nbits: int | None = None, *, granularity: str = "per_tensor", group_size: int = 16,
                 min_elements: int = 2048, include_embeddings: bool = False,
                 recipe: dict[str, int] | None = None) -> None:
        super().__init__()
        if nbits is None and recipe is None:
            raise ValueError("PalettizeWeightsPass needs nbits or a recipe")
        for bits in ([nbits] if nbits else []) + list((recipe or {}).values()):
            if bits not in lutlib.NBITS + (FP16_BITS,):
                raise ValueError(f"palettization bits must be one of {lutlib.NBITS} (or 16 = keep), got {bits}")
        if granularity not in ("per_tensor", "per_grouped_channel"):
            raise ValueError(f"granularity must be per_tensor or per_grouped_channel, got {granularity}")
        self.nbits = nbits
        self.granularity = granularity
        self.group_size = group_size
        self.min_elements = min_elements
        self.include_embeddings = include_embeddings
        self.recipe = recipe
        self.reports: list[LayerReport] = []

    def bits_for(self, weight: Weight) -> int:
        if self.recipe is not None:
            return int(self.recipe.get(weight.layer, self.nbits or FP16_BITS))
        return int(self.nbits)  # type: ignore[arg-type]

    def palette(self, weight: Weight, nbits: int) -> lutlib.Palette:
        group = choose_group(weight, self.granularity, self.group_size)
        return lutlib.palettize(weight.value.const_value.numpy(), nbits, weight.out_axis, group)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.reports = []
        weights = find_weights(model, self.min_elements, self.include_embeddings)
        order = node_order(model)
        from fusionc.core.progress import track

        for weight in track(weights, "palettize weights"):
            nbits = self.bits_for(weight)
            if nbits == FP16_BITS:
                continue
            try:
                palette = self.palette(weight, nbits)
            except ValueError as err:  # inf/NaN weights: leave the layer alone
                log.warning("not palettizing %s: %s", weight.layer, err)
                continue
            ensure_function(model)
            nodes, inits = lut_node(weight, palette)
            before = weight.value.const_value.nbytes
            self.reports.append(LayerReport(
                weight.layer, weight.size, nbits, palette.groups, palette.relative_error,
                before, sum(v.const_value.nbytes for v in inits)))
            replace_weight(model, weight, nodes, inits, order)
        if self.reports:
            record_compression(model, "palettize", self.summary())
        return ir.passes.PassResult(model, modified=bool(self.reports))

    def summary(self) -> dict[str, Any]:
        """Average bits (over compressed weights), bytes and per-layer bits, for the manifest."""
        elements = sum(r.elements for r in self.reports)
        bits = sum(r.elements * r.nbits for r in self.reports)
        return {
            "method": "palettize", "granularity": self.granularity,
            "group_size": self.group_size if self.granularity == "per_grouped_channel" else None,
            "layers": len(self.reports), "average_bits": round(bits / elements, 4) if elements else None,
            "bytes_before": sum(r.bytes_before for r in self.reports),
            "bytes_after": sum(r.bytes_after for r in self.reports),
        }


def record_compression(model: ir.Model, key: str, summary: dict[str, Any]) -> None:
    """Merge `summary` under `key` into the model's `fusionc.compression` metadata (read by targets/manifest)."""
    current = json.loads(model.metadata_props.get(METADATA_KEY, "{}"))
    current[key] = summary
    model.metadata_props[METADATA_KEY] = json.dumps(current)


def compression_info(model: ir.Model) -> dict[str, Any]:
    """What the compression passes recorded on `model` (empty when none ran)."""
    return json.loads(model.metadata_props.get(METADATA_KEY, "{}"))
