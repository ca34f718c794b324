"""ONNX -> MIL lowering: the table, the context the table's functions share, and the graph walk.

coremltools dropped its ONNX frontend, and its torch frontend would bypass the ONNX pass pipeline that every
fusionc target shares, so we lower the optimized ONNX graph ourselves onto the MIL Builder. The table
`LOWERINGS` maps `(domain, op_type)` to one small function per ONNX op (families live in `ops/`); it is the
one definition of what the Core ML target supports. A node outside the table is an `UnsupportedError`
naming the node, its op and the target; a call to a model-local function without an entry is inlined first.

Precision policy (fp16 compute, the default): graph inputs are cast to fp16 at entry, float constants are
stored as fp16, integer tensors are int32 (MIL has no int64 compute), outputs are cast back to fp32. Nodes
whose inputs are all constants (shape arithmetic, causal masks) are folded here in numpy with the ONNX
reference evaluator, except the weight-decompression ops that must become Core ML `constexpr_*` ops.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import onnx
import onnx_ir as ir
from onnx.reference import ReferenceEvaluator

import coremltools as ct
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import Function, Program, Var, types

from fusionc.core.errors import UnsupportedError

class Deferred:
    """A value emitted only when first used (compressed weights: their consumer may want another layout)."""

    def __init__(self, make: Callable[[], Var]) -> None:
        self.make = make


Lowered = Var | np.ndarray | Deferred | None
LowerFn = Callable[["LoweringContext", ir.Node], "Lowered | Sequence[Lowered]"]

LOWERINGS: dict[tuple[str, str], LowerFn] = {}
# Ops that must reach the MIL program even when every input is a constant (they become constexpr ops).
NO_FOLD: set[tuple[str, str]] = set()

TARGET_NAME = "coreml"
CACHE_ELEMENTS = 1 << 16  # constants up to this size are memoized as numpy while lowering
PRECISION_KEY = "fusionc.precision"  # node metadata: "fp32" keeps an op out of fp16 (passes/precision/fp16_safety.py)
_DEPLOYMENT = {
    "iOS16": ct.target.iOS16, "iOS17": ct.target.iOS17, "iOS18": ct.target.iOS18,
    "macOS13": ct.target.macOS13, "macOS14": ct.target.macOS14, "macOS15": ct.target.macOS15,
}
_FLOAT_TYPES = {ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE, ir.DataType.BFLOAT16}
_INT_TYPES = {ir.DataType.INT64, ir.DataType.INT32, ir.DataType.INT16, ir.DataType.INT8, ir.DataType.UINT8,
              ir.DataType.UINT16, ir.DataType.UINT32, ir.DataType.UINT64}


def register(*op_types: str, domain: str = "", fold: bool = True) -> Callable[[LowerFn], LowerFn]:
    """Decorator: register `fn` as the lowering of each ONNX `op_type` in `domain`."""

    def wrap(fn: LowerFn) -> LowerFn:
        for op_type in op_types:
            LOWERINGS[(domain, op_type)] = fn
            if not fold:
                NO_FOLD.add((domain, op_type))
        return fn

    return wrap


def deployment_target(name: str) -> Any:
    if name not in _DEPLOYMENT:
        raise UnsupportedError(f"unknown --deployment-target '{name}': choose one of {', '.join(_DEPLOYMENT)}")
    return _DEPLOYMENT[name]


def mil_name(name: str) -> str:
    """A MIL-safe identifier for an ONNX value name."""
    out = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return out if out and not out[0].isdigit() else f"v_{out}"


@dataclass
class LoweringOptions:
    compute_precision: str = "fp16"  # fp16 | fp32
    deployment_target: str = "iOS17"
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # override symbolic dims
    input_dtypes: dict[str, str] = field(default_factory=dict)  # interface dtype override, e.g. input_ids fp32
    output_names: dict[str, str] = field(default_factory=dict)  # ONNX output name -> artifact output name
    input_names: dict[str, str] = field(default_factory=dict)  # ONNX input name -> artifact input name
    native_outputs: set[str] = field(default_factory=set)  # outputs kept in the compute dtype (chunk crossings)


class LoweringContext:
    """Maps ONNX values to MIL vars or numpy constants while the table's functions run."""

    def __init__(self, model: ir.Model, options: LoweringOptions) -> None:
        self.model = model
        self.options = options
        self.float_dtype = options.compute_precision
        self.opset = deployment_target(options.deployment_target)
        self.values: dict[ir.Value, Var | np.ndarray] = {}
        self._const_vars: dict[tuple[int, str], Var] = {}
        self.node: ir.Node | None = None

    # -- values ---------------------------------------------------------------------------------------
    def set(self, value: ir.Value, lowered: Var | np.ndarray | Deferred) -> None:
        self.values[value] = lowered

    def const(self, value: ir.Value | None) -> np.ndarray | None:
        """The value as a numpy array when it is known at compile time, else None."""
        if value is None:
            return None
        got = self.values.get(value)
        if isinstance(got, Deferred):
            return None
        if isinstance(got, np.ndarray):
            return got
        if got is not None and got.val is not None and not _is_constexpr(got):
            return np.asarray(got.val)
        if got is None and value.const_value is not None:
            arr = value.const_value.numpy()
            if arr.size <= CACHE_ELEMENTS:  # weights are not kept: a lazy (transposed) one would be a 2nd copy
                self.values[value] = arr
            return arr
        return None

    def require_const(self, value: ir.Value | None, what: str) -> np.ndarray:
        arr = self.const(value)
        if arr is None:
            raise self.unsupported(f"needs a constant {what}")
        return arr

    def var(self, value: ir.Value | np.ndarray | Var | float | int, like: Var | None = None) -> Var:
        """The value as a MIL var; constants are materialized under the precision policy."""
        if isinstance(value, Var):
            return value
        if isinstance(value, ir.Value):
            got = self.values.get(value)
            if isinstance(got, Deferred):
                got = self.values[value] = got.make()
            if isinstance(got, Var):
                return got
            arr = self.const(value)
            if arr is None:
                raise self.unsupported(f"input '{value.name}' is not available")
            key = (id(value), self.float_dtype)  # a weight may be needed in fp16 and, by an fp32 op, in fp32
            if key not in self._const_vars:
                suffix = "_fp32" if self.float_dtype != self.options.compute_precision else ""
                self._const_vars[key] = mb.const(val=self.np_const(arr), name=mil_name((value.name or "c") + suffix))
            return self._const_vars[key]
        arr = np.asarray(value)
        if like is not None and types.is_float(like.dtype) and arr.dtype.kind in "iuf":
            arr = arr.astype(types.nptype_from_builtin(like.dtype))
        return mb.const(val=self.np_const(arr))

    def scalar(self, like: Var, value: float) -> np.generic:
        """A float scalar attribute (epsilon, alpha) in the dtype of `like`, as MIL requires."""
        return types.nptype_from_builtin(like.dtype)(value)

    def np_const(self, arr: np.ndarray) -> np.ndarray:
        """Cast a numpy constant to the dtype the program stores it in."""
        arr = np.asarray(arr)
        if arr.dtype.kind == "f":
            if self.float_dtype == "fp16":
                # finfo(float32).min masks become -65504, not -inf: -inf - -inf is NaN in a softmax
                return np.where(np.isfinite(arr), np.clip(arr, -65504.0, 65504.0), arr).astype(np.float16)
            return arr.astype(np.float32)
        if arr.dtype.kind in "iu" and arr.dtype not in (np.int32, np.uint8, np.int8, np.uint16, np.int16):
            return _to_int32(arr)
        if arr.dtype == np.int16 or arr.dtype == np.uint16:
            return arr.astype(np.int32)
        return arr

    def mil_dtype(self, dtype: ir.DataType) -> str:
        if dtype in _FLOAT_TYPES:
            return self.float_dtype
        if dtype in _INT_TYPES:
            return "int32"
        if dtype == ir.DataType.BOOL:
            return "bool"
        raise self.unsupported(f"has dtype {dtype}, which Core ML does not compute with")

    def input(self, node: ir.Node, index: int) -> ir.Value | None:
        return node.inputs[index] if index < len(node.inputs) else None

    def attr(self, node: ir.Node, name: str, default: Any = None) -> Any:
        a = node.attributes.get(name)
        if a is None:
            return default
        value = a.value
        if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
            return list(value)
        return value

    def unsupported(self, why: str) -> UnsupportedError:
        node = self.node
        where = f"node '{node.name}' ({node.domain or 'ai.onnx'}::{node.op_type})" if node else "graph"
        return UnsupportedError(f"{where} {why} on target '{TARGET_NAME}'")


