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

from fusionc.passes.generic import fused_ops
from fusionc.passes.generic._match import apply_rules, const_array, dim_tokens, root_filtered, scalar
from fusionc.passes.generic.cleanup import RemoveDeadCodePass

_SQRT2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
# Constants are pattern variables checked in `condition` (onnxscript's constant patterns only take
# 0-d tensors and a 1e-5 tolerance, which misses fp16 graphs: sqrt(2) is 1.4140625 in fp16).
_CONSTANT_RTOL = 4e-3  # bf16 rounding
_EXPECTED = {"one": 1.0, "half": 0.5, "sqrt2": _SQRT2, "inv_sqrt2": 1.0 / _SQRT2, "three": 3.0,
             "coef": 0.044715, "root": _SQRT_2_OVER_PI}


def _mul(op, a, b):
    return pattern.OrValue([op.Mul(a, b), op.Mul(b, a)])


def _add(op, a, b):
    return pattern.OrValue([op.Add(a, b), op.Add(b, a)])


def _erf_term(op, x, c):
    scaled = pattern.OrValue([op.Div(x, c["sqrt2"]), _mul(op, x, c["inv_sqrt2"])])
    return _add(op, op.Erf(scaled), c["one"])


def _tanh_term(op, x, c):
    cube = pattern.OrValue([op.Pow(x, c["three"]), _mul(op, _mul(op, x, x), x)])
    inner = _mul(op, c["root"], _add(op, x, _mul(op, c["coef"], cube)))
    return _add(op, op.Tanh(inner), c["one"])


# gelu = x * 0.5 * term associates three ways; the output Mul's operand order makes two rules each.
_FORMS = (
    (lambda op, x, t, c: x, lambda op, x, t, c: _mul(op, c["half"], t)),  # torch.onnx.export
    (lambda op, x, t, c: c["half"], lambda op, x, t, c: _mul(op, x, t)),
    (lambda op, x, t, c: _mul(op, x, c["half"]), lambda op, x, t, c: t),
)


def _target(left, right, term, names: tuple[str, ...], swap: bool):
    def build(op, x, constants):
        t = term(op, x, constants)
        a, b = left(op, x, t, constants), right(op, x, t, constants)
        return op.Mul(b, a) if swap else op.Mul(a, b)

    # the pattern builder makes one pattern variable per parameter of the target function
    if names == ("one", "half", "sqrt2", "inv_sqrt2"):
        def target(op, x, one, half, sqrt2, inv_sqrt2):
            return build(op, x, dict(one=one, half=half, sqrt2=sqrt2, inv_sqrt2=inv_sqrt2))
    else:
        def target(op, x, one, half, three, coef, root):
            return build(op, x, dict(one=one, half=half, three=three, coef=coef, root=root))
    return target


def _constants_ok(context, **bindings) -> pattern.MatchResult:
    result = pattern.MatchResult()
    for name, expected in _EXPECTED.items():
        if bindings.get(name) is None:
            continue  # an alternative without this constant matched
        got = scalar(bindings[name])
        if got is None or not math.isclose(got, expected, rel_tol=_CONSTANT_RTOL):
            return result.fail(f"constant {name} is {got}, expected {expected}", bindings[name])
    return result


def _gelu_rewrite(approximate: str):
    def rewrite(op, x, **_):
        out = getattr(op, fused_ops.GELU)(x, approximate=approximate, _domain=fused_ops.DOMAIN)
        out.producer().overload = fused_ops.TANH if approximate == "tanh" else ""
        return out

    return rewrite


def _gelu_rules() -> list[pattern.RewriteRule]:
    terms = (("none", _erf_term, ("one", "half", "sqrt2", "inv_sqrt2")),
             ("tanh", _tanh_term, ("one", "half", "three", "coef", "root")))
    return [
        pattern.RewriteRule(_target(left, right, term, names, swap), _gelu_rewrite(approximate), _constants_ok,
                            name=f"Gelu_{approximate}_{index}{'_swapped' if swap else ''}")
        for approximate, term, names in terms
        for index, (left, right) in enumerate(_FORMS)
        for swap in (False, True)
    ]


_GELU_RULES = root_filtered(pattern.RewriteRuleSet(_gelu_rules()))


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


_GEGLU_RULES = root_filtered(pattern.RewriteRuleSet([FuseGeGLU.rule()], commute=True))


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
