"""What QNN builds of one model for different devices share: everything but the context build.

Calibration, the remedies' search and the QDQ graph read no device: the Hexagon arch (v73, v75, v79) only
enters when the HTP backend prepares the context binary. So with a cache folder (`--cache`, or the fleet's),
a QNN lowering stores its quantized graph under a key of what decides it (the float graph's bytes, the
calibration and selection inputs, the options but the device, the context size limit, the code and library
versions), and a build for another device with the same key copies it (a hard link where it can) and only
builds its context. In a fleet, the first variant of such a group also builds its siblings' contexts beside its
own, side by side in child processes (as many as the cores and the memory allow, each bounded by
--qnn-max-build-bytes), and stores them under the graph's key and the sibling's HTP options; the sibling's
build then copies them. A context built for a sibling is the same bytes as one built by the sibling itself:
the build is a fresh process over the same graph and options (ep.compile_contexts).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from fusionc.core.devices import get_device
from fusionc.core.numerics import Feeds
from fusionc.core.portable import available_memory
from fusionc.core.store import EntryStore, library_versions, sources_digest
from fusionc.targets.qnn.ep import HtpConfig, compile_contexts
from fusionc.targets.qnn.quantize import external_files
from fusionc.targets.qnn.split import DEFAULT_MAX_BUILD_BYTES

SOURCES = ("fusionc.targets.qnn", "fusionc.passes.qnn", "fusionc.core")
LIBRARIES = ("onnx", "onnx-ir", "onnxruntime", "onnxruntime-qnn", "numpy")
CHUNK = 8 << 20


def file_digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def feeds_digest(feeds: list[Feeds]) -> str:
    digest = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            array = np.ascontiguousarray(feed[name])
            digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def _hash(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


class SharedWork:
    """One component's QNN work in the cache: its device-independent graph(s) and the contexts built from them.

    `key` names the graph the contexts are built from: the quantized graph (w8a16, w8a8) or the float one
    (fp16). Without a cache folder every method is a no-op miss."""

    def __init__(self, cache_dir: Path | None, float_path: Path, feeds: list[Feeds], selection: list[Feeds],
                 options: Any, limit: int) -> None:
        self.store = EntryStore(Path(cache_dir) / "qnn") if cache_dir is not None else None
        self.key = None
        if self.store is not None:
            float_path = Path(float_path)
            files = external_files(float_path)  # the graph and every weight file it reads
            self.key = _hash({"stage": "qnn-graph", "float": file_digest(files),  # the graph and its external data
                              "calibration": feeds_digest(feeds), "selection": feeds_digest(selection),
                              "options": {k: v for k, v in options.to_json().items() if k != "device"},
                              "context_limit": limit, "versions": library_versions(LIBRARIES),
                              "sources": sources_digest(SOURCES)})

    def load_graphs(self, out: Path) -> tuple[list[Path], dict[str, Any]] | None:
        """The stored graph files placed in `out` and the lowering's record (what build.py puts in the manifest)."""
        return self.store.get_files(self.key, out) if self.store is not None else None

    def store_graphs(self, files: list[Path], record: dict[str, Any]) -> None:
        if self.store is not None:
            self.store.put_files(self.key, files, {"stage": "qnn-graph", "record": record})

    def _context_key(self, graph: str, htp: HtpConfig) -> str:
        return _hash({"stage": "qnn-context", "graph": self.key, "file": graph, "htp": htp.provider_options()})

    def build_contexts(self, graph_path: Path, context_path: Path, htp: HtpConfig, siblings: tuple[str, ...],
                       max_build_bytes: int | None, scratch: Path) -> tuple[list[Path], str]:
        """This device's context for `graph_path` (from the cache, or built) and, built beside it, the sibling
        devices' contexts into the cache; (its files, "hit" | "built" | "built with N siblings")."""
        if self.store is not None:
            hit = self.store.get_files(self._context_key(graph_path.name, htp), context_path.parent)
            if hit is not None:
                return hit[0], "hit"
        others = self._sibling_configs(graph_path.name, htp, siblings) if self.store is not None else []
        with tempfile.TemporaryDirectory(prefix=".fusionc-qnn-siblings-", dir=scratch) as tmp:
            folders = [Path(tmp) / f"s{i}" for i in range(len(others))]
            for folder in folders:
                folder.mkdir()
            builds = [(context_path, htp)] + [(f / context_path.name, c) for f, c in zip(folders, others)]
            built = compile_contexts(graph_path, builds, parallel=side_by_side(len(builds), max_build_bytes))
            for files, config in zip(built[1:], others):
                self.store.put_files(self._context_key(graph_path.name, config), files, {"stage": "qnn-context"})
        return built[0], f"built with {len(others)} sibling(s)" if others else "built"

    def _sibling_configs(self, graph: str, htp: HtpConfig, siblings: tuple[str, ...]) -> list[HtpConfig]:
        configs: list[HtpConfig] = []
        for name in siblings:
            config = HtpConfig.from_device(get_device(name, "qnn"))
            config = HtpConfig(config.arch, config.soc_model, htp.fp16, htp.performance_mode)
            if config != htp and config not in configs and self.store.meta(self._context_key(graph, config)) is None:
                configs.append(config)
        return configs


def side_by_side(builds: int, max_build_bytes: int | None) -> int:
    """How many context builds run at once: one per core, as many as fit the free memory at the bound
    each build is cut to (--qnn-max-build-bytes), at least one."""
    per_build = int(max_build_bytes or DEFAULT_MAX_BUILD_BYTES)
    return max(1, min(builds, os.cpu_count() or 1, available_memory() // per_build))
