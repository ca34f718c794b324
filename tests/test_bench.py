"""`fusionc bench` on an onnx build of the tiny pipeline: runs, positive figures, measured/estimated labels, JSON."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from fusionc.bench import advice, bench, budget_rows, Figure, plot
from fusionc.cli import main
from fusionc.core.devices import DEVICES

COMPONENTS = ("text_encoder", "unet", "vae_decoder")


def _hand_build(checkpoint: Path, out: Path) -> Path:
    """The onnx target's layout written without the pass pipeline (fallback while `fusionc compile` is broken)."""
    from fusionc.checkpoint import load_checkpoint
    from fusionc.export import component_spec, export_component
    from fusionc.core.options import CompileOptions
    from fusionc.targets.onnx import interface, save_model

    ckpt, options = load_checkpoint(checkpoint), CompileOptions(target="onnx")
    manifest = {"fusionc_version": "test", "target": "onnx", "device": None, "components": {}, "passes": []}
    for name in COMPONENTS:
        model = export_component(component_spec(ckpt, name, options), options.opset)
        files = save_model(model, out / name / "model.onnx")
        manifest["components"][name] = {"files": [str(f.relative_to(out)) for f in files], "bytes": 0,
                                        "inputs": interface(model.graph.inputs),
                                        "outputs": interface(model.graph.outputs)}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture(scope="module")
