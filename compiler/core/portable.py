"""What differs between Linux, macOS and Windows, in one place: file locks, a process's peak memory, whether a
process is alive, read-only and full file systems, the libc.

The standard library has no portable form of these: `fcntl` and `resource` exist on POSIX only (importing either
stops fusionc on Windows, where Qualcomm's users are), `resource`'s ru_maxrss is KiB on Linux and bytes on macOS,
`os.kill(pid, 0)` terminates the process on Windows instead of probing it, and `os.statvfs` is POSIX only. Each
function here has a POSIX and a Windows branch (ctypes on kernel32 / psapi, msvcrt); psutil would cover some of it
but is not a dependency of a plain install.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import sys
from pathlib import Path
from typing import IO

WINDOWS = os.name == "nt"


def lock_exclusive(file: IO) -> None:
    """Take an exclusive lock on an open file without waiting; OSError when another process holds it."""
    if WINDOWS:
        import msvcrt

        file.seek(0)
        msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)  # the first byte (locking past the end is allowed)
    else:
        import fcntl

        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)


def unlock(file: IO) -> None:
    """Release lock_exclusive's lock (closing the file releases it too)."""
    if WINDOWS:
        import msvcrt

        file.seek(0)
        try:
            msvcrt.locking(file.fileno(), msvcrt.LK_UNLCK, 1)
        except OSError:  # not held by us: nothing to release
            pass
    else:
        import fcntl

        fcntl.flock(file, fcntl.LOCK_UN)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MiB."""
    if WINDOWS:
        return _windows_peak_working_set() / (1 << 20)
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024  # macOS: bytes; Linux: KiB


def _windows_peak_working_set() -> int:
    class Counters(ctypes.Structure):  # PROCESS_MEMORY_COUNTERS
        _fields_ = [("cb", ctypes.c_ulong), ("PageFaultCount", ctypes.c_ulong),
                    ("PeakWorkingSetSize", ctypes.c_size_t), ("WorkingSetSize", ctypes.c_size_t),
                    ("QuotaPeakPagedPoolUsage", ctypes.c_size_t), ("QuotaPagedPoolUsage", ctypes.c_size_t),
                    ("QuotaPeakNonPagedPoolUsage", ctypes.c_size_t), ("QuotaNonPagedPoolUsage", ctypes.c_size_t),
                    ("PagefileUsage", ctypes.c_size_t), ("PeakPagefileUsage", ctypes.c_size_t)]

    from ctypes import wintypes

    kernel32, psapi = ctypes.WinDLL("kernel32"), ctypes.WinDLL("psapi")
    kernel32.GetCurrentProcess.restype = wintypes.HANDLE  # the pseudo-handle -1: 64 bits, not a C int
    psapi.GetProcessMemoryInfo.argtypes = (wintypes.HANDLE, ctypes.POINTER(Counters), wintypes.DWORD)
    counters = Counters()
    counters.cb = ctypes.sizeof(Counters)
    if not psapi.GetProcessMemoryInfo(kernel32.GetCurrentProcess(), ctypes.byref(counters), counters.cb):
        return 0
    return int(counters.PeakWorkingSetSize)


def pid_alive(pid: int) -> bool:
    """Is process `pid` running? (Never signals it.)"""
    if WINDOWS:  # when unsure, alive: a caller removes the folders of a process it believes dead
        from ctypes import wintypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.OpenProcess.restype = wintypes.HANDLE
        kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
        kernel32.GetExitCodeProcess.argtypes = (wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD))
        kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.get_last_error() != 87  # ERROR_INVALID_PARAMETER: no such process; else (denied) alive
        try:
            code = wintypes.DWORD()
            if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
                return True
            return code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def available_memory() -> int:
    """Bytes of memory a new process could take without swapping: MemAvailable on Linux, the available physical
    memory on Windows (GlobalMemoryStatusEx), psutil's figure elsewhere; 0 when none of them answers."""
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    if WINDOWS:
        class Status(ctypes.Structure):  # MEMORYSTATUSEX
            _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                        ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                        ("ullTotalPageFile", ctypes.c_ulonglong), ("ullAvailPageFile", ctypes.c_ulonglong),
                        ("ullTotalVirtual", ctypes.c_ulonglong), ("ullAvailVirtual", ctypes.c_ulonglong),
                        ("ullAvailExtendedVirtual", ctypes.c_ulonglong)]

        status = Status()
        status.dwLength = ctypes.sizeof(Status)
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
            return int(status.ullAvailPhys)
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return 0


def read_only_file_system(folder: Path) -> bool:
    """True where the file system holding `folder` is mounted read-only (POSIX). Windows has no such call here: a
    read-only volume fails at the build's lock file instead, in one line (buildfs.atomic_build)."""
    if not hasattr(os, "statvfs"):
        return False
    return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)


def free_bytes(folder: Path) -> int:
    """Bytes an unprivileged process can still write on the file system holding `folder`."""
    return shutil.disk_usage(folder).free


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE, macOS renamex_np RENAME_SWAP); False
    where the OS or the file system has no such call (Windows, musl, some network file systems)."""
    c = libc()
    if c is None:
        return False
    if sys.platform == "darwin" and hasattr(c, "renamex_np"):
        return c.renamex_np(os.fsencode(a), os.fsencode(b), 0x2) == 0  # RENAME_SWAP
    if hasattr(c, "renameat2"):
        at_fdcwd, rename_exchange = -100, 2
        return c.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
    return False


def flush_c_stdio() -> None:
    """fflush(NULL): what native code left in the C runtime's stdout buffer is written to the current fd 1 now
    (POSIX: the C library; Windows: the universal C runtime the DLLs share)."""
    try:
        runtime = ctypes.CDLL("ucrtbase") if WINDOWS else libc()
    except OSError:  # no such runtime to load: nothing of it buffered
        return
    if runtime is not None:
        runtime.fflush(None)


def libc() -> ctypes.CDLL | None:
    """The C library (for fflush, malloc_trim, renameat2), or None where there is none to load (Windows)."""
    if WINDOWS:
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        name = ctypes.util.find_library("c")
        return ctypes.CDLL(name, use_errno=True) if name else None
