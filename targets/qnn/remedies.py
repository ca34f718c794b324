"""Accuracy remedies (placeholder until the sensitivity search lands)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fusionc.targets.qnn.rules import QuantConfig


def choose_config(float_path: Path, stats: dict, feeds: list, config: QuantConfig, name: str,
                  options: Any) -> tuple[QuantConfig, dict[str, Any]]:
    return config, {}
