"""The core install works without the extras; a command that needs a missing extra exits 2 naming it.

coremltools ([coreml]) and onnxruntime-qnn ([qnn]) are made unimportable (None in sys.modules: `import` raises
ImportError), never uninstalled. The core commands run in a fresh interpreter with both blocked, so a module
this test process imported earlier cannot hide an import the core path still makes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fusionc.cli import main

BLOCKED = ("coremltools", "onnxruntime_qnn")


@pytest.fixture
def no_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in BLOCKED:
        monkeypatch.setitem(sys.modules, module, None)


@pytest.mark.parametrize("target, message", [
    ("coreml", "--target coreml needs coremltools: pip install 'fusionc[coreml]'"),
    ("qnn", "--target qnn needs onnxruntime-qnn: pip install 'fusionc[qnn]'"),
])
def test_compile_without_the_extra_exits_2_naming_it(no_extras, tmp_path: Path, target: str, message: str) -> None:
    out = tmp_path / "build"
    result = CliRunner().invoke(main, ["compile", "--target", target, "--out", str(out)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"fusionc: error: {message}"]
    assert not out.exists()


def test_every_command_that_needs_an_extra_names_it(no_extras, tmp_path: Path) -> None:
    from fusionc.targets import MissingExtraError, get_target

    for target, purpose in (("coreml", "verifying a coreml build"), ("qnn", "generating with a qnn build")):
        with pytest.raises(MissingExtraError, match=f"^{purpose} needs .*: pip install 'fusionc\\[{target}\\]'$"):
            get_target(target, purpose)
    result = CliRunner().invoke(main, ["passes", "--target", "coreml"])
    assert result.exit_code == 2 and "needs coremltools: pip install 'fusionc[coreml]'" in result.stderr
    get_target("onnx")  # the core target needs nothing more


def test_the_extras_present_here_pass_the_check() -> None:
    from fusionc.targets import require_extra

    require_extra("coreml")
    require_extra("qnn")


CORE_SCRIPT = r"""
import json, sys
for module in ("coremltools", "onnxruntime_qnn"):
    sys.modules[module] = None
from click.testing import CliRunner
from fusionc.cli import main
out, coreml = sys.argv[1], sys.argv[2]
runs = {
    "devices": ["devices"],
    "compile": ["compile", "--components", "text_encoder", "--verify-steps", "1", "--verify-prompts", "1",
                "--out", out],
    "inspect": ["inspect", out],
    "verify": ["verify", out],
    "bench": ["bench", out, "--runs", "2", "--warmup", "0"],
    "bench_coreml": ["bench", coreml, "--json", out + ".coreml.json"],
    "inspect_coreml": ["inspect", coreml],
}
results = {}
for name, args in runs.items():
    r = CliRunner().invoke(main, args)
    results[name] = {"exit": r.exit_code, "stderr": r.stderr[-400:], "stdout": r.stdout[-2000:]}
print(json.dumps({"results": results, "blocked_loaded": sorted(m for m in sys.modules
                  if m.split(".")[0] in ("coremltools", "onnxruntime_qnn") and sys.modules[m] is not None)}))
"""


def test_core_commands_run_without_either_extra(coreml_text_encoder_build: Path, tmp_path: Path) -> None:
    """onnx compile, inspect, verify, bench (of an onnx and of a Core ML build: estimates), devices."""
    done = subprocess.run([sys.executable, "-c", CORE_SCRIPT, str(tmp_path / "onnx"), str(coreml_text_encoder_build)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for name, result in report["results"].items():
        assert result["exit"] == 0, (name, result)
    assert report["blocked_loaded"] == []
    bench = json.loads((tmp_path / "onnx.coreml.json").read_text())
    figures = bench["builds"][0]["figures"]
    assert figures and all(f["kind"] == "estimated" and f["median_ms"] > 0 for f in figures)
    assert "text_encoder" in report["results"]["inspect_coreml"]["stdout"]
