"""Targets: each lowers the optimized ONNX of a component into device artifacts (see base.Target)."""

from __future__ import annotations

import importlib

from fusionc.core.errors import BadInputError

TARGET_NAMES = ("onnx", "coreml", "qnn")


def get_target(name: str):
    """The Target object of `name` (imported lazily: coremltools and the QNN EP are slow to import)."""
    if name not in TARGET_NAMES:
        raise BadInputError(f"unknown target '{name}': choose one of {', '.join(TARGET_NAMES)}")
    module = importlib.import_module(f"fusionc.targets.{name}")
    return module.TARGET
