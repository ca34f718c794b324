"""fusionc runs where its users are: Linux, macOS (Core ML) and Windows on Snapdragon (QNN).

What differs between them lives in fusionc.core.portable; the source checks below keep it there (a module-level
`import fcntl` anywhere else stops every fusionc command on Windows before it starts), and keep text files UTF-8
(Windows' default encoding is the locale's code page). The behaviour tests run here on Linux; the Windows and
macOS ones run on those platforms and are skipped here, with the reason.
"""

from __future__ import annotations

import ast
import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fusionc.core import portable

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for folder in ("compiler", "targets", "passes") for p in (ROOT / folder).rglob("*.py"))
POSIX_ONLY_MODULES = {"fcntl", "resource", "termios", "pwd", "grp", "posix"}
PORTABLE = ROOT / "compiler" / "core" / "portable.py"


def _calls(tree: ast.AST, attribute: str) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute) and node.func.attr == attribute]


def test_posix_only_modules_are_imported_by_the_portable_module_alone() -> None:
    found = []
    for path in SOURCES:
        if path == PORTABLE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            found += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names
                      if n.split(".")[0] in POSIX_ONLY_MODULES]
    assert not found, found


def test_no_posix_only_call_outside_the_portable_module() -> None:
    """os.statvfs does not exist on Windows; os.kill(pid, 0) terminates the process there instead of probing it."""
    found = []
    for path in SOURCES:
        if path == PORTABLE:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found += [f"{path.relative_to(ROOT)}:{c.lineno} os.statvfs" for c in _calls(tree, "statvfs")]
        found += [f"{path.relative_to(ROOT)}:{c.lineno} os.kill(pid, 0)" for c in _calls(tree, "kill")
                  if len(c.args) == 2 and isinstance(c.args[1], ast.Constant) and c.args[1].value == 0]
    assert not found, found


def test_relative_paths_become_text_in_slash_form() -> None:
    """A manifest's file list, a checkpoint's content hash: str(path) writes backslashes on Windows, so a build
    made there would not read on a Mac and the same checkpoint would hash differently; as_posix() everywhere."""
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            value = (node.args[0] if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                     and node.func.id == "str" and node.args else
                     node.value if isinstance(node, ast.FormattedValue) else None)
            if (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
                    and value.func.attr == "relative_to"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} relative path as text without as_posix()")
    assert not found, found


def test_text_files_are_read_and_written_as_utf8() -> None:
    found = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        text_gzip = [c for c in _calls(tree, "open") if isinstance(c.func.value, ast.Name) and c.func.value.id == "gzip"
                     and len(c.args) > 1 and isinstance(c.args[1], ast.Constant) and "t" in str(c.args[1].value)]
        for call in _calls(tree, "read_text") + _calls(tree, "write_text") + text_gzip:
            if not any(k.arg == "encoding" for k in call.keywords):
                found.append(f"{path.relative_to(ROOT)}:{call.lineno} {call.func.attr} without encoding")
    assert not found, found


def test_an_exclusive_lock_is_refused_to_a_second_process(tmp_path: Path) -> None:
    lock = tmp_path / ".build.lock"
    with open(lock, "w") as held:
        portable.lock_exclusive(held)
        probe = textwrap.dedent(f"""
            from fusionc.core import portable
            with open({str(lock)!r}) as f:
                try:
                    portable.lock_exclusive(f)
                except OSError:
                    print("refused")
                else:
                    print("taken")
        """)
        assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "refused"
        portable.unlock(held)
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "taken"


def test_pid_alive_probes_without_signalling() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert portable.pid_alive(child.pid) and portable.pid_alive(child.pid)  # probing twice leaves it running
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()
    assert not portable.pid_alive(child.pid)
    assert portable.pid_alive(os.getpid())


def test_peak_memory_is_in_mib() -> None:
    """ru_maxrss is KiB on Linux and bytes on macOS: read in the wrong unit a peak is 1024x off, either below the
    interpreter's own size or above the machine's memory. (A peak is a high-water mark, and a child process starts
    with its parent's: a growth test would depend on what ran before.)"""
    peak = portable.peak_rss_mb()
    assert peak > 1  # MiB: at least the interpreter
    if "SC_PHYS_PAGES" in getattr(os, "sysconf_names", {}):
        assert peak < os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 20)


@pytest.mark.skipif(sys.platform == "win32", reason="Windows has no atomic swap of two paths: builds swap by two renames")
def test_two_folders_swap_in_one_step(tmp_path: Path) -> None:
    """How a new build replaces an old one: at every instant --out is one of the two (Linux and macOS)."""
    old, new = tmp_path / "out", tmp_path / ".out.tmp"
    for folder, text in ((old, "old"), (new, "new")):
        folder.mkdir()
        (folder / "manifest.json").write_text(text, encoding="utf-8")
    assert portable.exchange(new, old)
    assert (old / "manifest.json").read_text(encoding="utf-8") == "new"
    assert (new / "manifest.json").read_text(encoding="utf-8") == "old"


def test_a_checkpoint_hashes_alike_on_every_os(tmp_path: Path) -> None:
    """Files are hashed in case-sensitive path-component order, which Windows' own path order is not."""
    from fusionc.checkpoint import checkpoint_sha256

    for name in ("README.md", "a.txt", "unet/config.json", "unet.json", "B/x.bin"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(name.encode())
    expected = hashlib.sha256()
    for name in ("B/x.bin", "README.md", "a.txt", "unet/config.json", "unet.json"):  # by parts, uppercase first
        expected.update(name.encode() + name.encode())
    assert checkpoint_sha256(tmp_path) == expected.hexdigest()


def test_a_writable_folder_is_not_read_only(tmp_path: Path) -> None:
    assert not portable.read_only_file_system(tmp_path) and portable.free_bytes(tmp_path) > 0
    assert portable.available_memory() > 64 << 20  # how many QNN context builds run side by side


@pytest.mark.skipif(sys.platform != "win32", reason="Windows only: no C library loaded by name, no statvfs")
def test_windows_has_no_c_library_to_load_and_no_statvfs() -> None:
    assert portable.libc() is None and not portable.read_only_file_system(Path.cwd())


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX only: Windows has no C library loaded by name")
def test_posix_loads_the_c_library() -> None:
    assert portable.libc() is not None and hasattr(portable.libc(), "fflush")
