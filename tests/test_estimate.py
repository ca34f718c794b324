"""`fusionc estimate`: structure-only export, estimates per component and device, JSON, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fusionc.cli import main


def test_structure_export_matches_the_real_export(tiny_pipeline) -> None:
    """The meta-device export (no weights read) gives the cost model the same graph as a real export."""
    from fusionc.analysis.graph_stats import graph_stats
    from fusionc.checkpoint import load_checkpoint, load_structure
    from fusionc.core.options import CompileOptions
    from fusionc.export import component_spec, export_component, export_structure

    path = tiny_pipeline("sd15")
    options = CompileOptions()
    structure = load_structure(path)
    assert all(p.device.type == "meta" for m in structure.models.values() for p in m.parameters())
    spec = component_spec(structure, "vae_decoder", options, batch=1)
    spec.example = {k: v.to("meta") for k, v in spec.example.items()}
    fake = graph_stats(export_structure(spec), {"batch": 1})
    real = graph_stats(export_component(component_spec(load_checkpoint(path), "vae_decoder", options, batch=1)),
                       {"batch": 1})
    assert fake.macs == real.macs > 0 and fake.op_counts == real.op_counts
    # weights: the same to within a few tiny norm constants the real export folds into its neighbours
    assert fake.params == pytest.approx(real.params, rel=0.01)


def test_structure_export_keeps_folded_weights_as_stand_ins() -> None:
    """The optimizer folds Transpose(W) of a Linear into a new constant; from a meta export that constant is a
    stand-in of its shape, not an array in memory (an SDXL UNet's estimate held 10 GB of them)."""
    from fusionc.export import ComponentSpec, StandInTensor, export_structure

    with torch.device("meta"):
        module = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.GELU(), torch.nn.Linear(512, 256)).eval()
    model = export_structure(ComponentSpec("mlp", module, {"x": torch.randn(2, 16, 256, device="meta")}, ["y"]))
    large = [v for v in model.graph.initializers.values() if v.const_value.nbytes >= 1 << 16]
    assert len(large) == 2 and all(isinstance(v.const_value, StandInTensor) for v in large)
    assert sorted(tuple(v.shape) for v in large) == [(256, 512), (512, 256)]


def test_estimate_cli_on_the_builtin_model(tmp_path: Path) -> None:
    out = tmp_path / "est.json"
    run = CliRunner().invoke(main, ["estimate", "--components", "text_encoder,vae_decoder", "--device",
                                    "snapdragon-8-elite-gen-5", "--device", "iphone-15-pro", "--steps", "4",
                                    "--json", str(out)])
    assert run.exit_code == 0, run.output
    result = json.loads(out.read_text())
    rows = result["estimates"]
    assert {(r["component"], r["device"]) for r in rows} == {
        (c, d) for c in ("text_encoder", "vae_decoder") for d in ("snapdragon-8-elite-gen-5", "iphone-15-pro")}
    for r in rows:
        assert {"component", "device", "precision", "batch", "latency_ms", "bound"} <= set(r)
        assert r["latency_ms"] > 0 and r["per_image_ms"] == pytest.approx(r["latency_ms"] * r["calls_per_image"],
                                                                          abs=0.01)  # both rounded to 1 us
    by = {(r["component"], r["device"]): r for r in rows}
    assert by[("text_encoder", "snapdragon-8-elite-gen-5")]["calls_per_image"] == 2  # guidance: two prompts
    assert by[("text_encoder", "snapdragon-8-elite-gen-5")]["model"] == "fitted"
    assert by[("vae_decoder", "iphone-15-pro")]["model"] == "roofline"
    assert by[("text_encoder", "iphone-15-pro")]["precision"] == "fp16"
    assert by[("text_encoder", "snapdragon-8-elite-gen-5")]["precision"] == "w8a16"
    assert "fusionc estimate" in run.output and "80% range" in run.output
    # a Hexagon estimate's range is the estimate times the chipset's cross-validated factors from the params file;
    # a roofline estimate has none; a whole image's range adds its components' (their errors share the chipset)
    from fusionc.analysis import costfit

    interval = costfit.load_params()["interval"]
    low, high = costfit.interval_of(interval, "snapdragon-8-elite-gen-5")
    assert low < 1 < high
    htp = [r for r in rows if r["device"] == "snapdragon-8-elite-gen-5"]
    for r in htp:
        assert r["range_coverage"] == interval["coverage"] == 0.8
        assert r["range_ms"] == pytest.approx([r["latency_ms"] * low, r["latency_ms"] * high], abs=2e-3)
    assert all(r["range_ms"] is None for r in rows if r["device"] == "iphone-15-pro")
    totals = {t["device"]: t for t in result["per_image"]}
    assert totals["snapdragon-8-elite-gen-5"]["per_image_range_ms"] == pytest.approx(
        [sum(r["range_ms"][k] * r["calls_per_image"] for r in htp) for k in (0, 1)], abs=0.01)
    assert totals["iphone-15-pro"]["per_image_range_ms"] is None


