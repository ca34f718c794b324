"""Golden graphs for the compression pass tests: every weight slot kind, plus weights that must stay dense."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

GOLDEN = """<ir_version: 10, opset_import: ["" : 18]>
golden (float[1,16,6,6] x, float[1,5,64] t, int64[1,3] ids) => (float[1,32,6,6] y, float[1,5,48] z, float[5,40] g, float[1,3,64] e) {
 c = Conv<pads=[1,1,1,1]>(x, wc, bc)
 y = Mul(c, scale)
 z = MatMul(t, wl)
 t2 = Squeeze(t, zero)
 g = Gemm<transB=1>(t2, wg)
 e = Gather(emb, ids)
}"""


def golden_model(seed: int = 0) -> ir.Model:
    """Conv [32,16,3,3], MatMul [64,48], Gemm transB [40,64], embedding [100,64]; bias/scale stay dense."""
    rng = np.random.default_rng(seed)
    arrays = {
        "wc": rng.standard_normal((32, 16, 3, 3)).astype(np.float32) * 0.1,
        "bc": rng.standard_normal(32).astype(np.float32),
        "scale": rng.standard_normal((32, 1, 1)).astype(np.float32),
        "wl": rng.standard_normal((64, 48)).astype(np.float32) * 0.1,
        "wg": rng.standard_normal((40, 64)).astype(np.float32) * 0.1,
        "emb": rng.standard_normal((100, 64)).astype(np.float32),
        "zero": np.array([0], np.int64),
    }
    proto = onnx.parser.parse_model(GOLDEN)
    proto.graph.initializer.extend(onnx.numpy_helper.from_array(v, k) for k, v in arrays.items())
    return ir.serde.deserialize_model(proto)


def golden_feeds(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((1, 16, 6, 6)).astype(np.float32),
            "t": rng.standard_normal((1, 5, 64)).astype(np.float32),
            "ids": np.array([[1, 7, 99]], np.int64)}


def run(model: ir.Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    proto = ir.serde.serialize_model(model)
    onnx.checker.check_model(proto)
    return session(proto.SerializeToString()).run(None, feeds)


def session(model: bytes | str) -> ort.InferenceSession:
    """A CPU session that computes DequantizeLinear+MatMul in fp32: by default onnxruntime fuses them into
    MatMulNBits at accuracy level 4, which also quantizes the activations to int8."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "1")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def with_weights(model: ir.Model, dense: dict[str, np.ndarray]) -> ir.Model:
    """A copy of the golden model whose initializers are replaced by `dense` (name -> array)."""
    proto = ir.serde.serialize_model(model)
    for tensor in proto.graph.initializer:
        if tensor.name in dense:
            tensor.CopyFrom(onnx.numpy_helper.from_array(dense[tensor.name].astype(np.float32), tensor.name))
    return ir.serde.deserialize_model(proto)


def op_types(model: ir.Model) -> list[str]:
    return [n.op_type for n in model.graph]