def _is_constexpr(var: Var) -> bool:
    return var.op is not None and var.op.op_type.startswith("constexpr_")


def _to_int32(arr: np.ndarray) -> np.ndarray:
    info = np.iinfo(np.int32)
    return np.clip(arr, info.min, info.max).astype(np.int32)


# -- constant folding -----------------------------------------------------------------------------------


def _fold(ctx: LoweringContext, node: ir.Node) -> list[np.ndarray] | None:
    """Evaluate a node whose inputs are all constants with the ONNX reference evaluator."""
    key = (node.domain, node.op_type)
    if key in NO_FOLD or node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type == "Constant":
        return None
    inputs: list[np.ndarray | None] = []
    for value in node.inputs:
        if value is None:
            inputs.append(None)
            continue
        arr = ctx.const(value)
        if arr is None:
            return None
        inputs.append(arr)
    names = [f"i{k}" if v is not None else "" for k, v in enumerate(inputs)]
    proto = ir.serde.serialize_node(node)
    del proto.input[:]
    proto.input.extend(names)
    del proto.output[:]
    proto.output.extend(f"o{k}" for k in range(len(node.outputs)))
    opset = ctx.model.opset_imports.get("", 18)
    graph = onnx.helper.make_graph(
        [proto], "fold",
        [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
         for n, a in zip(names, inputs) if a is not None],
        [onnx.helper.make_tensor_value_info(f"o{k}", onnx.TensorProto.UNDEFINED, None)
         for k in range(len(node.outputs))],
    )
    fold_model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    feeds = {n: a for n, a in zip(names, inputs) if a is not None}
    try:
        results = ReferenceEvaluator(fold_model).run(None, feeds)
    except Exception:  # noqa: BLE001 - an op the evaluator cannot run is simply lowered instead
        return None
    return [np.asarray(r) for r in results]


