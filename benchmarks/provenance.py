"""What every benchmark JSON records about how it was made: git revision, checkpoint sha256, machine load.

    from provenance import Provenance
    prov = Provenance.start(checkpoint)          # load average and git revision before the run
    ...
    result["provenance"] = prov.finish()         # + load average after, wall seconds

benchmarks/render_readme.py reads `provenance` to show where a table's figures come from.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def git_revision() -> str | None:
    """HEAD of the repository the benchmark ran from, with "+dirty" when the tree had uncommitted changes."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@dataclass
class Provenance:
    checkpoint: str | None
    checkpoint_sha256: str | None
    git_revision: str | None
    load_before: list[float]
    started: float = field(default_factory=time.time)

    @classmethod
    def start(cls, checkpoint: Path | str | None = None) -> "Provenance":
        """`checkpoint`: a diffusers folder (hashed like the manifest's checkpoint.sha256), or None: the built-in model."""
        from fusionc.checkpoint import checkpoint_sha256
        from fusionc.models import BUILTIN_CHECKPOINT

        path = Path(checkpoint) if checkpoint is not None else BUILTIN_CHECKPOINT
        shown = "built-in" if checkpoint is None else str(checkpoint)
        return cls(shown, checkpoint_sha256(path) if path.exists() else None, git_revision(), load_average())

    def finish(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "checkpoint_sha256": self.checkpoint_sha256,
                "git_revision": self.git_revision, "load_average_before": self.load_before,
                "load_average_after": load_average(), "wall_seconds": round(time.time() - self.started, 1),
                "host": {"machine": platform.machine(), "python": platform.python_version(), "cpus": os.cpu_count()}}
