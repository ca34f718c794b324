"""The QNN execution provider as fusionc uses it: HTP context builds, emulator sessions, fallback reports.

onnxruntime-qnn 2.x is a *plugin* EP: the wheel ships `libonnxruntime_providers_qnn.so` plus the QNN
libraries (libQnnHtp.so, libHtpPrepare.so, ...), and onnxruntime only sees it after
`register_execution_provider_library`. Sessions then select it with `SessionOptions.add_provider_for_devices`
(the legacy `providers=["QNNExecutionProvider"]` list does not reach a plugin EP). On x86-64 Linux the HTP
backend prepares real context binaries for the chosen Hexagon architecture (`htp_arch`, `soc_model`) and
executes them in its HTP simulator, which is what `fusionc verify` runs.

No CPU fallback: every session sets `session.disable_cpu_ep_fallback=1`. When a graph still has a node the
HTP cannot take, onnxruntime only says "nodes are assigned to the default CPU EP"; the names and reasons are
in the EP's verbose log ("Validation FAILED for ... Node name: X ... REASON : ..."), so `fallback_report`
re-runs the partitioning with verbose logging on a captured stderr and parses it.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import onnxruntime as ort

from fusionc.core.errors import UnsupportedError
from fusionc.core.portable import flush_c_stdio

EP_NAME = "QNNExecutionProvider"
_registered = False


def qnn_devices() -> list[ort.OrtEpDevice]:
    """The OrtEpDevices of the QNN plugin EP (registers the library once per process)."""
    global _registered
    if not _registered:
        import onnxruntime_qnn

        if EP_NAME not in ort.get_available_providers():
            ort.register_execution_provider_library(EP_NAME, onnxruntime_qnn.get_library_path())
        _registered = True
    devices = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
    if not devices:
        raise UnsupportedError("the QNN execution provider found no device: reinstall onnxruntime-qnn")
    return devices


@dataclass(frozen=True)
class HtpConfig:
    """Where the HTP graph is prepared for: Hexagon arch number (73 = v73) and QNN soc_model id."""

    arch: str = "73"
    soc_model: int | None = 43
    fp16: bool = False  # enable_htp_fp16_precision: run float (non-QDQ) ops in fp16 instead of failing
    performance_mode: str = "burst"

    @staticmethod
    def from_device(device) -> "HtpConfig":  # device: fusionc.core.devices.Device | None
        if device is None or not device.hexagon_arch:
            return HtpConfig()
        return HtpConfig(arch=device.hexagon_arch.lstrip("v"), soc_model=device.soc_model)

    def provider_options(self) -> dict[str, str]:
        options = {"backend_type": "htp", "htp_arch": self.arch, "htp_performance_mode": self.performance_mode,
                   "enable_htp_fp16_precision": "1" if self.fp16 else "0"}
        if self.soc_model is not None:
            options["soc_model"] = str(self.soc_model)
        return options


def config_entries(context_path: Path | None = None) -> dict[str, str]:
    """Session config entries: the whole graph on the HTP; with context_path, also write an EP-context model."""
    entries = {"session.disable_cpu_ep_fallback": "1"}
    if context_path is not None:
        entries["ep.context_enable"] = "1"
        entries["ep.context_embed_mode"] = "0"  # .bin beside the .onnx: no 2 GB protobuf
        entries["ep.context_file_path"] = str(context_path)
    return entries


def session_options(config: HtpConfig, context_path: Path | None = None, verbose: bool = False) -> ort.SessionOptions:
    """Session options that put the whole graph on the HTP; with context_path, also write an EP-context model."""
    so = ort.SessionOptions()
    for key, value in config_entries(context_path).items():
        so.add_session_config_entry(key, value)
    so.log_severity_level = 0 if verbose else 3
    if verbose:
        so.log_verbosity_level = 0
    so.add_provider_for_devices(qnn_devices(), config.provider_options())
    return so


@dataclass
class FallbackNode:
    name: str
    op_type: str
    reason: str


_FAILED = re.compile(
    r"Validation FAILED for \d+ nodes in OrtNodeUnit \((?P<unit>[^)]*)\) :\s*(?P<body>.*?)(?=\n\S|\Z)", re.S)
_NODE = re.compile(r"Operator type: (?P<op>\S+) Node name: (?P<name>.*?) Node index")
_REASON = re.compile(r"REASON : (?P<reason>.*)")
_UNSUPPORTED = re.compile(r"\{ name: (?P<name>[^,]+), type: (?P<op>[^ }]+) \}")


@contextlib.contextmanager
def captured_fd(fd: int) -> Iterator[Path]:
    """Redirect a process-level file descriptor (what native code writes too) to a temp file, removed when the
    block ends (read it inside the block, after flush_c_stdio for what the C runtime still buffers)."""
    with tempfile.NamedTemporaryFile("w+b", suffix=".log", delete=False) as tmp:
        path = Path(tmp.name)
    saved = os.dup(fd)
    target = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.dup2(target, fd)
        yield path
    finally:
        flush_c_stdio()  # what native code left in the C runtime's buffer goes to the file, not the restored fd
        os.dup2(saved, fd)
        os.close(target)
        os.close(saved)
        path.unlink(missing_ok=True)


def captured_stderr() -> contextlib.AbstractContextManager[Path]:
    """Process-level stderr (fd 2, where onnxruntime's C++ logger writes) into a temp file: captured_fd(2)."""
    return captured_fd(2)


# The HTP backend's libraries print this on stdout when the first session of a process is created: noise for
# users and for `--json -` style output, so it is dropped (any other text written there is passed to stderr).
_NATIVE_BANNER = re.compile(r"^\s*#?\s*LIBNATIVE: No alternate configuration present\b")


@contextlib.contextmanager
def native_stdout_to_stderr() -> Iterator[None]:
    """Keep what native code writes on the process-level stdout (fd 1) inside the block off stdout: the known
    LIBNATIVE banner of the QNN libraries is dropped, any other text (an error the native code prints) is
    forwarded to stderr when the block ends, so it still reaches the user."""
    import sys

    sys.stdout.flush()  # what Python already printed goes out first, on stdout
    with captured_fd(1) as path:
        try:
            yield
        finally:
            flush_c_stdio()
            text = path.read_text(encoding="utf-8", errors="replace")
            rest = "".join(line for line in text.splitlines(keepends=True) if not _NATIVE_BANNER.match(line))
            if rest.strip():
                sys.stderr.write(rest if rest.endswith("\n") else rest + "\n")
                sys.stderr.flush()


def parse_fallback_log(text: str) -> list[FallbackNode]:
    """Nodes the QNN EP rejected, with its reason, from a verbose session log (last capability pass wins)."""
    found: dict[str, FallbackNode] = {}
    for match in _FAILED.finditer(text):
        body = match.group("body")
        reason = _REASON.search(body)
        why = reason.group("reason").strip() if reason else "rejected by the QNN EP"
        for node in _NODE.finditer(body):
            found[node.group("name")] = FallbackNode(node.group("name"), node.group("op"), why)
    for match in _UNSUPPORTED.finditer(text):  # the EP's summary line, when no validation detail was logged
        found.setdefault(match.group("name"), FallbackNode(match.group("name"), match.group("op"), "unsupported"))
    return list(found.values())


def fallback_report(model_path: Path, config: HtpConfig) -> list[FallbackNode]:
    """Partition `model_path` for the HTP with verbose logging; the nodes that would fall back to the CPU."""
    with native_stdout_to_stderr(), captured_stderr() as log:
        try:
            ort.InferenceSession(str(model_path), sess_options=session_options(config, verbose=True))
        except Exception:  # noqa: BLE001 - the log is what we want
            pass
        return parse_fallback_log(log.read_text(encoding="utf-8", errors="replace"))


def _fail(model_path: Path, config: HtpConfig, err: Exception) -> UnsupportedError:
    message = str(err).splitlines()[0] if str(err) else repr(err)
    if "fallback to CPU EP has been explicitly disabled" in message or "assigned to the default CPU EP" in message:
        nodes = fallback_report(model_path, config)
        ops = [n for n in nodes if n.op_type not in ("QuantizeLinear", "DequantizeLinear")] or nodes
        listed = "; ".join(f"{n.name} ({n.op_type}): {n.reason}" for n in ops[:10])
        more = f" and {len(ops) - 10} more" if len(ops) > 10 else ""
        qdq = len(nodes) - len(ops)
        around = f" (plus {qdq} Q/DQ nodes around them)" if qdq else ""
        return UnsupportedError(f"{len(ops)} node(s) of {model_path.name} cannot run on the HTP v{config.arch} "
                                f"and CPU fallback is disabled: {listed}{more}{around}")
    return UnsupportedError(f"the QNN HTP backend rejected {model_path.name} for v{config.arch}: {message}")


def compile_context(model_path: Path, context_path: Path, config: HtpConfig) -> list[Path]:
    """Build the EP-context model `context_path` (+ its external .bin) from a QDQ model; returns the files."""
    return compile_contexts(model_path, [(context_path, config)])[0]


def compile_contexts(model_path: Path, builds: list[tuple[Path, HtpConfig]], parallel: int = 1) -> list[list[Path]]:
    """Build one EP-context model per (context_path, config) from one QDQ model, `parallel` builds at a time
    (the devices of a fleet: one graph, one context per Hexagon arch); returns each build's files. Each
    context_path needs a folder of its own: a build's .bin files are the ones that appear there.

    Every build runs in a fresh process (targets/qnn/context_child.py): the QNN backend writes per-process object
    numbers and uninitialized heap memory into the .bin, so only a fresh process (with new heap blocks zeroed)
    gives the same bytes for the same graph every time, whatever ran before in this one. After a failure the
    builds still running finish, none is started, and the first failure is raised."""
    import json
    import subprocess
    import sys

    source = Path(model_path).resolve()
    # From bytes when it can: onnxruntime names the context's graph after a hash of the model's path (a temporary
    # folder), and from bytes after the graph itself, so the same model gives the same .onnx and .bin every time.
    in_memory = not source.with_name(source.name + ".data").exists() and source.stat().st_size < (1 << 30)
    child = Path(__file__).with_name("context_child.py")
    with tempfile.TemporaryDirectory(prefix="fusionc-qnn-") as scratch:
        waiting = list(enumerate(builds))
        running: list[tuple[int, subprocess.Popen, Path, set[Path]]] = []
        done: dict[int, list[Path]] = {}
        failure: Exception | None = None
        while waiting or running:
            while waiting and len(running) < max(1, parallel) and failure is None:
                index, (context_path, config) = waiting.pop(0)
                context_path = Path(context_path)
                context_path.unlink(missing_ok=True)
                before = set(context_path.parent.glob("*.bin"))
                request = {"source": str(source), "from_bytes": in_memory,
                           "config_entries": config_entries(context_path.resolve()),
                           "provider_options": config.provider_options(), "log_severity_level": 3,
                           "parent_pid": os.getpid()}
                request_path = Path(scratch) / f"request{index}.json"
                request_path.write_text(json.dumps(request), encoding="utf-8")
                process = subprocess.Popen([sys.executable, str(child), str(request_path)], stdout=subprocess.DEVNULL,
                                           stderr=subprocess.PIPE, text=True, errors="replace")  # no preexec_fn: threads
                running.append((index, process, context_path, before))
            if failure is not None:
                waiting.clear()
            if not running:
                break
            index, process, context_path, before = running.pop(0)  # builds take about the same time: wait in order
            stderr = process.communicate()[1]
            config = builds[index][1]
            try:
                done[index] = _built_files(Path(model_path), context_path, config, process.returncode, stderr, before)
            except Exception as err:  # noqa: BLE001 - raised after the running builds end
                failure = failure or err
        if failure is not None:
            raise failure
    return [done[i] for i in range(len(builds))]


def _built_files(model_path: Path, context_path: Path, config: HtpConfig, returncode: int, stderr: str,
                 before: set[Path]) -> list[Path]:
    if returncode != 0:
        lines = [line for line in stderr.splitlines() if line.startswith("FUSIONC-ERROR: ")]
        message = lines[-1][len("FUSIONC-ERROR: "):] if lines else (
            f"the context build process exited with {returncode}: {(stderr.strip().splitlines() or [''])[-1]}")
        full = disk_full(context_path.parent, model_path)
        if full:
            raise UnsupportedError(f"{full} (the QNN EP said: {message})") from None
        raise _fail(model_path, config, RuntimeError(message)) from None
    if not context_path.exists():
        raise UnsupportedError(f"the QNN EP wrote no context model for {model_path.name}")
    bins = sorted(set(context_path.parent.glob("*.bin")) - before) or sorted(context_path.parent.glob(
        f"{context_path.stem}*.bin"))
    return [context_path, *bins]


def disk_full(folder: Path, model_path: Path) -> str | None:
    """The message for a context build that failed for want of disk space (the QNN EP only says it could not
    write its file), or None when `folder`'s disk has room for a context as large as the model's weights."""
    import shutil

    model_path = Path(model_path)
    needed = sum(p.stat().st_size for p in (model_path, model_path.with_name(model_path.name + ".data")) if p.exists())
    free = shutil.disk_usage(folder).free
    if free >= needed:
        return None
    return (f"the disk holding {folder} is full ({free / 1e6:.0f} MB free, the context needs about "
            f"{needed / 1e6:.0f} MB): free space there, or compile with --out on a larger disk")


def load_context(context_path: Path, config: HtpConfig | None = None) -> ort.InferenceSession:
    """An HTP session over a compiled EP-context model (the emulator on x86-64, the NPU on a device)."""
    config = config or HtpConfig(soc_model=None)
    try:
        with native_stdout_to_stderr(), captured_stderr():  # stdout stays the command's (the banner dropped)
            return ort.InferenceSession(str(context_path), sess_options=session_options(config))
    except Exception as err:  # noqa: BLE001
        raise _fail(Path(context_path), config, err) from None
