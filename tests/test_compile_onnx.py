"""Export + verify every topology the spine loads, on the onnx target (fp32 ONNX sits above 60 dB)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fusionc.core.options import CompileOptions
from fusionc.pipeline import compile_checkpoint

# Components that differ between families (sd15 covers the rest through the shared build fixture).
FAMILY_COMPONENTS = {
    "sd21": ("unet",),
    "no_mid": ("unet",),
    "deep_transformer": ("unet",),
    "sdxl": ("text_encoder", "text_encoder_2", "unet"),
    "taesd": ("vae_decoder", "vae_encoder"),
}


def test_sd15_build_is_verified_and_complete(sd15_onnx_build: Path) -> None:
    manifest = json.loads((sd15_onnx_build / "manifest.json").read_text())
    assert manifest["target"] == "onnx"
    assert set(manifest["components"]) == {"text_encoder", "unet", "vae_decoder", "vae_encoder"}
    for name, comp in manifest["components"].items():
        assert comp["psnr_db"] >= 60, name
        assert comp["bytes"] > 0 and all((sd15_onnx_build / f).exists() for f in comp["files"])
        assert any(f.endswith(".ort") for f in comp["files"])
        assert comp["passes"] and all({"name", "seconds", "modified", "nodes_before", "nodes_after"} <= set(p)
                                      for p in comp["passes"])
    unet = manifest["components"]["unet"]
    assert unet["inputs"]["sample"]["shape"] == ["batch", 4, 8, 8]
    assert unet["inputs"]["timestep"] == {"shape": [1], "dtype": "float"}
    assert manifest["components"]["text_encoder"]["inputs"]["input_ids"]["dtype"] == "int32"
    assert len(manifest["checkpoint"]["sha256"]) == 64


@pytest.mark.parametrize("family", sorted(FAMILY_COMPONENTS))
def test_family_exports_and_verifies(tiny_pipeline, tmp_path: Path, family: str) -> None:
    options = CompileOptions(target="onnx", components=FAMILY_COMPONENTS[family])
    manifest = compile_checkpoint(tiny_pipeline(family), options, tmp_path / "build")
    for name, comp in manifest["components"].items():
        assert comp["psnr_db"] >= 60, (family, name, comp["psnr_by_output"])


def test_build_loads_in_diffusers_onnx_pipeline(sd15_onnx_build: Path) -> None:
    from diffusers import OnnxStableDiffusionPipeline

    pipe = OnnxStableDiffusionPipeline.from_pretrained(str(sd15_onnx_build), provider="CPUExecutionProvider")
    for guidance in (7.5, 1.0):  # batch 2 and batch 1 through the dynamic batch axis
        image = pipe("a red circle on the left", num_inference_steps=2, height=64, width=64,
                     guidance_scale=guidance, output_type="np").images[0]
        assert image.shape == (64, 64, 3) and np.isfinite(image).all()


def test_resolution_option_changes_static_shapes(tiny_pipeline, tmp_path: Path) -> None:
    options = CompileOptions(target="onnx", components=("unet",), height=128, width=96, verify=False)
    manifest = compile_checkpoint(tiny_pipeline("sd15"), options, tmp_path / "build")
    assert manifest["components"]["unet"]["inputs"]["sample"]["shape"] == ["batch", 4, 16, 12]
    assert manifest["image"] == {"height": 128, "width": 96}


def test_large_models_run_a_guidance_batch_row_by_row(sd15_onnx_build: Path) -> None:
    """Above 1 GB of weights the runner feeds one row at a time (half the activations): same outputs."""
    from fusionc.targets.onnx import OrtRunner

    runner = OrtRunner(sd15_onnx_build / "unet" / "model.onnx")
    assert not runner.row_by_row and runner.batched == {"sample", "encoder_hidden_states"}
    rng = np.random.default_rng(0)
    feeds = {"sample": rng.standard_normal((2, 4, 8, 8), dtype=np.float32), "timestep": np.array([500.0], np.float32),
             "encoder_hidden_states": rng.standard_normal((2, 77, 32), dtype=np.float32)}
    whole = runner(feeds)["out_sample"]
    runner.row_by_row = True
    rows = runner(feeds)["out_sample"]
    assert rows.shape == whole.shape == (2, 4, 8, 8)
    np.testing.assert_allclose(rows, whole, rtol=1e-5, atol=1e-5)


def test_torch_module_is_freed_before_its_component_is_lowered(tiny_pipeline, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """At SD scale the QNN context build alone takes ~10 GB: the 3.4 GB torch UNet must be gone by then."""
    import gc
    import weakref

    import fusionc.pipeline as pipeline
    from fusionc.targets import get_target

    modules: dict[str, weakref.ref] = {}
    load = pipeline.load_checkpoint

    def load_and_watch(*args: object, **kwargs: object):
        checkpoint = load(*args, **kwargs)
        modules.update({name: weakref.ref(module) for name, module in checkpoint.models.items()})
        return checkpoint

    alive_at_lowering: dict[str, bool] = {}
    target = get_target("onnx")
    lower = target.lower

    def watched_lower(model, build, ctx):
        gc.collect()
        alive_at_lowering[ctx.name] = modules[ctx.name]() is not None or ctx.reference is not None
        return lower(model, build, ctx)

    monkeypatch.setattr(pipeline, "load_checkpoint", load_and_watch)
    monkeypatch.setattr(target, "lower", watched_lower)
    compile_checkpoint(tiny_pipeline("sd15"), CompileOptions(components=("unet", "text_encoder"), verify_steps=1,
                                                             verify_prompts=1), tmp_path / "out")
    assert alive_at_lowering == {"unet": False, "text_encoder": False}
