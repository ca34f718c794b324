"""The adb path of `fusionc bench`, against a stand-in `adb` on PATH that records every command and answers
like a phone with onnxruntime_perf_test pushed: what is pushed (the EP-context model and its context binary,
not model.qdq.onnx), how it runs (QNN EP, CPU fallback disabled) and how the figure is labelled (batch 1)."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from fusionc.bench import budget_rows, measure_adb

STAND_IN = r'''#!PYTHON
"""Stand-in adb: logs argv as JSON lines to $ADB_LOG, keeps pushed files in $ADB_PHONE, answers like a device."""
import json, os, shutil, sys
args = sys.argv[1:]
with open(os.environ["ADB_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
phone = os.environ["ADB_PHONE"]
if args == ["devices"]:
    print("List of devices attached\nSTANDIN42\tdevice\n")
    sys.exit(0)
assert args[:2] == ["-s", "STANDIN42"], args
cmd = args[2:]
if cmd[0] == "push":
    local, remote = cmd[1], cmd[2]
    os.makedirs(os.path.dirname(phone + remote), exist_ok=True)
    shutil.copy(local, phone + remote)
    print(f"{local}: 1 file pushed")
    sys.exit(0)
if cmd[0] == "shell" and cmd[1:3] == ["ls", "/data/local/tmp/onnxruntime_perf_test"]:
    print("/data/local/tmp/onnxruntime_perf_test")
    sys.exit(0)
if cmd[0] == "shell" and cmd[1:3] == ["mkdir", "-p"]:
    os.makedirs(phone + cmd[3], exist_ok=True)
    sys.exit(0)
if cmd[0] == "shell" and "onnxruntime_perf_test" in cmd[1]:
    model = cmd[1].split()[-1]
    if not os.path.exists(phone + model):
        print(f"model {model} not found", file=sys.stderr)
        sys.exit(1)
    if os.environ.get("ADB_UNSUPPORTED", "-") in model:  # as the QNN EP does with fallback off
        print("QNN EP: node /conv_in/Conv is not supported and CPU fallback is disabled", file=sys.stderr)
        sys.exit(1)
    print("Session creation time cost: 0.5 s\nAverage inference time cost: 7.5 ms\nP50 Latency: 0.0061 s")
    sys.exit(0)
print(f"stand-in adb: unexpected {args}", file=sys.stderr)
sys.exit(2)
'''


def _context_model(path: Path, bin_name: str) -> None:
    node = helper.make_node("EPContext", ["sample"], ["noise_pred"], domain="com.microsoft", embed_mode=0,
                            ep_cache_context=bin_name, source="QNN")
    graph = helper.make_graph([node], "ctx", [helper.make_tensor_value_info("sample", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("noise_pred", TensorProto.FLOAT, [1, 4, 8, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                      helper.make_opsetid("com.microsoft", 1)]), str(path))


@pytest.fixture
def qnn_build(tmp_path: Path) -> Path:
    """A qnn build's layout: model.qdq.onnx, model_ctx.onnx (EPContext naming its .bin) and the .bin;
    the text encoder split into two chained contexts."""
    build = tmp_path / "qnn"
    components = {}
    for name, parts in (("unet", 1), ("text_encoder", 2)):
        folder = build / name
        folder.mkdir(parents=True)
        (folder / "model.qdq.onnx").write_bytes(b"qdq")
        files = [f"{name}/model.qdq.onnx"]
        stems = ["model_ctx"] if parts == 1 else [f"model_ctx.part{i}" for i in range(parts)]
        for stem in stems:
            _context_model(folder / f"{stem}.onnx", f"{stem}_qnn.bin")
            (folder / f"{stem}_qnn.bin").write_bytes(b"\0" * 64)
            files += [f"{name}/{stem}.onnx", f"{name}/{stem}_qnn.bin"]
        components[name] = {"files": files, "bytes": 0, "inputs": {"sample": {"shape": [1, 4, 8, 8], "dtype": "float"}},
                            "outputs": {}}
        if parts > 1:
            components[name]["context_parts"] = [f"{name}/{s}.onnx" for s in stems]
    (build / "manifest.json").write_text(json.dumps({"target": "qnn", "device": "snapdragon-8-gen-2",
                                                     "components": components}))
    return build


@pytest.fixture
def stand_in_adb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    adb = bin_dir / "adb"
    adb.write_text(STAND_IN.replace("PYTHON", sys.executable, 1))
    adb.chmod(0o755)
    log = tmp_path / "adb.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("ADB_LOG", str(log))
    monkeypatch.setenv("ADB_PHONE", str(tmp_path / "phone"))
    return log


def _commands(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_adb_pushes_the_context_and_runs_it_on_the_htp_without_fallback(qnn_build: Path, stand_in_adb: Path) -> None:
    manifest = json.loads((qnn_build / "manifest.json").read_text())
    figures = {f.component: f for f in measure_adb(qnn_build, manifest, guidance=True, runs=5)}
    commands = _commands(stand_in_adb)
    pushed = [Path(c[3]).name for c in commands if c[2:3] == ["push"]]
    assert pushed == ["model_ctx.onnx", "model_ctx_qnn.bin", "model_ctx.part0.onnx", "model_ctx.part0_qnn.bin",
                      "model_ctx.part1.onnx", "model_ctx.part1_qnn.bin"]
    assert not any("qdq" in " ".join(c) for c in commands)
    runs = [shlex.split(c[3]) for c in commands if c[2:3] == ["shell"] and len(c) == 4 and "perf_test" in c[3]]
    assert len(runs) == 3
    for run in runs:
        assert run[run.index("-e") + 1] == "qnn" and run[run.index("-i") + 1] == "backend_path|libQnnHtp.so"
        assert run[run.index("-C") + 1] == "session.disable_cpu_ep_fallback|1"
        assert run[run.index("-m") + 1] == "times" and run[run.index("-r") + 1] == "5" and "-I" in run
        assert run[-1].startswith("/data/local/tmp/fusionc/") and "_ctx" in run[-1]
    unet = figures["unet"]
    assert (unet.backend, unet.device, unet.kind, unet.batch) == ("adb:STANDIN42", "STANDIN42", "measured", 1)
    assert unet.median_ms == pytest.approx(6.1) and unet.detail["cpu_fallback"] is False and unet.detail["provider"] == "qnn"
    assert figures["text_encoder"].median_ms == pytest.approx(12.2)  # two chained contexts, summed
    assert figures["text_encoder"].detail["graphs"] == 2
    # a batch-1 context counts twice per guided step in the end-to-end time
    (row,) = budget_rows("qnn", list(figures.values()), steps=4, guidance=True, budget_s=2.0)
    assert row["calls"] == {"unet": 8, "text_encoder": 2}
    assert row["breakdown_ms"]["unet"] == pytest.approx(6.1 * 8)


def test_a_failed_run_is_skipped_not_timed_some_other_way(qnn_build: Path, stand_in_adb: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("ADB_UNSUPPORTED", "/unet/")
    manifest = json.loads((qnn_build / "manifest.json").read_text())
    figures = measure_adb(qnn_build, manifest, guidance=True, runs=3)
    assert [f.component for f in figures] == ["text_encoder"]
    assert "no timing for unet" in capsys.readouterr().err


def test_coreml_builds_are_not_pushed(stand_in_adb: Path, tmp_path: Path) -> None:
    assert measure_adb(tmp_path, {"target": "coreml", "components": {}}, guidance=True, runs=3) == []
    assert not stand_in_adb.exists()
