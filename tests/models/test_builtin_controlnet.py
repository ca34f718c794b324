"""The built-in ControlNet (fusionc/models/tiny_controlnet, trained by fusionc.models.train_controlnet): the
outline in the control image moves the built-in pipeline's shape, whatever position the prompt names."""

from __future__ import annotations

import pytest

from fusionc.checkpoint import BUILTIN_CONTROLNET, load_checkpoint


def test_builtin_controlnet_loads_as_a_controlnet_pipeline() -> None:
    checkpoint = load_checkpoint("builtin:controlnet")
    assert checkpoint.path == BUILTIN_CONTROLNET and checkpoint.has_controlnet
    assert checkpoint.component_names()[:3] == ["text_encoder", "controlnet", "unet"]
    weights = sum(p.stat().st_size for p in (BUILTIN_CONTROLNET / "controlnet").iterdir())
    assert weights < 8e6  # shipped in the package: a few MB


@pytest.mark.parametrize("prompt,shape,outline", [("a red circle on the left", "circle", "right"),
                                                   ("a blue square at the top", "square", "bottom")])
def test_the_control_image_moves_the_shape(prompt: str, shape: str, outline: str) -> None:
    from fusionc.generate import torch_runners
    from fusionc.models.train_controlnet import control_follow_rate

    rs = torch_runners("builtin:controlnet")
    moved = control_follow_rate(rs, [(prompt, shape, outline)], seeds=1)
    assert moved["rate"] == 1.0, moved["cases"]  # the prompt says one place, the outline another: the outline wins


def test_builtin_names_in_a_config_file_are_not_paths(tmp_path) -> None:
    from fusionc.config import read_config

    config = tmp_path / "fusionc.toml"
    config.write_text('checkpoint = "builtin:controlnet"\n')
    assert read_config(config)["checkpoint"] == "builtin:controlnet"
