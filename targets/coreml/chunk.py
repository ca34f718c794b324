"""Placeholder: chunk planning (filled in by the chunking step)."""

from __future__ import annotations

import onnx_ir as ir

from fusionc.options import CompileOptions


def plan_chunks(model: ir.Model, component: str, options: CompileOptions) -> list[ir.Model]:
    return [model]
