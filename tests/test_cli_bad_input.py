"""Bad input on the command line: one line, exit 2, before any work, nothing written.

Each case below was once accepted (and recorded, or crashed after the work): an out-of-range number, an option
that has no effect with the others, a gate that cannot be evaluated, an output path that cannot be written, a
reference checkpoint that is not the build's. They read as examples of what `fusionc` refuses and what it says.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fusionc.cli import compile_command, main
from fusionc.config import resolve


def refused(*args: str) -> str:
    """Run `fusionc ARGS`; assert exit 2 with no traceback; return the output."""
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output and "internal error" not in result.output
    return result.output


def one_error(*args: str) -> str:
    """Run `fusionc ARGS`; assert exit 2 and exactly one `fusionc: error:` line; return it."""
    output = refused(*args)
    errors = [line for line in output.splitlines() if line.startswith("fusionc: error:")]
    assert len(errors) == 1, output
    return errors[0]


# --- numbers out of range: refused by click, like --calibration-steps ---

@pytest.mark.parametrize("args, message", [
    (["compile", "--verify-steps", "0"], "'--verify-steps': 0 is not in the range x>=1"),  # was ZeroDivisionError
    (["compile", "--verify-steps", "-3"], "'--verify-steps': -3 is not in the range x>=1"),  # was KeyError
    (["compile", "--height", "0"], "'--height': 0 is not in the range x>=1"),  # was built at the default, "height 0"
    (["compile", "--width", "0"], "'--width': 0 is not in the range x>=1"),
    (["estimate", "--height", "0"], "'--height': 0 is not in the range x>=1"),
    (["estimate", "--width", "0"], "'--width': 0 is not in the range x>=1"),
    (["bench", "--runs", "0", "build/onnx"], "'--runs': 0 is not in the range x>=1"),  # was max() of an empty list
    (["bench", "--warmup", "-1", "build/onnx"], "'--warmup': -1 is not in the range x>=0"),
])
def test_numbers_out_of_range_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "o"
    assert message in refused(*args, *(["--out", str(out)] if args[0] == "compile" else []))
    assert not out.exists()


def test_bench_warmup_zero_is_accepted() -> None:
    ctx = main.commands["bench"].make_context("bench", ["--warmup", "0", "--runs", "1", "b"])
    assert (ctx.params["warmup"], ctx.params["runs"]) == (0, 1)


def test_a_zero_height_in_the_config_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "fusionc.toml"
    config.write_text("[compile]\nheight = 0\n")
    error = one_error("compile", "--config", str(config), "--out", str(tmp_path / "o"))
    assert "height = 0" in error and "not in the range x>=1" in error


def test_a_zero_height_through_the_api_is_refused_not_defaulted(tiny_pipeline) -> None:
    from fusionc.checkpoint import load_structure
    from fusionc.core.errors import BadInputError
    from fusionc.core.options import CompileOptions
    from fusionc.export import image_size

    with pytest.raises(BadInputError, match="--height/--width 0x64 must be positive multiples"):
        image_size(load_structure(tiny_pipeline("sd15")), CompileOptions(height=0, width=64))


# --- gates that cannot be evaluated, options that have no effect ---

@pytest.mark.parametrize("args, message", [
    (["--max-latency-ms", "unet=0.5"],  # was: "skip ... an onnx build has no device", exit 0
     "--max-latency-ms needs a device to estimate on, and an onnx build has none: pass --device"),
    (["--no-verify", "--min-psnr", "40"],  # was: the gate skipped, exit 0
     "--min-psnr gates the verification that --no-verify skips: drop one of them"),
    (["--block-size", "32"], "--block-size 32 has no effect without --quantize-weights"),
    (["--quantize-mode", "affine"], "--quantize-mode affine has no effect without --quantize-weights"),
    (["--granularity", "per_grouped_channel"], "--granularity per_grouped_channel has no effect without --palettize"),
    (["--group-size", "32"], "--group-size 32 has no effect without --palettize"),
    (["--compress-embeddings"], "--compress-embeddings has no effect without --palettize or --quantize-weights"),
    (["--compress-components", "unet"], "--compress-components unet has no effect without --palettize"),
    (["--palettize", "4", "--components", "text_encoder", "--compress-components", "unet"],
     "--compress-components names unet, which --components does not build (text_encoder)"),
    (["--mixed-bit-steps", "3", "--palettize", "4"], "--mixed-bit-steps 3 has no effect without --palettize auto:DB"),
    (["--palettize", "4", "--group-size", "8"],  # was: one palette per tensor, --group-size ignored
     "--group-size 8 has no effect with --granularity per_tensor (one palette per tensor): add --granularity "
     "per_grouped_channel or drop --group-size"),
    (["--recipe", "nonexist.json"],
     "--recipe 'nonexist.json' does not exist: give a saved recipe to re-apply, or add --palettize auto:DB"),
    (["--target", "qnn", "--precision", "fp16", "--qnn-range-margin", "2"],
     "--qnn-range-margin widens the ranges of quantized activations and --precision fp16 has none"),
    # each was accepted, and the build made without it
    (["--target", "coreml", "--attention-chunk", "64"],
     "--attention-chunk 64 has no effect with --attention split_einsum: it chunks split_einsum_v2's queries"),
    (["--calibration-samples", "4"],
     "--calibration-samples tunes the quantization, and an onnx fp32 build has none: drop it or choose --precision w8a8"),
    (["--qnn-remedy-rounds", "3"], "--qnn-remedy-rounds tunes the quantization, and an onnx fp32 build has none"),
    (["--target", "qnn", "--precision", "fp16", "--no-qnn-fp16-attention"],
     "--qnn-fp16-attention tunes the quantization, and a qnn fp16 build has none: drop it or choose --precision "
     "w8a16 or w8a8"),
    (["--target", "qnn", "--precision", "fp16", "--qnn-target-db", "40"],
     "--qnn-target-db tunes the quantization, and a qnn fp16 build has none"),
    (["--plot", "p.png"], "--plot draws a fleet's variants: it needs a --config file with [[variant]] tables"),
    (["--ray-address", "ray://head:10001"], "--ray-address is for --executor ray: add --executor ray or drop it"),
])
def test_an_option_without_effect_or_a_gate_without_a_device_is_refused(tmp_path: Path, args: list[str],
                                                                        message: str) -> None:
    out = tmp_path / "o"
    assert message in one_error("compile", "--out", str(out), *args)
    assert not out.exists()


@pytest.mark.parametrize("args", [
    ["--max-latency-ms", "unet=0.5", "--device", "iphone-14-pro"],
    ["--target", "coreml", "--max-latency-ms", "unet=0.5"],  # the target's default device
    ["--target", "qnn", "--qnn-range-margin", "2"],  # w8a16: 16-bit activation ranges
    ["--quantize-weights", "int8", "--block-size", "32", "--quantize-mode", "affine"],
    ["--palettize", "4", "--granularity", "per_grouped_channel", "--group-size", "32", "--compress-embeddings",
     "--min-weight-elements", "10", "--components", "text_encoder,unet", "--compress-components", "unet"],
    ["--palettize", "auto:35", "--recipe", "to_be_written.json", "--mixed-bit-steps", "3"],
    ["--target", "qnn", "--no-verify", "--min-psnr", "40"],  # still the quantization remedies' target (+5 dB)
    ["--precision", "w8a8", "--no-verify", "--min-psnr", "40"],  # onnx w8a8 shares those remedies
    ["--precision", "w8a8", "--calibration-samples", "4", "--qnn-remedy-rounds", "3"],
    ["--target", "qnn", "--calibration-samples", "4", "--no-qnn-fp16-attention", "--qnn-remedy-seconds", "5"],
    ["--target", "coreml", "--attention", "split_einsum_v2", "--attention-chunk", "64"],
])
def test_the_same_options_in_effect_are_accepted(args: list[str]) -> None:
    ctx = compile_command.make_context("compile", args)
    resolve(ctx, ctx.params)


def test_ray_address_from_the_environment_is_not_an_option_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """RAY_ADDRESS set for other work does not stop a local compile; --ray-address on the line does (above)."""
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    ctx = compile_command.make_context("compile", [])
    assert resolve(ctx, ctx.params).ray_address == "ray://head:10001"


def test_text_length_on_a_unet_pipeline_is_refused(tmp_path: Path) -> None:
    """The built-in SD pipeline has CLIP encoders only: --text-length (T5 tokens) was accepted and ignored."""
    assert "--text-length 16 sets the T5 tokens of a diffusion transformer's prompt" in one_error(
        "compile", "--text-length", "16", "--out", str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_an_option_without_effect_in_the_config_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "fusionc.toml"
    config.write_text("[compression]\nblock_size = 32\n")
    error = one_error("compile", "--config", str(config), "--out", str(tmp_path / "o"))
    assert "--block-size 32 has no effect without --quantize-weights" in error and "fusionc.toml" in error


def test_the_command_line_overrides_a_grouped_palettization_of_the_config_file(tmp_path: Path) -> None:
    """The file palettizes in groups; --granularity per_tensor on the command line wins, and a --group-size given
    with it then sizes nothing: refused (it was accepted and ignored). The file's own group size goes with the
    file's granularity the flag overrode; without the override, the flag's group size is used."""
    config = tmp_path / "fusionc.toml"
    config.write_text('[compression]\npalettize = "4"\ngranularity = "per_grouped_channel"\ngroup_size = 16\n')
    out = tmp_path / "o"
    error = one_error("compile", "--config", str(config), "--out", str(out), "--palettize", "4",
                      "--granularity", "per_tensor", "--group-size", "8")
    assert "--group-size 8 has no effect with --granularity per_tensor" in error
    assert not out.exists()
    ctx = compile_command.make_context("compile", ["--config", str(config), "--group-size", "8"])
    options = resolve(ctx, ctx.params).options
    assert (options.palettize, options.granularity, options.group_size) == ("4", "per_grouped_channel", 8)
    ctx = compile_command.make_context("compile", ["--config", str(config), "--granularity", "per_tensor"])
    assert resolve(ctx, ctx.params).options.granularity == "per_tensor"  # the file's group size goes with it
    config.write_text('[compression]\npalettize = "4"\ngroup_size = 16\n')  # but the file alone: no groups
    assert "--group-size 16 has no effect with --granularity per_tensor" in one_error(
        "compile", "--config", str(config), "--out", str(out))


def test_a_grouping_a_re_applied_recipe_does_not_have_is_refused_before_the_export(tmp_path: Path) -> None:
    """A re-applied recipe palettizes as saved (its bits were chosen for its groups): a --group-size or
    --granularity that differs would be ignored, so it is refused before the export; the same values pass."""
    from fusionc.passes.compression.mixed_bit import RECIPE_FORMAT

    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"format": RECIPE_FORMAT, "components": {"unet": {
        "granularity": "per_grouped_channel", "group_size": 16, "layers": {}}}}))
    out = tmp_path / "o"
    for flags, wrong in ((["--granularity", "per_grouped_channel", "--group-size", "8"], "--group-size 8"),
                         (["--granularity", "per_grouped_channel", "--group-size", "8", "--palettize", "auto:35"],
                          "--group-size 8"),
                         (["--granularity", "per_tensor"], "--granularity per_tensor")):
        output = refused("compile", "--out", str(out), "--recipe", str(recipe), *flags)
        assert (f"{wrong} has no effect: recipe {recipe} re-applies unet as saved (per_grouped_channel with "
                "groups of 16)") in output, output
        assert "[fusionc] unet:" not in output and not out.exists()
    from fusionc.pipeline import _check_compression_components

    ctx = compile_command.make_context("compile", ["--recipe", str(recipe), "--granularity", "per_grouped_channel",
                                                   "--group-size", "16"])
    _check_compression_components(resolve(ctx, ctx.params).options, ["unet"], {"granularity", "group_size"})


def test_a_fleets_shared_keys_may_not_apply_to_every_variant(tmp_path: Path) -> None:
    """Shared keys are for the variants that use them: [gates] min_psnr with a `verify = false` variant, or
    [compression] granularity with a variant that does not palettize, are accepted (that variant skips them, as
    before); a variant's own key without effect is refused, as on one build's command line."""
    from fusionc.config import read_variants
    from fusionc.core.errors import BadInputError

    config = tmp_path / "fusionc.toml"
    config.write_text('[gates]\nmin_psnr = 30\n[compression]\ngranularity = "per_grouped_channel"\n'
                      '[[variant]]\nname = "fast"\nverify = false\n'
                      '[[variant]]\nname = "grouped"\npalettize = "4"\n')
    ctx = compile_command.make_context("compile", ["--config", str(config)])
    resolve(ctx, ctx.params, fleet=True)
    fast, grouped = (resolve(ctx, ctx.params, table).options for table in read_variants(config))
    assert (fast.min_psnr, fast.verify, grouped.granularity) == (30, False, "per_grouped_channel")
    with open(config, "a") as file:
        file.write('[[variant]]\nname = "blocks"\nblock_size = 32\n')
    with pytest.raises(BadInputError, match="--block-size 32 has no effect without --quantize-weights"):
        resolve(ctx, ctx.params, read_variants(config)[2])


def test_compress_components_the_build_does_not_have(tmp_path: Path) -> None:
    """The built-in pipeline has no controlnet: compressing it would do nothing (found once the checkpoint's
    components are known, before any export)."""
    out = tmp_path / "o"
    error = one_error("compile", "--out", str(out), "--palettize", "4", "--compress-components", "unet,controlnet")
    assert "--compress-components names controlnet, which this build does not have" in error
    assert not out.exists()


@pytest.mark.parametrize("args, words", [
    (["--calibration-prompts", "2"], "--calibration-prompts sizes the calibration set, and this onnx build collects none"),
    (["--target", "coreml", "--compute-precision", "fp32", "--calibration-steps", "2"],
     "--calibration-steps sizes the calibration set, and this coreml build collects none"),
    (["--target", "qnn", "--precision", "fp16", "--selection-prompts", "1", "--selection-steps", "2"],
     "--selection-prompts/--selection-steps size the selection set, and this qnn build collects none"),
])
def test_a_tuning_set_the_build_does_not_collect_is_refused(tmp_path: Path, args: list[str], words: str) -> None:
    """onnx fp32 and Core ML fp32 take no calibration inputs, QNN fp16 no selection inputs: sizing them did nothing."""
    out = tmp_path / "o"
    assert words in one_error("compile", "--out", str(out), *args)
    assert not out.exists()


def test_a_config_file_may_size_every_set() -> None:
    """docs/ci.md's file sizes all three sets for whichever target reads it: not refused where one goes unused."""
    from fusionc.core.errors import BadInputError
    from fusionc.core.options import CompileOptions
    from fusionc.inputs import needed_roles
    from fusionc.pipeline import _check_unused_sets
    from fusionc.targets import get_target

    options = CompileOptions(target="coreml", selection_steps=2)  # Core ML without a mixed-bit search: no selection
    roles = needed_roles(get_target("coreml"), options)
    _check_unused_sets(roles, options, {"from_command_line": [], "from_config_file": ["selection_steps"]})
    with pytest.raises(BadInputError, match="--selection-steps sizes the selection set"):
        _check_unused_sets(roles, options, {"from_command_line": ["selection_steps"]})


