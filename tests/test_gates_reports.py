"""Gates (PSNR, size, estimated latency) and the JSON / JUnit reports CI reads."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import onnx_ir as ir
import pytest
from click.testing import CliRunner

from fusionc.core.devices import DEVICES
from fusionc.core.errors import BadInputError
from fusionc.gates import (
    GateFailedError,
    enforce,
    estimate_latency,
    evaluate,
    gate_psnr,
    latency_gates,
    parse_budget,
    psnr_gates,
    size_gates,
)
from fusionc.core.options import CompileOptions
from fusionc.report import build_report, junit_xml, write_reports

MANIFEST = {
    "target": "coreml", "device": "iphone-14-pro", "timings": {"unet: export": 2.0, "unet: passes": 1.0},
    "components": {
        "text_encoder": {"files": ["text_encoder/TextEncoder.mlpackage"], "bytes": 2_000_000, "psnr_db": 70.0,
                         "latency_estimate": {"ms": 4.0, "device": "iphone-14-pro", "batch": 1}},
        "unet": {"files": ["unet/Unet.mlpackage"], "bytes": 30_000_000, "psnr_db": 33.5,
                 "latency_estimate": {"ms": 100.0, "device": "iphone-14-pro", "batch": 2}},
        "vae_decoder": {"files": ["vae_decoder/VAEDecoder.mlpackage"], "bytes": 5_000_000, "psnr_db": 41.0,
                        "latency_estimate": {"ms": None, "reason": "the cost model failed: X"}},
    },
}


def test_parse_budget() -> None:
    assert parse_budget(None, "--max-size") is None
    assert parse_budget(("25",), "--max-size") == {"total": 25.0}
    assert parse_budget(("unet=20", "vae_decoder=3,total=30"), "--max-size") == {"unet": 20, "vae_decoder": 3, "total": 30}
    assert parse_budget({"unet": 1.5}, "--max-size") == {"unet": 1.5}
    assert parse_budget(7, "--max-latency-ms") == {"total": 7.0}
    for bad, message in (("x", "not a number"), ("unet=-2", "positive"), ("refiner=2", "unknown component"),
                         ("unet=inf", "positive")):
        with pytest.raises(BadInputError, match=message):
            parse_budget((bad,), "--max-size")


def test_psnr_gate_names_the_component_and_the_shortfall() -> None:
    results = psnr_gates(MANIFEST, 35.0)
    assert [(r.subject, r.status) for r in results] == [("text_encoder", "passed"), ("unet", "failed"),
                                                         ("vae_decoder", "passed")]
    with pytest.raises(GateFailedError, match=r"PSNR gate failed: unet 33.50 dB < 35 dB \(under by 1.50 dB\)") as err:
        enforce(results, MANIFEST)
    assert err.value.exit_code == 1 and err.value.manifest is MANIFEST


def test_unverified_components_are_skipped_not_passed() -> None:
    manifest = copy.deepcopy(MANIFEST)
    del manifest["components"]["unet"]["psnr_db"]
    gate = next(r for r in psnr_gates(manifest, 35.0) if r.subject == "unet")
    assert gate.status == "skipped" and "not verified" in gate.message


def test_size_gates_total_and_per_component() -> None:
    results = size_gates(MANIFEST, {"total": 30, "unet": 40, "vae_encoder": 1})
    by = {r.subject: r for r in results}
    assert by["total"].status == "failed" and by["total"].value == 37.0
    assert "over by 7.00 MB, +23%" in by["total"].message
    assert by["unet"].status == "passed" and by["vae_encoder"].status == "skipped"


def test_latency_gates_per_call_and_per_image() -> None:
    results = latency_gates(MANIFEST, {"unet": 90, "text_encoder": 10, "vae_decoder": 50, "total": 1000}, steps=8)
    by = {r.subject: r for r in results}
    assert by["unet"].status == "failed" and "100.0 ms > 90 ms" in by["unet"].message
    assert "batch 2 on iphone-14-pro" in by["unet"].message
    assert by["text_encoder"].status == "passed"
    assert by["vae_decoder"].status == "skipped" and "the cost model failed" in by["vae_decoder"].message
    assert by["total"].status == "skipped"  # one component has no estimate: no silent partial sum
    manifest = copy.deepcopy(MANIFEST)
    manifest["components"]["vae_decoder"]["latency_estimate"] = {"ms": 50.0, "device": "iphone-14-pro", "batch": 1}
    total = latency_gates(manifest, {"total": 1000}, steps=8)[0]
    assert total.value == pytest.approx(2 * 4 + 8 * 100 + 50) and total.status == "passed"


def test_several_failures_in_one_line() -> None:
    options = CompileOptions(min_psnr=35, max_size={"total": 30}, max_latency_ms={"unet": 90})
    with pytest.raises(GateFailedError) as err:
        enforce(evaluate(MANIFEST, options), MANIFEST)
    message = str(err.value)
    assert message.startswith("3 gates failed:") and "\n" not in message
    assert "PSNR unet" in message and "size total" in message and "latency unet" in message


def test_estimate_latency(sd15_onnx_build: Path) -> None:
    model = ir.load(sd15_onnx_build / "unet" / "model.onnx")
    options = CompileOptions(target="coreml")
    estimate = estimate_latency(model, "unet", DEVICES["iphone-14-pro"], options)
    assert estimate["ms"] > 0 and estimate["batch"] == 2 and estimate["device"] == "iphone-14-pro"
    none = estimate_latency(model, "unet", None, CompileOptions(target="onnx"))
    assert none["ms"] is None and "--device" in none["reason"]


def test_json_and_junit_reports(tmp_path: Path) -> None:
    options = CompileOptions(min_psnr=35, max_size={"total": 30}, max_latency_ms={"vae_decoder": 10})
    gates = evaluate(MANIFEST, options)
    report = build_report(MANIFEST, gates, tmp_path / "build", None, 12.5)
    assert (report["status"], report["exit_code"]) == ("failed", 1)
    assert report["timings"]["total_s"] == 12.5 and report["timings"]["unet: export"] == 2.0
    write_reports(tmp_path / "r" / "c.json", tmp_path / "r" / "c.xml", report)
    assert json.loads((tmp_path / "r" / "c.json").read_text())["manifest"]["target"] == "coreml"
    suite = ET.parse(tmp_path / "r" / "c.xml").getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == 3 + len(gates)  # one per component, one per gate
    assert suite.get("tests") == str(len(cases)) and suite.get("failures") == "2" and suite.get("skipped") == "1"
    failure = next(c for c in cases if c.get("classname") == "fusionc.gate.max_size").find("failure")
    assert "over by 7.00 MB" in failure.get("message")
    unet = next(c for c in cases if c.get("name") == "unet" and c.get("classname") == "fusionc.component")
    assert float(unet.get("time")) == 3.0 and "33.50 dB" in unet.find("system-out").text


def test_error_report() -> None:
    error = BadInputError("checkpoint 'x' does not exist")
    report = build_report(None, [], Path("out"), error, 0.5)
    assert (report["status"], report["exit_code"], report["error"]) == ("error", 2, str(error))
    suite = ET.fromstring(junit_xml(report)).find("testsuite")
    assert suite.get("errors") == "1" and suite.find("testcase/error").get("message") == str(error)
    assert suite.get("name") == "fusionc compile"  # no manifest, no target: was "fusionc compile (?)"


def test_failed_gates_exit_1_after_writing_build_and_reports(tiny_pipeline, tmp_path: Path) -> None:
    """Through the CLI: the build and both reports exist, the one-line error names each gate and by how much."""
    out = tmp_path / "build"
    args = ["compile", str(tiny_pipeline("sd15")), "--components", "text_encoder,vae_decoder", "--out", str(out),
            "--verify-steps", "1", "--verify-prompts", "1", "--device", "iphone-14-pro",
            "--min-psnr", "40", "--max-size", "0.5", "--max-size", "text_encoder=100", "--max-latency-ms", "unet=1",
            "--max-latency-ms", "vae_decoder=1e-6", "--report", str(tmp_path / "r.json"), "--junit", str(tmp_path / "r.xml")]
    result = CliRunner().invoke(__import__("fusionc.cli", fromlist=["main"]).main, args)
    assert result.exit_code == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("fusionc: error")]
    assert len(errors) == 1 and errors[0].startswith("fusionc: error: 2 gates failed:")
    assert "size total" in errors[0] and "MB > 0.5 MB (over by" in errors[0] and "latency vae_decoder" in errors[0]
    manifest = json.loads((out / "manifest.json").read_text())  # the build was written
    assert {g["status"] for g in manifest["gates"]} == {"passed", "failed", "skipped"}  # unet: not in this build
    assert manifest["components"]["vae_decoder"]["latency_estimate"]["device"] == "iphone-14-pro"
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["status"] == "failed" and report["manifest"]["components"].keys() == manifest["components"].keys()
    suite = ET.parse(tmp_path / "r.xml").getroot().find("testsuite")
    assert suite.get("failures") == "2" and len(suite.findall("testcase")) == 2 + len(manifest["gates"])
    assert "gate max_size" in result.stdout and "FAIL" in result.stdout


def test_compile_error_still_writes_the_reports(tmp_path: Path) -> None:
    from fusionc.cli import main

    result = CliRunner().invoke(main, ["compile", str(tmp_path / "missing"), "--out", str(tmp_path / "b"),
                                       "--report", str(tmp_path / "r.json"), "--junit", str(tmp_path / "r.xml")])
    assert result.exit_code == 2
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["status"] == "error" and "does not exist" in report["error"]
    assert ET.parse(tmp_path / "r.xml").getroot().find("testsuite").get("errors") == "1"
    assert not (tmp_path / "b").exists()


def test_an_internal_error_still_writes_the_reports_and_exits_3(tmp_path: Path, monkeypatch) -> None:
    """A bug in fusionc (any exception that is not a FusioncError) is exit 3 with one line, and CI still gets its
    reports: status error, exit_code 3, the same line as stderr, and a JUnit error case."""
    import fusionc.pipeline
    from fusionc.cli import main

    def crashes(*args, **kwargs):
        raise ZeroDivisionError("float division by zero\nsecond line")

    monkeypatch.setattr(fusionc.pipeline, "compile_checkpoint", crashes)
    result = CliRunner().invoke(main, ["compile", "--out", str(tmp_path / "b"), "--report", str(tmp_path / "r.json"),
                                       "--junit", str(tmp_path / "r.xml")])
    assert result.exit_code == 3, result.output
    line = "internal error: ZeroDivisionError: float division by zero"
    assert result.stderr.count("\n") == 1 and line in result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["status"], report["exit_code"]) == ("error", 3) and line in report["error"]
    error = ET.parse(tmp_path / "r.xml").getroot().find("testsuite/testcase/error")
    assert error.get("type") == "exit 3" and line in error.get("message")
    assert not (tmp_path / "b").exists()


def test_a_failed_gate_stays_exit_1_when_a_report_cannot_be_written_at_the_end(tmp_path: Path, monkeypatch) -> None:
    """The reports' paths are checked before the work, but a disk can fill or a folder vanish during it. Then the
    gate's failure is still the outcome (exit 1: the build is written), the one line names both, the summary is
    shown and the report that can be written still is."""
    import shutil

    import fusionc.pipeline
    from fusionc.cli import main

    reports = tmp_path / "reports"
    reports.mkdir()
    manifest = copy.deepcopy(MANIFEST)

    def fails_a_gate(*args, **kwargs):
        shutil.rmtree(reports)
        reports.write_text("a file now")  # the JSON report's folder is gone
        gates = evaluate(manifest, CompileOptions(max_size={"total": 30}))
        manifest["gates"] = [g.to_json() for g in gates]  # as compile_checkpoint records them
        enforce(gates, manifest)

    monkeypatch.setattr(fusionc.pipeline, "compile_checkpoint", fails_a_gate)
    result = CliRunner().invoke(main, ["compile", "--out", str(tmp_path / "b"), "--report", str(reports / "r.json"),
                                       "--junit", str(tmp_path / "r.xml")])
    assert result.exit_code == 1, result.output
    errors = result.stderr.splitlines()
    assert len(errors) == 1 and errors[0].startswith("fusionc: error: size gate failed: total 37.00 MB > 30 MB")
    assert "cannot write the report" in errors[0] and "r.json" in errors[0]
    assert ET.parse(tmp_path / "r.xml").getroot().find("testsuite").get("failures") == "1"
    assert "gate max_size" in result.stdout


def test_a_passing_compile_whose_report_cannot_be_written_at_the_end_says_the_build_is_complete(
        tmp_path: Path, monkeypatch) -> None:
    """Exit 2 (the report is missing) with one line that says the build itself is whole: docs/ci.md's one exception
    to 'exit 2: nothing written at --out'."""
    import shutil

    import fusionc.pipeline
    from fusionc.cli import main

    reports = tmp_path / "reports"
    reports.mkdir()

    def passes(*args, **kwargs):
        shutil.rmtree(reports)
        reports.write_text("a file now")
        return copy.deepcopy(MANIFEST)

    monkeypatch.setattr(fusionc.pipeline, "compile_checkpoint", passes)
    result = CliRunner().invoke(main, ["compile", "--out", str(tmp_path / "b"), "--report", str(reports / "r.json")])
    assert result.exit_code == 2, result.output
    errors = result.stderr.splitlines()
    assert len(errors) == 1 and "r.json" in errors[0] and errors[0].endswith(f"(the build at {tmp_path / 'b'} is complete)")


def test_nan_or_inf_outputs_always_fail(tmp_path: Path) -> None:
    manifest = copy.deepcopy(MANIFEST)
    manifest["components"]["vae_decoder"]["psnr_db"] = float("-inf")  # verify.psnr of NaN/Inf outputs
    gates = evaluate(manifest, CompileOptions(min_psnr=20))
    failed = [g for g in gates if g.failed]
    assert [(g.gate, g.subject) for g in failed] == [("finite", "vae_decoder"), ("min_psnr", "vae_decoder")]
    with pytest.raises(GateFailedError, match="vae_decoder produced NaN or Inf"):
        enforce(gates, manifest)
    write_reports(tmp_path / "r.json", None, build_report(manifest, gates, tmp_path, None, 1.0))
    report = json.loads((tmp_path / "r.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict {c}"))
    assert report["manifest"]["components"]["vae_decoder"]["psnr_db"] == "-inf"


def test_verify_fails_on_nan_or_inf_outputs_without_a_psnr_gate() -> None:
    """`fusionc verify` applies the always-on finite gate too: a build whose outputs turn NaN or Inf on verify's
    inputs (its own prompts, Core ML predict on a Mac, the other QNN runtime) exits 1, with or without --min-psnr."""
    manifest = copy.deepcopy(MANIFEST)
    gate_psnr(manifest, None)  # finite outputs, no gate asked for: passes
    manifest["components"]["unet"]["psnr_db"] = float("-inf")
    with pytest.raises(GateFailedError, match="unet produced NaN or Inf"):
        gate_psnr(manifest, None)


def test_fleet_junit_names_each_variants_suite_without_a_none_device() -> None:
    """An onnx variant has no device: its suite was "fusionc fleet: ok (onnx, None)" in the CI's test view."""
    from fusionc.fleet_report import junit_xml as fleet_junit

    variant = {"name": "ok", "target": "onnx", "device": None, "status": "passed", "exit_code": 0, "error": None,
               "wall_s": 0.5, "bytes": 1e6, "worst_psnr_db": 140.0, "latency_ms_per_step": None, "executor": "local",
               "node": "vm", "gates": []}
    suites = ET.fromstring(fleet_junit({"variants": [variant, {**variant, "name": "a15", "device": "iphone-15-pro"}]}))
    assert [s.get("name") for s in suites] == ["fusionc fleet: ok (onnx)", "fusionc fleet: a15 (onnx, iphone-15-pro)"]


