"""`fusionc passes`: a target's pass list as the options make it, with the reason each pass sits where it does."""

from __future__ import annotations

from typing import Any

from fusionc.core.options import CompileOptions
from fusionc.targets import get_target


def pass_list(options: CompileOptions) -> list[dict[str, Any]]:
    """Every entry of the target's pipeline in order: name, why, enabled (by these options)."""
    return [{"position": i + 1, **entry.to_json(options)}
            for i, entry in enumerate(get_target(options.target).pipeline(options))]


def print_pass_list(target: str, rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"fusionc passes for --target {target} (in order)")
    for column in ("#", "pass", "on", "why it sits here"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(str(row["position"]), row["name"], "yes" if row["enabled"] else "[dim]off[/dim]", row["why"])
    Console(width=max(Console().width, 140)).print(table)
