"""`fusionc bench` on an attached phone's CPU: an onnx build runs onnxruntime_perf_test on ORT's CPU provider.

No phone here: a stand-in `adb` on PATH answers `devices`, `shell ls`, `push` and the perf-test command, and
records every call, so the test checks what fusionc asks the phone to run and how it reads the answer."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from fusionc.bench import measure_adb

STAND_IN = """#!/usr/bin/env python3
import sys, json, os
log = os.environ["ADB_LOG"]
with open(log, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
if args == ["devices"]:
    print("List of devices attached\\nR5CT123 device\\n")
elif "onnxruntime_perf_test" in " ".join(args) and "ls" not in args:
    print("Session creation time cost: 0.5 s\\nAverage inference time cost: 812.5 ms\\n")
"""


def _fake_build(tmp_path: Path, target: str) -> Path:
    """A build folder with stand-in artifacts: model.onnx, and for qnn an EP-context model naming its .bin."""
    import onnx
    from onnx import helper

    build = tmp_path / f"build_{target}"
    (build / "unet").mkdir(parents=True)
    (build / "unet" / "model.onnx").write_bytes(b"stand-in")
    if target == "qnn":
        node = helper.make_node("EPContext", ["sample"], ["out_sample"], domain="com.microsoft",
                                ep_cache_context="model_ctx_qnn.bin", embed_mode=0)
        io = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 4, 8, 8]) for n in ("sample", "out_sample")]
        graph = helper.make_graph([node], "ctx", [io[0]], [io[1]])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("com.microsoft", 1)]),
                  str(build / "unet" / "model_ctx.onnx"))
        (build / "unet" / "model_ctx_qnn.bin").write_bytes(b"stand-in context")
    manifest = {"target": target, "components": {"unet": {
        "files": ["unet/model.onnx"], "inputs": {"sample": {"shape": ["batch", 4, 8, 8], "dtype": "float"}}}}}
    (build / "manifest.json").write_text(json.dumps(manifest))
    return build


def _with_stand_in(tmp_path: Path, monkeypatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    adb = bin_dir / "adb"
    adb.write_text(STAND_IN)
    adb.chmod(adb.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "adb.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("ADB_LOG", str(log))
    return log


def test_onnx_build_is_timed_on_the_phone_cpu(tmp_path: Path, monkeypatch) -> None:
    log = _with_stand_in(tmp_path, monkeypatch)
    build = _fake_build(tmp_path, "onnx")
    figures = measure_adb(build, json.loads((build / "manifest.json").read_text()), guidance=True, runs=3)
    assert len(figures) == 1
    fig = figures[0]
    assert fig.backend == "adb:R5CT123/cpu" and fig.detail["provider"] == "cpu" and fig.median_ms == 812.5
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    perf = [c for c in calls if "-r 3" in " ".join(c)]
    assert perf and "-e cpu -x 4" in perf[0][-1] and "qnn" not in perf[0][-1]
    assert any(c[:3] == ["-s", "R5CT123", "push"] for c in calls)


def test_qnn_build_still_uses_the_htp(tmp_path: Path, monkeypatch) -> None:
    log = _with_stand_in(tmp_path, monkeypatch)
    build = _fake_build(tmp_path, "qnn")
    figures = measure_adb(build, json.loads((build / "manifest.json").read_text()), guidance=True, runs=2)
    assert figures and figures[0].backend == "adb:R5CT123" and figures[0].detail["provider"] == "qnn"
    perf = [json.loads(line) for line in log.read_text().splitlines() if "-r 2" in line]
    assert "-e qnn" in perf[0][-1]
