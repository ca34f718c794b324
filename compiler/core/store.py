"""Folders on disk keyed by content: what one compile may reuse from another (fusionc.cache's stages, the QNN
target's quantized graphs and context binaries, targets/qnn/shared.py).

An entry is `ROOT/<key[:2]>/<key>/` holding meta.json (with its key) and its files. It is written into a
temporary folder named after the writer's pid and renamed into place, so compiles sharing a root are safe (the
first rename wins), a reader never sees half an entry, and a killed writer's temporary folder is removed by the
next store opened on the root. A full disk, a lost race, or a disk an entry would leave with less than
RESERVE_BYTES free only costs the entry: callers never need it to exist.

A root holding the file EPHEMERAL is a fleet's temporary cache, removed when the fleet ends: only what another
variant of the same fleet reads is worth writing there (`EntryStore.ephemeral`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from fusionc.core.portable import pid_alive

META = "meta.json"
EPHEMERAL = ".fusionc-ephemeral"
RESERVE_BYTES = 4 << 30  # an entry never takes its disk's last 4 GiB: a cache is optional, the build is not


def cache_root(explicit: Path | None) -> Path | None:
    """The compile cache a command uses: `explicit` (its --cache), else $FUSIONC_CACHE when set, else none."""
    if explicit:
        return explicit
    return Path(os.environ["FUSIONC_CACHE"]) if os.environ.get("FUSIONC_CACHE") else None


def sources_digest(modules: tuple[str, ...]) -> str:
    """SHA-256 over the source files of fusionc `modules` (a package: every .py below it): a key that includes
    it misses when a line of the code that made the entry changes."""
    digest = hashlib.sha256()
    for module in modules:
        origin = Path(importlib.util.find_spec(module).origin)
        files = (sorted(origin.parent.rglob("*.py"), key=lambda p: p.relative_to(origin.parent).parts)
                 if origin.name == "__init__.py" else [origin])
        for file in files:
            digest.update(f"{module}:{file.relative_to(origin.parent).as_posix()}".encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def library_versions(names: tuple[str, ...]) -> dict[str, str]:
    """The installed versions of `names` ("absent" when one is not installed): keys miss after an upgrade."""
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def link_or_copy(source: Path, destination: Path) -> None:
    """A hard link where the file system allows one (no bytes copied: entries are never modified), else a copy."""
    destination.unlink(missing_ok=True)
    try:
        os.link(source, destination)
    except OSError:
        shutil.copyfile(source, destination)


class EntryStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(".tmp-*-*"):  # entries being written by compiles that were killed
            pid = stale.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)

    @property
    def ephemeral(self) -> bool:
        return (self.root / EPHEMERAL).exists()

    def folder(self, key: str) -> Path:
        return self.root / key[:2] / key

    def meta(self, key: str) -> dict[str, Any] | None:
        """The entry's meta.json, or None when there is no whole entry under `key`."""
        try:
            meta = json.loads((self.folder(key) / META).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return meta if meta.get("key") == key else None

    def put(self, key: str, meta: dict[str, Any], write: Callable[[Path], None], size: int = 0) -> bool:
        """Write an entry of about `size` bytes with `write(temporary_folder)`; False when it exists already, could
        not be written, or would leave its disk less than RESERVE_BYTES free (the builds need the room more)."""
        entry = self.folder(key)
        if (entry / META).is_file() or shutil.disk_usage(self.root).free < size + RESERVE_BYTES:
            return False
        tmp = self.root / f".tmp-{key[:16]}-{os.getpid()}"
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            write(tmp)
            (tmp / META).write_text(json.dumps({"key": key, **meta}, indent=1, default=str), encoding="utf-8")
            entry.parent.mkdir(parents=True, exist_ok=True)
            os.rename(tmp, entry)
            return True
        except OSError:
            return False  # another compile stored it first, or the disk is full
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def put_files(self, key: str, files: list[Path], meta: dict[str, Any]) -> bool:
        """An entry of `files` (linked or copied, by their names)."""
        def write(tmp: Path) -> None:
            for file in files:
                link_or_copy(Path(file), tmp / Path(file).name)

        return self.put(key, {**meta, "files": [Path(f).name for f in files]}, write,
                        sum(Path(f).stat().st_size for f in files))

    def get_files(self, key: str, destination: Path) -> tuple[list[Path], dict[str, Any]] | None:
        """The entry's files linked or copied into `destination` (in their stored order) and its meta, or None."""
        meta = self.meta(key)
        if meta is None:
            return None
        destination.mkdir(parents=True, exist_ok=True)
        placed = []
        try:
            for name in meta["files"]:
                link_or_copy(self.folder(key) / name, destination / name)
                placed.append(destination / name)
        except (OSError, KeyError):
            for path in placed:
                path.unlink(missing_ok=True)
            return None
        return placed, meta
