"""README's measured tables are rendered from benchmarks/results/*.json (benchmarks/render_readme.py): they agree."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import render_readme  # noqa: E402


def test_every_readme_table_matches_its_json() -> None:
    text = (ROOT / "README.md").read_text()
    assert render_readme.blocks(text), "README has no generated table"
    _, changed = render_readme.render_readme(text)
    assert not changed, f"README tables differ from their JSON: {changed}; run python benchmarks/render_readme.py"


def test_every_registered_table_is_in_the_readme() -> None:
    assert set(render_readme.TABLES) <= set(render_readme.blocks((ROOT / "README.md").read_text()))


def test_a_changed_figure_is_caught(tmp_path: Path) -> None:
    """The check is not vacuous: edit one figure in a copy of a JSON and the README no longer agrees."""
    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", results, ignore=shutil.ignore_patterns("*.png", "*.gz"))
    data = json.loads((results / "coreml_scale.json").read_text())
    data["executor"]["step_median_s"] = 49.0  # the figure the README once showed
    (results / "coreml_scale.json").write_text(json.dumps(data))
    _, changed = render_readme.render_readme((ROOT / "README.md").read_text(), results)
    assert changed == ["coreml_scale"]


def test_a_block_without_a_renderer_or_json_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="no renderer"):
        render_readme.render_readme("<!-- measured:nope -->\nx\n<!-- /measured:nope -->\n")
    with pytest.raises(FileNotFoundError, match="run the benchmark"):
        render_readme.render_readme("<!-- measured:compression -->\n<!-- /measured:compression -->\n", tmp_path)


def test_the_cost_model_error_table_follows_the_fit_json(tmp_path: Path) -> None:
    """The held-out error table (issue 17) is rendered from costmodel_fit.json: a changed error, or a chipset
    falling under the goal, shows up in the README block."""
    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", results, ignore=shutil.ignore_patterns("*.png", "*.gz"))
    data = json.loads((results / "costmodel_fit.json").read_text())
    chip = data["held_out"]["by_chipset_qnn"]["snapdragon-8-gen-3"]
    chip.update(n=max(chip["n"], render_readme.ENOUGH_ROWS), median_abs=0.5, p90_abs=0.9)
    (results / "costmodel_fit.json").write_text(json.dumps(data))
    block = render_readme.TABLES["costmodel_fit"].render(results)
    line = next(x for x in block.splitlines() if x.startswith("| Snapdragon 8 Gen 3 |"))
    assert "| 50% | 90% | not met |" in line
    _, changed = render_readme.render_readme((ROOT / "README.md").read_text(), results)
    assert "costmodel_fit" in changed


def test_a_recipe_cut_short_says_how_many_prompts_it_reached(tmp_path: Path) -> None:
    """prompt_check writes a recipe's part every 10 prompts: a run killed mid-recipe renders as what it is."""
    results = tmp_path / "results"
    results.mkdir()
    data = json.loads((ROOT / "benchmarks" / "results" / "prompt_check.json").read_text())
    name, recipe = next((k, v) for k, v in data["recipes"].items() if "accuracy" in v)
    recipe.update(partial=True, measured_prompts=3, git_revision="0123456789abcdef")
    other = next(k for k, v in data["recipes"].items() if k != name and "accuracy" in v)
    data["recipes"][other]["git_revision"] = "fedcba9876543210"
    (results / "prompt_check.json").write_text(json.dumps(data))
    text = render_readme.TABLES["prompt_check"].render(results)
    assert f"| {name} (first 3 of {data['n']} prompts) |" in text
    listed = text.split("recipes measured at git ")[1].split(";")[0].split(", ")
    assert {"0123456789", "fedcba9876"} <= set(listed)


def test_prose_blocks_count_from_the_json(tmp_path: Path) -> None:
    """The ControlNet table and the fleet notes are computed from the JSON's cases and timings, not copied."""
    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", results, ignore=shutil.ignore_patterns("*.png", "*.gz"))
    data = json.loads((results / "controlnet_follow.json").read_text())
    case = data["controlnet_pipeline"]["cases"][0]
    case["detected"] = next(w for w in case["prompt"].split() if w in ("left", "right", "top", "bottom", "center"))
    (results / "controlnet_follow.json").write_text(json.dumps(data))
    fleet = json.loads((results / "fleet_builtin.json").read_text())
    fleet["ways"]["local"]["shared_s"]["fleet: load checkpoint"] += 100.0
    (results / "fleet_builtin.json").write_text(json.dumps(fleet))
    text = render_readme.TABLES["controlnet_follow"].render(results)
    assert "| `builtin:controlnet` with the outline | 11 / 12 | 1 / 12 |" in text
    _, changed = render_readme.render_readme((ROOT / "README.md").read_text(), results)
    assert {"controlnet_follow", "fleet_builtin_notes"} <= set(changed)
