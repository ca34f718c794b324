"""Compressed weights (passes/compression/palettize.py, passes/compression/quantize_weights.py) lower to Core ML constexpr ops and the
MIL executor decompresses them to what onnxruntime computes from the ONNX form."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from coreml_helpers import coreml_feeds, run_ort

from fusionc.passes.compression.palettize import PalettizeWeightsPass
from fusionc.passes.compression.quantize_weights import QuantizeWeightsPass
from fusionc.targets.coreml.executor import MILExecutor, load_program
from fusionc.targets.coreml.lowering.table import LoweringOptions, lower_model
from fusionc.targets.coreml.package import save_mlpackage


def conv_linear_model() -> ir.Model:
    rng = np.random.default_rng(0)
    w_conv = rng.standard_normal((32, 16, 3, 3)).astype(np.float32) * 0.1
    w_lin = rng.standard_normal((64, 48)).astype(np.float32) * 0.1
    w_gemm = rng.standard_normal((40, 64)).astype(np.float32) * 0.1
    text = """<ir_version: 10, opset_import: ["" : 18]>
agraph (float[1,16,6,6] x, float[1,5,64] t) => (float[1,32,6,6] y, float[1,5,48] z, float[5,40] g) {
 y = Conv<pads=[1,1,1,1]>(x, wc)
 z = MatMul(t, wl)
 t2 = Squeeze(t, zero)
 g = Gemm<transB=1>(t2, wg)
}"""
    proto = onnx.parser.parse_model(text)
    proto.graph.initializer.extend([onnx.numpy_helper.from_array(w_conv, "wc"),
                                    onnx.numpy_helper.from_array(w_lin, "wl"),
                                    onnx.numpy_helper.from_array(w_gemm, "wg"),
                                    onnx.numpy_helper.from_array(np.array([0], np.int64), "zero")])
    return ir.serde.deserialize_model(proto)


CASES = [
    ("lut4_per_tensor", lambda: PalettizeWeightsPass(4), "iOS17", "constexpr_lut_to_dense"),
    ("lut2_grouped", lambda: PalettizeWeightsPass(2, granularity="per_grouped_channel", group_size=8), "iOS18",
     "constexpr_lut_to_dense"),
    ("int8_per_channel", lambda: QuantizeWeightsPass("int8"), "iOS17", "constexpr_affine_dequantize"),
    ("int8_per_channel_ios18", lambda: QuantizeWeightsPass("int8"), "iOS18", "constexpr_blockwise_shift_scale"),
    ("int4_blockwise", lambda: QuantizeWeightsPass("int4", block_size=16), "iOS18", "constexpr_blockwise_shift_scale"),
    ("int8_affine_blockwise", lambda: QuantizeWeightsPass("int8", block_size=8, symmetric=False), "iOS18",
     "constexpr_blockwise_shift_scale"),
]


@pytest.mark.parametrize("name,make_pass,deployment,constexpr", CASES, ids=[c[0] for c in CASES])
def test_compressed_weights_become_constexpr(name, make_pass, deployment, constexpr) -> None:
    model = conv_linear_model()
    result = make_pass()(model)
    assert result.modified
    proto = ir.serde.serialize_model(model)
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((1, 16, 6, 6)).astype(np.float32),
             "t": rng.standard_normal((1, 5, 64)).astype(np.float32)}
    expected = run_ort(proto, feeds)
    program = lower_model(ir.serde.deserialize_model(proto), LoweringOptions("fp16", deployment))
    ops = [op.op_type for op in program.functions["main"].operations]
    assert ops.count(constexpr) == 3, ops
    assert "transpose" not in ops  # linear weights are emitted [out, in], no run-time transpose
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.mlpackage"
        save_mlpackage(program, path, deployment)
        loaded = load_program(path)
        assert [op.op_type for op in loaded.functions["main"].operations].count(constexpr) == 3
        executor = MILExecutor(loaded)
        lazy = MILExecutor(loaded, lazy_weights=True)  # what a program past LAZY_WEIGHT_BYTES gets
    got = executor(coreml_feeds(feeds))
    for ref, out in zip(expected, got.values()):
        # the weights decompress to the same fp16 values; what remains is fp16 activation rounding
        np.testing.assert_allclose(out, ref, rtol=2e-2, atol=2e-2 * np.abs(ref).max())
    assert len(lazy.deferred) == 3 and not set(lazy.deferred) & set(lazy.constants)  # nothing dense at load
    for name, out in lazy(coreml_feeds(feeds)).items():  # decompressed per call: the same numbers
        np.testing.assert_array_equal(out, got[name])


def test_grouped_lut_needs_ios18() -> None:
    from fusionc.core.errors import UnsupportedError

    model = conv_linear_model()
    PalettizeWeightsPass(2, granularity="per_grouped_channel", group_size=8)(model)
    with pytest.raises(UnsupportedError, match="iOS18"):
        lower_model(model, LoweringOptions("fp16", "iOS17"))


def test_executor_lut_and_blockwise_decompression_exact() -> None:
    """The constexpr executors against the definitions, with the weights from the compression helpers."""
    from fusionc.passes.compression import lut as lutlib
    from fusionc.targets.coreml.executor.ops_constexpr import blockwise_shift_scale, lut_to_dense

    rng = np.random.default_rng(3)
    w = rng.standard_normal((8, 6)).astype(np.float32)
    palette = lutlib.palettize(w, 3, axis=0, group_size=4)
    lut = palette.lut.astype(np.float16).reshape(2, 1, 8, 1)
    np.testing.assert_array_equal(lut_to_dense(None, lut, palette.indices), palette.dense())
    data = rng.integers(-8, 8, (8, 6)).astype(np.int8)
    scale = rng.random((8, 2)).astype(np.float32)
    offset = rng.integers(-2, 2, (8, 2)).astype(np.int8)
    want = (data - np.repeat(offset, 3, axis=1)) * np.repeat(scale, 3, axis=1)
    np.testing.assert_allclose(blockwise_shift_scale(None, data, scale, offset), want, rtol=1e-6)


@pytest.mark.parametrize("nbits", [1, 2, 3, 4, 6, 8])
def test_packed_lut_indices_are_coremltools_bytes(nbits) -> None:
    """Our LSB-first packing of iOS16 LUT indices writes the bytes coremltools' own packer writes, for every index
    width and for lengths that end mid-byte."""
    from coremltools.optimize._utils import pack_elements_into_bits

    from fusionc.passes.compression.lut import packed_indices

    rng = np.random.default_rng(nbits)
    for length in (1, 5, 7, 8, 9, 24, 1001):
        indices = rng.integers(0, 2**nbits, length).astype(np.uint8)
        indices[0] = 2**nbits - 1  # the widest value sets every bit of its slot
        expected = pack_elements_into_bits(indices, nbits)
        packed = packed_indices(indices, nbits)
        assert packed.dtype == np.uint8 and packed.tobytes() == expected.tobytes(), (nbits, length)


def test_packing_refuses_an_index_wider_than_its_bits() -> None:
    from fusionc.passes.compression.lut import packed_indices

    with pytest.raises(ValueError, match="exceeds 4 bits"):
        packed_indices(np.array([3, 16], dtype=np.uint8), 4)


@pytest.mark.parametrize("nbits", [1, 2, 3, 4, 6, 8])
def test_executor_unpacks_what_coremltools_packs(nbits) -> None:
    """The executor reads iOS16 LUT indices as packed by coremltools' own packer (not ours: the check stays
    independent of the lowering), for lengths that end mid-byte and mid-word."""
    from coremltools.optimize._utils import pack_elements_into_bits

    from fusionc.targets.coreml.executor.ops_constexpr import unpack_bits

    rng = np.random.default_rng(10 + nbits)
    for length in (1, 5, 7, 8, 9, 24, 1001):
        indices = rng.integers(0, 2**nbits, length).astype(np.uint8)
        np.testing.assert_array_equal(unpack_bits(pack_elements_into_bits(indices, nbits), nbits, length), indices)


def test_lowered_lut_indices_are_coremltools_packing_of_the_palette() -> None:
    """The lowering hands the graph's stored index stream to Core ML as is (trimmed) where no transpose is needed:
    byte for byte what coremltools packs from the palette's indices (a linear weight's, transposed to [out, in])."""
    from coremltools.optimize._utils import pack_elements_into_bits

    from fusionc.passes.compression.palettize import read_lut_node
    from fusionc.targets.coreml.lowering.table import mil_name

    model = conv_linear_model()
    PalettizeWeightsPass(4)(model)
    palettes = {mil_name(n.outputs[0].name): read_lut_node(n) for n in model.graph if n.op_type == "LutToDense"}
    program = lower_model(model, LoweringOptions("fp16", "iOS17"))
    lowered = {op.name: op for op in program.functions["main"].operations if op.op_type == "constexpr_lut_to_dense"}
    assert len(lowered) == len(palettes) == 3 and any(not name.endswith("_t") for name in lowered)
    for name, op in lowered.items():
        indices = palettes[name.removesuffix("_t")].indices
        expected = pack_elements_into_bits((indices.T if name.endswith("_t") else indices).reshape(-1), 4)
        assert np.asarray(op.indices.val).tobytes() == expected.tobytes(), name
