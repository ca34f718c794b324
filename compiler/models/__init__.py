"""Built-in models: the trained tiny pipeline shipped in the package, and tiny random test families."""

from pathlib import Path

BUILTIN_CHECKPOINT = Path(__file__).parent / "tiny_sd"