def test_a_recipe_without_the_component_is_refused_before_the_export(tmp_path: Path) -> None:
    from fusionc.passes.compression.mixed_bit import RECIPE_FORMAT

    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"format": RECIPE_FORMAT, "components": {}}))
    out = tmp_path / "o"
    output = refused("compile", "--out", str(out), "--recipe", str(recipe))
    assert f"recipe {recipe} has no entry for unet: add --palettize auto:DB" in output
    assert "[fusionc] unet:" not in output  # was: refused by the compression pass, after the export
    assert not out.exists()


# --- output paths: checked before the work ---

@pytest.mark.parametrize("flag", ["--report", "--junit"])
def test_an_unwritable_report_is_refused_before_the_build(tmp_path: Path, flag: str) -> None:
    (tmp_path / "a_file").write_text("")
    out = tmp_path / "o"
    error = one_error("compile", "--out", str(out), flag, str(tmp_path / "a_file" / "r.json"))
    assert f"cannot write {flag}" in error and "is not a folder" in error
    assert not out.exists()  # was: the whole build written, then exit 2
    assert f"{flag} '{tmp_path}' is a folder" in one_error("compile", "--out", str(out), flag, str(tmp_path))


@pytest.mark.parametrize("flag", ["--report", "--junit"])
def test_a_report_inside_the_build_folder_is_refused(tmp_path: Path, flag: str) -> None:
    """Reports live beside the build, never in it: their timings would make a build's files differ from run to run,
    and a failed compile's report there left --out holding a file that is not a build, so every later compile into
    it was refused ("holds files that are not a fusionc build")."""
    out = tmp_path / "build"
    error = one_error("compile", str(tmp_path / "missing"), "--out", str(out), flag, str(out / "reports" / "r.json"))
    assert f"{flag} '{out / 'reports' / 'r.json'}' is inside the build folder '{out}'" in error
    assert not out.exists()  # was: build/reports/r.json, exit 2 ("checkpoint ... does not exist")


