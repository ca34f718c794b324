"""fusionc installs where its users are: resolve pyproject.toml + constraints.txt for each platform with uv.

`uv pip compile --python-platform` resolves for another OS and CPU with that platform's markers and wheel tags
(pip's --platform keeps this machine's markers and drags Linux CUDA packages into a Windows resolution), so a
new pin or range that leaves a platform without wheels fails here, not on a user's machine. The pinned CI
versions (constraints.txt) are the ones checked. Skipped, with the reason, without uv or without the network.
Run by hand: python -m pytest -q tests/test_install_platforms.py
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NETWORK_ERRORS = re.compile(r"error sending request|dns error|Failed to fetch|Could not connect|timed out|"
                            r"connection (refused|reset)|Network is unreachable|offline", re.I)

# (platform, uv's --python-platform, the extra users there install, packages that must be in / out, extra env)
PLATFORMS = [
    # macOS 14 is the oldest macOS torch has arm64 wheels for
    ("macOS arm64", "aarch64-apple-darwin", "coreml", {"coremltools", "torch"}, {"onnxruntime-qnn"},
     {"MACOSX_DEPLOYMENT_TARGET": "14.0"}),
    ("Windows x64", "x86_64-pc-windows-msvc", "qnn", {"onnxruntime-qnn", "torch"}, {"coremltools"}, {}),
    ("Linux x86-64", "x86_64-manylinux_2_35", "all", {"coremltools", "onnxruntime-qnn", "torch"}, set(), {}),
    ("Linux aarch64", "aarch64-unknown-linux-gnu", None, {"torch", "onnxruntime"}, {"coremltools", "onnxruntime-qnn"},
     {}),
]
WINDOWS_ARM64 = "aarch64-pc-windows-msvc"


def uv() -> list[str]:
    if shutil.which("uv"):
        return [shutil.which("uv")]
    try:
        import uv as uv_module  # the uv wheel ([test] extra) ships the binary

        return [uv_module.find_uv_bin()]
    except (ImportError, FileNotFoundError):
        pytest.skip("uv is not installed (pip install uv, or the [test] extra): cannot resolve for other platforms")


def resolve(platform: str, extra: str | None, env: dict[str, str], overrides: Path | None = None
            ) -> subprocess.CompletedProcess:
    cmd = [*uv(), "pip", "compile", str(ROOT / "pyproject.toml"), "-c", str(ROOT / "constraints.txt"),
           "--python-platform", platform, "--python-version", "3.11", "--no-header", "--no-annotate", "--quiet"]
    cmd += ["--extra", extra] if extra else []
    cmd += ["--override", str(overrides)] if overrides else []
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=90,
                                env={**os.environ, "UV_HTTP_TIMEOUT": "30", **env})
    except subprocess.TimeoutExpired:
        pytest.skip(f"uv pip compile for {platform} took over 90 s (the package index is slow or unreachable)")
    if result.returncode != 0 and NETWORK_ERRORS.search(result.stderr):
        pytest.skip(f"the package index is unreachable: {result.stderr.strip().splitlines()[-1][:200]}")
    return result


def pinned(output: str) -> dict[str, str]:
    return dict(line.split("==", 1) for line in output.splitlines() if "==" in line and not line.startswith("#"))


@pytest.mark.parametrize("name, platform, extra, present, absent, env", PLATFORMS, ids=[p[0] for p in PLATFORMS])
def test_install_resolves_on(name: str, platform: str, extra: str | None, present: set[str], absent: set[str],
                             env: dict[str, str]) -> None:
    result = resolve(platform, extra, env)
    assert result.returncode == 0, f"fusionc{f'[{extra}]' if extra else ''} does not resolve on {name}:\n{result.stderr}"
    packages = pinned(result.stdout)
    assert present <= set(packages), f"{name}: missing {present - set(packages)}"
    assert not absent & set(packages), f"{name}: {absent & set(packages)} would be installed"
    if "linux" not in platform:
        assert not [p for p in packages if p.startswith("nvidia-")], f"{name}: CUDA packages in a non-Linux install"


def test_windows_arm64_everything_but_torch_resolves(tmp_path: Path) -> None:
    """torch publishes no win_arm64 wheel, so a native arm64 Python cannot install fusionc (the README says so and
    sends Windows-on-Snapdragon users to the x64 Python, which Windows runs emulated). Everything else must
    resolve natively, onnxruntime-qnn included, so only torch stands between them and a native install."""
    overrides = tmp_path / "overrides.txt"
    overrides.write_text("torch ; sys_platform == 'never'\n")  # uv drops a requirement whose marker is never true
    result = resolve(WINDOWS_ARM64, "qnn", {}, overrides)
    assert result.returncode == 0, result.stderr
    packages = pinned(result.stdout)
    assert "onnxruntime-qnn" in packages and "torch" not in packages
    native = resolve(WINDOWS_ARM64, "qnn", {})
    if native.returncode == 0:
        pytest.skip("torch now resolves on Windows arm64: update the README's Windows-on-Snapdragon install line")
    assert "torch" in native.stderr and "win_arm64" in native.stderr, native.stderr
