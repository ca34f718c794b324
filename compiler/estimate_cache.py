"""`fusionc estimate --cache DIR`: the graph statistics of a checkpoint's components, kept by content hash.

An estimate of a full-size checkpoint spends nearly all its time exporting and optimizing the graphs (32 s for an
SD-1.5 UNet, 78 s for SDXL's on 2 cores: benchmarks/estimate_speed.py); the cost model itself takes milliseconds.
The statistics depend only on the checkpoint's configs (an estimate reads no weight), the image size, the export
options, the library versions and fusionc's export, pass and statistics code, so a second estimate of the same
checkpoint (another device, precision, step count or palettization) reads them back here instead. The key is the
SHA-256 of all of those (every *.json of the checkpoint folder stands for its configs); entries live in the same
store as the compile cache's (fusionc.core.store: written whole or not at all, so a killed estimate leaves nothing
half-written), and a damaged entry is dropped and rewritten.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from fusionc.analysis.graph_stats import GraphStats
from fusionc.cache import EXPORT_SOURCES
from fusionc.core.options import CompileOptions

# the code the statistics come from: a change to any line of it misses (the export's modules as the compile cache's
# export key hashes them: ControlNet, DiT and streaming wrappers included)
SOURCES = (*EXPORT_SOURCES, "fusionc.passes", "fusionc.targets", "fusionc.core", "fusionc.pipeline",
           "fusionc.analysis.graph_stats", "fusionc.estimate_graphs", "fusionc.estimate_cache")
STATS = "stats.json.gz"


def configs_digest(checkpoint: Path) -> str:
    """SHA-256 over the checkpoint folder's *.json files (model_index, every component's config, tokenizer and
    scheduler configs), by relative path: what a meta-device export reads."""
    digest = hashlib.sha256()
    for file in sorted(Path(checkpoint).rglob("*.json"), key=lambda p: p.relative_to(checkpoint).parts):
        digest.update(file.relative_to(checkpoint).as_posix().encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


class StatsCache:
    """Graph statistics per (checkpoint configs, component, options) in a compile-cache folder."""

    def __init__(self, root: Path) -> None:
        from fusionc.cache import ComponentCache

        self.entries = ComponentCache(root).entries  # refuses an unwritable folder in one line

    @staticmethod
    def keys(checkpoint: Path, components: list[str], options: CompileOptions) -> dict[str, str]:
        """component -> key: the configs and sources are read once for all of them."""
        from fusionc.cache import _hash, source_hash, versions

        shared = {"stage": "estimate-stats", "configs": configs_digest(checkpoint), "options": options.to_json(),
                  "versions": versions(), "sources": source_hash(SOURCES)}
        return {name: _hash(dict(shared, component=name)) for name in components}

    def load(self, key: str) -> dict[str, Any] | None:
        """{"generic": {batch: GraphStats}, "qnn": GraphStats}, or None (no entry, or a damaged one: removed)."""
        if self.entries.meta(key) is None:
            return None
        try:
            with gzip.open(self.entries.folder(key) / STATS, "rt", encoding="utf-8") as f:
                data = json.load(f)
            return {"generic": {int(b): GraphStats.from_json(s) for b, s in data["generic"].items()},
                    "qnn": GraphStats.from_json(data["qnn"])}
        except (OSError, ValueError, KeyError, TypeError):
            shutil.rmtree(self.entries.folder(key), ignore_errors=True)
            return None

    def store(self, key: str, entry: dict[str, Any], component: str) -> bool:
        data = {"generic": {str(b): s.to_json() for b, s in entry["generic"].items()}, "qnn": entry["qnn"].to_json()}

        def write(folder: Path) -> None:
            with gzip.open(folder / STATS, "wt", encoding="utf-8") as f:
                json.dump(data, f)

        return self.entries.put(key, {"stage": "estimate-stats", "component": component}, write)
