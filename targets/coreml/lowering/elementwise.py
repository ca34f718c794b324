"""Lowerings of ONNX elementwise ops: arithmetic, comparisons, logic, activations, Where and Cast.

ONNX and MIL share numpy broadcasting, so most entries are a one-line map. Where MIL's op differs in
semantics we say so: MIL `inverse`/`rsqrt`/`log` add an epsilon by default, so Reciprocal is a real_div;
MIL has no `neg` or `isnan`, so those are a multiply and a self-comparison.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import Var, types

from fusionc.targets.coreml.lowering.table import LoweringContext, register

_BINARY = {
    "Add": "add", "Sub": "sub", "Mul": "mul", "Max": "maximum", "Min": "minimum",
    "Equal": "equal", "Less": "less", "Greater": "greater", "LessOrEqual": "less_equal",
    "GreaterOrEqual": "greater_equal", "And": "logical_and", "Or": "logical_or", "Xor": "logical_xor",
}
_UNARY = {
    "Sigmoid": "sigmoid", "Tanh": "tanh", "Relu": "relu", "Erf": "erf", "Exp": "exp", "Sqrt": "sqrt",
    "Abs": "abs", "Cos": "cos", "Sin": "sin", "Floor": "floor", "Ceil": "ceil", "Round": "round",
    "Sign": "sign", "Softplus": "softplus", "Softsign": "softsign", "Not": "logical_not", "Tan": "tan",
    "Asin": "asin", "Acos": "acos", "Atan": "atan", "Sinh": "sinh", "Cosh": "cosh", "Atanh": "atanh",
}


def binary_operands(ctx: LoweringContext, node: ir.Node) -> tuple[Var, Var]:
    """Both inputs as MIL vars, constants cast to the dtype of the other operand."""
    a_val, b_val = node.inputs[0], node.inputs[1]
    a_const, b_const = ctx.const(a_val), ctx.const(b_val)
    if a_const is not None and b_const is None:
        b = ctx.var(b_val)
        return ctx.var(a_const, like=b) if a_const.size <= 16 else ctx.var(a_val), b
    a = ctx.var(a_val)
    if b_const is not None and b_const.size <= 16:
        return a, ctx.var(b_const, like=a)
    return a, ctx.var(b_val)


def _binary(ctx: LoweringContext, node: ir.Node) -> Var:
    a, b = binary_operands(ctx, node)
    return getattr(mb, _BINARY[node.op_type])(x=a, y=b)


def _unary(ctx: LoweringContext, node: ir.Node) -> Var:
    return getattr(mb, _UNARY[node.op_type])(x=ctx.var(node.inputs[0]))


for _op in _BINARY:
    register(_op)(_binary)
for _op in _UNARY:
    register(_op)(_unary)


@register("Div")
def div(ctx: LoweringContext, node: ir.Node) -> Var:
    a, b = binary_operands(ctx, node)
    if types.is_int(a.dtype):
        # ONNX integer Div truncates toward zero; floor_div agrees for non-negative operands (shape math).
        return mb.floor_div(x=a, y=b)
    return mb.real_div(x=a, y=b)


@register("Pow")
def pow_(ctx: LoweringContext, node: ir.Node) -> Var:
    """x**2 becomes x*x: cheaper, and coremltools' backend pass fuse_pow2_sqrt would rewrite
    sqrt(pow(x, 2)) to x, which is wrong for negative x."""
    exponent = ctx.const(node.inputs[1])
    if exponent is not None and exponent.size == 1 and float(exponent.reshape(-1)[0]) == 2.0:
        x = ctx.var(node.inputs[0])
        if len(x.shape) >= len(exponent.shape):
            return mb.mul(x=x, y=x)
    a, b = binary_operands(ctx, node)
    return mb.pow(x=a, y=b)


@register("Mod")
def mod(ctx: LoweringContext, node: ir.Node) -> Var:
    a, b = binary_operands(ctx, node)
    return mb.mod(x=a, y=b)


@register("Neg")
def neg(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    return mb.mul(x=x, y=ctx.var(np.array(-1), like=x) if types.is_float(x.dtype) else np.int32(-1))


@register("Reciprocal")
def reciprocal(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    return mb.real_div(x=ctx.var(np.array(1.0), like=x), y=x)


@register("Log")
def log(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    return mb.log(x=x, epsilon=ctx.scalar(x, 0.0))


@register("Identity")
def identity(ctx: LoweringContext, node: ir.Node) -> Var:
    return ctx.var(node.inputs[0])


@register("IsNaN")
def isnan(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    return mb.not_equal(x=x, y=x)


@register("IsInf")
def isinf(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    pos, neg_ = ctx.attr(node, "detect_positive", 1), ctx.attr(node, "detect_negative", 1)
    inf = ctx.var(np.array(np.inf), like=x)
    checks = []
    if pos:
        checks.append(mb.equal(x=x, y=inf))
    if neg_:
        checks.append(mb.equal(x=x, y=mb.mul(x=inf, y=ctx.var(np.array(-1.0), like=x))))
    if not checks:
        return mb.not_equal(x=x, y=x)
    return checks[0] if len(checks) == 1 else mb.logical_or(x=checks[0], y=checks[1])


@register("Where")
def where(ctx: LoweringContext, node: ir.Node) -> Var:
    cond = ctx.var(node.inputs[0])
    a_const, b_const = ctx.const(node.inputs[1]), ctx.const(node.inputs[2])
    shapes = [cond.shape] + [ctx.var(v).shape if ctx.const(v) is None else ctx.const(v).shape for v in node.inputs[1:]]
    full = np.broadcast_shapes(*shapes)
    if a_const is not None and b_const is None:
        b = ctx.var(node.inputs[2])
        a = ctx.var(a_const if b.shape == full else np.broadcast_to(a_const, full).copy(), like=b)
        return mb.select(cond=cond, a=a, b=b)
    a = ctx.var(node.inputs[1])
    if b_const is not None:
        b = ctx.var(b_const if a.shape == full else np.broadcast_to(b_const, full).copy(), like=a)
    else:
        b = ctx.var(node.inputs[2])
    return mb.select(cond=cond, a=a, b=b)


@register("Cast", "CastLike")
def cast(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    if node.op_type == "CastLike":
        to = ctx.mil_dtype(node.inputs[1].dtype)
    else:
        to = ctx.mil_dtype(ir.DataType(ctx.attr(node, "to")))
    if types.builtin_to_string(x.dtype) == to:
        return x
    return mb.cast(x=x, dtype=to)


@register("Clip")
def clip(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    lo = ctx.const(ctx.input(node, 1))
    hi = ctx.const(ctx.input(node, 2))
    if types.is_float(x.dtype):
        lo = -np.inf if lo is None else float(lo)
        hi = np.inf if hi is None else float(hi)
        if np.isfinite(lo) and np.isfinite(hi):
            return mb.clip(x=x, alpha=ctx.var(np.array(lo), like=x), beta=ctx.var(np.array(hi), like=x))
    if lo is not None and np.isfinite(lo):
        x = mb.maximum(x=x, y=ctx.var(np.array(lo), like=x))
    if hi is not None and np.isfinite(hi):
        x = mb.minimum(x=x, y=ctx.var(np.array(hi), like=x))
    return x


@register("LeakyRelu")
def leaky_relu(ctx: LoweringContext, node: ir.Node) -> Var:
    return mb.leaky_relu(x=ctx.var(node.inputs[0]), alpha=ctx.scalar(ctx.var(node.inputs[0]), ctx.attr(node, "alpha", 0.01)))


@register("Elu")
def elu(ctx: LoweringContext, node: ir.Node) -> Var:
    return mb.elu(x=ctx.var(node.inputs[0]), alpha=ctx.scalar(ctx.var(node.inputs[0]), ctx.attr(node, "alpha", 1.0)))


@register("HardSigmoid")
def hard_sigmoid(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    return mb.sigmoid_hard(x=x, alpha=ctx.scalar(x, ctx.attr(node, "alpha", 0.2)),
                           beta=ctx.scalar(x, ctx.attr(node, "beta", 0.5)))


@register("HardSwish")
def hard_swish(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    return mb.mul(x=x, y=mb.sigmoid_hard(x=x, alpha=ctx.scalar(x, 1.0 / 6), beta=ctx.scalar(x, 0.5)))


@register("Gelu")
def gelu(ctx: LoweringContext, node: ir.Node) -> Var:
    mode = "TANH_APPROXIMATION" if ctx.attr(node, "approximate", "none") == "tanh" else "EXACT"
    return mb.gelu(x=ctx.var(node.inputs[0]), mode=mode)


@register("Mish")
def mish(ctx: LoweringContext, node: ir.Node) -> Var:
    x = ctx.var(node.inputs[0])
    return mb.mul(x=x, y=mb.tanh(x=mb.softplus(x=x)))