def _two_op_unet(path: Path) -> Path:
    """A MatMul and a Relu with a dynamic batch: a graph every estimate reads in well under a second."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((256, 256), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
                              "unet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64, 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64, 256])], [weight])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph), path)
    return path


def test_an_estimate_beyond_the_training_graphs_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fusionc.analysis import costfit, costmodel

    params = costfit.load_params()
    assert set(params["training_range"]) >= {"float", "w8a16", "w8a8"}  # the shipped fit records its range
    small = {"gmacs": [0.001, "tiny/Graph"], "weight_mb": [1e3, "x"], "spill_mb": [1e3, "x"],
             "largest_op_act_mb": [1e3, "x"]}
    monkeypatch.setattr(costmodel, "_FITTED", dict(params, training_range={"w8a16": small}))
    out = tmp_path / "e.json"
    run = CliRunner().invoke(main, ["estimate", str(_two_op_unet(tmp_path / "unet.onnx")), "--device",
                                    "snapdragon-8-gen-3", "--device", "iphone-15-pro", "--json", str(out)])
    assert run.exit_code == 0, run.output
    rows = {r["device"]: r for r in json.loads(out.read_text(encoding="utf-8"))["estimates"]}
    assert rows["snapdragon-8-gen-3"]["outside_training"] == ["MACs 0.00419 G vs at most 0.001 G (tiny/Graph)"]
    assert rows["iphone-15-pro"]["outside_training"] == []  # the roofline has no training graphs
    assert "unet (w8a16): beyond every graph the Hexagon model was fitted on" in " ".join(run.output.split())


def test_a_build_is_estimated_at_its_own_precision(tmp_path: Path) -> None:
    """A W8A8 qnn build is estimated as W8A8 on Hexagon, as `fusionc bench` estimates it; --precision overrides."""
    build = tmp_path / "qnn"
    _two_op_unet(build / "unet" / "model.qdq.onnx")
    (build / "manifest.json").write_text(json.dumps({"target": "qnn", "options": {"precision": "w8a8"}, "components": {
        "unet": {"files": ["unet/model.qdq.onnx"], "inputs": {}, "outputs": {}}}}), encoding="utf-8")
    for extra, expected in (([], "w8a8"), (["--precision", "w8a16"], "w8a16")):
        out = tmp_path / f"est{len(extra)}.json"
        run = CliRunner().invoke(main, ["estimate", str(build), "--device", "snapdragon-8-gen-3", "--json", str(out),
                                        *extra])
        assert run.exit_code == 0, run.output
        (row,) = json.loads(out.read_text(encoding="utf-8"))["estimates"]
        assert row["precision"] == expected


def test_a_hexagon_estimate_names_its_runtime_and_onnxruntime_costs_the_fitted_factor_more(tmp_path: Path) -> None:
    """The default Hexagon figure is QNN running the context binary; --qnn-runtime onnxruntime (the EP-context model
    through ONNX Runtime's QNN EP, AI Hub's PRECOMPILED_QNN_ONNX) is it times the factor the fit measured."""
    from fusionc.analysis import costfit
    from fusionc.cli import qnn_runtime_option

    factor = costfit.runtime_factor(costfit.load_params(), costfit.QNN_RUNTIMES["onnxruntime"])
    assert factor > 1  # AI Hub times one graph slower through ONNX Runtime than as a bare context binary
    model = _two_op_unet(tmp_path / "unet.onnx")
    results = {}
    for runtime in ("context-binary", "onnxruntime"):
        out = tmp_path / f"{runtime}.json"
        run = CliRunner().invoke(main, ["estimate", str(model), "--device", "snapdragon-8-gen-3",
                                        "--device", "iphone-15-pro", "--qnn-runtime", runtime, "--json", str(out)])
        assert run.exit_code == 0 and f"Hexagon on {runtime}" in run.output, run.output
        results[runtime] = {r["device"]: r for r in json.loads(out.read_text())["estimates"]}
    cb, ort = results["context-binary"]["snapdragon-8-gen-3"], results["onnxruntime"]["snapdragon-8-gen-3"]
    assert (cb["runtime"], ort["runtime"]) == ("context-binary", "onnxruntime")
    assert ort["latency_ms"] == pytest.approx(cb["latency_ms"] * factor, abs=2e-3)
    assert results["onnxruntime"]["iphone-15-pro"] == results["context-binary"]["iphone-15-pro"]  # Core ML: no QNN
    assert results["onnxruntime"]["iphone-15-pro"]["runtime"] is None
    assert set(qnn_runtime_option(lambda: None).__click_params__[0].type.choices) == set(costfit.QNN_RUNTIMES)


def test_estimate_a_tiny_sdxl_unet_and_its_generation(tiny_pipeline, tmp_path: Path) -> None:
    out = tmp_path / "sdxl.json"
    run = CliRunner().invoke(main, ["estimate", str(tiny_pipeline("sdxl")), "--components", "unet", "--device",
                                    "snapdragon-8-gen-3", "--device", "iphone-14-pro", "--device", "cpu-arm64",
                                    "--steps", "10", "--json", str(out)])
    assert run.exit_code == 0, run.output
    rows = {r["device"]: r for r in json.loads(out.read_text())["estimates"]}
    htp, ane, cpu = rows["snapdragon-8-gen-3"], rows["iphone-14-pro"], rows["cpu-arm64"]
    assert (htp["batch"], htp["calls_per_image"]) == (1, 20)  # static batch 1, twice per step with guidance
    assert (ane["batch"], ane["calls_per_image"]) == (2, 10)  # Core ML: one batch-2 call per step
    assert (cpu["batch"], cpu["calls_per_image"]) == (2, 10)  # ONNX Runtime: the pipeline's batch-2 call


def test_only_what_a_generation_calls_adds_up_to_an_image() -> None:
    """The VAE encoder (image-to-image only) is estimated per call but makes no call in text-to-image."""
    from fusionc.core.devices import DEVICES
    from fusionc.estimate import calls

    for device in ("snapdragon-8-gen-3", "iphone-14-pro", "cpu-arm64"):
        assert calls("vae_encoder", DEVICES[device], 8, True) == (1, 0)
        assert calls("vae_decoder", DEVICES[device], 8, True) == (1, 1)
        assert calls("text_encoder", DEVICES[device], 8, True) == (1, 2)


def test_palettized_weights_are_never_slower() -> None:
    """--palettize N: only the weight traffic changes, on the fitted and on the roofline model alike."""
    from fusionc.analysis.costmodel import estimate
    from fusionc.analysis.graph_stats import GraphStats, OpStat
    from fusionc.core.devices import DEVICES

    big = OpStat("m", "MatMul", "", "linear", macs=10**8, params=50 * 10**6, float_weight_elems=50 * 10**6,
                 act_in_elems=10**4, act_out_elems=10**4)
    stats = GraphStats([big], "none")
    for device in ("snapdragon-8-gen-3", "iphone-14-pro"):
        full = estimate(stats, DEVICES[device])
        low = estimate(stats, DEVICES[device], weight_bits=4)
        assert low.latency_s <= full.latency_s and low.weight_bytes < full.weight_bytes, device


@pytest.mark.parametrize("args, words", [
    (["/nonexistent/ckpt"], "does not exist"),
    (["--precision", "int3"], "--precision int3"),
    (["--components", "vae"], "--components vae"),
    (["--device", "pixel-9"], "pixel-9"),
    (["--palettize", "12"], "--palettize 12"),
    (["--precision", "fp32", "--device", "snapdragon-8-gen-3"], "--precision fp32"),  # QNN HTP has no fp32
    (["--json", "/proc/no-such-folder/e.json"], "cannot write --json"),  # refused before any export
    (["--qnn-runtime", "onnxruntime", "--device", "iphone-15-pro"], "no Hexagon device"),  # it would have no effect
    (["--qnn-runtime", "tflite"], "--qnn-runtime"),
])
def test_estimate_bad_input_is_one_line_exit_2(args: list[str], words: str) -> None:
    run = CliRunner().invoke(main, ["estimate", *args])
    assert run.exit_code == 2, run.output
    assert words in run.output and "Traceback" not in run.output


def test_meta_modules_hold_no_storage(tiny_pipeline) -> None:
    from fusionc.checkpoint import load_structure

    unet = load_structure(tiny_pipeline("sd15")).models["unet"]
    assert sum(p.numel() for p in unet.parameters()) > 0
    assert all(p.untyped_storage().nbytes() == 0 or p.device == torch.device("meta") for p in unet.parameters())


def test_a_second_estimate_reads_the_graph_statistics_from_the_cache(tiny_pipeline, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`--cache`: the first estimate stores each component's graph statistics, the next one (another device or
    precision) reads them back and gives the same numbers; a changed config is another key; a damaged entry is
    dropped and written again."""
    import shutil

    from fusionc.core.options import CompileOptions
    from fusionc.estimate_cache import StatsCache

    source = tiny_pipeline("sd15")
    checkpoint = tmp_path / "configs-only"  # an estimate reads no weight: the configs are the checkpoint
    for config in source.rglob("*.json"):
        (checkpoint / config.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(config, checkpoint / config.relative_to(source))
    cache = tmp_path / "cache"

    def run(*extra: str) -> dict:
        out = tmp_path / "estimate.json"
        result = CliRunner().invoke(main, ["estimate", str(checkpoint), "--components", "unet", "--device",
                                           "snapdragon-8-gen-3", "--device", "iphone-14-pro", "--cache", str(cache),
                                           "--json", str(out), *extra])
        assert result.exit_code == 0, result.output
        return json.loads(out.read_text())

    first = run()
    with monkeypatch.context() as patched:  # a hit builds no module: the configs alone name the components
        patched.setattr("fusionc.checkpoint.load_structure", lambda *_: pytest.fail("built the modules on a hit"))
        second = run()
    assert first["graph_cache"] == {"unet": "miss"} and second["graph_cache"] == {"unet": "hit"}
    assert second["estimates"] == first["estimates"]
    assert run("--precision", "w8a8")["graph_cache"] == {"unet": "hit"}  # the cost model's options are not the graph's

    stats = StatsCache(cache)
    options = CompileOptions(target="qnn")  # what estimate keys with
    key = stats.keys(checkpoint, ["unet"], options)["unet"]
    entry = stats.load(key)
    assert entry is not None and entry["qnn"].macs > 0 and set(entry["generic"]) == {1, 2}
    (stats.entries.folder(key) / "stats.json.gz").write_bytes(b"not gzip")
    assert stats.load(key) is None and not stats.entries.folder(key).exists()  # damaged: dropped
    assert stats.store(key, entry, "unet") and stats.load(key)["qnn"].macs == entry["qnn"].macs

    unet_config = checkpoint / "unet" / "config.json"
    config = json.loads(unet_config.read_text())
    unet_config.write_text(json.dumps(dict(config, layers_per_block=config["layers_per_block"] + 1)))
    changed = stats.keys(checkpoint, ["unet"], options)["unet"]
    assert changed != key  # another UNet: its statistics are not these
    assert stats.keys(checkpoint, ["unet"], CompileOptions(target="qnn", height=64, width=64))["unet"] not in (
        key, changed)  # nor another image size's


def test_an_unwritable_estimate_cache_is_one_line_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = CliRunner().invoke(main, ["estimate", "--components", "unet", "--device", "snapdragon-8-gen-3",
                                       "--cache", str(blocker)])
    assert result.exit_code == 2 and "--cache" in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("source, parts", [
    ("builtin:sd3", {"text_encoder", "text_encoder_2", "transformer", "vae_decoder"}),
    ("controlnet", {"text_encoder", "controlnet", "unet", "vae_decoder"}),
])
def test_estimate_covers_every_part_of_a_generation(source: str, parts: set[str], tiny_pipeline,
                                                   export_cache: Path) -> None:
    """An SD3 pipeline has a diffusion transformer, not a UNet, and a ControlNet runs beside the UNet: both run every
    step (twice with guidance on Hexagon, one batch-2 call on Core ML) and count in the whole image's total. The tiny
    ControlNet pipeline's graphs are the ones tests/test_controlnet.py's bench exports: the run's --cache keeps them
    for whichever comes second."""
    from fusionc.estimate import estimate

    checkpoint = Path(source) if source.startswith("builtin:") else tiny_pipeline(source)
    result = estimate(checkpoint, devices=["snapdragon-8-gen-3", "iphone-15-pro"], steps=4,
                      cache_dir=export_cache)
    assert {r["component"] for r in result["estimates"]} == parts
    assert not any(result["unknown_shape_ops"].values())  # every op's shape known at batch 1 and 2
    by = {(r["component"], r["device"]): r for r in result["estimates"]}
    for part in parts & {"transformer", "unet", "controlnet"}:
        assert by[(part, "snapdragon-8-gen-3")]["calls_per_image"] == 8 and by[(part, "snapdragon-8-gen-3")]["batch"] == 1
        assert by[(part, "iphone-15-pro")]["calls_per_image"] == 4 and by[(part, "iphone-15-pro")]["batch"] == 2
    for total in result["per_image"]:
        assert set(total["components"]) == parts
        assert total["per_image_ms"] == pytest.approx(
            sum(r["per_image_ms"] for r in result["estimates"] if r["device"] == total["device"]), abs=0.01)


def test_an_internal_error_is_one_line_exit_3_naming_the_debug_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in fusionc is not the user's bad input: exit 3, one line, and the exact command that shows the traceback
    (`--debug` is an option of `fusionc` itself, before the command)."""
    def broken(**_: object) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr("fusionc.estimate.run_estimate_cli", broken)
    run = CliRunner().invoke(main, ["estimate"])
    assert run.exit_code == 3
    assert run.output.strip() == ("fusionc: internal error: RuntimeError: boom (rerun as `fusionc --debug estimate ...` "
                                  "for the traceback)")
    assert "Traceback" in CliRunner().invoke(main, ["--debug", "estimate"]).output
