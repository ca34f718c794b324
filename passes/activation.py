"""Fuse GELU (erf and tanh forms) into fusionc::Gelu, and optionally GEGLU into fusionc::GeGLU.

torch.onnx.export (dynamo, opset 18) writes F.gelu(x) as x * (0.5 * (Erf(x / sqrt2) + 1)) and
F.gelu(x, approximate="tanh") as x * (0.5 * (Tanh(sqrt(2/pi) * (x + 0.044715 * x^3)) + 1)). The
rules also accept the other association/operand orders people write by hand. ONNX only has a Gelu
op from opset 20 on; the exported graphs are opset 18, hence the fusionc function.

Diffusers' GEGLU (the UNet transformer feed-forward) is Split(h, 2, axis=-1) -> a * gelu(g).
FuseGeGLUPass turns that (after FuseGeluPass) into one fusionc::GeGLU. It is opt-in and not in the
default pipeline: Split + Gelu + Mul already lower on every target, so the extra fused op would only
add one more lowering to write. (CLIP's quick_gelu, x * sigmoid(1.702 x), is left as is.)
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

from fusionc.passes import fused_ops
from fusionc.passes._match import apply_rules, const_array, dim_tokens
from fusionc.passes.cleanup import RemoveDeadCodePass

_SQRT2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _mul(op, a, b):
    return pattern.OrValue([op.Mul(a, b), op.Mul(b, a)])


def _add(op, a, b):
    return pattern.OrValue([op.Add(a, b), op.Add(b, a)])


def _erf_term(op, x):
    scaled = pattern.OrValue([op.Div(x, _SQRT2), _mul(op, x, 1.0 / _SQRT2)])
    return _add(op, op.Erf(scaled), 1.0)


def _tanh_term(op, x):
    cube = pattern.OrValue([op.Pow(x, 3.0), _mul(op, _mul(op, x, x), x)])
    inner = _mul(op, _SQRT_2_OVER_PI, _add(op, x, _mul(op, 0.044715, cube)))
    return _add(op, op.Tanh(inner), 1.0)


# gelu = x * 0.5 * term associates three ways; the output Mul's operand order makes two rules each.
_FORMS = (
    (lambda op, x, term: x, lambda op, x, term: _mul(op, 0.5, term)),  # torch.onnx.export
    (lambda op, x, term: 0.5, lambda op, x, term: _mul(op, x, term)),
    (lambda op, x, term: _mul(op, x, 0.5), lambda op, x, term: term),
)


def _gelu_rewrite(approximate: str):
    def rewrite(op, x, **_):
        out = getattr(op, fused_ops.GELU)(x, approximate=approximate, _domain=fused_ops.DOMAIN)
        out.producer().overload = fused_ops.TANH if approximate == "tanh" else ""
        return out

    return rewrite


def _target(left, right, term, swap: bool):
    def target(op, x):  # the pattern builder makes one pattern variable per parameter
        t = term(op, x)
        a, b = left(op, x, t), right(op, x, t)
        return op.Mul(b, a) if swap else op.Mul(a, b)

    return target


def _gelu_rules() -> list[pattern.RewriteRule]:
    return [
        pattern.RewriteRule(_target(left, right, term, swap), _gelu_rewrite(approximate),
                            name=f"Gelu_{approximate}_{index}{'_swapped' if swap else ''}")
        for approximate, term in (("none", _erf_term), ("tanh", _tanh_term))
        for index, (left, right) in enumerate(_FORMS)
        for swap in (False, True)
    ]


_GELU_RULES = pattern.RewriteRuleSet(_gelu_rules())


class FuseGeluPass(ir.passes.InPlacePass):
    """Replace GELU decompositions by fusionc::Gelu.

        x -- Div(sqrt2) -- Erf -- Add(1) -- Mul(0.5) -- Mul(x)     ->   x -- fusionc::Gelu <approximate="none">
        x -- Pow(3) .. Tanh -- Add(1) -- Mul(0.5) -- Mul(x)         ->   x -- fusionc::Gelu:tanh <approximate="tanh">
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = apply_rules(model, _GELU_RULES)
        if count:
            RemoveDeadCodePass()(model)
        return ir.passes.PassResult(model, bool(count))


class FuseGeGLU(pattern.RewriteRuleClassBase):
    def pattern(self, op, h):
        a, g = op.Split(h, _allow_other_inputs=True, _outputs=["a", "g"])
        return op.Mul(a, op.Gelu(g, _domain=fused_ops.DOMAIN, _outputs=["gelu"]))

    def check(self, context, h: ir.Value, a: ir.Value, g: ir.Value, **_) -> pattern.MatchResult:
        result = pattern.MatchResult()
        split = a.producer()
        dims = dim_tokens(h)
        if dims is None or not isinstance(dims[-1], int) or dims[-1] % 2:
            return result.fail("last axis of the split input must be static and even", h)
        axis = split.attributes.get("axis")
        if (0 if axis is None else axis.as_int()) not in (-1, len(dims) - 1):
            return result.fail("split is not on the last axis", h)
        if len(split.inputs) > 1 and split.inputs[1] is not None:
            sizes = const_array(split.inputs[1])
            if sizes is None or not np.array_equal(sizes, [dims[-1] // 2] * 2):
                return result.fail("split sizes are not two equal halves", h)
        return result

    def rewrite(self, op, h: ir.Value, gelu: ir.Value, **_):
        approximate = gelu.producer().attributes.get("approximate")
        mode = "none" if approximate is None else approximate.as_string()
        out = getattr(op, fused_ops.GEGLU)(h, approximate=mode, _domain=fused_ops.DOMAIN)
        out.producer().overload = fused_ops.TANH if mode == "tanh" else ""
        return out


_GEGLU_RULES = pattern.RewriteRuleSet([FuseGeGLU.rule()], commute=True)


class FuseGeGLUPass(ir.passes.InPlacePass):
    """Replace Split -> (a, fusionc::Gelu(g)) -> Mul by fusionc::GeGLU (run after FuseGeluPass).

        h -- Split(axis=-1) -- a ------------------ Mul      ->   h -- fusionc::GeGLU <approximate>
                           `-- g -- fusionc::Gelu --'
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = apply_rules(model, _GEGLU_RULES)
        if count:
            RemoveDeadCodePass()(model)
        return ir.passes.PassResult(model, bool(count))
