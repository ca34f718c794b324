"""The fused units of fusionc: ONNX local functions in domain "fusionc".

The fusion passes replace decomposed subgraphs by one call to a function defined here, and add the
function to the model, so onnxruntime still runs the graph (it inlines the body) while the target
lowerings see one recognisable node and match it by (domain, op_type):

    fusionc::ScaledDotProductAttention <scale: float> (query, key, value) -> output
        query [B,H,S,D], key [B,H,Skv,D], value [B,H,Skv,Dv] -> [B,H,S,Dv];
        softmax((query*sqrt(scale)) @ (key^T*sqrt(scale))) @ value (scale is usually 1/sqrt(D)).
    fusionc::ScaledDotProductAttention:masked <scale: float> (query, key, value, mask) -> output
        overload "masked": an additive float mask broadcastable to [B,H,S,Skv] is added to the
        scores before the softmax (CLIP's causal mask); rows whose every key is masked give 0, as
        torch's exported guard (IsNaN -> Where) does. Lowerings must honour the 4th input.
    fusionc::GroupNorm <num_groups: int, epsilon: float> (x, gamma, beta) -> y
        x [N,C,...] (rank 3 or 4 in diffusion graphs), gamma and beta [C].
    fusionc::Gelu <approximate: string> (x) -> y
        approximate "none": 0.5*x*(1+erf(x/sqrt(2))); overload "tanh" with approximate="tanh":
        0.5*x*(1+tanh(sqrt(2/pi)*(x+0.044715*x^3))). The attribute is informational for lowerings,
        the overload selects the body onnxruntime runs.
    fusionc::GeGLU <approximate: string> (x) -> y
        x [..., 2F] -> [..., F]: a, g = split(x, 2, axis=-1); a * gelu(g). Produced only by the
        opt-in FuseGeGLUPass (not in the default pipeline: every target lowers split+Gelu+mul).

LayerNorm is not here: it is the standard ONNX LayerNormalization (opset 17+).

The bodies are written in ONNX text because that is the shortest readable form; they are generic in
the float dtype (constants are CastLike'd), so fp16 graphs keep working.
"""

from __future__ import annotations

import functools

import onnx
import onnx_ir as ir

DOMAIN = "fusionc"
DOMAIN_VERSION = 1
ONNX_OPSET = 18  # the bodies only use ops that are stable from opset 18 on

SDPA = "ScaledDotProductAttention"
GROUP_NORM = "GroupNorm"
GELU = "Gelu"
GEGLU = "GeGLU"
MASKED = "masked"  # overload of SDPA with an additive mask input
TANH = "tanh"  # overload of Gelu / GeGLU with the tanh approximation

_HEADER = f'<domain: "{DOMAIN}", overload: "{{overload}}", opset_import: ["": {ONNX_OPSET}]>\n'

_SDPA_SCORES = """
  scale_f = Constant <value_float: float = @scale> ()
  root = Sqrt(scale_f)
  root_q = CastLike(root, query)
  q_scaled = Mul(query, root_q)
  key_t = Transpose <perm = [0, 1, 3, 2]> (key)
  k_scaled = Mul(key_t, root_q)
  scores = MatMul(q_scaled, k_scaled)
"""

_GELU_ERF = """
  sqrt2 = Constant <value_float = 1.4142135381698608> ()
  one = Constant <value_float = 1.0> ()
  half = Constant <value_float = 0.5> ()
  sqrt2_x = CastLike(sqrt2, {x})
  one_x = CastLike(one, {x})
  half_x = CastLike(half, {x})
  scaled = Div({x}, sqrt2_x)
  erf = Erf(scaled)
  erf1 = Add(erf, one_x)
  half_erf1 = Mul(half_x, erf1)
  {y} = Mul({x}, half_erf1)
"""

_GELU_TANH = """
  three = Constant <value_float = 3.0> ()
  coef = Constant <value_float = 0.044714998453855515> ()
  root = Constant <value_float = 0.7978845834732056> ()
  one = Constant <value_float = 1.0> ()
  half = Constant <value_float = 0.5> ()
  three_x = CastLike(three, {x})
  coef_x = CastLike(coef, {x})
  root_x = CastLike(root, {x})
  one_x = CastLike(one, {x})
  half_x = CastLike(half, {x})
  cube = Pow({x}, three_x)
  cube_c = Mul(coef_x, cube)
  inner = Add({x}, cube_c)
  inner_s = Mul(root_x, inner)
  th = Tanh(inner_s)
  th1 = Add(th, one_x)
  half_th1 = Mul(half_x, th1)
  {y} = Mul({x}, half_th1)
"""

