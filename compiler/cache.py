"""`fusionc compile --cache DIR`: a content-hash cache of each component's exported and optimized ONNX.

Three stages are cached per component, each under the SHA-256 of everything that decides its bytes:

    export     checkpoint sha256, component, image size, opset, library versions, the export modules' source hash
    generic    the export key and the generic passes' sources (they read no option: every target and variant
               starts from this graph)
    optimized  the export key, target, device, every compile option except the ones that only gate or
               report (min_psnr, max_size, max_latency_ms, latency_steps, verify), passes/targets source hash

and one per input set of a compile (fusionc.inputs: calibration, selection, verification), the inputs and fp32
torch outputs of every component call along its trajectories (checkpoint, components, image size, the set's
prompts, seeds and steps, versions, sources), so that a fleet of variants, or a second compile, runs torch once.

so a changed checkpoint, option, library or line of fusionc misses, and nothing stale is ever reused. Entries
are written to a temporary folder and renamed into place (concurrent compiles sharing a cache are safe: the
first rename wins); a damaged entry is ignored and rewritten. We key on content rather than using a generic
memoizer (joblib) because the values are multi-GB ONNX models with external data that must be loaded lazily.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from fusionc.core.errors import BadInputError
from fusionc.core.options import CompileOptions
from fusionc.core.store import EntryStore, library_versions, sources_digest

MODEL = "model.onnx"
LIBRARIES = ("fusionc", "torch", "onnx", "onnx-ir", "onnxscript", "onnxruntime", "diffusers", "transformers", "coremltools")
GATE_ONLY = ("min_psnr", "max_size", "max_latency_ms", "latency_steps", "verify")
# The modules each stage's output depends on: a change to their sources invalidates that stage's entries.
EXPORT_SOURCES = ("fusionc.export", "fusionc.checkpoint", "fusionc.controlnet", "fusionc.dit", "fusionc.export_rules",
                  "fusionc.streaming")
GENERIC_SOURCES = ("fusionc.passes.generic", "fusionc.passes.entry", "fusionc.core", "fusionc.pipeline")
OPTIMIZE_SOURCES = ("fusionc.passes", "fusionc.targets", "fusionc.core")
TRAJECTORY_SOURCES = ("fusionc.trajectory", "fusionc.inputs", "fusionc.export", "fusionc.checkpoint",
                      "fusionc.controlnet", "fusionc.dit", "fusionc.dit_trajectory", "fusionc.export_rules",
                      "fusionc.streaming")
ARRAYS = "arrays.npz"


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """Library versions (a new torch or onnxscript can change the exported or optimized graph)."""
    return library_versions(LIBRARIES)


_PINNED_SOURCES: dict[tuple[str, ...], str] = {}  # a fleet worker's: the driver's hashes (pin_source_hashes)


def source_hash(modules: tuple[str, ...]) -> str:
    """SHA-256 over the source files of fusionc `modules` (fusionc.core.store.sources_digest), or the driver's."""
    if tuple(modules) in _PINNED_SOURCES:
        return _PINNED_SOURCES[tuple(modules)]
    return sources_digest(modules)


def source_hashes() -> dict[tuple[str, ...], str]:
    """The source hashes every cache key uses, as a fleet's driver computed them (sent to its workers)."""
    return {modules: source_hash(modules) for modules in
            (EXPORT_SOURCES, GENERIC_SOURCES, TRAJECTORY_SOURCES, OPTIMIZE_SOURCES)}


def pin_source_hashes(hashes: dict[tuple[str, ...], str]) -> None:
    """In a fleet's worker process: key the cache with the driver's source hashes, so the variants find the
    shared work the driver put there, as one snapshot of the code, even if the source tree changes (or
    differs on a cluster node) while the fleet runs. Never called in the driver's own process."""
    _PINNED_SOURCES.update({tuple(k): v for k, v in hashes.items()})


def _hash(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def export_key(checkpoint_sha: str, name: str, image: tuple[int, int], options: CompileOptions) -> str:
    return _hash({"stage": "export", "checkpoint": checkpoint_sha, "component": name, "image": list(image),
                  "opset": options.opset, "seed": options.seed, "text_length": options.text_length, "versions": versions(),
                  "sources": source_hash(EXPORT_SOURCES)})


def generic_key(export: str) -> str:
    return _hash({"stage": "generic", "export": export, "sources": source_hash(GENERIC_SOURCES)})


def inputs_key(checkpoint_sha: str, names: list[str], image: tuple[int, int], spec: Any,
               options: CompileOptions) -> str:
    """One input set (fusionc.inputs.InputSpec: role, prompts, seeds, steps) recorded from torch."""
    return _hash({"stage": "inputs", "checkpoint": checkpoint_sha, "components": sorted(names), "image": list(image),
                  "role": spec.role, "prompts": list(spec.prompts), "seeds": list(spec.seeds), "steps": spec.steps,
                  "seed": options.seed, "text_length": options.text_length, "versions": versions(),
                  "sources": source_hash(TRAJECTORY_SOURCES)})


def optimized_key(export: str, options: CompileOptions, device: str | None) -> str:
    relevant = {k: v for k, v in options.to_json().items() if k not in GATE_ONLY}
    if options.recipe is not None and Path(options.recipe).is_file():  # the recipe's content, not only its path
        relevant["recipe_sha256"] = hashlib.sha256(Path(options.recipe).read_bytes()).hexdigest()
    return _hash({"stage": "optimized", "export": export, "device": device, "options": relevant,
                  "sources": source_hash(OPTIMIZE_SOURCES)})


@dataclass
class Hit:
    model: ir.Model
    meta: dict[str, Any]


class ComponentCache:
    """Stores and loads whole ONNX models (external data beside them) by key (entries: fusionc.core.store)."""

    def __init__(self, root: Path) -> None:
        try:
            self.entries = EntryStore(root)
            probe = self.entries.root / f".probe-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError as err:
            raise BadInputError(f"--cache '{Path(root).resolve()}' is not a writable folder: {err.strerror}") from err
        self.root = self.entries.root

    @property
    def ephemeral(self) -> bool:
        """A fleet's temporary cache: the per-variant optimized stage is not worth its disk there."""
        return self.entries.ephemeral

    def has(self, key: str) -> bool:
        return self.entries.meta(key) is not None

    def load(self, key: str) -> Hit | None:
        meta = self.entries.meta(key)
        try:
            # in memory, like a fresh export: targets save the model elsewhere and must not point back here
            model = ir.external_data.load_to_model(ir.load(self.entries.folder(key) / MODEL)) if meta else None
        except Exception:  # noqa: BLE001 - damaged: a miss
            return None
        return Hit(model, meta) if model is not None else None

    def load_arrays(self, key: str) -> dict[str, np.ndarray] | None:
        """Named arrays stored by store_arrays (in their stored order), or None."""
        if self.entries.meta(key) is None:
            return None
        try:
            with np.load(self.entries.folder(key) / ARRAYS, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except Exception:  # noqa: BLE001 - damaged: a miss
            return None

    def store_arrays(self, key: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.entries.put(key, meta, lambda tmp: np.savez(tmp / ARRAYS, **arrays))

    def store(self, key: str, model: ir.Model, meta: dict[str, Any]) -> None:
        size = sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)
        self.entries.put(key, meta, lambda tmp: ir.save(model, tmp / MODEL, external_data=MODEL + ".data"), size)
