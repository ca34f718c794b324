"""The built-in pipeline: dataset determinism, the shapes check on ground truth, the shipped folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fusionc.models import BUILTIN_CHECKPOINT
from fusionc.models.shapes_check import check, detect, parse_prompt
from fusionc.models.shapes_dataset import COLOURS, POSITIONS, SHAPES, Scene, check_prompts, make_dataset, render


def test_dataset_is_seeded() -> None:
    a, caps_a = make_dataset(8, seed=3)
    b, caps_b = make_dataset(8, seed=3)
    assert np.array_equal(a, b) and caps_a == caps_b
    assert a.shape == (8, 64, 64, 3) and a.dtype == np.uint8


def test_check_agrees_with_ground_truth() -> None:
    images, captions = make_dataset(60, seed=11)
    results = [check(c, i) for c, i in zip(captions, images)]
    assert all(r["ok"] for r in results), [r for r in results if not r["ok"]][:3]


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_is_recognised(shape: str) -> None:
    rng = np.random.default_rng(0)
    for colour in COLOURS:
        assert detect(render(Scene(colour, shape, "center", "striped"), rng)).shape == shape


def test_check_rejects_a_wrong_image() -> None:
    image = render(Scene("red", "circle", "left"), np.random.default_rng(0))
    result = check("a blue square on the right", image)
    assert not (result["ok"] or result["colour_ok"] or result["shape_ok"] or result["position_ok"])
    assert not check("a red circle on the left", np.full((64, 64, 3), 40, np.uint8))["ok"]  # nothing drawn


def test_parse_prompt() -> None:
    assert parse_prompt("A Cyan cross in the center, striped background") == Scene("cyan", "cross", "center", "striped")
    assert parse_prompt("a red circle") is None


def test_check_prompts_cover_the_vocabulary() -> None:
    scenes = check_prompts(50)
    assert {s.colour for s in scenes} == set(COLOURS) and {s.shape for s in scenes} == set(SHAPES)
    assert {s.position for s in scenes} == set(POSITIONS)


def test_shipped_checkpoint_is_a_small_sd_pipeline() -> None:
    files = [p for p in BUILTIN_CHECKPOINT.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 25 * 1024 * 1024
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".ckpt")]
    index = json.loads((BUILTIN_CHECKPOINT / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    vae = json.loads((BUILTIN_CHECKPOINT / "vae" / "config.json").read_text())
    assert len(vae["block_out_channels"]) == 4  # 8x downsampling, like SD
    unet = json.loads((BUILTIN_CHECKPOINT / "unet" / "config.json").read_text())
    assert sum(t.startswith("CrossAttn") for t in unet["down_block_types"]) >= 2


def test_shipped_checkpoint_loads_in_diffusers() -> None:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(BUILTIN_CHECKPOINT))
    out = pipe("a red circle on the left", num_inference_steps=2, height=64, width=64, output_type="np",
               generator=__import__("torch").Generator().manual_seed(0))
    assert out.images.shape == (1, 64, 64, 3)
