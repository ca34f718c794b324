"""Targets: each lowers the optimized ONNX of a component into device artifacts (see base.Target).

The onnx target needs only the core install. The coreml and qnn targets need their extras (pyproject.toml):
`get_target` checks the extra is importable and otherwise refuses in one line that names the pip command, so a
core install never meets an ImportError traceback.
"""

from __future__ import annotations

import importlib
import logging

from fusionc.core.errors import BadInputError

TARGET_NAMES = ("onnx", "coreml", "qnn")
# target -> (module it cannot work without, its distribution, the fusionc extra that installs it)
TARGET_EXTRAS = {"coreml": ("coremltools", "coremltools", "coreml"),
                 "qnn": ("onnxruntime_qnn", "onnxruntime-qnn", "qnn")}


class MissingExtraError(BadInputError):
    """A command needs an optional dependency that is not installed (exit 2, naming the pip command)."""


def require_extra(target: str, purpose: str | None = None) -> None:
    """Raise MissingExtraError unless the target's extra is importable. `purpose`: what needs it, for the message
    (default `--target NAME`)."""
    if target not in TARGET_EXTRAS:
        return
    module, dist, extra = TARGET_EXTRAS[target]
    try:
        _import_quietly(module)
    except ImportError:
        raise MissingExtraError(f"{purpose or '--target ' + target} needs {dist}: pip install 'fusionc[{extra}]'") \
            from None


def _import_quietly(module: str) -> None:
    """Import `module` with its own logger at ERROR meanwhile: coremltools logs 8 warnings on import that concern
    what fusionc does not use (its torch frontend's tested versions; the macOS-only native library, absent on Linux,
    where fusionc's MIL executor runs the model) and would bury a command's one-line error."""
    logger = logging.getLogger(module)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        importlib.import_module(module)
    finally:
        logger.setLevel(level)


def get_target(name: str, purpose: str | None = None):
    """The Target object of `name` (imported lazily: coremltools and the QNN EP are slow to import)."""
    if name not in TARGET_NAMES:
        raise BadInputError(f"unknown target '{name}': choose one of {', '.join(TARGET_NAMES)}")
    require_extra(name, purpose)
    module = importlib.import_module(f"fusionc.targets.{name}")
    return module.TARGET


def verification_runner(target, build_dir, name: str, manifest: dict, options):
    """The runner a component's PSNR is measured with: the target's own `runner`, or the cheaper stand-in the
    options ask for where the target has one (`verification_runner`: qnn's --qnn-verify-runtime cpu)."""
    own = getattr(target, "verification_runner", None)
    return own(build_dir, name, manifest, options) if own is not None else target.runner(build_dir, name, manifest)
