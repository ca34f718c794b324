"""A tiny UNet compiled end to end for the QNN target: QDQ model, EP-context model + .bin, AIMET encodings,
verified on the HTP emulator over a real denoising trajectory."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from fusionc.core.options import CompileOptions


@pytest.fixture(scope="module")
def qnn_unet_build(tiny_pipeline, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from fusionc.pipeline import compile_checkpoint

    out = tmp_path_factory.mktemp("qnn") / "sd15_qnn"
    options = CompileOptions(target="qnn", components=("unet",), verify_steps=2, verify_prompts=1,
                             calibration_steps=2, calibration_prompts=2, selection_steps=3, selection_prompts=1,
                             calibration_samples=4)
    return out, compile_checkpoint(tiny_pipeline("sd15"), options, out)


def test_unet_context_runs_on_emulator_above_gate(qnn_unet_build) -> None:
    out, manifest = qnn_unet_build
    unet = manifest["components"]["unet"]
    assert manifest["target"] == "qnn" and manifest["device"] == "snapdragon-8-gen-2"
    assert unet["htp_arch"] == "v73" and unet["precision"] == "w8a16"
    assert set(unet["files"]) >= {"unet/model.qdq.onnx", "unet/model_ctx.onnx", "unet/model_ctx_qnn.bin",
                                  "unet/model.encodings.json"}
    ctx = onnx.load(out / "unet" / "model_ctx.onnx", load_external_data=False)
    assert [n.op_type for n in ctx.graph.node] == ["EPContext"]
    assert [i.name for i in ctx.graph.input] == ["sample", "timestep", "encoder_hidden_states"]
    assert [o.name for o in ctx.graph.output] == ["out_sample"]
    assert unet["psnr_db"] >= 35.0, unet


def test_psnr_is_held_out_and_the_calibration_figure_beside_it(qnn_unet_build) -> None:
    """Ranges from the calibration set, remedies judged on the selection set, psnr_db on neither."""
    _, manifest = qnn_unet_build
    unet = manifest["components"]["unet"]
    assert unet["calibration_samples"] == 4 and unet["selection_samples"] == 3 * 2  # batch-1 rows
    assert set(manifest["inputs"]) == {"calibration", "selection", "verification"}
    assert manifest["inputs"]["verification"]["count"]["unet"] == 2
    assert unet["psnr_db_calibration"] >= 35.0 and unet["psnr_db"] >= 35.0


def test_encodings_are_aimet_format(qnn_unet_build) -> None:
    out, _ = qnn_unet_build
    enc = json.loads((out / "unet" / "model.encodings.json").read_text())
    assert enc["version"] == "0.6.1"
    sample = enc["activation_encodings"]["sample"][0]
    assert sample["bitwidth"] == 16 and sample["is_symmetric"] == "False" and sample["offset"] <= 0
    assert abs(sample["min"] - sample["offset"] * sample["scale"]) < 1e-6
    conv = next(v for k, v in enc["param_encodings"].items() if len(v) > 1)  # a per-channel conv weight
    assert all(e["bitwidth"] == 8 and e["is_symmetric"] == "True" and e["offset"] == -128 for e in conv)


def test_the_cost_model_counts_the_qdq_graph_as_the_graph_it_was_quantized_from(qnn_unet_build, tiny_pipeline,
                                                                                export_cache: Path) -> None:
    """`bench` and `fusionc estimate BUILD` read a QNN build's QDQ graph; the cost model is fitted on graphs as the
    QNN passes hand them to quantization (what `fusionc estimate CHECKPOINT` exports). The QuantizeLinear /
    DequantizeLinear pairs and float-island Casts are encodings QNN folds, not ops: counted as ops they made
    `bench build/qnn` estimate 2.7x what `fusionc estimate` did for the same UNet on the same phone."""
    from fusionc.analysis.costfit import features_from_stats
    from fusionc.analysis.graph_stats import graph_stats
    from fusionc.estimate import collect_graphs

    out, _ = qnn_unet_build
    qdq = graph_stats(out / "unet" / "model.qdq.onnx", {"batch": 1})
    assert sum(op.op_type == "QuantizeLinear" for op in qdq.ops) > 100  # a QDQ graph: the pairs are there
    # the run's cache: the tiny UNet's graph statistics as `fusionc estimate` exports them (other tests export them too)
    _, graphs, _ = collect_graphs(tiny_pipeline("sd15"), ["unet"], None, None, export_cache)
    in_qdq, before = features_from_stats(qdq, "w8a16"), features_from_stats(graphs["unet"]["qnn"], "w8a16")
    # the QDQ graph's weights add their scales and zero points
    assert in_qdq.pop("weight_mb") == pytest.approx(before.pop("weight_mb"), rel=0.02)
    assert in_qdq == before


def test_bench_times_the_htp_emulator_only_when_asked(qnn_unet_build, tmp_path: Path) -> None:
    """The emulator's time is no device figure, and one call of an SD-1.5 UNet takes it hours: `bench` estimates a
    qnn build unless --emulator asks for the host run too."""
    from click.testing import CliRunner

    from fusionc.cli import main

    out, _ = qnn_unet_build
    for flags, expected in (([], []), (["--emulator", "--runs", "1", "--warmup", "0"],
                                       [("unet", "qnn-htp-emulator", False, 1)])):
        run = CliRunner().invoke(main, ["bench", str(out), "--json", str(tmp_path / "b.json"), *flags])
        assert run.exit_code == 0, run.output
        figures = json.loads((tmp_path / "b.json").read_text())["builds"][0]["figures"]
        assert [(f["component"], f["backend"], f["device_figure"], f["runs"]) for f in figures
                if f["kind"] == "measured"] == expected
        assert any(f["kind"] == "estimated" and f["device"] == "snapdragon-8-gen-3" for f in figures)
    # --cache keeps what an onnx build's estimates export: with a qnn build alone it would be ignored
    run = CliRunner().invoke(main, ["bench", str(out), "--cache", str(tmp_path / "c")])
    assert run.exit_code == 2 and "none of these builds is an onnx build" in run.output


def test_opening_a_context_leaves_stdout_clean(qnn_unet_build) -> None:
    """The first QNN session of a process made the HTP libraries print a LIBNATIVE banner on stdout (in verify,
    generate and compile --target qnn, which open their sessions through load_context): a fresh process shows
    that the fd-level stdout stays clean."""
    import subprocess
    import sys

    pytest.importorskip("onnxruntime_qnn")
    out, _ = qnn_unet_build
    code = ("import sys; from pathlib import Path; from fusionc.targets.qnn.ep import load_context; "
            "load_context(Path(sys.argv[1])); print('loaded')")
    result = subprocess.run([sys.executable, "-c", code, str(out / "unet" / "model_ctx.onnx")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "loaded\n", result.stdout
    assert "LIBNATIVE" not in result.stderr


def test_component_over_the_context_limit_is_split(tiny_pipeline, tmp_path: Path) -> None:
    """A 400 kB limit splits the tiny UNet into chained contexts that verify like the whole graph."""
    from fusionc.pipeline import compile_checkpoint

    options = CompileOptions(target="qnn", components=("unet",), verify_steps=1, verify_prompts=1,
                             calibration_steps=1, calibration_prompts=1, selection_steps=1, selection_prompts=1,
                             qnn_max_context_bytes=400_000, qnn_remedy_rounds=0)
    manifest = compile_checkpoint(tiny_pipeline("sd15"), options, tmp_path / "split")
    unet = manifest["components"]["unet"]
    parts = unet["context_parts"]
    assert len(parts) >= 2 and all((tmp_path / "split" / p).exists() for p in parts)
    assert len([f for f in unet["files"] if f.endswith(".bin")]) == len(parts)
    assert unet["psnr_db"] >= 35.0