def test_two_outputs_on_one_path_are_refused(tmp_path: Path) -> None:
    """`junit = "reports/compile.json"`, a typo in a CI config: the JUnit XML silently replaced the JSON report."""
    same = tmp_path / "reports" / "compile.json"
    error = one_error("compile", str(tmp_path / "missing"), "--out", str(tmp_path / "b"), "--report", str(same),
                      "--junit", str(same))
    assert f"--report and --junit name the same file '{same}'" in error
    assert not same.exists()


def test_a_fleet_report_inside_a_variants_build_folder_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "fusionc.toml"
    config.write_text('[compile]\ncheckpoint = "missing"\n[[variant]]\nname = "a"\nout = "build/a"\n'
                      '[[variant]]\nname = "b"\nout = "build/b"\n')
    plot = tmp_path / "build" / "b" / "fleet.png"
    error = one_error("compile", "--config", str(config), "--plot", str(plot))
    assert f"--plot '{plot}' is inside the build folder" in error and "build/b" in error


def test_a_reports_missing_folder_is_fine(tmp_path: Path) -> None:
    from fusionc.buildfs import check_output_file

    check_output_file(tmp_path / "reports" / "deep" / "r.json", "--report")
    assert list(tmp_path.iterdir()) == []  # the check leaves nothing behind


