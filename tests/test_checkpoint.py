"""Checkpoint loading: every supported topology loads; every kind of bad input is one clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fusionc.checkpoint import load_checkpoint
from fusionc.core.errors import BadInputError, UnsupportedError
from fusionc.models.tiny import FAMILIES


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_loads(tiny_pipeline, family: str) -> None:
    checkpoint = load_checkpoint(tiny_pipeline(family))
    assert "unet" in checkpoint.component_names()
    assert {"vae_decoder", "vae_encoder"} <= set(checkpoint.component_names())
    assert checkpoint.is_sdxl == (family == "sdxl")
    assert len(checkpoint.sha256) == 64


def test_single_component_folder(tiny_pipeline) -> None:
    checkpoint = load_checkpoint(tiny_pipeline("sd15") / "unet")
    assert checkpoint.component_names() == ["unet"]
    assert not checkpoint.is_pipeline


def copy_pipeline(tiny_pipeline, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_pipeline("sd15"), tmp_path / "ckpt"))


def test_weights_are_read_not_memory_mapped(tiny_pipeline) -> None:
    """A mapped weight file stays resident while any one of its tensors lives (3.3 GB for SD-1.5's UNet)."""
    folder = tiny_pipeline("sd15")
    checkpoint = load_checkpoint(folder)
    mapped = Path("/proc/self/maps").read_text()
    assert checkpoint.models["unet"] is not None
    assert not [f for f in folder.rglob("*.safetensors") if str(f.resolve()) in mapped]


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")


def test_a_symlink_git_checked_out_as_text_is_named(tiny_pipeline, tmp_path: Path) -> None:
    """A clone without symlinks (Windows' default) leaves builtin:sd3's `vae -> ../tiny_sd/vae` as a text file;
    that said "component folder '.../vae' has no config.json"."""
    ckpt = copy_pipeline(tiny_pipeline, tmp_path)
    shutil.rmtree(ckpt / "vae")
    (ckpt / "vae").write_text("../tiny_sd/vae")
    with pytest.raises(BadInputError, match=r"vae' is a file, not a folder: .*git clone -c core.symlinks=true"):
        load_checkpoint(ckpt)


def test_a_gone_checkpoint_with_a_builtin_hash_is_the_builtin_one(tiny_pipeline, tmp_path: Path) -> None:
    """verify and generate --build read a build's checkpoint from its manifest: a built-in pipeline's recorded path
    (another install of fusionc) is found again by its sha256; any other gone folder stays gone."""
    from fusionc.checkpoint import BUILTIN_SD3, checkpoint_sha256, recorded_checkpoint

    gone = str(tmp_path / "old-venv" / "tiny_sd3")
    assert recorded_checkpoint({"path": gone, "sha256": checkpoint_sha256(BUILTIN_SD3)}) == BUILTIN_SD3
    assert recorded_checkpoint({"path": gone, "sha256": "0" * 64}) == Path(gone)
    here = tiny_pipeline("sd15")
    assert recorded_checkpoint({"path": str(here), "sha256": "0" * 64}) == here  # an existing folder as recorded


def test_not_a_diffusers_folder(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(BadInputError, match="not a diffusers checkpoint"):
        load_checkpoint(tmp_path)


def test_missing_weights(tiny_pipeline, tmp_path: Path) -> None:
    ckpt = copy_pipeline(tiny_pipeline, tmp_path)
    (ckpt / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(BadInputError, match="no weights in"):
        load_checkpoint(ckpt)


def test_truncated_safetensors(tiny_pipeline, tmp_path: Path) -> None:
    ckpt = copy_pipeline(tiny_pipeline, tmp_path)
    weights = ckpt / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(BadInputError, match="truncated or corrupt"):
        load_checkpoint(ckpt)


def test_config_with_wrong_fields(tiny_pipeline, tmp_path: Path) -> None:
    ckpt = copy_pipeline(tiny_pipeline, tmp_path)
    config = json.loads((ckpt / "unet" / "config.json").read_text())
    config["block_out_channels"] = "many"
    (ckpt / "unet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(BadInputError, match="config.json"):
        load_checkpoint(ckpt)


def test_weights_that_do_not_match_the_config(tiny_pipeline, tmp_path: Path) -> None:
    ckpt = copy_pipeline(tiny_pipeline, tmp_path)
    config = json.loads((ckpt / "unet" / "config.json").read_text())
    config["cross_attention_dim"] = 48
    (ckpt / "unet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(BadInputError, match="has shape"):
        load_checkpoint(ckpt)


def test_nan_weights_are_named(tiny_pipeline, tmp_path: Path) -> None:
    ckpt = copy_pipeline(tiny_pipeline, tmp_path)
    path = ckpt / "vae" / "diffusion_pytorch_model.safetensors"
    state = load_file(path)
    name = sorted(state)[3]
    state[name] = torch.full_like(state[name], float("nan"))
    save_file(state, path)
    with pytest.raises(BadInputError, match=f"tensor '{name}'.*NaN"):
        load_checkpoint(ckpt)


def test_unsupported_component_class(tiny_pipeline, tmp_path: Path) -> None:
    ckpt = copy_pipeline(tiny_pipeline, tmp_path)
    index = json.loads((ckpt / "model_index.json").read_text())
    index["unet"] = ["diffusers", "UNet2DModel"]
    (ckpt / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(UnsupportedError, match="UNet2DModel"):
        load_checkpoint(ckpt)


def _to_pickle(folder: Path) -> None:
    weights = folder / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(weights), folder / "diffusion_pytorch_model.bin")
    weights.unlink()


def test_pickle_refused_without_flag(tiny_pipeline, tmp_path: Path) -> None:
    ckpt = copy_pipeline(tiny_pipeline, tmp_path)
    _to_pickle(ckpt / "unet")
    with pytest.raises(BadInputError, match="--allow-pickle"):
        load_checkpoint(ckpt)
    assert "unet" in load_checkpoint(ckpt, allow_pickle=True).models


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/fusionc_pickle_ran"),))


def test_pickle_never_executes_code(tiny_pipeline, tmp_path: Path) -> None:
    ckpt = copy_pipeline(tiny_pipeline, tmp_path)
    marker = Path("/tmp/fusionc_pickle_ran")
    marker.unlink(missing_ok=True)
    (ckpt / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    torch.save({"evil": _Payload()}, ckpt / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(BadInputError, match="weights_only"):
        load_checkpoint(ckpt, allow_pickle=True)
    assert not marker.exists()
