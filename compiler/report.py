"""Compile reports for CI: `--report FILE.json` and `--junit FILE.xml`.

The JSON report is the manifest plus the gate results, the stage timings and the outcome (passed, failed: a gate,
error: the compile itself); the JUnit XML has one test case per component and one per gate, so CI systems
(GitHub Actions test reporters, GitLab, Jenkins) show the results natively. Both are written whatever the
outcome, each atomically (temporary file + rename), and never inside the build folder: timings change from run
to run, the build's artifacts must not.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from fusionc.core.errors import BadInputError
from fusionc.gates import GateResult

REPORT_VERSION = 1


def outcome(gates: list[GateResult], error: BaseException | None) -> tuple[str, int]:
    """("passed" | "failed" | "error", exit code)."""
    if error is not None:
        return "error", int(getattr(error, "exit_code", 3))
    return ("failed", 1) if any(g.failed for g in gates) else ("passed", 0)


def build_report(manifest: dict[str, Any] | None, gates: list[GateResult], out: Path | None,
                 error: BaseException | None = None, seconds: float | None = None) -> dict[str, Any]:
    status, code = outcome(gates, error)
    manifest = manifest or {}
    return {
        "fusionc_report": REPORT_VERSION,
        "status": status,
        "exit_code": code,
        "error": None if error is None else str(error),
        "build": None if out is None else str(out),
        "gates": [g.to_json() for g in gates],
        "timings": {"total_s": None if seconds is None else round(seconds, 3), **manifest.get("timings", {})},
        "manifest": manifest,
    }


def _write_atomic(path: Path, text: str) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        raise BadInputError(f"cannot write the report '{path}': {err.strerror}") from err


def _strict(value: Any) -> Any:
    """Strict JSON for CI tools (jq, JavaScript): non-finite floats (a PSNR of -inf) become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def write_json_report(path: Path, report: dict[str, Any]) -> None:
    _write_atomic(path, json.dumps(_strict(report), indent=2, allow_nan=False) + "\n")


def junit_xml(report: dict[str, Any]) -> str:
    """One <testcase> per component (compiled, verified) and per gate; a failed compile is one <error> case."""
    manifest = report["manifest"]
    target = manifest.get("target")  # none when the compile failed before its manifest
    suite = ET.Element("testsuite", name="fusionc compile" + (f" ({target})" if target else ""))
    cases: list[ET.Element] = []
    if report["status"] == "error":
        case = ET.Element("testcase", classname="fusionc.compile", name="compile")
        ET.SubElement(case, "error", message=report["error"] or "error", type=f"exit {report['exit_code']}")
        cases.append(case)
    for name, comp in manifest.get("components", {}).items():
        case = ET.Element("testcase", classname="fusionc.component", name=name,
                          time=f"{_component_seconds(manifest, name):.3f}")
        psnr = comp.get("psnr_db")
        ET.SubElement(case, "system-out").text = (
            f"files: {', '.join(comp.get('files', []))}; {comp.get('bytes', 0) / 1e6:.2f} MB; "
            f"PSNR: {'not verified' if psnr is None else f'{psnr:.2f} dB'}"
            + (f" ({comp['verified_on']})" if psnr is not None and comp.get("verified_on") else ""))
        cases.append(case)
    for gate in report["gates"]:
        case = ET.Element("testcase", classname=f"fusionc.gate.{gate['gate']}", name=gate["subject"])
        if gate["status"] == "failed":
            ET.SubElement(case, "failure", message=gate["message"], type=gate["gate"])
        elif gate["status"] == "skipped":
            ET.SubElement(case, "skipped", message=gate["message"])
        else:
            ET.SubElement(case, "system-out").text = gate["message"]
        cases.append(case)
    suite.extend(cases)
    count = lambda tag: sum(1 for c in cases if c.find(tag) is not None)  # noqa: E731
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(count("failure")))
    suite.set("errors", str(count("error")))
    suite.set("skipped", str(count("skipped")))
    suite.set("time", f"{report['timings'].get('total_s') or 0:.3f}")
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _component_seconds(manifest: dict[str, Any], name: str) -> float:
    return sum(v for k, v in manifest.get("timings", {}).items() if k.startswith(f"{name}:"))


def write_reports(json_path: Path | None, junit_path: Path | None, report: dict[str, Any]) -> None:
    if json_path is not None:
        write_json_report(json_path, report)
    if junit_path is not None:
        _write_atomic(junit_path, junit_xml(report))
