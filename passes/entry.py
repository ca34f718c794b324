"""PassEntry: one step of a target's pass list, with the reason it sits where it does and when it is on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import onnx_ir as ir

from fusionc.core.context import ComponentContext
from fusionc.core.options import CompileOptions


def always(options: CompileOptions) -> bool:
    del options
    return True


@dataclass
class PassEntry:
    """`make(ctx)` builds the pass for one component; `why` is the one-line reason for its position;
    `when(options)` says whether the options switch it on (a pipeline lists every entry, on or off)."""

    name: str
    make: Callable[[ComponentContext], ir.passes.PassBase]
    why: str
    when: Callable[[CompileOptions], bool] = always

    def to_json(self, options: CompileOptions) -> dict[str, Any]:
        return {"name": self.name, "why": self.why, "enabled": bool(self.when(options))}


def enabled(entries: list[PassEntry], options: CompileOptions) -> list[PassEntry]:
    """The entries the options switch on, in order."""
    return [e for e in entries if e.when(options)]