def test_a_fleet_with_a_failed_variant_stays_exit_1_when_its_report_cannot_be_written(tmp_path: Path,
                                                                                      monkeypatch) -> None:
    """As for one build: a report folder gone by the end of the fleet does not hide which variants failed."""
    import shutil

    import fusionc.fleet
    from fusionc.cli import main

    variant = {"name": "big", "target": "onnx", "device": None, "status": "failed", "exit_code": 1,
               "error": "size gate failed: total 32.01 MB > 0.001 MB", "wall_s": 0.5, "bytes": 32e6,
               "worst_psnr_db": 140.0, "latency_ms_per_step": None, "latency_ms_per_generation": None,
               "latency_steps": 8, "executor": "local", "node": "vm", "gates": []}
    reports = tmp_path / "reports"
    reports.mkdir()

    def builds(*args, **kwargs):
        shutil.rmtree(reports)
        reports.write_text("a file now")
        return {"exit_code": 1, "failed": ["big"], "executor": {"name": "local"}, "wall_s": 1.0,
                "variants": [variant]}

    monkeypatch.setattr(fusionc.fleet, "run_fleet", builds)
    config = tmp_path / "fusionc.toml"
    config.write_text('[[variant]]\nname = "big"\nout = "build/big"\nmax_size = 0.001\n')
    result = CliRunner().invoke(main, ["compile", "--config", str(config), "--report", str(reports / "r.json"),
                                       "--junit", str(tmp_path / "r.xml")])
    assert result.exit_code == 1, result.output
    errors = result.stderr.splitlines()
    assert len(errors) == 1 and errors[0].startswith("fusionc: error: 1 of 1 variants failed: big")
    assert "cannot write the report" in errors[0]
    assert ET.parse(tmp_path / "r.xml").getroot().find("testsuite").get("failures") == "0"  # written all the same
    assert "big" in result.stdout  # the fleet's table
