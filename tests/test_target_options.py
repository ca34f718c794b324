"""Options a target cannot honour are refused before any work; the manifest records only those in effect.

The table is fusionc.core.options.OPTION_TARGETS; this walks every target x every option it does not honour,
on the command line (exit 2, one line naming flag and target, nothing written) and through the API."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner

from fusionc.cli import main
from fusionc.core.errors import BadInputError
from fusionc.core.options import (ALL_TARGETS, OPTION_TARGETS, CompileOptions, check_target_options, flag_of,
                                  options_in_effect, targets_of)

# Options every target honours (driver, verification, gates). A new CompileOptions field must be put in
# OPTION_TARGETS or here, on purpose.
COMMON = {"target", "device", "components", "height", "width", "opset", "allow_pickle", "verify", "min_psnr",
          "max_size", "max_latency_ms", "latency_steps", "verify_steps", "verify_prompts", "seed",
          # the calibration and selection trajectories: QNN ranges, fp16 overflow ranges (coreml, qnn), mixed-bit
          # probes and recipes (onnx, coreml)
          "calibration_steps", "calibration_prompts", "selection_steps", "selection_prompts",
          "text_length"}  # T5 tokens of a diffusion transformer (fusionc.dit)

# A value away from the default for each target-specific option, as command-line arguments and as a field value.
SAMPLES: dict[str, tuple[list[str], object]] = {
    "attention": (["--attention", "original"], "original"),
    "compute_units": (["--compute-units", "all"], "all"),
    "deployment_target": (["--deployment-target", "iOS18"], "iOS18"),
    "chunk": (["--chunk", "2"], "2"),
    "bundle": (["--bundle", "swift"], "swift"),
    "compute_precision": (["--compute-precision", "fp32"], "fp32"),
    "attention_chunk": (["--attention-chunk", "64"], 64),
    "coreml_ct_passes": (["--coreml-ct-passes", "default"], "default"),
    "palettize": (["--palettize", "6"], "6"),
    "granularity": (["--granularity", "per_grouped_channel"], "per_grouped_channel"),
    "group_size": (["--group-size", "32"], 32),
    "quantize_weights": (["--quantize-weights", "int8"], "int8"),
    "block_size": (["--block-size", "64"], 64),
    "quantize_mode": (["--quantize-mode", "affine"], "affine"),
    "recipe": (["--recipe", "recipe.json"], Path("recipe.json")),
    "min_weight_elements": (["--min-weight-elements", "10"], 10),
    "compress_embeddings": (["--compress-embeddings"], True),
    "compress_components": (["--compress-components", "unet"], ("unet",)),
    "mixed_bit_steps": (["--mixed-bit-steps", "3"], 3),
    "selection_samples": (["--selection-samples", "2"], 2),
    "precision": (["--precision", "w8a8"], "w8a8"),
    "calibration_samples": (["--calibration-samples", "2"], 2),
    "qnn_range_margin": (["--qnn-range-margin", "2"], 2.0),
    "qnn_fp16_attention": (["--no-qnn-fp16-attention"], False),
    "qnn_target_db": (["--qnn-target-db", "40"], 40.0),
    "qnn_remedy_rounds": (["--qnn-remedy-rounds", "0"], 0),
    "qnn_remedy_seconds": (["--qnn-remedy-seconds", "5"], 5.0),
    "qnn_max_context_bytes": (["--qnn-max-context-bytes", "1000"], 1000),
    "qnn_max_build_bytes": (["--qnn-max-build-bytes", "1000"], 1000),
    "qnn_verify_runtime": (["--qnn-verify-runtime", "cpu"], "cpu"),
}

FOREIGN = [(t, f) for t in ALL_TARGETS for f in OPTION_TARGETS if t not in OPTION_TARGETS[f]]


def test_every_field_is_placed_on_purpose() -> None:
    fields = {f.name for f in dataclasses.fields(CompileOptions)}
    assert fields == COMMON | set(OPTION_TARGETS), "place the new field in OPTION_TARGETS or in COMMON"
    assert not COMMON & set(OPTION_TARGETS)
    assert set(SAMPLES) == set(OPTION_TARGETS)
    assert all(set(targets) <= set(ALL_TARGETS) and targets for targets in OPTION_TARGETS.values())


@pytest.mark.parametrize("target, field", FOREIGN)
def test_foreign_option_is_refused_on_the_command_line(tmp_path: Path, target: str, field: str) -> None:
    args, _ = SAMPLES[field]
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["compile", "--target", target, "--out", str(out), *args])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("fusionc: error")]
    assert len(errors) == 1 and f"{flag_of(field)} is not an option of --target {target}" in errors[0], result.stderr
    assert not out.exists()


@pytest.mark.parametrize("target, field", FOREIGN)
def test_foreign_option_is_refused_by_the_api(target: str, field: str) -> None:
    """compile_checkpoint checks too: a field away from its default is foreign even when nobody says it was given."""
    options = dataclasses.replace(CompileOptions(target=target), **{field: SAMPLES[field][1]})
    with pytest.raises(BadInputError, match=f"{flag_of(field)} is not an option of --target {target}"):
        check_target_options(options)
    assert field not in options_in_effect(options)


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_own_options_are_accepted_and_recorded(target: str) -> None:
    own = {f: SAMPLES[f][1] for f in OPTION_TARGETS if target in OPTION_TARGETS[f]}
    options = dataclasses.replace(CompileOptions(target=target), **own)
    check_target_options(options, given=own)
    recorded = options_in_effect(options)
    assert set(recorded) == COMMON | set(own)
    assert all(target in targets_of(name) for name in recorded)


def test_a_foreign_option_at_its_default_is_refused_when_given(tmp_path: Path) -> None:
    """`--attention split_einsum` repeats the default, yet the user asked for it: still refused for qnn."""
    result = CliRunner().invoke(main, ["compile", "--target", "qnn", "--attention", "split_einsum",
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--attention is not an option of --target qnn" in result.stderr


def test_issue_example_qnn_palettize_exits_2_before_any_work(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["compile", "--target", "qnn", "--palettize", "6", "--out", str(tmp_path / "q")])
    assert result.exit_code == 2
    assert "--palettize is not an option of --target qnn: only the onnx and coreml targets honour it" in result.stderr
    assert not (tmp_path / "q").exists()


def test_passes_command_refuses_foreign_options_too() -> None:
    result = CliRunner().invoke(main, ["passes", "--target", "onnx", "--qnn-range-margin", "2"])
    assert result.exit_code == 2 and "--qnn-range-margin is not an option of --target onnx" in result.stderr
