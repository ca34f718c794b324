"""`fusionc debug-accuracy` rebuilds the float graph of a QNN build through the compile cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime_qnn")


def test_the_float_graph_comes_from_the_cache_and_equals_a_fresh_export(tmp_path: Path, monkeypatch) -> None:
    import onnx_ir as ir

    from fusionc import pipeline
    from fusionc.checkpoint import load_checkpoint
    from fusionc.core.devices import get_device
    from fusionc.core.options import CompileOptions
    from fusionc.debug_accuracy import prepared_float_model

    checkpoint = load_checkpoint(None)
    options = CompileOptions(target="qnn", precision="w8a16")
    device = get_device(None, "qnn")
    monkeypatch.delenv("FUSIONC_CACHE", raising=False)
    fresh = prepared_float_model(checkpoint, "text_encoder", options, tmp_path / "fresh" / "m.onnx", device)
    cache = tmp_path / "cache"
    first = prepared_float_model(checkpoint, "text_encoder", options, tmp_path / "a" / "m.onnx", device, cache)
    stages = sorted(json.loads(p.read_text())["stage"] for p in cache.glob("*/*/meta.json"))
    # the target's passes ran without the compile's input sets: never stored as the compile's optimized graph
    assert stages == ["export", "generic"]

    def no_export(*args, **kwargs):
        raise AssertionError("exported again: the cache was not used")

    monkeypatch.setattr(pipeline, "_export", no_export)
    monkeypatch.setenv("FUSIONC_CACHE", str(cache))  # as `fusionc compile` reads it
    second = prepared_float_model(checkpoint, "text_encoder", options, tmp_path / "b" / "m.onnx", device)

    def nodes(path: Path) -> list[tuple[str, str]]:
        return [(n.op_type, n.name) for n in ir.load(path).graph]

    assert nodes(fresh) == nodes(first) == nodes(second) and len(nodes(fresh)) > 10
