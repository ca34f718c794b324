"""Streaming calibration: segmenting the graph changes neither the outputs nor the statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from fusionc.targets.qnn.calibrate import SegmentedModel, TensorStats, collect_stats
from fusionc.targets.qnn.quantize import calibration_feeds, save_float, split_batch

TEXT = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[1,16] x, float[16,32] W1, float[32,16] W2) => (float[1,16] y) {
  a = MatMul (x, W1)
  b = Relu (a)
  c = MatMul (b, W2)
  d = Add (c, x)
  y = Tanh (d)
}
"""


def float_model() -> ir.Model:
    """TEXT with random weights W1, W2 as in-memory initializers."""
    model = ir.from_onnx_text(TEXT)
    rng = np.random.default_rng(0)
    for value in list(model.graph.inputs)[1:]:
        value.const_value = ir.tensor(rng.standard_normal(tuple(value.shape)).astype(np.float32), name=value.name)
        model.graph.inputs.remove(value)
        model.graph.register_initializer(value)
    return model


def model_file(tmp_path: Path) -> Path:
    from fusionc.passes.generic.cleanup import InferShapesPass

    model = float_model()
    InferShapesPass()(model)
    return save_float(model, tmp_path / "m.onnx")


def test_segments_match_one_session(tmp_path: Path) -> None:
    path = model_file(tmp_path)
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 16)).astype(np.float32)} for i in range(3)]
    segmented = SegmentedModel(path, activation_budget=1, weight_budget=1)  # one node per segment
    assert len(segmented.segments) == 5
    seen: dict[str, list[np.ndarray]] = {}
    outputs = segmented.run(feeds, lambda n, i, a: seen.setdefault(n, []).append(a))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for feed, out in zip(feeds, outputs):
        np.testing.assert_allclose(out["y"], session.run(None, feed)[0], rtol=1e-5, atol=1e-6)
    assert set(seen) == {"x", "a", "b", "c", "d", "y"} and all(len(v) == 3 for v in seen.values())
    whole = collect_stats(path, feeds, activation_budget=1 << 30)
    parts = collect_stats(path, feeds, activation_budget=1)
    for name in seen:
        assert (whole[name].min, whole[name].max) == (parts[name].min, parts[name].max)
        assert parts[name].min == min(float(a.min()) for a in seen[name])
    assert not list(tmp_path.glob(".segment_*"))  # segment files are transient


def test_histogram_grows_and_clips() -> None:
    stats = TensorStats()
    stats.update(np.linspace(-1, 1, 10001, dtype=np.float32))
    stats.update(np.array([100.0], np.float32))  # one outlier: the range doubles until it fits
    assert stats.max == 100.0 and stats.hist_max >= 100.0 and int(stats.hist.sum()) == 10002
    assert stats.percentile_absmax(99.9) < 2.0  # percentile clipping ignores the outlier


def test_calibration_feeds_split_guidance_batches() -> None:
    feeds = [{"sample": np.zeros((2, 4, 8, 8), np.float32) + i, "timestep": np.array([t], np.float32),
              "encoder_hidden_states": np.zeros((2, 77, 32), np.float32)} for i, t in enumerate((999.0, 500.0, 1.0))]
    singles = [f for feed in feeds for f in split_batch(feed)]
    assert len(singles) == 6 and singles[1]["sample"].shape == (1, 4, 8, 8) and singles[1]["timestep"].shape == (1,)
    picked = calibration_feeds(feeds, 4)
    assert len(picked) == 4 and picked[0]["timestep"][0] == 999.0 and picked[-1]["timestep"][0] == 1.0


def test_saved_float_model_reads_its_weights_from_the_file(tmp_path: Path) -> None:
    """After save_float the in-memory graph holds no weight arrays (3.4 GB at SD scale) but still reads them."""
    model = float_model()
    arrays = {name: value.const_value.numpy().copy() for name, value in model.graph.initializers.items()}
    save_float(model, tmp_path / "m.onnx")
    for name, array in arrays.items():
        tensor = model.graph.initializers[name].const_value
        assert isinstance(tensor, ir.ExternalTensor) and Path(tensor.base_dir) == tmp_path
        np.testing.assert_array_equal(tensor.numpy(), array)
    reloaded = ir.load(tmp_path / "m.onnx")
    np.testing.assert_array_equal(reloaded.graph.initializers["W1"].const_value.numpy(), arrays["W1"])


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_weights_already_in_the_scratch_folder_are_referenced_not_written_again(tmp_path: Path) -> None:
    """The export offloads the weights to <work>/weights/; the float graph saved in <work> points at that file."""
    from fusionc.core.memory import offload_weights
    from fusionc.targets.qnn.quantize import external_files

    model, x = float_model(), np.ones((1, 16), np.float32)
    ir.save(model, tmp_path / "reference.onnx")
    weights = tmp_path / "work" / "weights"
    offload_weights(model, weights, keep_below=256)
    w2 = model.graph.initializers["W2"]  # a pass rewrote one weight: in memory again
    w2.const_value = ir.tensor(w2.const_value.numpy().copy(), name="W2")
    path = save_float(model, tmp_path / "work" / "m.onnx")
    assert not (tmp_path / "work" / "m.onnx.data").exists()
    assert (weights / "weights-1.data").stat().st_size == 32 * 16 * 4  # only W2 written again
    assert external_files(path) == [path, weights / "weights-0.data", weights / "weights-1.data"]
    np.testing.assert_array_equal(_run(path, x), _run(tmp_path / "reference.onnx", x))


def test_weights_mapped_from_another_folder_are_copied_beside_the_graph(tmp_path: Path) -> None:
    """A model whose weights live outside the graph's folder (a cache entry, another compile) gets its own copy."""
    import shutil

    from fusionc.core.memory import offload_weights

    model, x = float_model(), np.ones((1, 16), np.float32)
    ir.save(model, tmp_path / "reference.onnx")
    offload_weights(model, tmp_path / "elsewhere", keep_below=256)
    path = save_float(model, tmp_path / "work" / "m.onnx")
    assert (tmp_path / "work" / "m.onnx.data").exists()
    shutil.rmtree(tmp_path / "elsewhere")
    np.testing.assert_array_equal(_run(path, x), _run(tmp_path / "reference.onnx", x))