@pytest.mark.parametrize("chunk, message", [
    ("abc", "--chunk must be auto, none or a number of chunks, got 'abc'"),
    ("0", "--chunk must be at least 1, got 0"),
])
def test_a_bad_chunk_is_refused_before_the_checkpoint_is_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                chunk: str, message: str) -> None:
    """Was refused at the Core ML lowering, after the load, the torch trajectories, the export and the passes."""
    import fusionc.pipeline

    monkeypatch.setattr(fusionc.pipeline, "load_checkpoint", lambda *a, **k: pytest.fail("the checkpoint was loaded"))
    assert message in one_error("compile", "--target", "coreml", "--chunk", chunk, "--out", str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args", [
    ["compile", "builtin:sd", "--out", "{tmp}/o"],
    ["generate", "x", "--checkpoint", "builtin:sd", "--out", "{tmp}/g.png"],
    ["estimate", "builtin:sd"],
])
def test_an_unknown_built_in_checkpoint_names_the_built_in_ones(tmp_path: Path, args: list[str]) -> None:
    """Was "checkpoint 'builtin:sd' does not exist: pass a diffusers pipeline or component folder"."""
    error = one_error(*[a.format(tmp=tmp_path) for a in args])
    assert "unknown built-in checkpoint 'builtin:sd': the built-in ones are builtin, builtin:controlnet, builtin:sd3" \
        in error
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, message", [
    ("noext", "--out '{p}' has no image extension: end it in .png"),  # was ValueError after the work (exit 3)
    ("image.foo", "--out '{p}' has the unknown image extension .foo"),
    ("a_file/g.png", "cannot write --out '{p}'"),  # was FileExistsError/NotADirectoryError after the work
])
def test_generate_refuses_a_bad_out_before_the_work(tmp_path: Path, name: str, message: str) -> None:
    (tmp_path / "a_file").write_text("")
    path = tmp_path / name
    assert message.format(p=path) in one_error("generate", "x", "--out", str(path))


