"""The built-in diffusion transformer (`builtin:sd3`, fusionc/models/tiny_sd3, trained by fusionc.models.train_dit):
an SD3-shaped pipeline (MMDiT, flow matching) that draws what its prompts say, and compiles from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fusionc.checkpoint import BUILTIN_SD3, load_checkpoint


def test_builtin_sd3_loads_as_an_sd3_pipeline_of_a_few_mb() -> None:
    from fusionc.core.options import CompileOptions
    from fusionc.dit import geometry

    checkpoint = load_checkpoint("builtin:sd3")
    assert checkpoint.path == BUILTIN_SD3 and checkpoint.dit_family == "sd3"
    assert checkpoint.classes["transformer"] == "SD3Transformer2DModel"
    assert checkpoint.classes["text_encoder"] == checkpoint.classes["text_encoder_2"] == "CLIPTextModelWithProjection"
    assert "text_encoder_3" not in checkpoint.classes
    geo = geometry(checkpoint, CompileOptions())
    assert (geo.clip_length, geo.t5_length, geo.latent_channels) == (24, 0, 4)  # no T5: CLIP tokens only
    shipped = sum(p.stat().st_size for folder in ("transformer", "text_encoder") for p in (BUILTIN_SD3 / folder).iterdir())
    assert shipped < 4e6  # beside tiny_sd (whose VAE and tokenizer it links to): a few MB


@pytest.mark.parametrize("colour, shape", [("red", "circle"), ("blue", "square")])
def test_builtin_sd3_draws_the_shape_where_the_prompt_says(colour: str, shape: str) -> None:
    """Same seed, two positions: the image follows the words (the layout does not come from the noise)."""
    from fusionc.generate import run, torch_runners
    from fusionc.models.shapes_check import check

    rs = torch_runners("builtin:sd3")
    for position in ("on the left", "on the right"):
        prompt = f"a {colour} {shape} {position}"
        image, info = run(prompt, rs, steps=8, seed=10_001, guidance=4.0)
        assert info["family"] == "sd3" and info["scheduler"] == "FlowMatchEulerDiscreteScheduler"
        verdict = check(prompt, image)
        assert verdict["position_ok"] and verdict["colour_ok"], verdict  # (shapes: 98% of 50 held-out prompts)


# the README's SD3 lines (tests/test_readme_commands.py) run in this group: one worker, one --cache, so the
# transformer is exported once for both
@pytest.mark.xdist_group("readme-sd3")
def test_compile_builtin_sd3_from_the_cli(tmp_path: Path) -> None:
    from fusionc.cli import main

    out = tmp_path / "sd3"
    result = CliRunner().invoke(main, ["compile", "builtin:sd3", "--target", "onnx", "--components", "transformer",
                                       "--verify-steps", "1", "--verify-prompts", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dit"]["family"] == "sd3" and manifest["dit"]["t5_length"] == 0
    assert manifest["components"]["transformer"]["psnr_db"] > 60
