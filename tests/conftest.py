"""Shared fixtures: tiny pipelines written once per session, and one compiled onnx build of sd15."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# pytest-xdist runs one worker per core: one torch/onnxruntime thread each avoids oversubscription,
# which made torch ~10x slower on this 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def export_cache(tmp_path_factory: pytest.TempPathFactory):
    """One --cache for the whole run (its folder; also $FUSIONC_CACHE), shared by the pytest-xdist workers (their
    basetemps' common parent, new each run): each tiny component is exported, and each trajectory run, once,
    whatever the number of compiles and workers. The store is safe to share (fusionc.core.store: entries renamed
    into place, the first rename wins), and the tiny pipelines are seeded, so a checkpoint written by one worker has
    the same hash as another's."""
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "fusionc_cache"
    shared.mkdir(exist_ok=True)
    os.environ["FUSIONC_CACHE"] = str(shared)
    yield shared
    os.environ.pop("FUSIONC_CACHE", None)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory):
    """tiny_pipeline(family) -> Path of a tiny random-weight diffusers pipeline (written once per family)."""
    from fusionc.models.tiny import write_pipeline

    cache: dict[str, Path] = {}

    def make(family: str = "sd15") -> Path:
        if family not in cache:
            cache[family] = write_pipeline(tmp_path_factory.mktemp(f"pipe_{family}"), family)
        return cache[family]

    return make


@pytest.fixture(scope="session")
def sd15_onnx_build(tiny_pipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A verified onnx build of the tiny sd15 pipeline (compiled once per session)."""
    from fusionc.core.options import CompileOptions
    from fusionc.pipeline import compile_checkpoint

    out = tmp_path_factory.mktemp("builds") / "sd15_onnx"
    compile_checkpoint(tiny_pipeline("sd15"), CompileOptions(target="onnx"), out)
    return out


@pytest.fixture(scope="session")
def coreml_text_encoder_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in model's text encoder and UNet as a Core ML build, each in 2 chunks, unverified (compiled once
    per session): bench estimates, the stand-in predict path (chunk chaining) and the no-extras test share it."""
    from fusionc.core.options import CompileOptions
    from fusionc.pipeline import compile_checkpoint

    out = tmp_path_factory.mktemp("builds") / "builtin_coreml"
    compile_checkpoint(None, CompileOptions(target="coreml", components=("text_encoder", "unet"), chunk="2",
                                            verify=False), out)
    return out