_SOURCES: dict[tuple[str, str], str] = {
    (SDPA, ""): "ScaledDotProductAttention <scale> (query, key, value) => (output) {"
    + _SDPA_SCORES
    + """
  weights = Softmax <axis = -1> (scores)
  output = MatMul(weights, value)
}""",
    (SDPA, MASKED): "ScaledDotProductAttention <scale> (query, key, value, mask) => (output) {"
    + _SDPA_SCORES
    + """
  masked = Add(scores, mask)
  weights = Softmax <axis = -1> (masked)
  nan = IsNaN(weights)
  zero = Constant <value_float = 0.0> ()
  zero_q = CastLike(zero, weights)
  safe = Where(nan, zero_q, weights)
  output = MatMul(safe, value)
}""",
    (GROUP_NORM, ""): """GroupNorm <num_groups, epsilon> (x, gamma, beta) => (y) {
  groups = Constant <value_int: int = @num_groups> ()
  axis0 = Constant <value_ints = [0]> ()
  keep = Constant <value_ints = [0]> ()
  rest = Constant <value_ints = [-1]> ()
  groups_1d = Unsqueeze(groups, axis0)
  grouped_shape = Concat <axis = 0> (keep, groups_1d, rest)
  grouped = Reshape(x, grouped_shape)
  one = Constant <value_float = 1.0> ()
  zero = Constant <value_float = 0.0> ()
  one_x = CastLike(one, x)
  zero_x = CastLike(zero, x)
  ones = Expand(one_x, groups_1d)
  zeros = Expand(zero_x, groups_1d)
  normalized = InstanceNormalization <epsilon: float = @epsilon> (grouped, ones, zeros)
  x_shape = Shape(x)
  restored = Reshape(normalized, x_shape)
  rank = Size(x_shape)
  two = Constant <value_int = 2> ()
  spatial_rank = Sub(rank, two)
  spatial_rank_1d = Unsqueeze(spatial_rank, axis0)
  spatial_ones = ConstantOfShape <value = int64[1] {1}> (spatial_rank_1d)
  affine_shape = Concat <axis = 0> (rest, spatial_ones)
  gamma_b = Reshape(gamma, affine_shape)
  beta_b = Reshape(beta, affine_shape)
  scaled = Mul(restored, gamma_b)
  y = Add(scaled, beta_b)
}""",
    (GELU, ""): "Gelu <approximate> (x) => (y) {" + _GELU_ERF.format(x="x", y="y") + "}",
    (GELU, TANH): "Gelu <approximate> (x) => (y) {" + _GELU_TANH.format(x="x", y="y") + "}",
    (GEGLU, ""): """GeGLU <approximate> (x) => (y) {
  a, g = Split <axis = -1, num_outputs = 2> (x)"""
    + _GELU_ERF.format(x="g", y="gelu")
    + "  y = Mul(a, gelu)\n}",
    (GEGLU, TANH): """GeGLU <approximate> (x) => (y) {
  a, g = Split <axis = -1, num_outputs = 2> (x)"""
    + _GELU_TANH.format(x="g", y="gelu")
    + "  y = Mul(a, gelu)\n}",
}



@functools.cache
def function_proto(op_type: str, overload: str = "") -> onnx.FunctionProto:
    """The FunctionProto of a fused unit (parsed once)."""
    try:
        source = _SOURCES[(op_type, overload)]
    except KeyError:
        raise KeyError(f"no fused op {DOMAIN}::{op_type} overload {overload!r}") from None
    return onnx.parser.parse_function(_HEADER.format(overload=overload) + source)


def make_function(op_type: str, overload: str = "") -> ir.Function:
    """A fresh ir.Function of a fused unit (each model gets its own copy)."""
    return ir.serde.deserialize_function(function_proto(op_type, overload))


def ensure_function(model: ir.Model, op_type: str, overload: str = "") -> ir.Function:
    """Add the fused unit's function and the fusionc opset import to `model` if missing."""
    key = (DOMAIN, op_type, overload)
    function = model.functions.get(key)
    if function is None:
        function = make_function(op_type, overload)
        model.functions[key] = function
    model.opset_imports.setdefault(DOMAIN, DOMAIN_VERSION)
    model.graph.opset_imports.setdefault(DOMAIN, DOMAIN_VERSION)
    return function


def ensure_functions_for_calls(model: ir.Model) -> int:
    """Add the function of every fusionc node in the main graph; returns how many were added."""
    added = 0
    for node in model.graph:
        if node.domain == DOMAIN and (DOMAIN, node.op_type, node.overload) not in model.functions:
            ensure_function(model, node.op_type, node.overload)
            added += 1
    return added


def drop_unused_functions(model: ir.Model) -> None:
    """Remove the local functions no node calls any more, and the fusionc opset import once nothing uses it
    (after a target pass replaced fused units by the ops its runtime has)."""
    used = {(n.domain, n.op_type, n.overload) for n in model.graph}
    for key in [k for k in model.functions if k not in used]:
        del model.functions[key]
    if not any(n.domain == DOMAIN for n in model.graph):
        model.opset_imports.pop(DOMAIN, None)
