"""Build folders that appear whole or not at all.

A compile writes into a hidden temporary folder next to --out, holds an exclusive lock beside it (so two
compiles into the same --out are refused), and swaps the finished folder into place with renames: an
existing good build is never half-overwritten, and an interrupted compile (SIGINT, SIGTERM, even SIGKILL)
leaves --out as it was. Stale temporaries of dead compiles are removed by the next compile.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from fusionc.core import interrupt
from fusionc.core.errors import BadInputError
from fusionc.core.portable import exchange, free_bytes, lock_exclusive, pid_alive, read_only_file_system, unlock

MANIFEST = "manifest.json"


def is_build(folder: Path) -> bool:
    return (folder / MANIFEST).is_file()


def _stale_temporaries(out: Path) -> Iterator[Path]:
    """Build, old-build and scratch folders of compiles into `out` whose process is gone (killed with SIGKILL)."""
    for kind in ("tmp", "old", "work"):  # .<out>.tmp-<pid>, .<out>.old-<pid>, .<out>.work-<pid>-<random>
        prefix = f".{out.name}.{kind}-"
        for path in out.parent.glob(prefix + "*"):
            pid = path.name[len(prefix):].split("-")[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                yield path


def remove_dead_temporaries(outs: list[Path], seconds: float = 10.0) -> None:
    """Remove the temporary folders of builds into `outs` whose process is gone (after a fleet stopped its
    workers: killed workers die within a few seconds, so this waits up to `seconds` for their folders)."""
    deadline = time.monotonic() + seconds
    while True:
        for out in outs:
            for stale in _stale_temporaries(out):
                shutil.rmtree(stale, ignore_errors=True)
        left = [p for out in outs for p in out.parent.glob(f".{out.name}.*-*") if not p.name.endswith(".lock")]
        if not left or time.monotonic() > deadline:
            return
        time.sleep(0.2)


def check_out(out: Path) -> None:
    """The checks on --out that need no lock: run first, so a bad --out fails before minutes of work."""
    out = out.resolve()
    if out.exists() and not out.is_dir():
        raise BadInputError(f"--out '{out}' is a file: pass a folder")
    if out.is_dir() and any(out.iterdir()) and not is_build(out):
        raise BadInputError(f"--out '{out}' holds files that are not a fusionc build: choose an empty or new folder")
    parent = next((p for p in [out.parent, *out.parent.parents] if p.exists()), None)
    if parent is None or not os.access(parent, os.W_OK):
        raise BadInputError(f"cannot write to '{out.parent}': permission denied; choose a writable --out")
    if read_only_file_system(parent):
        raise BadInputError(f"cannot write to '{out.parent}': read-only file system; choose a writable --out")
    lock_path = out.parent / f".{out.name}.lock"
    if lock_path.is_file():
        with open(lock_path) as lock_file:
            try:
                lock_exclusive(lock_file)
            except OSError as err:
                raise BadInputError(f"another fusionc compile is writing '{out}': wait for it or choose another --out") from err
            unlock(lock_file)


def check_output_file(path: Path, flag: str) -> None:
    """The checks on an output file (--report, --junit, generate's --out) that need no work: run first, so a bad
    path fails in one line (exit 2) before minutes of work. The folder may be missing if it can be created;
    nothing is left behind by the check."""
    import tempfile

    path = Path(path).absolute()
    if path.is_dir():
        raise BadInputError(f"{flag} '{path}' is a folder: pass a file path")
    if path.exists() and not os.access(path, os.W_OK):
        raise BadInputError(f"cannot write {flag} '{path}': permission denied; choose a writable path")
    folder = next((p for p in [path.parent, *path.parent.parents] if p.exists()), None)
    if folder is None or not folder.is_dir():
        raise BadInputError(f"cannot write {flag} '{path}': '{folder}' is not a folder; choose a writable path")
    try:  # a probe in the nearest existing folder: a file where the folder exists, a folder where one is missing
        if folder == path.parent:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.probe-"):
                pass
        else:
            os.rmdir(tempfile.mkdtemp(dir=folder, prefix=f".{path.name}.probe-"))
    except OSError as err:
        raise BadInputError(f"cannot write {flag} '{path}': {err.strerror or err} in '{folder}'; "
                            "choose a writable path") from None


def check_output_files(*flags: tuple[str, Path | None]) -> None:
    """check_output_file on each (flag, path) given; a None path (the option not given) is skipped."""
    for flag, path in flags:
        if path is not None:
            check_output_file(Path(path), flag)


def check_distinct_outputs(*flags: tuple[str, Path | None]) -> None:
    """Two output flags naming one file (`junit = "reports/compile.json"`): the second would replace the first."""
    seen: dict[Path, str] = {}
    for flag, path in flags:
        if path is None:
            continue
        where = Path(path).resolve()
        if where in seen:
            raise BadInputError(f"{seen[where]} and {flag} name the same file '{path}': the second would replace "
                                "the first; give each its own")
        seen[where] = flag


def check_outside_builds(outs: list[Path], *flags: tuple[str, Path | None]) -> None:
    """A report (--report, --junit, --plot) is written beside the builds, never inside one: its timings would make
    the build's files differ from run to run, and written by a failed compile it would leave `out` holding a file
    that is not a build (refused by every later compile into it)."""
    for flag, path in flags:
        if path is None:
            continue
        where = Path(path).resolve()
        for out in outs:
            if where == Path(out).resolve() or Path(out).resolve() in where.parents:
                raise BadInputError(f"{flag} '{path}' is inside the build folder '{out}': a build holds its artifacts "
                                    "alone; write the report beside it")


def check_report_outputs(outs: list[Path], *flags: tuple[str, Path | None]) -> None:
    """A compile's or a fleet's reports, before the work: each its own file, beside the builds, writable."""
    check_distinct_outputs(*flags)
    check_outside_builds(outs, *flags)
    check_output_files(*flags)


@contextmanager
def atomic_build(out: Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `out`, on any failure it is removed."""
    out = out.resolve()
    check_out(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        lock_file = open(out.parent / f".{out.name}.lock", "w")
    except OSError as err:
        raise BadInputError(f"cannot write to '{out.parent}': {err.strerror}; choose a writable --out") from err
    try:
        lock_exclusive(lock_file)
    except OSError as err:
        lock_file.close()
        raise BadInputError(f"another fusionc compile is writing '{out}': wait for it or choose another --out") from err
    _recover_old_build(out)
    for stale in _stale_temporaries(out):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    with interrupt.catching():
        try:
            tmp.mkdir()
            yield tmp
            interrupt.check()  # a signal whose KeyboardInterrupt a library swallowed still stops the swap
            _swap_into_place(tmp, out)
        except Exception as err:  # noqa: BLE001 - libraries report a full disk in their own exception types
            if _disk_full(err, out.parent):
                raise BadInputError(f"disk full while writing the build next to '{out}': free space and compile again") from err
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            unlock(lock_file)
            lock_file.close()


def _disk_full(err: BaseException, folder: Path) -> bool:
    """ENOSPC/EDQUOT anywhere in the chain, or (onnxruntime, coremltools wrap it) less than 1 MB left on the disk."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        return free_bytes(folder) < (1 << 20)
    except OSError:
        return False


def _swap_into_place(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.rename(tmp, out)
        return
    if exchange(tmp, out):  # `out` is the old or the new build at every instant, even under SIGKILL
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    os.rename(out, old)  # killed right after this: the next compile moves `old` back (_recover_old_build)
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def _recover_old_build(out: Path) -> None:
    """A compile killed between the two renames of _swap_into_place left --out missing: put the old build back."""
    if out.exists():
        return
    for old in out.parent.glob(f".{out.name}.old-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)) and is_build(old):
            os.rename(old, out)
            return


def read_manifest(build: Path) -> dict:
    """The manifest of a build folder; anything else is bad input."""
    if not build.is_dir():
        raise BadInputError(f"'{build}' is not a folder: pass a build folder written by `fusionc compile`")
    path = build / MANIFEST
    if not path.is_file():
        raise BadInputError(f"'{build}' is not a fusionc build (no {MANIFEST}): run `fusionc compile --out {build}` first")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise BadInputError(f"'{path}' is not valid JSON ({err}): rebuild with `fusionc compile`") from err
    if not isinstance(manifest, dict) or "components" not in manifest or "target" not in manifest:
        raise BadInputError(f"'{path}' is not a fusionc manifest: rebuild with `fusionc compile`")
    check_build_files(build, manifest)
    return manifest


def check_build_files(build: Path, manifest: dict) -> None:
    """Every component's `files` listed, inside the build and on disk: a tampered build is bad input (exit 2)
    for every command that reads it, not an error of the runtime that opens a missing file (exit 3)."""
    path = build / MANIFEST
    components = manifest["components"]
    if not isinstance(components, dict) or not all(
            isinstance(c, dict) and isinstance(c.get("files"), list) and all(isinstance(f, str) for f in c["files"])
            for c in components.values()):
        raise BadInputError(f"'{path}' is not a fusionc manifest (a component without its list of files): rebuild "
                            "with `fusionc compile`")
    root = build.resolve()
    for comp in components.values():
        for file in comp["files"]:
            if not (build / file).resolve().is_relative_to(root):
                raise BadInputError(f"'{path}' lists '{file}' outside the build: refused")
            if not (build / file).exists():
                raise BadInputError(f"build file '{build / file}' is missing: recompile the build")


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
