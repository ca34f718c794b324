"""Rewrite rules of our own for the cleanup: no-op Reshapes and the exporter's batched key transpose.

onnxscript's rules (used by cleanup.py) cover Identity, Cast-to-same-type, Dropout, x*1, x+0,
Transpose/Reshape chains and more. Two shapes the torch exporter emits for diffusion models are not
covered, so they are written here:

* A Reshape whose target provably equals its input's shape (constant or Shape(x)-derived), e.g.
  Reshape(x, Shape(x)) left behind by GroupNorm with a dynamic batch axis.
* The key transpose inside torch's scaled-dot-product-attention decomposition,
  k.transpose(-2, -1) exported through 3-D:

      k [B,H,S,D] -> Reshape [-1,S,D] -> Transpose(0,2,1) -> Reshape [B,H,D,S]
      becomes
      k [B,H,S,D] -> Transpose(0,1,3,2)

  which is both simpler and what the attention fusion matches.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter import pattern

from fusionc.passes.generic._match import dim_tokens, reshape_target_is, shape_value


class RemoveNoOpReshape(pattern.RewriteRuleClassBase):
    """Reshape(x, s) where s provably equals x's shape -> x."""

    def pattern(self, op, x, shape):
        return op.Reshape(x, shape, _outputs=["y"])

    def check(self, context, x: ir.Value, shape: ir.Value, y: ir.Value, **_) -> pattern.MatchResult:
        result = pattern.MatchResult()
        dims = dim_tokens(x)
        if dims is None:
            return result.fail("input rank unknown", x)
        if not reshape_target_is(y.producer(), dims):
            return result.fail("target is not the input shape", shape)
        return result

    def rewrite(self, op, x: ir.Value, **_):
        return op.Identity(x)


class CollapseBatchedTranspose(pattern.RewriteRuleClassBase):
    """Reshape(Transpose(Reshape(x, [N,a,b]), [0,2,1]), [B,H,b,a]) -> Transpose(x', [0,1,3,2])."""

    def pattern(self, op, x, shape3, shape4):
        flat = op.Reshape(x, shape3, _outputs=["flat"])
        flat_t = op.Transpose(flat, perm=[0, 2, 1])
        return op.Reshape(flat_t, shape4, _outputs=["y"])

    def check(self, context, x: ir.Value, flat: ir.Value, y: ir.Value, **_) -> pattern.MatchResult:
        result = pattern.MatchResult()
        split = _split_dims(x, flat, y)
        if split is None:
            return result.fail("not a transpose of the last two axes", y)
        return result

    def rewrite(self, op, x: ir.Value, flat: ir.Value, y: ir.Value, **_):
        split = _split_dims(x, flat, y)
        assert split is not None
        source = x
        if split != "same":
            source = op.Reshape(x, op.Constant(value=ir.tensor(split, dtype=ir.DataType.INT64)))
        return op.Transpose(source, perm=[0, 1, 3, 2])


def _split_dims(x: ir.Value, flat: ir.Value, y: ir.Value) -> str | list[int] | None:
    """'same' if x is already [B,H,a,b]; the int target [B,H,a,b] to reshape x to; or None."""
    first, second = flat.producer(), y.producer()
    target3 = shape_value(first.inputs[1])
    if target3 is None or len(target3) != 3:
        return None
    a, b = target3[1], target3[2]
    if any(d in (0, -1) for d in (a, b)):
        return None
    x_dims = dim_tokens(x)
    if x_dims is not None and len(x_dims) == 4 and x_dims[2:] == [a, b]:
        if reshape_target_is(second, [x_dims[0], x_dims[1], b, a]):
            return "same"
    target4 = shape_value(second.inputs[1])
    if (
        target4 is not None
        and len(target4) == 4
        and all(isinstance(d, int) and d != 0 for d in target4)
        and target4[2:] == [b, a]
        and isinstance(a, int)
        and isinstance(b, int)
    ):
        return [target4[0], target4[1], a, b]  # type: ignore[list-item]
    return None


rules = [RemoveNoOpReshape.rule(), CollapseBatchedTranspose.rule()]
