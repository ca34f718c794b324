"""Executor ops: elementwise math, activations, comparisons, reductions, softmax and normalizations.

Float inputs are widened to float32 before computing; the engine rounds results to the declared dtype.
Epsilons follow the MIL op definitions (inverse/rsqrt/log carry their own `epsilon` inputs).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special

from fusionc.targets.coreml.executor.engine import register


def f32(a: Any) -> np.ndarray:
    a = np.asarray(a)
    return a.astype(np.float32) if a.dtype == np.float16 else a


def scalar(a: Any, default: Any = None) -> Any:
    if a is None:
        return default
    a = np.asarray(a)
    return a.item() if a.ndim == 0 or a.size == 1 else a


_BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "maximum": np.maximum, "minimum": np.minimum,
    "equal": np.equal, "not_equal": np.not_equal, "less": np.less, "less_equal": np.less_equal,
    "greater": np.greater, "greater_equal": np.greater_equal, "logical_and": np.logical_and,
    "logical_or": np.logical_or, "logical_xor": np.logical_xor, "floor_div": np.floor_divide,
    "mod": np.mod,
}


def _binary(op: Any, x: Any, y: Any) -> np.ndarray:
    return _BINARY[op.op_type](f32(x), f32(y))


for _name in _BINARY:
    register(_name)(_binary)


@register("real_div")
def real_div(op: Any, x: Any, y: Any) -> np.ndarray:
    x, y = f32(x), f32(y)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.true_divide(x, y)


@register("pow")
def pow_(op: Any, x: Any, y: Any) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        return np.power(f32(x), f32(y))


_UNARY = {
    "abs": np.abs, "sqrt": np.sqrt, "exp": np.exp, "exp2": np.exp2, "sin": np.sin, "cos": np.cos,
    "tan": np.tan, "tanh": np.tanh, "floor": np.floor, "ceil": np.ceil, "round": np.round, "sign": np.sign,
    "square": np.square, "erf": special.erf, "logical_not": np.logical_not, "asin": np.arcsin,
    "acos": np.arccos, "atan": np.arctan, "sinh": np.sinh, "cosh": np.cosh, "atanh": np.arctanh,
    "relu": lambda x: np.maximum(x, 0), "relu6": lambda x: np.clip(x, 0, 6), "sigmoid": special.expit,
    "silu": lambda x: x * special.expit(x), "softplus": lambda x: np.logaddexp(0, x),
    "softsign": lambda x: x / (1 + np.abs(x)),
}


def _unary(op: Any, x: Any) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        return _UNARY[op.op_type](f32(x))


for _name in _UNARY:
    register(_name)(_unary)


@register("identity")
def identity(op: Any, x: Any) -> np.ndarray:
    return np.asarray(x)


@register("cast")
def cast(op: Any, x: Any, dtype: Any) -> np.ndarray:
    x = np.asarray(x)
    if str(scalar(dtype)).startswith("int") and x.dtype.kind == "f":
        return np.trunc(x)  # MIL cast float -> int rounds toward zero; the engine narrows the dtype
    return x


@register("inverse")
def inverse(op: Any, x: Any, epsilon: Any = 1e-4) -> np.ndarray:
    return 1.0 / (f32(x) + np.float32(scalar(epsilon, 1e-4)))


@register("rsqrt")
def rsqrt(op: Any, x: Any, epsilon: Any = 1e-12) -> np.ndarray:
    return 1.0 / np.sqrt(f32(x) + np.float32(scalar(epsilon, 1e-12)))


@register("log")
def log(op: Any, x: Any, epsilon: Any = 1e-45) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(f32(x) + np.float32(scalar(epsilon, 1e-45)))


@register("clip")
def clip(op: Any, x: Any, alpha: Any, beta: Any) -> np.ndarray:
    return np.clip(f32(x), scalar(alpha), scalar(beta))


@register("threshold")
def threshold(op: Any, x: Any, alpha: Any) -> np.ndarray:
    return np.maximum(f32(x), scalar(alpha))


@register("leaky_relu")
def leaky_relu(op: Any, x: Any, alpha: Any = 0.01) -> np.ndarray:
    x = f32(x)
    return np.where(x >= 0, x, x * scalar(alpha, 0.01))


@register("elu")
def elu(op: Any, x: Any, alpha: Any = 1.0) -> np.ndarray:
    x = f32(x)
    return np.where(x > 0, x, scalar(alpha, 1.0) * np.expm1(np.minimum(x, 0)))


@register("sigmoid_hard")
def sigmoid_hard(op: Any, x: Any, alpha: Any = 0.2, beta: Any = 0.5) -> np.ndarray:
    return np.clip(scalar(alpha, 0.2) * f32(x) + scalar(beta, 0.5), 0, 1)


@register("gelu")
def gelu(op: Any, x: Any, mode: Any = "EXACT") -> np.ndarray:
    x, mode = f32(x), str(scalar(mode, "EXACT"))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * special.expit(1.702 * x)
    return 0.5 * x * (1 + special.erf(x / np.sqrt(2)))


@register("select")
def select(op: Any, cond: Any, a: Any, b: Any) -> np.ndarray:
    return np.where(np.asarray(cond).astype(bool), f32(a), f32(b))


@register("softmax")
def softmax(op: Any, x: Any, axis: Any = -1) -> np.ndarray:
    e = np.array(x, dtype=np.float32, copy=True)  # private float32 copy, then everything in place
    axis = int(scalar(axis, -1))
    e -= np.max(e, axis=axis, keepdims=True)
    np.exp(e, out=e)
    e /= np.sum(e, axis=axis, keepdims=True)
    return e


def _axes(axes: Any, rank: int) -> tuple[int, ...] | None:
    if axes is None:
        return None
    return tuple(int(a) % rank for a in np.asarray(axes).reshape(-1))


_REDUCE = {
    "reduce_mean": np.mean, "reduce_sum": np.sum, "reduce_max": np.max, "reduce_min": np.min,
    "reduce_prod": np.prod, "reduce_l1_norm": lambda x, axis, keepdims: np.sum(np.abs(x), axis=axis, keepdims=keepdims),
    "reduce_l2_norm": lambda x, axis, keepdims: np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims)),
    "reduce_sum_square": lambda x, axis, keepdims: np.sum(x * x, axis=axis, keepdims=keepdims),
    "reduce_log_sum": lambda x, axis, keepdims: np.log(np.sum(x, axis=axis, keepdims=keepdims)),
    "reduce_log_sum_exp": lambda x, axis, keepdims: special.logsumexp(x, axis=axis, keepdims=keepdims),
}


def _reduce(op: Any, x: Any, axes: Any = None, keep_dims: Any = False) -> np.ndarray:
    x = f32(x)
    return _REDUCE[op.op_type](x, axis=_axes(axes, x.ndim), keepdims=bool(scalar(keep_dims, False)))


for _name in _REDUCE:
    register(_name)(_reduce)


@register("reduce_argmax", "reduce_argmin")
def reduce_arg(op: Any, x: Any, axis: Any = -1, keep_dims: Any = False, output_dtype: Any = None) -> np.ndarray:
    x = f32(x)
    axis = int(scalar(axis, -1))
    fn = np.argmax if op.op_type == "reduce_argmax" else np.argmin
    out = fn(x, axis=axis)
    return np.expand_dims(out, axis) if scalar(keep_dims, False) else out


@register("layer_norm")
def layer_norm(op: Any, x: Any, axes: Any = None, gamma: Any = None, beta: Any = None, epsilon: Any = 1e-5) -> np.ndarray:
    x = f32(x)
    axes_ = _axes(axes, x.ndim) or tuple(range(x.ndim))
    mean = x.mean(axis=axes_, keepdims=True)
    centered = x - mean
    var = np.mean(centered * centered, axis=axes_, keepdims=True)
    y = centered / np.sqrt(var + np.float32(scalar(epsilon, 1e-5)))
    shape = [x.shape[i] if i in axes_ else 1 for i in range(x.ndim)]
    if gamma is not None:
        y = y * f32(gamma).reshape(shape)
    if beta is not None:
        y = y + f32(beta).reshape(shape)
    return y


@register("instance_norm")
def instance_norm(op: Any, x: Any, gamma: Any = None, beta: Any = None, epsilon: Any = 1e-5) -> np.ndarray:
    x = f32(x)
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    centered = x - mean
    var = np.mean(centered * centered, axis=axes, keepdims=True)
    y = centered / np.sqrt(var + np.float32(scalar(epsilon, 1e-5)))
    shape = [1, x.shape[1]] + [1] * (x.ndim - 2)
    if gamma is not None:
        y = y * f32(gamma).reshape(shape)
    if beta is not None:
        y = y + f32(beta).reshape(shape)
    return y


@register("batch_norm")
def batch_norm(op: Any, x: Any, mean: Any, variance: Any, gamma: Any = None, beta: Any = None,
               epsilon: Any = 1e-5) -> np.ndarray:
    x = f32(x)
    shape = [1, x.shape[1]] + [1] * (x.ndim - 2)
    y = (x - f32(mean).reshape(shape)) / np.sqrt(f32(variance).reshape(shape) + np.float32(scalar(epsilon, 1e-5)))
    if gamma is not None:
        y = y * f32(gamma).reshape(shape)
    if beta is not None:
        y = y + f32(beta).reshape(shape)
    return y


@register("l2_norm")
def l2_norm(op: Any, x: Any, axes: Any = None, epsilon: Any = 1e-6) -> np.ndarray:
    x = f32(x)
    axes_ = _axes(axes, x.ndim) or tuple(range(x.ndim))
    return x / np.sqrt(np.maximum(np.sum(x * x, axis=axes_, keepdims=True), scalar(epsilon, 1e-6)))