def test_generate_refuses_a_psnr_gate_without_a_build(tmp_path: Path) -> None:
    """torch alone makes no build image to score: the gate was skipped, exit 0."""
    assert "--min-psnr gates a build's image against torch: add --build BUILD" in one_error(
        "generate", "x", "--min-psnr", "30", "--out", str(tmp_path / "g.png"))
    assert not (tmp_path / "g.png").exists()


def test_generate_refuses_a_control_scale_without_a_controlnet(tmp_path: Path) -> None:
    """The built-in pipeline has no ControlNet: the scale was accepted and scaled nothing."""
    assert "--control-scale given, but" in one_error("generate", "x", "--control-scale", "0.5", "--steps", "1",
                                                     "--out", str(tmp_path / "g.png"))
    assert not (tmp_path / "g.png").exists()


def fake_build(folder: Path, checkpoint: dict) -> Path:
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"target": "onnx", "components": {}, "checkpoint": checkpoint}))
    return folder


def test_generate_refuses_a_reference_checkpoint_that_is_not_the_builds(tmp_path: Path) -> None:
    """A tiny_sd build scored against the SD3 model: a meaningless PSNR (was printed, exit 0)."""
    from fusionc.checkpoint import BUILTIN_CHECKPOINT, checkpoint_sha256

    build = fake_build(tmp_path / "b", {"path": str(BUILTIN_CHECKPOINT), "sha256": checkpoint_sha256(BUILTIN_CHECKPOINT)})
    error = one_error("generate", "a red circle", "--build", str(build), "--checkpoint", "builtin:sd3",
                      "--out", str(tmp_path / "g.png"))
    assert f"--checkpoint 'builtin:sd3' is not the checkpoint build '{build}' was compiled from" in error
    assert not (tmp_path / "g.png").exists()


