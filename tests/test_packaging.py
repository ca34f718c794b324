"""A regular (non-editable) install carries what the built-in models and the cost model read, and says nothing.

setuptools is asked, in-process, which data files its build_py would put into the wheel (no wheel is built:
well under a second). The built-in models' folders hold data, not Python packages; with setuptools' default
`include-package-data` their folders were scanned as would-be packages and every `pip wheel` / `pip install -v`
printed one "Package 'fusionc.models.tiny_sd3...' is absent from the `packages` configuration" warning per folder
(21 of them), with the same files shipped either way.
"""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def shipped_data_files(monkeypatch: pytest.MonkeyPatch, build_lib: Path) -> set[str]:
    """The package data build_py would copy, as paths inside the installed `fusionc` package."""
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    monkeypatch.chdir(ROOT)  # package-dir paths are relative to the project
    dist = Distribution()
    apply_configuration(dist, ROOT / "pyproject.toml")
    dist.script_name = "setup.py"  # as a build backend runs it; egg_info (if asked for) writes under build_lib
    dist.get_command_obj("egg_info").egg_base = str(build_lib)
    build_py = dist.get_command_obj("build_py")
    build_py.build_lib = str(build_lib)
    build_py.ensure_finalized()
    return {str(Path(build_dir, name).relative_to(build_lib / "fusionc"))
            for package, _src, build_dir, names in build_py.data_files if package == "fusionc" for name in names}


def test_the_wheel_ships_every_builtin_model_file_and_the_cost_model_quietly(monkeypatch, tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        shipped = shipped_data_files(monkeypatch, tmp_path)
    assert not [str(w.message) for w in caught if "absent from the `packages`" in str(w.message)]

    try:
        tracked = subprocess.run(["git", "ls-files", "compiler/models", "compiler/analysis"], cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        tracked = []
    data = [Path(p) for p in tracked if not p.endswith(".py")]
    if not data:
        pytest.skip("not a git checkout: cannot list the tracked data files")
    expected = set()
    for path in data:  # a tracked symlink to a folder (tiny_sd3/vae -> ../tiny_sd/vae) ships its files
        files = [f for f in (ROOT / path).rglob("*") if f.is_file()] if (ROOT / path).is_dir() else [ROOT / path]
        expected |= {str(path / f.relative_to(ROOT / path)) if f != ROOT / path else str(path) for f in files}
    expected = {str(Path(p).relative_to("compiler")) for p in expected}
    assert "analysis/costmodel_params.json" in expected and "models/tiny_sd3/vae/config.json" in expected
    assert expected - shipped == set(), "tracked data files missing from the wheel"
