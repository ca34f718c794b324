"""Lowerings of ONNX shape, layout and indexing ops (Reshape, Transpose, Slice, Gather, Concat, ...).

Core ML programs here have static shapes, so shape arguments are resolved at compile time: ONNX's
`0`-copies-the-input-dim in Reshape, negative Slice bounds and Expand's broadcast target become plain
integers before they reach MIL. Shape-only subgraphs were folded by the lowering walk already.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.frontend._utils import build_einsum_mil
from coremltools.converters.mil.mil import Var

from fusionc.targets.coreml.lowering.table import LoweringContext, mil_name, register


def _axes(ctx: LoweringContext, node: ir.Node, index: int = 1) -> list[int] | None:
    if "axes" in node.attributes:
        return [int(a) for a in ctx.attr(node, "axes")]
    arr = ctx.const(ctx.input(node, index))
    return None if arr is None else [int(a) for a in np.asarray(arr).reshape(-1)]


def _norm(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


@register("Shape")
def shape(ctx: LoweringContext, node: ir.Node) -> np.ndarray:
    x = ctx.var(node.inputs[0])
    dims = np.array(x.shape, dtype=np.int64)
    start, end = ctx.attr(node, "start", 0), ctx.attr(node, "end", None)
    return dims[start:end]


@register("Size")
def size(ctx: LoweringContext, node: ir.Node) -> np.ndarray:
    return np.array(int(np.prod(ctx.var(node.inputs[0]).shape)), dtype=np.int64)


@register("Reshape")
def reshape(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    target = [int(d) for d in ctx.require_const(node.inputs[1], "shape")]
    if not ctx.attr(node, "allowzero", 0):
        target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
    if list(x.shape) == target:
        return x
    return mb.reshape(x=x, shape=np.array(target, dtype=np.int32))


@register("Flatten")
def flatten(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    axis = _norm(ctx.attr(node, "axis", 1), x.rank)
    lead = int(np.prod(x.shape[:axis])) if axis else 1
    return mb.reshape(x=x, shape=np.array([lead, -1], dtype=np.int32))


@register("Transpose")
def transpose(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    perm = ctx.attr(node, "perm", list(range(x.rank))[::-1])
    if list(perm) == list(range(x.rank)):
        return x
    return mb.transpose(x=x, perm=np.array(perm, dtype=np.int32))


@register("Unsqueeze")
def unsqueeze(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    axes = _axes(ctx, node)
    rank = x.rank + len(axes)
    return mb.expand_dims(x=x, axes=sorted(_norm(a, rank) for a in axes))


@register("Squeeze")
def squeeze(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    axes = _axes(ctx, node)
    if axes is None:
        axes = [i for i, d in enumerate(x.shape) if d == 1]
    if not axes:
        return x
    if len(axes) == x.rank:  # MIL squeeze cannot produce a rank-0 tensor from rank 1 everywhere
        return mb.reshape(x=x, shape=np.array([1], dtype=np.int32)) if x.rank == 1 else mb.squeeze(x=x)
    return mb.squeeze(x=x, axes=sorted(_norm(a, x.rank) for a in axes))


@register("Concat")
def concat(ctx: LoweringContext, node: ir.Node) -> Var:
    values = [ctx.var(v) for v in node.inputs if v is not None]
    values = [v for v in values if 0 not in v.shape] or values[:1]
    if len(values) == 1:
        return values[0]
    axis = _norm(ctx.attr(node, "axis"), values[0].rank)
    return mb.concat(values=values, axis=axis, interleave=False)


@register("Split")
def split(ctx: LoweringContext, node: ir.Node) -> list[Var]:
    x = ctx.var(node.inputs[0])
    axis = _norm(ctx.attr(node, "axis", 0), x.rank)
    sizes = ctx.const(ctx.input(node, 1))
    if sizes is None and "split" in node.attributes:
        sizes = np.array(ctx.attr(node, "split"))
    n = len(node.outputs)
    if sizes is None:
        dim = x.shape[axis]
        chunk = -(-dim // n)
        sizes = np.array([min(chunk, dim - i * chunk) for i in range(n)])
    sizes = [int(s) for s in sizes]
    if len(sizes) == 1:
        return [x]
    outs = mb.split(x=x, split_sizes=np.array(sizes, dtype=np.int32), axis=axis)
    return list(outs)


@register("Slice")
def slice_(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    starts = ctx.require_const(node.inputs[1], "starts").reshape(-1)
    ends = ctx.require_const(node.inputs[2], "ends").reshape(-1)
    axes = ctx.const(ctx.input(node, 3))
    steps = ctx.const(ctx.input(node, 4))
    axes = list(range(len(starts))) if axes is None else [_norm(int(a), x.rank) for a in axes.reshape(-1)]
    steps = [1] * len(starts) if steps is None else [int(s) for s in steps.reshape(-1)]
    begin, end, stride = [0] * x.rank, list(x.shape), [1] * x.rank
    begin_mask, end_mask = [True] * x.rank, [True] * x.rank
    for axis, s, e, step in zip(axes, starts, ends, steps):
        dim = x.shape[axis]
        s, e = int(s), int(e)
        # Clamp the way ONNX does, then hand MIL explicit in-range bounds.
        s = s + dim if s < 0 else s
        e = e + dim if e < 0 else e
        if step > 0:
            s, e = min(max(s, 0), dim), min(max(e, 0), dim)
        else:
            s, e = min(max(s, 0), dim - 1), min(max(e, -1), dim - 1)
        begin[axis], stride[axis], begin_mask[axis] = s, step, False
        if step < 0 and e == -1:
            end_mask[axis] = True
        else:
            end[axis], end_mask[axis] = e, False
    if all(begin_mask) and all(end_mask) and all(s == 1 for s in stride):
        return x
    return mb.slice_by_index(x=x, begin=np.array(begin, dtype=np.int32), end=np.array(end, dtype=np.int32),
                             stride=np.array(stride, dtype=np.int32), begin_mask=begin_mask, end_mask=end_mask)


def _indices(ctx: LoweringContext, value: ir.Value, dim: int | None) -> Var:
    idx = ctx.const(value)
    if idx is not None:
        idx = np.asarray(idx).astype(np.int64)
        if dim is not None:
            idx = np.where(idx < 0, idx + dim, idx)
        return ctx.var(idx.astype(np.int32))
    return ctx.var(value)


def _no_validation(ctx: LoweringContext) -> dict:
    """validate_indices=False (indices were normalized above) where the opset has the flag (iOS17+)."""
    import coremltools as ct

    return {"validate_indices": False} if ctx.opset >= ct.target.iOS17 else {}


@register("Gather")
def gather(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    axis = _norm(ctx.attr(node, "axis", 0), x.rank)
    idx = _indices(ctx, node.inputs[1], x.shape[axis])
    return mb.gather(x=x, indices=idx, axis=axis, **_no_validation(ctx))


@register("GatherElements")
def gather_elements(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    axis = _norm(ctx.attr(node, "axis", 0), x.rank)
    idx = _indices(ctx, node.inputs[1], x.shape[axis])
    return mb.gather_along_axis(x=x, indices=idx, axis=axis, **_no_validation(ctx))


@register("GatherND")
def gather_nd(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    idx = _indices(ctx, node.inputs[1], None)
    return mb.gather_nd(x=x, indices=idx, batch_dims=int(ctx.attr(node, "batch_dims", 0)), **_no_validation(ctx))


@register("Expand")
def expand(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    target = [int(d) for d in ctx.require_const(node.inputs[1], "shape")]
    rank = max(x.rank, len(target))
    in_shape = [1] * (rank - x.rank) + list(x.shape)
    target = [1] * (rank - len(target)) + target
    out_shape = [max(a, b) for a, b in zip(in_shape, target)]
    if rank > x.rank:
        x = mb.reshape(x=x, shape=np.array(in_shape, dtype=np.int32))
    reps = [o // i for o, i in zip(out_shape, in_shape)]
    if all(r == 1 for r in reps):
        return x
    return mb.tile(x=x, reps=np.array(reps, dtype=np.int32))


@register("Tile")
def tile(ctx: LoweringContext, node: ir.Node) -> Var:
    reps = ctx.require_const(node.inputs[1], "repeats").astype(np.int32)
    return mb.tile(x=ctx.var(node.inputs[0]), reps=reps)


@register("ConstantOfShape")
def constant_of_shape(ctx: LoweringContext, node: ir.Node) -> np.ndarray:
    shape_ = ctx.require_const(node.inputs[0], "shape")
    value = node.attributes.get("value")
    fill = value.value.numpy().reshape(-1)[0] if value is not None else np.float32(0)
    return np.full([int(d) for d in shape_], fill)


@register("Constant")
def constant(ctx: LoweringContext, node: ir.Node) -> np.ndarray:
    for name in ("value", "value_float", "value_int", "value_floats", "value_ints"):
        attr = node.attributes.get(name)
        if attr is not None:
            value = attr.value
            return value.numpy() if hasattr(value, "numpy") else np.array(value)
    raise ctx.unsupported("has an unsupported constant form")


@register("Range")
def range_(ctx: LoweringContext, node: ir.Node) -> Var:
    start, limit, delta = (ctx.var(v) for v in node.inputs)
    return mb.range_1d(start=start, end=limit, step=delta)


@register("Pad")
def pad(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    pads = [int(p) for p in ctx.require_const(node.inputs[1], "pads")]
    value = ctx.const(ctx.input(node, 2))
    axes = ctx.const(ctx.input(node, 3))
    axes = list(range(x.rank)) if axes is None else [_norm(int(a), x.rank) for a in axes]
    n = len(axes)
    full = [0] * (2 * x.rank)
    for i, axis in enumerate(axes):
        full[2 * axis], full[2 * axis + 1] = pads[i], pads[i + n]
    mode = ctx.attr(node, "mode", "constant")
    mode = {"edge": "replicate"}.get(mode, mode)
    cval = 0.0 if value is None or value.size == 0 else float(value.reshape(-1)[0])
    return mb.pad(x=x, pad=np.array(full, dtype=np.int32), mode=mode, constant_val=ctx.scalar(x, cval))


@register("Einsum")
def einsum(ctx: LoweringContext, node: ir.Node) -> Var:
    inputs = [ctx.var(v) for v in node.inputs]
    name = mil_name(f"{node.name or node.outputs[0].name}_einsum")  # not id(node): names land in the artifact
    return build_einsum_mil(inputs, ctx.attr(node, "equation"), name)


@register("DepthToSpace")
def depth_to_space(ctx: LoweringContext, node: ir.Node) -> Var:
    if ctx.attr(node, "mode", "DCR") != "DCR":
        x = ctx.var(node.inputs[0])
        return mb.pixel_shuffle(x=x, upscale_factor=int(ctx.attr(node, "blocksize")))
    return mb.depth_to_space(x=ctx.var(node.inputs[0]), block_size=int(ctx.attr(node, "blocksize")))


@register("SpaceToDepth")
def space_to_depth(ctx: LoweringContext, node: ir.Node) -> Var:
    return mb.space_to_depth(x=ctx.var(node.inputs[0]), block_size=int(ctx.attr(node, "blocksize")))


@register("Trilu")
def trilu(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    k = ctx.const(ctx.input(node, 1))
    k = 0 if k is None else int(k)
    rows, cols = x.shape[-2], x.shape[-1]
    keep = np.triu(np.ones((rows, cols), bool), k) if ctx.attr(node, "upper", 1) else np.tril(np.ones((rows, cols), bool), k)
    zeros = mb.mul(x=x, y=ctx.var(np.array(0), like=x))
    return mb.select(cond=ctx.var(keep), a=x, b=zeros)


@register("CumSum")
def cumsum(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    axis = int(ctx.require_const(node.inputs[1], "axis"))
    return mb.cumsum(x=x, axis=_norm(axis, x.rank), exclusive=bool(ctx.attr(node, "exclusive", 0)),
                     reverse=bool(ctx.attr(node, "reverse", 0)))
