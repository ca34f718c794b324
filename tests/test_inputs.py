"""The three input sets of a compile (fusionc.inputs): disjoint prompts, seeds and inputs; what passes and targets
get; what the manifest records; `fusionc verify --prompts/--seeds` on inputs a user chooses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fusionc.cli import main
from fusionc.core.context import CALIBRATION, SELECTION, VERIFICATION
from fusionc.core.options import CompileOptions
from fusionc.inputs import PROMPTS, needed_roles, role_spec
from fusionc.targets import get_target

SMALL = dict(verify_steps=2, verify_prompts=1, calibration_steps=2, calibration_prompts=2, selection_steps=3,
             selection_prompts=1)


def test_prompt_lists_are_disjoint_and_not_the_training_check_set() -> None:
    from fusionc.models.shapes_dataset import WORDS, check_prompts

    lists = [set(p) for p in PROMPTS.values()]
    assert sum(len(p) for p in lists) == len(set().union(*lists))  # no prompt in two sets
    training_check = {s.caption for s in check_prompts(20)}  # train_tiny's logged prompt check
    assert not training_check & set().union(*lists)
    for prompt in set().union(*lists):  # the built-in tokenizer knows every word
        assert set(prompt.replace(",", "").split()) <= set(WORDS), prompt


def test_each_role_has_its_own_prompts_seeds_and_steps() -> None:
    options = CompileOptions(seed=5)
    specs = {r: role_spec(options, r) for r in (CALIBRATION, SELECTION, VERIFICATION)}
    assert [len(s.prompts) for s in specs.values()] == [4, 2, 2]
    assert [s.steps for s in specs.values()] == [4, 5, 3]  # timesteps fall elsewhere on the schedule
    seeds = [set(s.seeds) for s in specs.values()]
    assert not (seeds[0] & seeds[1] or seeds[0] & seeds[2] or seeds[1] & seeds[2])
    assert specs[VERIFICATION].seeds == (5, 6)
    mixed = CompileOptions(palettize="auto:35")
    assert {role_spec(mixed, r).steps for r in (CALIBRATION, SELECTION, VERIFICATION)} == {8}


def test_targets_ask_only_for_the_sets_they_use() -> None:
    assert needed_roles(get_target("onnx"), CompileOptions()) == (VERIFICATION,)
    assert needed_roles(get_target("onnx"), CompileOptions(verify=False)) == ()
    assert needed_roles(get_target("onnx"), CompileOptions(palettize="auto:35")) == (CALIBRATION, SELECTION, VERIFICATION)
    assert needed_roles(get_target("qnn"), CompileOptions(target="qnn")) == (CALIBRATION, SELECTION, VERIFICATION)
    assert needed_roles(get_target("qnn"), CompileOptions(target="qnn", precision="fp16")) == (CALIBRATION, VERIFICATION)
    assert needed_roles(get_target("coreml"), CompileOptions(target="coreml")) == (CALIBRATION, VERIFICATION)


def test_targets_get_tuning_sets_disjoint_from_verification(tiny_pipeline, tmp_path: Path, monkeypatch) -> None:
    """A target that asks for calibration and selection gets them in its context, never the verification
    inputs; the manifest records every set and the PSNR on the calibration set beside the held-out one."""
    from fusionc import pipeline

    onnx_target = get_target("onnx")
    seen = {}

    class TuningTarget:
        def __getattr__(self, name):
            return getattr(onnx_target, name)

        def input_roles(self, options):
            return (CALIBRATION, SELECTION)

        def lower(self, model, build_dir, ctx):
            seen[ctx.name] = ctx
            return onnx_target.lower(model, build_dir, ctx)

    monkeypatch.setattr(pipeline, "get_target", lambda name: TuningTarget())
    manifest = pipeline.compile_checkpoint(tiny_pipeline("sd15"), CompileOptions(components=("unet",), **SMALL),
                                           tmp_path / "out")
    inputs = manifest["inputs"]
    assert set(inputs) == {CALIBRATION, SELECTION, VERIFICATION}
    assert inputs[CALIBRATION]["count"]["unet"] == 2 * 2 and inputs[SELECTION]["count"]["unet"] == 3
    assert inputs[VERIFICATION]["count"]["unet"] == 2 and inputs[VERIFICATION]["steps"] == 2
    prompts = [set(inputs[r]["prompts"]) for r in inputs]
    assert not (prompts[0] & prompts[1] or prompts[0] & prompts[2] or prompts[1] & prompts[2])

    ctx = seen["unet"]
    assert len(ctx.calibration_feeds) == 4 and len(ctx.selection_feeds) == 3
    assert not hasattr(ctx, "verification_feeds")
    samples = [f["sample"] for f in ctx.calibration_feeds + ctx.selection_feeds]
    for a in range(len(samples)):  # every input distinct: no set shares a latent with another
        for b in range(a + 1, len(samples)):
            assert not np.array_equal(samples[a], samples[b])
    unet = manifest["components"]["unet"]
    assert unet["psnr_db"] > 60 and unet["psnr_db_calibration"] > 60  # fp32 onnx: both near-exact



def test_controlnet_sets_share_no_control_image(tiny_pipeline) -> None:
    """Before: a set's control image was the outline its prompt names, and prompts of different sets name the same
    outline ("a purple triangle on the left", selection, and "a red circle on the left", verification, with the
    default sizes), so the held-out set's control images were among those a build was tuned on."""
    from fusionc.checkpoint import load_checkpoint
    from fusionc.controlnet import outline_image
    from fusionc.inputs import collect

    checkpoint = load_checkpoint(tiny_pipeline("controlnet"))
    options = CompileOptions(verify_prompts=99, calibration_prompts=99, selection_prompts=99)
    specs = {r: role_spec(options, r) for r in (CALIBRATION, SELECTION, VERIFICATION)}
    specs = {r: type(s)(r, s.prompts, s.seeds, 1) for r, s in specs.items()}  # one step: one control image each
    sets = collect(checkpoint, options, ["controlnet", "unet"], specs)
    images = {r: [f["controlnet_cond"][1].tobytes() for f in sets[r].feeds["controlnet"]] for r in sets}
    assert [len(images[r]) for r in specs] == [len(PROMPTS[r]) for r in specs]
    for a, b in ((CALIBRATION, SELECTION), (CALIBRATION, VERIFICATION), (SELECTION, VERIFICATION)):
        assert not set(images[a]) & set(images[b]), (a, b)
    # the verification set keeps the outline its prompt names (what `fusionc verify` reproduces)
    assert images[VERIFICATION][0] == outline_image(PROMPTS[VERIFICATION][0], 64, 64)[0].tobytes()