def onnx_build(request: pytest.FixtureRequest, tiny_pipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        return request.getfixturevalue("sd15_onnx_build")
    except ImportError as err:  # the compile driver's pass pipeline is not importable in this tree
        warnings.warn(f"fusionc compile unavailable ({err}); benchmarking a hand-exported onnx build", stacklevel=1)
        return _hand_build(tiny_pipeline("sd15"), tmp_path_factory.mktemp("bench") / "sd15_onnx")


@pytest.fixture(scope="module")
def result(onnx_build: Path) -> dict:
    return bench([onnx_build], steps=4, guidance=True, budget_s=2.0, runs=3, warmup=1)


def test_measured_and_estimated_figures(result: dict) -> None:
    (build,) = result["builds"]
    figures = build["figures"]
    measured = [f for f in figures if f["kind"] == "measured"]
    estimated = [f for f in figures if f["kind"] == "estimated"]
    assert {f["component"] for f in measured} >= set(COMPONENTS)
    assert all(f["backend"] == "ort-cpu" and f["device"] == "host" and f["runs"] >= 3 for f in measured)
    # a portable onnx build is estimated on every device profile
    assert {(f["component"], f["device"]) for f in estimated} >= {(c, d) for c in COMPONENTS for d in DEVICES}
    assert all(f["median_ms"] > 0 and f["spread_ms"] >= 0 for f in figures)
    unet = next(f for f in measured if f["component"] == "unet")
    assert unet["batch"] == 2  # guidance: cond + uncond in one call
    assert build["graphs"]["unet"]["macs"] > 0 and build["graphs"]["unet"]["params"] > 0
    assert all(g["unknown_shape_ops"] == 0 for g in build["graphs"].values())
    assert set(build["graphs"]["unet"]["dims"].values()) <= {2}  # estimated at the measured batch


def test_budget_rows_cover_every_backend(result: dict) -> None:
    rows = result["budgets"]
    assert {(r["backend"], r["device"]) for r in rows} >= {("ort-cpu", "host")} | {
        (f"{d.target}/{d.npu}", d.name) for d in DEVICES.values()}
    for row in rows:
        # 4 guided steps: one batch-2 call each, or two batch-1 calls on Hexagon (a QNN context is static batch 1)
        assert row["calls"]["unet"] == (8 if row["backend"] == "qnn/htp" else 4) and row["calls"]["text_encoder"] == 2
        assert row["total_ms"] == pytest.approx(sum(row["breakdown_ms"].values()))
        assert row["within_budget"] == (row["total_ms"] <= 2000) and row["advice"]


def test_json_schema(result: dict) -> None:
    text = json.dumps(result)
    loaded = json.loads(text)
    assert set(loaded) >= {"fusionc_version", "created", "host", "settings", "builds", "budgets", "cost_model"}
    assert loaded["settings"] == {"steps": 4, "guidance": True, "budget_s": 2.0, "runs": 3, "warmup": 1,
                                  "qnn_runtime": "context-binary"}
    figure_keys = {"component", "backend", "device", "kind", "batch", "median_ms", "spread_ms", "runs",
                   "device_figure", "calls", "detail"}
    for figure in loaded["builds"][0]["figures"]:
        assert set(figure) == figure_keys and figure["kind"] in ("measured", "estimated")
    assert {"ane", "htp"} <= set(loaded["cost_model"]["params"])  # + cpu since the CPU profiles
    # a fitted (Hexagon) estimate carries the fit's cross-validated range around it; a roofline estimate none
    estimated = [f for f in loaded["builds"][0]["figures"] if f["kind"] == "estimated"]
    hexagon = [f for f in estimated if f["backend"] == "qnn/htp"]
    assert hexagon and all(f["detail"]["range_ms"][0] < f["median_ms"] < f["detail"]["range_ms"][1]
                           and f["detail"]["range_coverage"] == 0.8 for f in hexagon)
    assert all(f["detail"]["range_ms"] is None for f in estimated if f["backend"] == "coreml/ne")
    # an onnx build's dynamic-batch UNet, estimated on Hexagon, is the batch-1 graph a QNN build compiles
    assert {f["batch"] for f in hexagon if f["component"] == "unet"} == {1}
    assert loaded["cost_model"]["calibration"]


def test_an_onnx_builds_npu_estimates_are_of_the_graph_those_targets_compile(result: dict, tiny_pipeline,
                                                                          export_cache: Path) -> None:
    """ONNX Runtime's fused attention keeps the scores inside one kernel; a QNN or Core ML build materializes them.
    An onnx build's Hexagon and Apple rows estimate the graph those targets compile, as `fusionc estimate` of its
    checkpoint does (from its own graph, SD-1.5's UNet came out at about a third of a QNN build's estimate);
    its CPU rows, the graph it ships."""
    from fusionc.estimate import estimate

    (build,) = result["builds"]
    if "checkpoint" not in json.loads((Path(build["path"]) / "manifest.json").read_text()):
        pytest.skip("a hand-exported build names no checkpoint")
    # the run's cache, where the bench above kept the checkpoint's graphs: the same key (checkpoint configs, size,
    # options, code) reads them back; any difference in how the two commands export would miss and export again
    expected = estimate(tiny_pipeline("sd15"), devices=["snapdragon-8-gen-3", "iphone-15-pro"], steps=4,
                        cache_dir=export_cache)
    assert set(expected["graph_cache"].values()) == {"hit"}, "bench and estimate no longer export the same graphs"
    by = {(r["component"], r["device"]): r["latency_ms"] for r in expected["estimates"]}
    npu = [f for f in build["figures"] if (f["component"], f["device"]) in by]
    assert len(npu) == len(by) == 6
    for figure in npu:
        # `estimate` rounds to 3 decimals
        assert figure["median_ms"] == pytest.approx(by[(figure["component"], figure["device"])], abs=1e-3)
        assert figure["detail"]["graph"] == "checkpoint, as its target compiles it"
    cpu = [f for f in build["figures"] if f["backend"] == "onnx/cpu"]
    assert cpu and {f["detail"]["graph"] for f in cpu} == {"build"}


def test_cache_keeps_what_an_onnx_builds_npu_estimates_export(onnx_build: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def bench_into(name: str) -> list[dict]:
        run = CliRunner().invoke(main, ["bench", str(onnx_build), "--no-measure", "--cache", str(tmp_path / "cache"),
                                        "--json", str(tmp_path / name)])
        assert run.exit_code == 0, run.output
        return json.loads((tmp_path / name).read_text())["builds"][0]["figures"]

    first = bench_into("1.json")

    def no_export(*_: object) -> None:
        raise AssertionError("exported again: the cache was not read")

    monkeypatch.setattr("fusionc.estimate_graphs.export_stats", no_export)
    assert [f["median_ms"] for f in bench_into("2.json")] == [f["median_ms"] for f in first]


def test_an_onnx_build_whose_checkpoint_is_gone_is_estimated_from_its_own_graph(onnx_build: Path,
                                                                                  tmp_path: Path) -> None:
    import shutil

    moved = tmp_path / "build"
    shutil.copytree(onnx_build, moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    if "checkpoint" not in manifest:
        pytest.skip("a hand-exported build names no checkpoint")
    manifest["checkpoint"] = {"path": str(tmp_path / "gone"), "sha256": "0" * 64}
    (moved / "manifest.json").write_text(json.dumps(manifest))
    run = CliRunner().invoke(main, ["bench", str(moved), "--no-measure", "--json", str(tmp_path / "b.json")])
    assert run.exit_code == 0, run.output
    assert f"its checkpoint {tmp_path / 'gone'} is gone" in run.stderr
    figures = json.loads((tmp_path / "b.json").read_text())["builds"][0]["figures"]
    assert figures and {f["detail"]["graph"] for f in figures} == {"build"}


def test_emulator_without_a_qnn_build_is_refused_before_the_work(onnx_build: Path, tmp_path: Path) -> None:
    run = CliRunner().invoke(main, ["bench", str(onnx_build), "--emulator", "--json", str(tmp_path / "b.json")])
    assert run.exit_code == 2 and "--emulator times a qnn build's contexts" in run.output
    assert len(run.output.strip().splitlines()) == 1 and not (tmp_path / "b.json").exists()


def test_cli_table_labels_json_and_plot(onnx_build: Path, tmp_path: Path) -> None:
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    run = CliRunner().invoke(main, ["bench", str(onnx_build), "--json", str(out_json), "--plot", str(out_png),
                                    "--runs", "3", "--warmup", "0", "--steps", "2", "--no-guidance"])
    assert run.exit_code == 0, run.output
    assert "[M] measured" in run.output and "[E] estimated" in run.output and "(80%)" in run.output
    assert json.loads(out_json.read_text())["settings"]["guidance"] is False
    assert out_png.read_bytes()[:4] == b"\x89PNG"


def test_cli_bad_input(tmp_path: Path) -> None:
    run = CliRunner().invoke(main, ["bench", str(tmp_path / "missing")])
    assert run.exit_code == 2 and "error" in run.output
    assert CliRunner().invoke(main, ["bench"]).exit_code == 2
    for args, words in ((["--steps", "0"], "--steps 0"), (["--budget", "-1"], "--budget -1"),
                        (["--json", "/proc/no-such-folder/b.json"], "cannot write --json"),
                        (["--plot", str(tmp_path / "chart.xyz")], "--plot")):  # before any build is read
        run = CliRunner().invoke(main, ["bench", str(tmp_path), *args])
        assert run.exit_code == 2 and words in run.output, run.output


def test_check_on_builds_without_a_denoiser_is_refused_before_the_work(onnx_build: Path, tmp_path: Path) -> None:
    """--check holds an image's end-to-end time to the budget. A build without a UNet or transformer makes no
    image, so there is nothing to hold: exit 2 up front (it was exit 1, "no backend meets the budget", after the
    work, as if a budget had been missed)."""
    import shutil

    build = tmp_path / "text_encoder_only"
    shutil.copytree(onnx_build / "text_encoder", build / "text_encoder")
    manifest = json.loads((onnx_build / "manifest.json").read_text())
    manifest["components"] = {"text_encoder": manifest["components"]["text_encoder"]}
    (build / "manifest.json").write_text(json.dumps(manifest))
    run = CliRunner().invoke(main, ["bench", str(build), "--check", "--no-measure"])
    assert run.exit_code == 2, run.output
    assert run.stderr.startswith("fusionc: error: --check") and "no UNet or transformer" in run.stderr
    assert "per-call latency" not in run.stdout  # nothing ran
    assert CliRunner().invoke(main, ["bench", str(build), "--no-measure"]).exit_code == 0  # without --check: fine
    run = CliRunner().invoke(main, ["bench", str(build), "--plot", str(tmp_path / "p.png"), "--no-measure"])
    assert run.exit_code == 2 and run.stderr.startswith("fusionc: error: --plot"), run.output
    assert "per-call latency" not in run.stdout  # was: the tables, then exit 2 "nothing to plot"


def test_hexagon_estimates_for_onnxruntime_cost_the_context_binarys_times_the_runtime_factor(
        result: dict, onnx_build: Path, tmp_path: Path) -> None:
    """bench times a phone through ONNX Runtime's QNN EP: --qnn-runtime onnxruntime estimates that runtime (the
    fitted factor on every Hexagon figure, nothing else); a build with no Hexagon estimate refuses the option."""
    from fusionc.analysis import costfit

    factor = costfit.runtime_factor(costfit.load_params(), "PRECOMPILED_QNN_ONNX")
    ort = bench([onnx_build], steps=4, guidance=True, budget_s=2.0, measure=False, qnn_runtime="onnxruntime")
    assert ort["settings"]["qnn_runtime"] == "onnxruntime" and result["settings"]["qnn_runtime"] == "context-binary"
    key = lambda f: (f["component"], f["device"])  # noqa: E731
    cb = {key(f): f for f in result["builds"][0]["figures"] if f["kind"] == "estimated"}
    for f in ort["builds"][0]["figures"]:
        if DEVICES[f["device"]].family == "htp":
            assert f["detail"]["runtime"] == "onnxruntime" and cb[key(f)]["detail"]["runtime"] == "context-binary"
            assert f["median_ms"] == pytest.approx(cb[key(f)]["median_ms"] * factor, rel=1e-9)
        else:
            assert f["detail"]["runtime"] is None and f["median_ms"] == pytest.approx(cb[key(f)]["median_ms"])
    coreml = tmp_path / "coreml_build"
    coreml.mkdir()
    (coreml / "manifest.json").write_text(json.dumps({"target": "coreml", "components": {}}))
    run = CliRunner().invoke(main, ["bench", str(coreml), "--no-measure", "--qnn-runtime", "onnxruntime"])
    assert run.exit_code == 2 and "--qnn-runtime onnxruntime: no Hexagon device" in run.output, run.output


def test_the_report_names_an_estimate_beyond_the_training_graphs() -> None:
    from io import StringIO

    from rich.console import Console

    from fusionc.bench import print_report

    detail = {"precision": "w8a16", "bound": "memory", "outside_training": ["MACs 402 G vs at most 193 G (a/A)"]}
    figure = {"component": "unet", "backend": "qnn/htp", "device": "snapdragon-8-gen-3", "kind": "estimated",
              "batch": 1, "median_ms": 184.0, "spread_ms": 0.0, "device_figure": True, "detail": detail}
    out = StringIO()
    print_report({"builds": [{"path": "b", "target": "qnn", "figures": [figure], "graphs": {}}], "budgets": [],
                  "settings": {"steps": 8, "guidance": True, "budget_s": 2.0}}, Console(file=out, width=400))
    assert "unet (w8a16): beyond every graph the Hexagon model was fitted on (MACs 402 G vs at most 193 G" in out.getvalue()


def test_advice_arithmetic(tmp_path: Path) -> None:
    def fig(component: str, ms: float) -> Figure:
        return Figure(component, "coreml/ne", "iphone-14-pro", "estimated", 1, ms)

    rows = budget_rows("b", [fig("text_encoder", 5), fig("unet", 300), fig("vae_decoder", 200)], 8, True, 2.0)
    (row,) = rows
    assert row["total_ms"] == 10 + 2400 + 200 and not row["within_budget"]
    # 610 ms over: the UNet (2400 ms) must lose 610/2400 = 25% per call, or the steps go from 8 to 5
    assert "shrink unet first, by 25%" in row["advice"] and "8 -> 5" in row["advice"]
    assert advice({"unet": 100.0}, {"unet": 1}, 100.0, 2000.0, 1).startswith("within budget")
    # a gap under a millisecond keeps its digits: not 'over by 0 ms', 'exceeds the budget by 0 ms'
    close = advice({"unet": 1000.0, "vae_decoder": 1000.3}, {"unet": 1, "vae_decoder": 1}, 2000.3, 999.7, 1)
    assert close.startswith("over by 1001 ms") and "exceeds the budget by 0.3 ms" in close
    assert advice({"unet": 100.0}, {"unet": 1}, 100.0, 100.04, 1).endswith("0.04 ms spare)")
    plot({"budgets": rows, "settings": {"steps": 8, "guidance": True, "budget_s": 2.0}}, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_an_emulator_row_neither_fits_nor_advises() -> None:
    """The HTP emulator's time on this host says nothing about a phone: no budget verdict, no shrinking advice."""
    emulated = [Figure(c, "qnn-htp-emulator", "host", "measured", 1, 900.0, device_figure=False)
                for c in ("text_encoder", "unet", "vae_decoder")]
    (row,) = budget_rows("b", emulated, 8, True, 2.0)
    assert not row["device_figure"] and not row["within_budget"]
    assert "not a device figure" in row["advice"] and "shrink" not in row["advice"]
