"""ControlNet pipelines: the `controlnet` component, the UNet with Apple's residual inputs, the trajectory that
feeds both, the onnx build and `fusionc generate --control-image` (tiny sd15 + ControlNetModel)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fusionc.checkpoint import load_checkpoint
from fusionc.cli import main
from fusionc.controlnet import outline_image, residual_names, residual_shapes
from fusionc.core.errors import UnsupportedError
from fusionc.core.options import CompileOptions
from fusionc.export import component_spec


@pytest.fixture(scope="module")
def controlnet_build(tiny_pipeline, tmp_path_factory) -> Path:
    from fusionc.pipeline import compile_checkpoint

    out = tmp_path_factory.mktemp("cn") / "onnx"
    compile_checkpoint(tiny_pipeline("controlnet"), CompileOptions(target="onnx", verify_prompts=1), out)
    return out


def _control_png(path: Path, prompt: str) -> Path:
    from PIL import Image

    image = outline_image(prompt, 64, 64)[0].transpose(1, 2, 0)
    Image.fromarray((image * 255).round().astype(np.uint8)).save(path)
    return path


def test_controlnet_is_a_component_and_the_unet_takes_its_residuals(tiny_pipeline) -> None:
    checkpoint = load_checkpoint(tiny_pipeline("controlnet"))
    assert checkpoint.component_names().index("controlnet") == checkpoint.component_names().index("unet") - 1
    options = CompileOptions()
    control = component_spec(checkpoint, "controlnet", options)
    unet = component_spec(checkpoint, "unet", options)
    assert list(control.example)[:4] == ["sample", "timestep", "encoder_hidden_states", "controlnet_cond"]
    outputs = control.reference({k: v.numpy() for k, v in control.example.items()})
    names = residual_names(7)  # conv_in, 2 stages x (1 ResNet + downsampler), 1 ResNet, then the mid block
    assert list(outputs) == names == [k for k in unet.example if k.startswith("additional_residual_")]
    for name, shape in zip(names, residual_shapes(checkpoint.models["unet"], 2, (8, 8))):
        assert outputs[name].shape == tuple(unet.example[name].shape) == shape
    feeds = {k: v.numpy() for k, v in unet.example.items()}
    with_residuals = unet.reference(feeds)["out_sample"]
    zero = unet.reference({k: (np.zeros_like(v) if k.startswith("additional") else v) for k, v in feeds.items()})
    assert np.abs(with_residuals - zero["out_sample"]).max() > 1e-3  # the residuals reach the output


def test_trajectory_feeds_the_unet_the_controlnet_outputs(tiny_pipeline) -> None:
    from fusionc.verify import trajectory_samples

    checkpoint = load_checkpoint(tiny_pipeline("controlnet"))
    feeds, outputs = trajectory_samples(checkpoint, CompileOptions(verify_steps=2, verify_prompts=1),
                                        ["controlnet", "unet"])
    assert len(feeds["controlnet"]) == len(feeds["unet"]) == 2
    expected = outline_image("a red circle on the left", 64, 64)
    for control_feeds, control_out, unet_feeds in zip(feeds["controlnet"], outputs["controlnet"], feeds["unet"]):
        assert control_feeds["controlnet_cond"].shape == (2, 3, 64, 64)
        np.testing.assert_array_equal(control_feeds["controlnet_cond"][1:], expected)
        for name, value in control_out.items():
            np.testing.assert_array_equal(unet_feeds[name], value)


def test_optional_components_are_noted_and_unknown_denoisers_refused(tiny_pipeline, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "pipe"
    shutil.copytree(tiny_pipeline("controlnet"), folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["safety_checker"] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
    index["feature_extractor"] = ["transformers", "CLIPImageProcessor"]
    (folder / "model_index.json").write_text(json.dumps(index))
    checkpoint = load_checkpoint(folder)
    assert set(checkpoint.omitted) == {"safety_checker", "feature_extractor"}
    assert "optional for generation" in checkpoint.omitted["safety_checker"]
    index["prior"] = ["diffusers", "PriorTransformer"]
    (folder / "model_index.json").write_text(json.dumps(index))
    result = CliRunner().invoke(main, ["compile", str(folder), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "'prior' (PriorTransformer)" in result.output
    assert not (tmp_path / "b").exists()
    del index["prior"]
    index["controlnet"] = ["diffusers", "MultiControlNetModel"]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(UnsupportedError, match="MultiControlNetModel"):
        load_checkpoint(folder)



@pytest.mark.parametrize("change, message", [
    ({"block_out_channels": (16, 32, 32)}, "block_out_channels (16, 32, 32) against block_out_channels (32, 64, 64)"),
    ({"cross_attention_dim": 48}, "cross_attention_dim 48 against cross_attention_dim 32"),
    ({"conditioning_channels": 1}, "takes control images of 1 channels"),
])
def test_a_controlnet_of_another_unet_is_exit_2_naming_what_differs(tiny_pipeline, tmp_path: Path, change: dict,
                                                                    message: str) -> None:
    """Before: exit 3 (an internal error) on torch's shape error in the reference trajectory."""
    import shutil

    from diffusers import UNet2DConditionModel

    from fusionc.models.tiny import sd15_unet_config, write_controlnet

    folder = tmp_path / "pipe"
    shutil.copytree(tiny_pipeline("controlnet"), folder)
    shutil.rmtree(folder / "controlnet")
    unet = {**sd15_unet_config(), **{k: v for k, v in change.items() if k != "conditioning_channels"}}
    write_controlnet(folder / "controlnet", UNet2DConditionModel(**unet),
                     conditioning_channels=change.get("conditioning_channels", 3))
    result = CliRunner().invoke(main, ["compile", str(folder), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "'controlnet'" in result.output
    assert not (tmp_path / "b").exists()

def test_onnx_build_verifies_every_component(controlnet_build: Path) -> None:
    manifest = json.loads((controlnet_build / "manifest.json").read_text())
    components = manifest["components"]
    assert list(components)[:3] == ["text_encoder", "controlnet", "unet"]
    assert list(components["controlnet"]["outputs"]) == residual_names(7)
    assert [k for k in components["unet"]["inputs"] if k.startswith("additional")] == residual_names(7)
    for name, component in components.items():
        assert component["psnr_db"] > 60, (name, component["psnr_db"])


def test_generate_with_a_control_image(controlnet_build: Path, sd15_onnx_build: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    control = _control_png(tmp_path / "square.png", "a square on the right")
    out = tmp_path / "image.png"
    result = runner.invoke(main, ["generate", "a red circle on the left", "--build", str(controlnet_build),
                                  "--control-image", str(control), "--steps", "3", "--out", str(out),
                                  "--min-psnr", "35"])
    assert result.exit_code == 0, result.output
    assert out.exists() and "PSNR vs torch" in result.output
    missing = runner.invoke(main, ["generate", "a red circle", "--build", str(controlnet_build), "--out", str(out)])
    assert missing.exit_code == 2 and "--control-image" in missing.output
    bad = runner.invoke(main, ["generate", "a red circle", "--build", str(controlnet_build), "--out", str(out),
                               "--control-image", str(tmp_path / "nope.png")])
    assert bad.exit_code == 2 and "nope.png" in bad.output
    plain = runner.invoke(main, ["generate", "a red circle", "--build", str(sd15_onnx_build), "--out", str(out),
                                 "--control-image", str(control)])
    assert plain.exit_code == 2 and "no controlnet" in plain.output


def test_bench_counts_the_controlnet_every_step(controlnet_build: Path, tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", str(controlnet_build), "--no-measure", "--steps", "6",
                                       "--json", str(report)])
    assert result.exit_code == 0, result.output
    rows = json.loads(report.read_text())["budgets"]
    # 6 guided steps: one batch-2 call each, two batch-1 calls on Hexagon's static context
    assert rows and all(r["calls"]["controlnet"] == r["calls"]["unet"] == (12 if r["backend"] == "qnn/htp" else 6)
                        for r in rows)
    assert all(r["breakdown_ms"]["controlnet"] > 0 for r in rows)
