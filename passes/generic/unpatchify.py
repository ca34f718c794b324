"""Unpatchify of diffusion transformers (SD3, PixArt, DiT) in rank-4 form: no rank-6 tensor.

diffusers' transformers turn tokens back into a latent image with

    x [B, H*W, p*p*C] --Reshape--> [B, H, W, p, p, C] --Einsum(nhwpqc->nchpwq)--> [B, C, H, p, W, p] --Reshape--> [B, C, H*p, W*p]

Core ML stops at rank 5 ("only supports tensors with rank <= 5") and the HTP at rank 5 too. The same
permutation in rank <= 4 is a channel reorder and a pixel shuffle (DepthToSpace, CRD: out[n, c, h*p+i, w*p+j]
= in[n, c*p*p + i*p + j, h, w]):

    x --Transpose(0,2,1)--> [B, p*p*C, H*W] --Reshape--> [B, p*p, C, H*W] --Transpose(0,2,1,3)--> [B, C, p*p, H*W]
      --Reshape--> [B, C*p*p, H, W] --DepthToSpace(p, CRD)--> [B, C, H*p, W*p]

Patchify needs nothing: the patch embedding is a strided Conv.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

from fusionc.passes.generic._match import apply_rules, dim_tokens, root_filtered
from fusionc.passes.generic.cleanup import RemoveDeadCodePass

UNPATCHIFY_EQUATIONS = ("nhwpqc->nchpwq",)
UNPATCHIFY_PERM = [0, 5, 1, 3, 2, 4]


class RankFourUnpatchify(pattern.RewriteRuleClassBase):
    def pattern(self, op, tokens, patch_shape, image_shape):
        patches = op.Reshape(tokens, patch_shape, _allow_other_attributes=True)
        permuted = pattern.OrValue([op.Einsum(patches, _outputs=["einsum"], _allow_other_attributes=True),
                                    op.Transpose(patches, _outputs=["transpose"], _allow_other_attributes=True)],
                                   tag_var="form", tag_values=["einsum", "transpose"])
        return op.Reshape(permuted, image_shape, _allow_other_attributes=True)

    def check(self, context, tokens: ir.Value, patch_shape: ir.Value, image_shape: ir.Value, form: str,
              **bindings) -> pattern.MatchResult:
        result = pattern.MatchResult()
        permute = (bindings.get("einsum") or bindings.get("transpose")).producer()
        if form == "einsum":
            equation = permute.attributes.get("equation")
            if equation is None or equation.as_string().replace(" ", "") not in UNPATCHIFY_EQUATIONS:
                return result.fail("not the unpatchify einsum", permute)
        elif list(permute.attributes.get("perm").as_ints()) != UNPATCHIFY_PERM:
            return result.fail("not the unpatchify permutation", permute)
        x, patches = dim_tokens(tokens), dim_tokens(permute.inputs[0])
        out = permute.outputs[0].uses()[0].node.outputs[0] if permute.outputs[0].uses() else None
        image = dim_tokens(out) if out is not None else None
        if x is None or patches is None or image is None or len(x) != 3 or len(patches) != 6 or len(image) != 4:
            return result.fail("shapes unknown or not [B, HW, ppC] -> [B, H, W, p, p, C] -> [B, C, Hp, Wp]", tokens)
        _, h, w, p, q, c = patches
        if not all(isinstance(d, int) for d in (h, w, p, q, c)) or p != q:
            return result.fail("patch grid not static and square", tokens)
        if list(x[1:]) != [h * w, p * p * c] or list(image[1:]) != [c, h * p, w * p]:
            return result.fail("token and image shapes do not match the patch grid", tokens)
        return result

    def rewrite(self, op, tokens: ir.Value, form: str, **bindings):
        permute = (bindings.get("einsum") or bindings.get("transpose")).producer()
        _, h, w, p, _, c = dim_tokens(permute.inputs[0])

        def shape(*dims: int) -> ir.Value:
            return op.Constant(value=ir.tensor(np.array(dims, np.int64)))

        channels_first = op.Transpose(tokens, perm=[0, 2, 1])
        split = op.Reshape(channels_first, shape(0, p * p, c, h * w))
        grouped = op.Transpose(split, perm=[0, 2, 1, 3])
        stacked = op.Reshape(grouped, shape(0, c * p * p, h, w))
        return op.DepthToSpace(stacked, blocksize=p, mode="CRD")


_RULES = root_filtered(pattern.RewriteRuleSet([RankFourUnpatchify.rule()]))


class RankFourUnpatchifyPass(ir.passes.InPlacePass):
    """Replace a transformer's rank-6 unpatchify by Transpose/Reshape (rank <= 4) + DepthToSpace.

        [B,HW,ppC] -Reshape-> [B,H,W,p,p,C] -Einsum-> [B,C,H,p,W,p] -Reshape-> [B,C,Hp,Wp]
        [B,HW,ppC] -T-> -Reshape-> [B,pp,C,HW] -T-> -Reshape-> [B,Cpp,H,W] -DepthToSpace(CRD)-> [B,C,Hp,Wp]
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = apply_rules(model, _RULES)
        if count:
            RemoveDeadCodePass()(model)
        return ir.passes.PassResult(model, bool(count))