# -- the walk -------------------------------------------------------------------------------------------


def _placeholder_dtype(ctx: LoweringContext, value: ir.Value) -> tuple[Any, str]:
    """(interface MIL type, compute dtype string) of a graph input."""
    override = ctx.options.input_dtypes.get(value.name)
    compute = ctx.mil_dtype(value.dtype)
    interface = override or ("fp32" if compute in ("fp16", "fp32") else compute)
    return types.string_to_builtin(interface), compute


def _static_shape(ctx: LoweringContext, value: ir.Value) -> tuple[int, ...]:
    if value.name in ctx.options.input_shapes:
        return tuple(int(d) for d in ctx.options.input_shapes[value.name])
    if value.shape is None:
        raise UnsupportedError(f"graph input '{value.name}' has no shape: give it a static shape")
    dims = []
    for d in value.shape:
        if not isinstance(d, int):
            dims.append(1)  # a symbolic dim (the batch axis) defaults to 1 unless input_shapes says otherwise
        else:
            dims.append(int(d))
    return tuple(dims)


def lower_node(ctx: LoweringContext, node: ir.Node) -> None:
    ctx.node = node
    folded = _fold(ctx, node)
    if folded is not None:
        for out, arr in zip(node.outputs, folded):
            ctx.set(out, arr)
        return
    key = (node.domain if node.domain != "ai.onnx" else "", node.op_type)
    fn = LOWERINGS.get(key)
    if fn is None:
        raise ctx.unsupported("has no Core ML lowering")
    with _node_precision(ctx, node):
        result = fn(ctx, node)
    outs = list(result) if isinstance(result, (list, tuple)) else [result]
    for value, lowered in zip(node.outputs, outs):
        if lowered is None:
            continue
        ctx.set(value, lowered if isinstance(lowered, (Var, Deferred)) else np.asarray(lowered))


