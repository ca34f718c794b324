"""Where a compile holds memory: resident set size per stage and per pass of one `fusionc compile`, in-process.

A sampler thread reads the process's RSS every 0.2 s; the driver's stages (`fusionc.pipeline.stage`) and every
pass (`fusionc.pipeline.run_passes`) are wrapped to mark their start and end, so each row gets the RSS at its
start, its end and its peak. This is how the SDXL Core ML compile's memory was located before it was changed
(README "SDXL at full size"): run it on a smaller UNet of the same structure (the SD-1.5 one) and scale.

    /work/tools/heavy python benchmarks/compile_memory_profile.py --checkpoint /work/ckpt/sd15/unet --out benchmarks/work/prof \\
        --json benchmarks/results/compile_memory_sd15_coreml.json -- --target coreml --palettize 4 --chunk auto

Arguments after `--` are passed to `fusionc compile`. The JSON is rewritten after the compile (also when it fails).

Each row also has the *process tree's* peak (`peak_tree_mb`, `peak_tree_anon_mb`: this process plus its children,
e.g. the QNN context build's child process, targets/qnn/context_child.py) and, under a QNN lowering, `step` rows
for the target's own steps (calibration, remedies, quantize, split, save, context build; whichever of
`QNN_STEPS` the code has). Rows are nested by time: a stage's peak covers the steps inside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


def tree_bytes() -> tuple[int, int]:
    """RSS and anonymous RSS of this process plus all its descendants (a child's peak counts while it runs)."""
    import psutil

    me = psutil.Process()
    total, anon = rss_bytes(), anon_bytes()
    try:
        children = me.children(recursive=True)
    except psutil.Error:
        return total, anon
    for child in children:
        try:
            with open(f"/proc/{child.pid}/status") as handle:
                fields = {x.split(":")[0]: int(x.split()[1]) << 10 for x in handle
                          if x.startswith(("VmRSS:", "RssAnon:"))}
            total, anon = total + fields.get("VmRSS", 0), anon + fields.get("RssAnon", 0)
        except (OSError, ValueError):
            pass
    return total, anon


# (module, attribute) of the QNN target's steps: each call becomes a `step` row (missing names are skipped, so the
# script measures revisions before and after a refactor of targets/qnn alike)
QNN_STEPS = [("fusionc.targets.qnn.build", name) for name in (
    "save_float", "calibrate", "quantize", "build_plan", "split_float_model", "quantize_part",
    "quantize_parts", "save_model", "compile_context", "merged_encodings")] + [
    ("fusionc.targets.qnn.remedies", "choose_config"), ("fusionc.targets.qnn.shared", "compile_contexts")]


def anon_bytes() -> int:
    """RSS without file-backed pages (memory-mapped weights the kernel can drop): what can run memory out."""
    with open("/proc/self/statm") as handle:
        fields = handle.read().split()
    return (int(fields[1]) - int(fields[2])) * PAGE


class Sampler:
    """RSS every `period` seconds; `window(start, end)` gives the peak between two marks."""

    def __init__(self, period: float = 0.2) -> None:
        self.samples: list[tuple[float, int]] = []
        self.anon: list[tuple[float, int]] = []
        self.tree: list[tuple[float, int]] = []
        self.tree_anon: list[tuple[float, int]] = []
        self.period, self.running = period, True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            now = time.perf_counter()
            self.samples.append((now, rss_bytes()))
            self.anon.append((now, anon_bytes()))
            tree, tree_anon = tree_bytes()
            self.tree.append((now, tree))
            self.tree_anon.append((now, tree_anon))
            time.sleep(self.period)

    def peak(self, start: float, end: float, anon: bool = False, tree: bool = False) -> int:
        series = (self.tree_anon if anon else self.tree) if tree else (self.anon if anon else self.samples)
        inside = [r for t, r in list(series) if start <= t <= end]
        if inside:
            return max(inside)
        if tree:
            return tree_bytes()[1 if anon else 0]
        return anon_bytes() if anon else rss_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the built-in tiny pipeline")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("compile_args", nargs="*")
    args = parser.parse_args()

    checkpoint = [str(args.checkpoint)] if args.checkpoint else []
    import fusionc
    import fusionc.pipeline as pipeline
    from fusionc.cli import main as cli_main

    source = Path(fusionc.__file__).resolve().parent.parent  # the checkout whose code is measured (may be main)

    sampler = Sampler()
    rows: list[dict[str, Any]] = []
    record: dict[str, Any] = {
        "benchmark": "compile_memory_profile", "checkpoint": str(args.checkpoint or "builtin"),
        "git_rev": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                  cwd=source).stdout.strip(),
        "fusionc_source": str(source),
        "command": ["fusionc", "compile", *checkpoint, "--out", str(args.out), *args.compile_args],
        "load_average_before": os.getloadavg()[0], "rows": rows}
    start_all = time.perf_counter()
    args.json.parent.mkdir(parents=True, exist_ok=True)

    def write() -> None:
        args.json.write_text(json.dumps(record, indent=1) + "\n")

    def row(kind: str, name: str, start: float, rss_start: int) -> None:
        end = time.perf_counter()
        rows.append({"kind": kind, "name": name, "start_s": round(start - start_all, 1), "seconds": round(end - start, 2),
                     "rss_start_mb": rss_start >> 20, "rss_end_mb": rss_bytes() >> 20,
                     "peak_mb": sampler.peak(start, end) >> 20, "peak_anon_mb": sampler.peak(start, end, True) >> 20,
                     "peak_tree_mb": sampler.peak(start, end, tree=True) >> 20,
                     "peak_tree_anon_mb": sampler.peak(start, end, True, True) >> 20})
        print(f"[profile] {kind} {name}: {rows[-1]}", file=sys.stderr, flush=True)
        write()  # a run killed later keeps the rows it reached

    original_stage = pipeline.stage

    @contextmanager
    def stage(name: str, timings: Any = None, quiet: bool = False) -> Iterator[None]:
        start, rss = time.perf_counter(), rss_bytes()
        try:
            with original_stage(name, timings, quiet):
                yield
        finally:
            row("stage", name, start, rss)

    def run_passes(model: Any, entries: list, ctx: Any) -> list:
        records = []
        for entry in entries:
            start, rss = time.perf_counter(), rss_bytes()
            done = original_run_passes(model, [entry], ctx)
            records += done
            if done:  # an entry the options switch off records nothing
                row("pass", done[-1].name, start, rss)
        return records

    original_run_passes = pipeline.run_passes
    pipeline.stage, pipeline.run_passes = stage, run_passes

    def wrap_step(function: Any, name: str) -> Any:
        def step(*a: Any, **k: Any) -> Any:
            start, rss = time.perf_counter(), rss_bytes()
            try:
                return function(*a, **k)
            finally:
                row("step", name, start, rss)
        return step

    import importlib

    child_peaks: list[dict[str, Any]] = []
    record["context_build_children"] = child_peaks
    original_run = subprocess.run

    def run_measured(command: Any, *a: Any, **k: Any) -> Any:
        """subprocess.run, and for a QNN context build the child's own peak RSS: its VmHWM (the kernel's high-water
        mark of the child's own memory since its exec), read every 0.1 s while it runs. Not wait4's ru_maxrss:
        Linux carries the parent's high-water mark across fork/exec into it (every build of one compile reported
        the compile's own 3.1 GB peak)."""
        if not (isinstance(command, list) and len(command) > 1 and str(command[1]).endswith("context_child.py")):
            return original_run(command, *a, **k)
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=k.get("text", False),
                                errors=k.get("errors"))
        out: dict[str, Any] = {}
        readers = [threading.Thread(target=lambda n=n, f=f: out.__setitem__(n, f.read()), daemon=True)
                   for n, f in (("stdout", proc.stdout), ("stderr", proc.stderr))]
        for reader in readers:
            reader.start()
        hwm = 0
        while proc.poll() is None:
            try:
                with open(f"/proc/{proc.pid}/status") as handle:
                    hwm = max(hwm, next(int(x.split()[1]) << 10 for x in handle if x.startswith("VmHWM:")))
            except (OSError, StopIteration, ValueError):
                pass
            time.sleep(0.1)
        for reader in readers:
            reader.join()
        child_peaks.append({"request": str(command[2]), "seconds": round(time.perf_counter() - start, 2),
                            "peak_vmhwm_mb": hwm >> 20, "exit": proc.returncode})
        return subprocess.CompletedProcess(command, proc.returncode, out.get("stdout"), out.get("stderr"))

    subprocess.run = run_measured

    for module_name, attr in QNN_STEPS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if callable(getattr(module, attr, None)):
            setattr(module, attr, wrap_step(getattr(module, attr), attr))
    try:
        cli_main(["compile", *checkpoint, "--out", str(args.out), *args.compile_args], standalone_mode=False)
        record["exit"] = 0
    except SystemExit as stop:
        record["exit"] = stop.code
    except Exception:  # noqa: BLE001 - recorded, the profile up to the failure is what matters
        record["exit"] = "exception"
        record["error"] = traceback.format_exc()[-2000:]
    sampler.running = False
    record["wall_s"] = round(time.perf_counter() - start_all, 1)
    record["peak_rss_mb"] = max(r for _, r in sampler.samples) >> 20
    record["peak_anon_mb"] = max(r for _, r in sampler.anon) >> 20
    record["peak_tree_mb"] = max(r for _, r in sampler.tree) >> 20
    record["peak_tree_anon_mb"] = max(r for _, r in sampler.tree_anon) >> 20
    import resource

    # the largest child's ru_maxrss, which Linux floors at this process's own high-water mark when the child execs
    record["peak_child_ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss >> 10
    every = max(1, len(sampler.samples) // 200)  # a coarse timeline: what no stage row covers shows here too
    record["timeline_s_mb"] = [[round(t - start_all, 1), r >> 20] for t, r in sampler.samples[::every]]
    record["timeline_tree_s_mb"] = [[round(t - start_all, 1), r >> 20] for t, r in sampler.tree[::every]]
    record["load_average_after"] = os.getloadavg()[0]
    write()
    sys.exit(record["exit"] if isinstance(record["exit"], int) else 1)


if __name__ == "__main__":
    main()
