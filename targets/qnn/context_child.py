"""Build one QNN EP-context model in a fresh process: the script fusionc.targets.qnn.ep.compile_context runs.

    python context_child.py REQUEST.json      (a file path, not a module: it imports onnxruntime only)

REQUEST.json: {"source": model path, "from_bytes": bool, "config_entries": {key: value}, "provider_options":
{...}, "log_severity_level": int, "parent_pid": int}. Exit 0 when onnxruntime wrote the context model named in config_entries;
otherwise the error's text on stderr and exit 1.

Why a process of its own: the QNN HTP backend writes state of the process into the context binary. It
numbers its objects per process (a second context built in one process differs from the first in those
numbers), and it writes heap memory it never initialized (padding: pointers and stale data). A fresh process
per build, with glibc filling every new heap block with zeros (M_PERTURB), gives the same .bin for the same
QDQ graph, device and options, whatever the compile did before (a fleet, a plain compile, a Ray worker).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from pathlib import Path

EP_NAME = "QNNExecutionProvider"
M_PERTURB, PERTURB_BYTE = -6, 0xFF  # glibc: new blocks filled with ~0xff = 0, freed blocks with 0xff


def zero_new_heap_blocks() -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").mallopt(M_PERTURB, PERTURB_BYTE)
        except (OSError, AttributeError):
            pass


def die_with_parent(parent_pid: int) -> None:
    """Linux: be killed when the compile that started this build dies (SIGKILL included), not build on."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            sys.exit(1)


def main(request_path: str) -> int:
    zero_new_heap_blocks()
    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    die_with_parent(request["parent_pid"])
    import onnxruntime as ort
    import onnxruntime_qnn

    if EP_NAME not in ort.get_available_providers():
        ort.register_execution_provider_library(EP_NAME, onnxruntime_qnn.get_library_path())
    devices = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
    if not devices:
        print("the QNN execution provider found no device: reinstall onnxruntime-qnn", file=sys.stderr)
        return 1
    options = ort.SessionOptions()
    options.log_severity_level = request["log_severity_level"]
    for key, value in request["config_entries"].items():
        options.add_session_config_entry(key, value)
    options.add_provider_for_devices(devices, request["provider_options"])
    source = Path(request["source"])
    try:
        ort.InferenceSession(source.read_bytes() if request["from_bytes"] else str(source), sess_options=options)
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own Fail/RuntimeException types
        print(f"FUSIONC-ERROR: {str(err).splitlines()[0] if str(err) else repr(err)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