@contextmanager
def _node_precision(ctx: LoweringContext, node: ir.Node) -> Iterator[None]:
    """Lower an op marked fp32 by passes/precision/fp16_safety.py (it overflows fp16) in fp32 inside an fp16 program.

    Float inputs are cast to the op's precision (fp16 -> fp32 into a marked op, back to fp16 out of it); the
    precision pass marks the producer and every consumer of an overflowing value, so what crosses back is in range.
    """
    default = ctx.options.compute_precision
    wanted = "fp32" if default == "fp16" and node.metadata_props.get(PRECISION_KEY) == "fp32" else default
    swapped = {}
    for value in node.inputs:
        got = ctx.values.get(value) if value is not None else None
        if isinstance(got, Var) and types.is_float(got.dtype) and types.builtin_to_string(got.dtype) != wanted:
            swapped[value] = got
            ctx.values[value] = mb.cast(x=got, dtype=wanted)
    ctx.float_dtype = wanted
    try:
        yield
    finally:
        ctx.float_dtype = default
        ctx.values.update(swapped)


def inline_unlowered_functions(model: ir.Model) -> None:
    """Inline the model-local functions that have no entry in the table (their bodies are lowered)."""
    from onnx_ir.passes.common import InlinePass

    def criteria(function: ir.Function) -> bool:
        return (function.domain, function.name) not in LOWERINGS

    if model.functions:
        InlinePass(criteria=criteria)(model)


def lower_model(model: ir.Model, options: LoweringOptions) -> Program:
    """Lower an ONNX model (static shapes) into a MIL program with one function, `main`."""

    inline_unlowered_functions(model)
    ctx = LoweringContext(model, options)
    graph = model.graph
    specs = {}
    for value in graph.inputs:
        interface, _ = _placeholder_dtype(ctx, value)
        name = options.input_names.get(value.name, value.name)
        specs[mil_name(name)] = mb.placeholder(shape=_static_shape(ctx, value), dtype=interface)
    with Function(specs, opset_version=ctx.opset) as func:
        for value in graph.inputs:
            var = func.inputs[mil_name(options.input_names.get(value.name, value.name))]
            _, compute = _placeholder_dtype(ctx, value)
            if types.builtin_to_string(var.dtype) != compute:
                var = mb.cast(x=var, dtype=compute, name=mil_name(value.name) + "_cast")
            ctx.set(value, var)
        for node in graph:
            lower_node(ctx, node)
        outputs = []
        for value in graph.outputs:
            ctx.node = None
            name = mil_name(options.output_names.get(value.name, value.name))
            var = ctx.var(value)
            if value.name in options.native_outputs:
                var = mb.identity(x=var, name=name)
            elif types.is_float(var.dtype) and var.dtype != types.fp32:
                var = mb.cast(x=var, dtype="fp32", name=name)
            elif var.dtype == types.bool:
                var = mb.cast(x=var, dtype="int32", name=name)
            else:
                var = mb.identity(x=var, name=name)
            outputs.append(var)
        func.set_outputs(outputs)
    program = Program()
    program.add_function("main", func)
    return program
