"""`--qnn-verify-runtime cpu`: a QNN build verified on its QDQ graphs on ONNX Runtime's CPU EP, the stand-in for
the HTP emulator where one call takes hours (full-size SDXL, SD3, T5-XXL). It must measure the quantized graph
(close to the emulator, far from the float model), chain split parts like the contexts, and say where it ran."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fusionc.core.options import CompileOptions
from fusionc.targets.qnn.cpu_check import RUNS_ON

QUICK = dict(target="qnn", components=("unet",), verify_steps=1, verify_prompts=1, calibration_steps=1,
             calibration_prompts=1, selection_steps=1, selection_prompts=1, qnn_remedy_rounds=0)


@pytest.fixture(scope="module")
def emulator_build(tiny_pipeline, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The tiny UNet for the HTP, verified on the emulator (the default)."""
    from fusionc.pipeline import compile_checkpoint

    out = tmp_path_factory.mktemp("cpu_check") / "htp"
    return out, compile_checkpoint(tiny_pipeline("sd15"), CompileOptions(**QUICK), out)


def test_the_cpu_check_lands_within_a_db_of_the_emulator(emulator_build, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    """Same build, same verification inputs: the QDQ graph on the CPU against the contexts on the emulator."""
    from fusionc.verify_build import verify_build

    build, compiled = emulator_build
    on_htp = compiled["components"]["unet"]
    assert on_htp["verified_on"].startswith("QNN context binaries")
    copy = tmp_path / "copy"
    shutil.copytree(build, copy)
    on_cpu = verify_build(copy, qnn_runtime="cpu")["components"]["unet"]
    assert on_cpu["verified_on"] == RUNS_ON
    assert f"PSNR measured on: {RUNS_ON}" in capsys.readouterr().out  # printed, as compile's table says it
    assert json.loads((copy / "manifest.json").read_text())["components"]["unet"]["verified_on"] == RUNS_ON
    # quantization noise is what both see: a float graph would verify 30+ dB higher
    assert on_cpu["psnr_db"] >= 35.0 and abs(on_cpu["psnr_db"] - on_htp["psnr_db"]) < 1.0, (on_cpu, on_htp)


def test_a_split_build_chains_its_qdq_parts_as_its_contexts(tiny_pipeline, emulator_build, tmp_path: Path) -> None:
    """Contexts split at 400 kB: the QDQ parts, chained on the CPU, give the whole graph's figure (same encodings)."""
    from fusionc.pipeline import compile_checkpoint
    from fusionc.verify_build import verify_build

    build, _ = emulator_build
    whole = tmp_path / "whole"
    shutil.copytree(build, whole)
    whole_db = verify_build(whole, qnn_runtime="cpu")["components"]["unet"]["psnr_db"]
    options = CompileOptions(**QUICK, qnn_max_context_bytes=400_000, qnn_verify_runtime="cpu")
    unet = compile_checkpoint(tiny_pipeline("sd15"), options, tmp_path / "split")["components"]["unet"]
    assert len([f for f in unet["files"] if f.endswith(".qdq.onnx")]) == len(unet["context_parts"]) >= 2
    assert unet["verified_on"] == RUNS_ON
    assert abs(unet["psnr_db"] - whole_db) < 0.05, (unet["psnr_db"], whole_db)


def test_an_fp16_build_has_no_qdq_graph_to_check(tiny_pipeline, tmp_path: Path) -> None:
    from tests.test_cli import assert_one_line_error, fusionc

    result = fusionc("compile", str(tiny_pipeline("sd15")), "--target", "qnn", "--precision", "fp16",
                     "--qnn-verify-runtime", "cpu", "--out", str(tmp_path / "out"))
    assert_one_line_error(result, 2, "an fp16 build has none")
    assert not (tmp_path / "out").exists()


def test_the_runtime_option_is_refused_for_a_build_of_another_target(sd15_onnx_build: Path) -> None:
    from tests.test_cli import assert_one_line_error, fusionc

    result = fusionc("verify", str(sd15_onnx_build), "--qnn-verify-runtime", "cpu")
    assert_one_line_error(result, 2, "was built for --target onnx")


def _part(path: Path, node: str, inputs: list[str], output: str) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node(node, inputs, [output])], "part",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in inputs],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.save(model, path)
    return path


def test_a_later_part_reads_a_graph_input_the_first_does_not(tmp_path: Path) -> None:
    """SDXL's UNet: every cross-attention reads encoder_hidden_states, so parts after the first read it too."""
    import numpy as np

    from fusionc.targets.qnn import HtpRunner
    from fusionc.targets.qnn.cpu_check import QdqCpuRunner
    from fusionc.targets.qnn.ep import HtpConfig, compile_context

    parts = [_part(tmp_path / "p0.onnx", "Relu", ["x"], "h"), _part(tmp_path / "p1.onnx", "Add", ["h", "c"], "y")]
    x, c = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4), np.full((2, 4), 0.5, np.float32)  # batch 2
    want = np.maximum(x, 0) + c
    np.testing.assert_allclose(QdqCpuRunner(parts)({"x": x, "c": c})["y"], want)
    contexts = [compile_context(p, p.with_name(p.stem + "_ctx.onnx"), HtpConfig(fp16=True))[0] for p in parts]
    np.testing.assert_allclose(HtpRunner(contexts)({"x": x, "c": c})["y"], want, atol=1e-3)
