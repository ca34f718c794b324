"""CoreMLRunner: run a compiled Core ML component under the canonical interface.

The artifact speaks Apple's contract (passes/ane/interface.py): fixed batch, `timestep` [B],
`encoder_hidden_states` as [B,C,1,S], float32 `input_ids`, renamed outputs, and possibly several UNet
chunks. The runner maps canonical feeds onto it (splitting or padding the batch to the compiled one),
runs the chunks in sequence (each chunk's outputs join the feeds of the next, as the Swift package does)
and maps the outputs back. On Linux each .mlpackage runs in the MIL executor; on macOS `backend="coreml"`
runs MLModel.predict.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np

from fusionc.core.numerics import Feeds
from fusionc.passes.ane.interface import artifact_feeds


class _ExecutorPart:
    def __init__(self, path: Path) -> None:
        from fusionc.targets.coreml.executor import MILExecutor

        self.executor = MILExecutor.from_mlpackage(path)
        self.inputs = {name: tuple(var.shape) for name, var in self.executor.function.inputs.items()}
        self.outputs = list(self.executor.output_names)

    def __call__(self, feeds: Feeds) -> Feeds:
        return self.executor({k: feeds[k] for k in self.inputs})


class _CoreMLPart:
    """MLModel.predict (macOS only)."""

    def __init__(self, path: Path, compute_units: str) -> None:
        import coremltools as ct

        from fusionc.targets.coreml.package import compute_units as units

        self.model = ct.models.MLModel(str(path), compute_units=units(compute_units))
        spec = self.model.get_spec()
        self.inputs = {i.name: tuple(i.type.multiArrayType.shape) for i in spec.description.input}
        self.outputs = [o.name for o in spec.description.output]

    def __call__(self, feeds: Feeds) -> Feeds:
        out = self.model.predict({k: feeds[k] for k in self.inputs})
        return {k: np.asarray(v) for k, v in out.items()}


class CoreMLRunner:
    """Canonical feeds -> artifact feeds -> chunk(s) -> canonical outputs."""

    def __init__(self, packages: list[Path], interface: dict[str, Any], outputs: list[str] | None = None,
                 backend: str = "executor", compute_units: str = "cpu_and_ne") -> None:
        if backend == "coreml" and platform.system() != "Darwin":
            raise RuntimeError("MLModel.predict needs macOS")
        self.parts = [(_CoreMLPart(p, compute_units) if backend == "coreml" else _ExecutorPart(p)) for p in packages]
        self.interface = interface
        self.in_names = interface.get("inputs", {})
        self.out_names = {v: k for k, v in interface.get("outputs", {}).items()}
        self.bc1s = set(interface.get("bc1s_inputs", []))
        self.floats = set(interface.get("float_inputs", []))
        self.bc11 = set(interface.get("bc11_inputs", []))
        first = self.parts[0]
        self.batch = next((shape[0] for name, shape in first.inputs.items() if name != "timestep" and shape), 1)
        self.outputs = outputs or list(self.parts[-1].outputs)  # the component's outputs (artifact names)

    def _artifact_feeds(self, feeds: Feeds) -> Feeds:
        return artifact_feeds(feeds, self.in_names, self.bc1s, self.floats, self.bc11)

    def _run_once(self, feeds: Feeds) -> Feeds:
        env = dict(feeds)
        for part in self.parts:
            env.update(part(env))
        return env

    def run_artifact(self, feeds: Feeds) -> Feeds:
        """Feeds already in the artifact's names, shapes and dtypes (what `fusionc bench` times): the chunks in turn."""
        return self._run_once(feeds)

    def __call__(self, feeds: Feeds) -> Feeds:
        feeds = self._artifact_feeds(feeds)
        batched = {k: v for k, v in feeds.items() if k != "timestep"}
        n = next(iter(batched.values())).shape[0] if batched else self.batch
        results: dict[str, list[np.ndarray]] = {}
        for start in range(0, n, self.batch):
            piece: Feeds = {}
            for name, value in batched.items():
                part = value[start:start + self.batch]
                if part.shape[0] < self.batch:  # pad a short last piece by repeating its last row
                    pad = np.repeat(part[-1:], self.batch - part.shape[0], axis=0)
                    part = np.concatenate([part, pad], axis=0)
                piece[name] = part
            if "timestep" in feeds:
                t = np.asarray(feeds["timestep"], np.float32).reshape(-1)
                piece["timestep"] = np.resize(t[start:start + self.batch] if t.size == n else t, self.batch)
            out = self._run_once(piece)
            take = min(self.batch, n - start)
            for name in self.outputs:
                results.setdefault(name, []).append(np.asarray(out[name])[:take])
        return {self.out_names.get(name, name): np.concatenate(chunks, axis=0).astype(np.float32)
                for name, chunks in results.items()}