def test_generate_accepts_a_moved_copy_of_the_builds_checkpoint(tmp_path: Path) -> None:
    from fusionc.checkpoint import BUILTIN_CHECKPOINT, checkpoint_sha256
    from fusionc.generate import check_reference

    build = fake_build(tmp_path / "b", {"path": "/gone/tiny_sd", "sha256": checkpoint_sha256(BUILTIN_CHECKPOINT)})
    check_reference(build, BUILTIN_CHECKPOINT)  # same content, another folder: the reference --checkpoint is for


# --- the summary ---

def test_the_summary_names_no_device_when_there_is_none(capsys: pytest.CaptureFixture) -> None:
    """A plain `fusionc compile` (onnx) printed "(target onnx, device None)"."""
    from fusionc.cli import _print_summary

    manifest = {"target": "onnx", "device": None, "components": {}, "gates": []}
    printed = lambda: " ".join(capsys.readouterr().out.split())  # noqa: E731 - rich wraps the title
    _print_summary(manifest, Path("build/onnx"))
    assert "fusionc build: build/onnx (target onnx)" in printed()
    _print_summary({**manifest, "device": "iphone-14-pro"}, Path("build/onnx"))
    assert "(target onnx, device iphone-14-pro)" in printed()


def test_the_summary_keeps_each_row_and_gate_on_one_line_in_a_ci_log(capsys: pytest.CaptureFixture) -> None:
    """Off a terminal rich squeezed the summary into 80 columns: a component's files and a gate's message (what a
    CI step greps for) wrapped onto a second line."""
    from fusionc.cli import _print_summary

    files = ["text_encoder/model.onnx", "text_encoder/model.ort"]
    message = "unet 7.7 ms > 1e-05 ms (over by 7.69 ms, +76879900%), estimated, one call at batch 2 on cpu"
    _print_summary({"target": "onnx", "device": "cpu", "gates": [
        {"gate": "max_latency_ms", "status": "failed", "message": message}],
        "components": {"text_encoder": {"files": files, "bytes": 1_320_000, "psnr_db": 142.8}}}, Path("b1"))
    lines = capsys.readouterr().out.splitlines()
    assert any("text_encoder/model.onnx, text_encoder/model.ort" in line for line in lines), lines
    assert f"gate max_latency_ms  FAIL  {message}" in lines


