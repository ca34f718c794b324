"""Core ML on macOS: MLModel.predict on fusionc's packages, and .mlmodelc compilation for the Swift bundle.

These need macOS (Core ML, `xcrun coremlcompiler`): skipped elsewhere with the reason; docs/ci.md has the
macos-14 CI job that runs them. On Linux, tests/test_bench_coreml.py drives the same macOS branch of the
runner with a stand-in MLModel (names, dtypes, shapes, chunk chaining)."""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Darwin",
                                reason="Core ML predict and coremlcompiler run on macOS only (docs/ci.md: macos-14 job)")


def _canonical_feeds(manifest: dict, name: str) -> dict[str, np.ndarray]:
    info = manifest["components"][name]["coreml"]["interface"]
    rng = np.random.default_rng(0)
    feeds = {}
    for key, spec in manifest["components"][name]["inputs"].items():
        shape = spec["shape"]
        if key in info["bc1s_inputs"]:
            shape = [shape[0], shape[3], shape[1]]
        if key == "timestep":
            feeds[key] = np.full(shape, 500.0, np.float32)
        elif key == "input_ids":
            feeds[key] = rng.integers(0, 100, size=shape).astype(np.int64)
        else:
            feeds[key] = rng.standard_normal(shape).astype(np.float32)
    return feeds


@pytest.mark.parametrize("name", ["text_encoder", "unet"])
def test_predict_matches_the_mil_executor(coreml_text_encoder_build: Path, name: str) -> None:
    """The real Core ML (what verify, generate and bench use on a Mac) against our executor, chunks chained."""
    from fusionc.core.numerics import psnr
    from fusionc.targets import get_target
    from fusionc.targets.coreml.runner import CoreMLRunner

    manifest = json.loads((coreml_text_encoder_build / "manifest.json").read_text())
    runner = get_target("coreml").runner(coreml_text_encoder_build, name, manifest)
    assert type(runner.parts[0]).__name__ == "_CoreMLPart"
    info = manifest["components"][name]["coreml"]
    executor = CoreMLRunner([coreml_text_encoder_build / p for p in info["packages"]], info["interface"],
                            info.get("outputs"), "executor")
    feeds = _canonical_feeds(manifest, name)
    got, want = runner(feeds), executor(feeds)
    assert set(got) == set(want)
    for key in got:
        assert got[key].shape == want[key].shape and got[key].dtype == np.float32
        assert psnr(want[key], got[key]) > 35, key  # fp16 on the device's units vs fp16 storage in numpy


def test_verify_runs_predict(coreml_text_encoder_build: Path) -> None:
    from fusionc.verify_build import verify_build

    manifest = verify_build(coreml_text_encoder_build, min_psnr=35)
    assert all(comp["psnr_db"] > 35 for comp in manifest["components"].values())


@pytest.mark.skipif(shutil.which("xcrun") is None, reason="needs Xcode's command line tools (xcrun coremlcompiler)")
def test_swift_bundle_compiles_mlmodelc_that_predict_like_the_package(tmp_path: Path) -> None:
    import coremltools as ct

    from fusionc.core.options import CompileOptions
    from fusionc.pipeline import compile_checkpoint

    out = tmp_path / "bundle"
    manifest = compile_checkpoint(None, CompileOptions(target="coreml", components=("text_encoder",), bundle="swift",
                                                       verify=False), out)
    compiled = manifest["bundle"]["mlmodelc"]
    assert compiled == ["TextEncoder.mlmodelc"]
    model_c = ct.models.CompiledMLModel(str(out / "Resources" / compiled[0]))
    package = ct.models.MLModel(str(out / "text_encoder" / "TextEncoder.mlpackage"))
    feeds = {"input_ids": np.arange(77, dtype=np.float32).reshape(1, 77)}
    got, want = model_c.predict(feeds), package.predict(feeds)
    assert set(got) == set(want)
    for key in got:
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(want[key]), rtol=1e-3, atol=1e-3)
