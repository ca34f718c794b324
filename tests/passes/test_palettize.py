"""Palettization: LUT numerics (passes/compression/lut.py), the PalettizeWeightsPass on golden graphs, lazy weights,
and the Core ML lowering of its fusionc::LutToDense calls through the MIL executor."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
from _compression_helpers import golden_feeds, golden_model, op_types, run, with_weights

from fusionc.passes.entry import enabled
from fusionc.passes.compression import lut as lutlib
from fusionc.passes.compression.palettize import PalettizeWeightsPass, compression_info, read_lut_node


@pytest.mark.parametrize("nbits", lutlib.NBITS)
def test_pack_roundtrip_every_width(nbits: int) -> None:
    rng = np.random.default_rng(nbits)
    for count in (1, 7, 24, 1001):
        idx = rng.integers(0, 1 << nbits, count).astype(np.uint8)
        packed = lutlib.pack(idx, nbits)
        assert packed.size % 3 == 0 and packed.size <= (count * nbits + 7) // 8 + 3
        np.testing.assert_array_equal(lutlib.unpack(packed, nbits, count), idx)


def test_pack_is_core_ml_lsb_first() -> None:
    # coremltools' iOS16 constexpr_lut_to_dense example: 2-bit [0, 3, 2, 1, 3] -> 0b01_10_11_00, 0b11
    packed = lutlib.pack(np.array([0, 3, 2, 1, 3], np.uint8), 2)
    assert list(packed[:2]) == [0b01101100, 0b00000011]


@pytest.mark.parametrize("nbits", lutlib.NBITS)
@pytest.mark.parametrize("group_size", [None, 4])
def test_at_most_2n_distinct_values_is_lossless(nbits: int, group_size: int | None) -> None:
    rng = np.random.default_rng(0)
    values = rng.standard_normal(1 << nbits).astype(np.float16).astype(np.float32)
    w = rng.choice(values, size=(8, 5, 3, 3))
    palette = lutlib.palettize(w, nbits, axis=0, group_size=group_size)
    np.testing.assert_array_equal(palette.dense(), w)
    assert palette.indices.dtype == np.uint8 and int(palette.indices.max()) < (1 << nbits)


@pytest.mark.parametrize("nbits,ideal", [(2, 1 / 16), (4, 1 / 256), (6, 1 / 4096)])
def test_uniform_weights_reach_the_optimal_quantizer(nbits: int, ideal: float) -> None:
    """For uniform weights the optimal n-bit quantizer is uniform: relative MSE 4^-n."""
    w = np.random.default_rng(1).uniform(-0.05, 0.05, (256, 64, 3, 3)).astype(np.float32)
    err = lutlib.relative_mse(w, lutlib.palettize(w, nbits).dense())
    assert err <= ideal * 1.01


def test_grouped_luts_and_histogram_errors() -> None:
    rng = np.random.default_rng(2)
    w = (rng.standard_normal((16, 24)) * np.linspace(0.1, 3, 16)[:, None]).astype(np.float32)
    per_tensor = lutlib.palettize(w, 3)
    grouped = lutlib.palettize(w, 3, axis=0, group_size=4)
    assert grouped.lut.shape == (4, 8) and grouped.group_size == 4
    assert lutlib.relative_mse(w, grouped.dense()) < lutlib.relative_mse(w, per_tensor.dense())
    errors = lutlib.palette_errors(w, (2, 3, 4), axis=0, group_size=4)
    for nbits in (2, 3, 4):
        actual = lutlib.relative_mse(w, lutlib.palettize(w, nbits, axis=0, group_size=4).dense())
        assert errors[nbits] == pytest.approx(actual, rel=1e-3)  # fp16 rounding counted apart
    assert errors[16] < 1e-6


def test_pass_on_golden_graph_matches_the_dense_palettes() -> None:
    model = golden_model()
    dense_before = {k: v.const_value.numpy().copy() for k, v in model.graph.initializers.items()}
    the_pass = PalettizeWeightsPass(4, min_elements=1024)
    result = the_pass(model)
    assert result.modified
    # conv, matmul and gemm weights are palettized; bias, scale and the embedding stay dense
    # each decompression sits right before its consumer (a chunker cutting the node list keeps them together)
    assert op_types(model) == ["LutToDense", "Conv", "Mul", "LutToDense", "MatMul", "Squeeze", "LutToDense", "Gemm",
                               "Gather"]
    assert {"bc", "scale", "emb"} <= set(model.graph.initializers)
    assert not {"wc", "wl", "wg"} & set(model.graph.initializers)
    palettes = {n.outputs[0].name: read_lut_node(n) for n in model.graph if n.op_type == "LutToDense"}
    assert {name: p.axis for name, p in palettes.items()} == {"wc": 0, "wl": 1, "wg": 0}  # output channels
    reference = with_weights(golden_model(), {k: p.dense() for k, p in palettes.items()})
    feeds = golden_feeds()
    for got, want in zip(run(model, feeds), run(reference, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    for report in the_pass.reports:
        assert report.bytes_after < report.bytes_before / 6
        assert 0 < report.rel_mse < 0.02
    assert compression_info(model)["palettize"]["average_bits"] == 4.0
    assert all(np.array_equal(dense_before[k], model.graph.initializers[k].const_value.numpy())
               for k in ("bc", "scale", "emb"))
    # second run: nothing left to palettize
    assert not PalettizeWeightsPass(4, min_elements=1024)(model).modified


def test_near_misses_stay_dense() -> None:
    model = golden_model()
    assert not PalettizeWeightsPass(4, min_elements=10**6)(model).modified  # every weight under the threshold
    model = golden_model()
    PalettizeWeightsPass(6, min_elements=1024, include_embeddings=True)(model)
    assert "emb" not in model.graph.initializers  # embeddings only when asked
    model = golden_model()
    PalettizeWeightsPass(None, recipe={"wc": 2, "wl": 16}, min_elements=1024)(model)
    assert {"wl", "wg"} <= set(model.graph.initializers) and "wc" not in model.graph.initializers


def test_grouped_pass_falls_back_to_one_lut_when_groups_do_not_divide() -> None:
    model = golden_model()
    PalettizeWeightsPass(2, granularity="per_grouped_channel", group_size=16, min_elements=1024)(model)
    groups = {n.outputs[0].name: read_lut_node(n).groups for n in model.graph if n.op_type == "LutToDense"}
    assert groups == {"wc": 2, "wl": 3, "wg": 1}  # 40 output channels are not a multiple of 16


def test_lazy_external_data_weights(tmp_path) -> None:
    """Weights that live in an external data file are read one at a time and replaced by small tensors."""
    model = golden_model()
    path = tmp_path / "m.onnx"
    ir.save(model, path, external_data="m.onnx.data", size_threshold_bytes=0)
    lazy = ir.load(path)
    assert isinstance(lazy.graph.initializers["wc"].const_value, ir.ExternalTensor)
    PalettizeWeightsPass(6, min_elements=1024)(lazy)
    out = tmp_path / "p.onnx"
    ir.save(lazy, out, external_data="p.onnx.data")  # small tensors inline again
    eager = golden_model()
    PalettizeWeightsPass(6, min_elements=1024)(eager)
    feeds = golden_feeds()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for got, want in zip(session.run(None, feeds), run(eager, feeds)):
        np.testing.assert_array_equal(got, want)


def test_fp16_weights_keep_their_dtype() -> None:
    model = golden_model()
    for name in ("wc", "wl", "wg"):
        value = model.graph.initializers[name]
        arr = value.const_value.numpy().astype(np.float16)
        value.const_value = ir.tensor(arr, name=name)
        value.dtype = ir.DataType.FLOAT16
    PalettizeWeightsPass(8, min_elements=1024)(model)
    lut_inputs = [n.inputs[1] for n in model.graph if n.op_type == "LutToDense"]
    assert {v.const_value.dtype for v in lut_inputs} == {ir.DataType.FLOAT16}


@pytest.mark.parametrize("nbits,granularity,deployment", [
    (6, "per_tensor", "iOS16"), (3, "per_tensor", "iOS18"), (4, "per_grouped_channel", "iOS18")])
def test_core_ml_lowering_reproduces_onnxruntime(nbits: int, granularity: str, deployment: str) -> None:
    pytest.importorskip("coremltools")
    from fusionc.targets.coreml.executor import MILExecutor
    from fusionc.targets.coreml.lowering.table import LoweringOptions, lower_model

    model = golden_model()
    PalettizeWeightsPass(nbits, granularity=granularity, group_size=8, min_elements=1024)(model)
    feeds = golden_feeds()
    expected = run(model, feeds)
    embedding = next(n for n in model.graph if n.op_type == "Gather")  # not a Core ML concern here
    ids = embedding.inputs[1]
    model.graph.outputs.remove(embedding.outputs[0])
    model.graph.remove(embedding, safe=True)
    model.graph.inputs.remove(ids)
    expected = expected[:3]
    program = lower_model(model, LoweringOptions("fp32", deployment))
    ops = [op.op_type for op in program.functions["main"].operations]
    assert ops.count("constexpr_lut_to_dense") == 3
    got = MILExecutor(program)({"x": feeds["x"], "t": feeds["t"]})
    for want, out in zip(expected, got.values()):
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_core_ml_checks_ios18_for_3_bit_and_grouped() -> None:
    from fusionc.core.errors import UnsupportedError
    from fusionc.core.options import CompileOptions
    from fusionc.passes.compression.dispatch import compression_entries

    with pytest.raises(UnsupportedError, match="iOS18"):
        compression_entries(CompileOptions(target="coreml", palettize="3", deployment_target="iOS17"), "coreml")
    with pytest.raises(UnsupportedError, match="grouped"):
        compression_entries(CompileOptions(target="coreml", palettize="4", granularity="per_grouped_channel",
                                           deployment_target="iOS16"), "coreml")
    assert compression_entries(CompileOptions(target="onnx", palettize="3"), "onnx")
    assert compression_entries(CompileOptions(target="coreml", palettize="6", deployment_target="iOS16"), "coreml")
    assert enabled(compression_entries(CompileOptions(), "coreml"), CompileOptions()) == []


@pytest.mark.parametrize("nbits,group_size", [(2, None), (4, None), (4, 4), (8, None)])
def test_a_palette_knows_its_error_without_decompressing(nbits: int, group_size: int | None) -> None:
    """The error the pass reports per layer comes from the palette's histograms, and it is the error of the
    decompressed tensor within 1% (measured against the fp16 weight: a float32 weight's rounding is left out)."""
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((32, 48)) * np.linspace(0.1, 2, 32)[:, None]).astype(np.float32)
    palette = lutlib.palettize(w, nbits, axis=0, group_size=group_size)
    assert palette.relative_error == pytest.approx(lutlib.relative_mse(w, palette.dense()), rel=1e-2)
    half = w.astype(np.float16)
    exact = lutlib.palettize(half, nbits, axis=0, group_size=group_size)  # fp16 weights: no rounding term at all
    assert exact.relative_error == pytest.approx(lutlib.relative_mse(half, exact.dense()), rel=1e-9)