def test_a_compile_without_the_denoiser_records_example_inputs_not_prompts(tiny_pipeline, tmp_path: Path) -> None:
    """Before: a text encoder compiled alone from a whole pipeline was verified on one random example input, and the
    manifest named the set's prompts and steps as if a denoising loop had made it."""
    from fusionc.pipeline import compile_checkpoint

    manifest = compile_checkpoint(tiny_pipeline("sd15"), CompileOptions(components=("text_encoder",), verify_prompts=2),
                                  tmp_path / "te")
    assert manifest["inputs"][VERIFICATION] == {"prompts": [], "seeds": [0], "steps": 0, "example_inputs": True,
                                                 "count": {"text_encoder": 1}}


def test_verify_on_prompts_and_seeds_a_user_chooses(sd15_onnx_build: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["verify", str(sd15_onnx_build), "--prompts", "a red cross on the left;a green circle",
                                  "--seeds", "11,12", "--steps", "2", "--min-psnr", "60"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((sd15_onnx_build / "manifest.json").read_text())
    run = manifest["verify_runs"][-1]
    assert run["inputs"]["prompts"] == ["a red cross on the left", "a green circle"]
    assert run["inputs"]["seeds"] == [11, 12] and run["inputs"]["steps"] == 2
    assert run["inputs"]["count"]["unet"] == 4 and run["components"]["unet"]["psnr_db"] > 60
    assert manifest["inputs"][VERIFICATION]["seeds"] == [0, 1]  # the compile's own record is untouched


def test_verify_on_a_prompt_the_build_was_tuned_on_says_so(sd15_onnx_build: Path, tmp_path: Path) -> None:
    """Before: `fusionc verify --prompts` on a calibration prompt reported its figure like a held-out one, though
    the text encoder's inputs (the prompt's token ids) were among those the build was tuned on."""
    import shutil

    build = tmp_path / "build"
    shutil.copytree(sd15_onnx_build, build)
    manifest = json.loads((build / "manifest.json").read_text())
    manifest["inputs"][CALIBRATION] = {"prompts": list(PROMPTS[CALIBRATION][:2]), "seeds": [2000, 2001], "steps": 4,
                                       "count": {}}
    (build / "manifest.json").write_text(json.dumps(manifest))
    tuned = PROMPTS[CALIBRATION][1]
    result = CliRunner().invoke(main, ["verify", str(build), "--prompts", f"a red cross on the left;{tuned}",
                                       "--steps", "1"])
    assert result.exit_code == 0, result.output
    assert "PSNR vs torch on the 2 prompt(s) given, 1 step(s):" in result.output
    assert f"not held out: '{tuned}' in the build's calibration set" in result.output
    run = json.loads((build / "manifest.json").read_text())["verify_runs"][-1]
    assert run["not_held_out"] == {CALIBRATION: [tuned]}


def test_verify_steps_are_taken_as_given_on_a_mixed_bit_build(sd15_onnx_build: Path, tmp_path: Path) -> None:
    """Before: `fusionc verify --steps 1` on a build of --palettize auto:DB ran 8 steps (the search's generation
    length) and recorded 8, without a word."""
    import shutil

    build = tmp_path / "build"
    shutil.copytree(sd15_onnx_build, build)
    manifest = json.loads((build / "manifest.json").read_text())
    manifest["options"]["palettize"] = "auto:35"  # what verify reads of a mixed-bit build
    (build / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(main, ["verify", str(build), "--prompts", "a red cross on the left", "--steps", "1"])
    assert result.exit_code == 0, result.output
    run = json.loads((build / "manifest.json").read_text())["verify_runs"][-1]
    assert run["inputs"]["steps"] == 1 and run["inputs"]["count"]["unet"] == 1
    # on the build's own set, the manifest's record of that set follows the figures it now holds (was: still 3 steps)
    result = CliRunner().invoke(main, ["verify", str(build), "--steps", "1"])
    assert result.exit_code == 0, result.output
    recorded = json.loads((build / "manifest.json").read_text())["inputs"][VERIFICATION]
    assert recorded["steps"] == 1 and recorded["count"]["unet"] == len(recorded["prompts"]) == 2


@pytest.mark.parametrize("args, message", [
    (["--seeds", "3"], "--seeds needs --prompts"),
    (["--prompts", "a;b;c", "--seeds", "1,2"], "--seeds has 2 values for 3 prompts"),
    (["--prompts", "a", "--seeds", "x"], "is not a comma-separated list of integers"),
    (["--prompts", " ; "], "--prompts is empty"),
])
def test_verify_input_errors_are_one_line_exit_2(sd15_onnx_build: Path, args, message) -> None:
    result = CliRunner().invoke(main, ["verify", str(sd15_onnx_build), *args])
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1


def test_the_image_check_prompts_are_held_out_too() -> None:
    """benchmarks/prompt_check.py judges images on prompts no compile and no training check has seen."""
    import sys

    from fusionc.models.shapes_dataset import check_prompts

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import prompt_check

    prompts = prompt_check.heldout_prompts(50)
    assert len(set(prompts)) == 50
    assert not set(prompts) & ({s.caption for s in check_prompts(20)} | {p for ps in PROMPTS.values() for p in ps})
    assert prompt_check.SEED_BASE > 2000 + 12  # beyond every compile seed offset (fusionc.inputs.SEED_OFFSETS)