# --- a build folder that was tampered with: every command that reads it says what is wrong (was exit 3) ---

def tampered_build(folder: Path, component: dict) -> Path:
    """A build whose manifest lists a UNet as `component` says, with none of its files on disk."""
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"target": "onnx", "components": {"unet": component},
                                                      "checkpoint": {"path": "/gone", "sha256": "0"}}))
    return folder


@pytest.mark.parametrize("command", [
    ["verify"], ["inspect"], ["bench", "--no-measure"], ["estimate", "--device", "cpu"],
    ["generate", "x", "--out", "{tmp}/g.png", "--build"],  # was NoSuchFile from onnxruntime, exit 3
])
@pytest.mark.parametrize("component, message", [
    ({"files": ["unet/model.onnx"], "inputs": {}, "outputs": {}}, "build file '{build}/unet/model.onnx' is missing"),
    ({"inputs": {}, "outputs": {}}, "is not a fusionc manifest"),  # was KeyError: 'files', exit 3
])
def test_a_build_with_a_file_deleted_or_a_manifest_edited_is_refused(tmp_path: Path, command: list[str],
                                                                    component: dict, message: str) -> None:
    build = tampered_build(tmp_path / "b", component)
    args = [a.format(tmp=tmp_path) for a in command]
    assert message.format(build=build) in one_error(*args, str(build))
    assert not (tmp_path / "g.png").exists()


# --- estimate and bench: options that do nothing for what they are given ---

def two_op_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph), path)
    return path


@pytest.mark.parametrize("args, message", [
    (["--height", "128"], "--height/--width set the size a checkpoint is exported at"),  # the file's shapes were used
    (["--cache", "{tmp}/c"], "--cache keeps a checkpoint's graph statistics"),  # nothing was cached
])
def test_estimate_of_an_onnx_file_refuses_checkpoint_only_options(tmp_path: Path, args: list[str],
                                                                  message: str) -> None:
    model = two_op_model(tmp_path / "unet.onnx")
    assert message in one_error("estimate", str(model), "--device", "cpu", *[a.format(tmp=tmp_path) for a in args])
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("args", [["--runs", "3"], ["--warmup", "0"], ["--emulator"]])
def test_bench_refuses_timing_options_with_no_measure(args: list[str]) -> None:
    assert "the measured runs, and --no-measure skips them" in one_error("bench", "build/onnx", "--no-measure", *args)
