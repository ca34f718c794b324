"""A ControlNet pipeline on the coreml and qnn targets: the ControlNet and the UNet with residual inputs as
separate artifacts (Apple's ControlNet / ControlledUnet packages, placed where its Swift package looks; one
HTP context binary each, as Qualcomm deploys ControlNet), each verified on real trajectory inputs >= 35 dB."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from fusionc.controlnet import residual_names
from fusionc.core.options import CompileOptions

COMPONENTS = ("controlnet", "unet")


def test_coreml_controlnet_and_controlled_unet(tiny_pipeline, tmp_path: Path) -> None:
    import coremltools as ct

    from fusionc.pipeline import compile_checkpoint

    options = CompileOptions(target="coreml", components=COMPONENTS, min_psnr=35.0, verify_steps=1,
                             verify_prompts=1, bundle="swift")
    build = tmp_path / "tiny-controlnet"
    manifest = compile_checkpoint(tiny_pipeline("controlnet"), options, build)
    components = manifest["components"]
    assert components["controlnet"]["files"] == ["controlnet/ControlNet.mlpackage"]
    assert components["unet"]["files"] == ["unet/ControlledUnet.mlpackage"]
    for name in COMPONENTS:
        assert components[name]["psnr_db"] >= 35.0, (name, components[name]["psnr_db"])
    resources = build / "Resources"
    name = Path(tiny_pipeline("controlnet")).name.replace("_", " ").title().replace(" ", "")
    assert manifest["bundle"]["controlnet"] == [name]
    assert (resources / "controlnet" / f"{name}.mlpackage").is_dir() and (resources / "ControlledUnet.mlpackage").is_dir()

    def io(package: Path) -> tuple[dict, list]:
        spec = ct.models.MLModel(str(package), skip_model_load=True).get_spec()
        return ({i.name: list(i.type.multiArrayType.shape) for i in spec.description.input},
                [o.name for o in spec.description.output])

    control_in, control_out = io(resources / "controlnet" / f"{name}.mlpackage")
    assert control_in == {"sample": [2, 4, 8, 8], "timestep": [2], "encoder_hidden_states": [2, 32, 1, 77],
                          "controlnet_cond": [2, 3, 64, 64]}
    assert control_out == residual_names(7)
    unet_in, unet_out = io(resources / "ControlledUnet.mlpackage")
    assert list(unet_in) == ["sample", "timestep", "encoder_hidden_states", *residual_names(7)]
    assert unet_out == ["noise_pred"]


def test_qnn_controlnet_and_unet_are_separate_contexts(tiny_pipeline, tmp_path: Path) -> None:
    from fusionc.pipeline import compile_checkpoint

    options = CompileOptions(target="qnn", components=COMPONENTS, min_psnr=35.0, verify_steps=1, verify_prompts=1,
                             calibration_samples=4)
    build = tmp_path / "qnn"
    manifest = compile_checkpoint(tiny_pipeline("controlnet"), options, build)
    for name in COMPONENTS:
        component = manifest["components"][name]
        assert {f"{name}/model_ctx.onnx", f"{name}/model_ctx_qnn.bin"} <= set(component["files"])
        assert component["psnr_db"] >= 35.0, (name, component["psnr_db"])
    control = onnx.load(build / "controlnet" / "model_ctx.onnx", load_external_data=False)
    unet = onnx.load(build / "unet" / "model_ctx.onnx", load_external_data=False)
    assert [o.name for o in control.graph.output] == residual_names(7)
    assert [i.name for i in unet.graph.input][3:] == residual_names(7)
