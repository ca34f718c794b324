"""RankFourUnpatchifyPass: a DiT's rank-6 unpatchify becomes rank <= 4 + DepthToSpace, same numbers."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from fusionc.passes.generic.unpatchify import RankFourUnpatchifyPass

# tokens of a 3x4 patch grid, patch 2, 5 channels (SD3/PixArt's head: Reshape, Einsum, Reshape)
UNPATCHIFY = """
<ir_version: 8, opset_import: ["" : 18]>
g (float[N, 12, 20] x) => (float[N, 5, 6, 8] y) {
    s1 = Constant <value = int64[6] {-1, 3, 4, 2, 2, 5}> ()
    p = Reshape (x, s1)
    e = Einsum <equation = "nhwpqc->nchpwq"> (p)
    s2 = Constant <value = int64[4] {-1, 5, 6, 8}> ()
    y = Reshape (e, s2)
}
"""


def _run(model: ir.Model, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(ir.to_proto(model).SerializeToString()).run(None, {"x": x})[0]


def _model(text: str) -> ir.Model:
    model = ir.serde.deserialize_model(onnx.shape_inference.infer_shapes(onnx.parser.parse_model(text)))
    return model


def test_unpatchify_becomes_rank_four_with_identical_output() -> None:
    model = _model(UNPATCHIFY)
    x = np.random.default_rng(0).standard_normal((2, 12, 20)).astype(np.float32)
    before = _run(model, x)
    assert RankFourUnpatchifyPass()(model).modified
    ops = [n.op_type for n in model.graph]
    assert "Einsum" not in ops and ops.count("DepthToSpace") == 1
    assert max(len(v.shape) for n in model.graph for v in n.outputs if v.shape is not None) <= 4
    np.testing.assert_array_equal(_run(model, x), before)
    assert not RankFourUnpatchifyPass()(model).modified


def test_another_permutation_is_left_alone() -> None:
    model = _model(UNPATCHIFY.replace("nhwpqc->nchpwq", "nhwpqc->ncwphq"))
    assert not RankFourUnpatchifyPass()(model).modified
    assert "Einsum" in [n.op_type for n in model.graph]
