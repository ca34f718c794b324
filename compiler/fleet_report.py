"""The fleet report: one JSON (`--report`), one JUnit XML (`--junit`), a table on the terminal and a PNG (`--plot`).

Per variant: target, device, bytes, worst PSNR, the cost model's latency per step (one guidance UNet call) and
per generation on the variant's device, gates, wall time and where it ran (executor, node, pid). The PNG puts
the variants side by side: size against estimated latency per generation, PSNR as colour, so a team can pick
per device. Reports are written atomically (fusionc.report), never inside a build folder.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from fusionc.report import _write_atomic, write_json_report


def junit_xml(report: dict[str, Any]) -> str:
    """One <testsuite> per variant: a `build` case (error when it did not build) and one case per gate."""
    root = ET.Element("testsuites", name="fusionc fleet")
    for v in report["variants"]:
        where = v["target"] + (f", {v['device']}" if v["device"] else "")  # an onnx variant may have no device
        suite = ET.SubElement(root, "testsuite", name=f"fusionc fleet: {v['name']} ({where})")
        build = ET.SubElement(suite, "testcase", classname=f"fusionc.fleet.{v['name']}", name="build",
                              time=f"{v['wall_s']:.3f}")
        if v["status"] == "error":
            ET.SubElement(build, "error", message=v["error"] or "error", type=f"exit {v['exit_code']}")
        else:
            ET.SubElement(build, "system-out").text = (
                f"{(v['bytes'] or 0) / 1e6:.2f} MB; worst PSNR {_fmt(v['worst_psnr_db'], '.1f')} dB; "
                f"{_fmt(v['latency_ms_per_step'], '.1f')} ms/step; ran on {v['executor']} {v['node']}")
        for gate in v["gates"]:
            case = ET.SubElement(suite, "testcase", classname=f"fusionc.fleet.{v['name']}.{gate['gate']}",
                                 name=gate["subject"])
            if gate["status"] == "failed":
                ET.SubElement(case, "failure", message=gate["message"], type=gate["gate"])
            elif gate["status"] == "skipped":
                ET.SubElement(case, "skipped", message=gate["message"])
        cases = list(suite)
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(sum(c.find("failure") is not None for c in cases)))
        suite.set("errors", str(sum(c.find("error") is not None for c in cases)))
        suite.set("skipped", str(sum(c.find("skipped") is not None for c in cases)))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def gate_summary(gates: list[dict[str, Any]]) -> str:
    failed = [g for g in gates if g["status"] == "failed"]
    passed = sum(g["status"] == "passed" for g in gates)
    if failed:
        return f"FAIL {len(failed)}/{len(gates)}"
    return f"pass {passed}/{len(gates)}" if gates else "-"


def print_table(report: dict[str, Any], console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:  # CI logs: the whole table, not one squeezed into 80 columns
            console = Console(width=160)
    count = len(report["variants"])
    table = Table(title=f"fusionc fleet: {count} variant{'s' if count != 1 else ''}, executor {report['executor']['name']}, "
                        f"{report['wall_s']:.1f} s")
    for column in ("variant", "target", "device", "MB", "worst dB", "ms/step", "s/image", "gates", "wall s", "ran on"):
        table.add_column(column, justify="right" if column in ("MB", "worst dB", "ms/step", "s/image", "wall s") else "left")
    for v in report["variants"]:
        per_image = None if v["latency_ms_per_generation"] is None else v["latency_ms_per_generation"] / 1000
        status = v["error"].split(":")[0] if v["status"] == "error" else gate_summary(v["gates"])
        table.add_row(v["name"], v["target"], v["device"] or "-", _fmt(None if v["bytes"] is None else v["bytes"] / 1e6, ".2f"),
                      _fmt(v["worst_psnr_db"], ".1f"), _fmt(v["latency_ms_per_step"], ".1f"), _fmt(per_image, ".2f"),
                      ("[red]" + status + "[/red]") if v["status"] != "passed" else status,
                      f"{v['wall_s']:.1f}", f"{v['executor']} {v['node'][:12]}")
    console.print(table)
    for v in report["variants"]:
        if v["error"]:
            console.print(f"[red]{v['name']}[/red]: {v['error']}")


def plot(report: dict[str, Any], path: Path) -> None:
    """Size (MB) against estimated seconds per image, PSNR as colour; variants without an estimate are listed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [v for v in report["variants"] if v["bytes"] is not None]
    placed = [v for v in rows if v["latency_ms_per_generation"] is not None]
    fig, ax = plt.subplots(figsize=(7.0, 4.8))
    if placed:
        psnr = [v["worst_psnr_db"] if v["worst_psnr_db"] is not None else float("nan") for v in placed]
        points = ax.scatter([v["latency_ms_per_generation"] / 1000 for v in placed], [v["bytes"] / 1e6 for v in placed],
                            c=psnr, cmap="viridis", s=80, edgecolors="black")
        fig.colorbar(points, ax=ax, label="worst component PSNR vs torch (dB)")
        for v in placed:
            ax.annotate(f"{v['name']}\n{v['device']}", (v["latency_ms_per_generation"] / 1000, v["bytes"] / 1e6),
                        fontsize=7, xytext=(5, 4), textcoords="offset points")
    missing = [v["name"] for v in rows if v["latency_ms_per_generation"] is None]
    steps = rows[0]["latency_steps"] if rows else 8
    ax.set_xlabel(f"estimated seconds per image on the variant's device ({steps} steps, guidance)")
    ax.set_ylabel("build size (MB)")
    ax.set_title("fusionc fleet: size vs estimated latency" + (f" (no estimate: {', '.join(missing)})" if missing else ""),
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.margins(x=0.25, y=0.12)  # room for the labels right of and above the rightmost and topmost points
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(report: dict[str, Any], json_path: Path | None, junit_path: Path | None, plot_path: Path | None) -> None:
    if json_path is not None:
        write_json_report(json_path, report)
    if junit_path is not None:
        _write_atomic(junit_path, junit_xml(report))
    if plot_path is not None:
        plot(report, plot_path)
