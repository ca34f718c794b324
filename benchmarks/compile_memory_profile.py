"""Where a compile holds memory: resident set size per stage and per pass of one `fusionc compile`, in-process.

A sampler thread reads the process's RSS every 0.2 s; the driver's stages (`fusionc.pipeline.stage`) and every
pass (`fusionc.pipeline.run_passes`) are wrapped to mark their start and end, so each row gets the RSS at its
start, its end and its peak. This is how the SDXL Core ML compile's memory was located before it was changed
(README "SDXL at full size"): run it on a smaller UNet of the same structure (the SD-1.5 one) and scale.

    /work/tools/heavy python benchmarks/compile_memory_profile.py --checkpoint /work/ckpt/sd15/unet --out benchmarks/work/prof \\
        --json benchmarks/results/compile_memory_sd15_coreml.json -- --target coreml --palettize 4 --chunk auto

Arguments after `--` are passed to `fusionc compile`. The JSON is rewritten after the compile (also when it fails).
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
        self.period, self.running = period, True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            now = time.perf_counter()
            self.samples.append((now, rss_bytes()))
            self.anon.append((now, anon_bytes()))
            time.sleep(self.period)

    def peak(self, start: float, end: float, anon: bool = False) -> int:
        inside = [r for t, r in (self.anon if anon else self.samples) if start <= t <= end]
        return max(inside + [(anon_bytes() if anon else rss_bytes()) if not inside else 0])


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
                     "peak_mb": sampler.peak(start, end) >> 20, "peak_anon_mb": sampler.peak(start, end, True) >> 20})
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
    every = max(1, len(sampler.samples) // 200)  # a coarse timeline: what no stage row covers shows here too
    record["timeline_s_mb"] = [[round(t - start_all, 1), r >> 20] for t, r in sampler.samples[::every]]
    record["load_average_after"] = os.getloadavg()[0]
    write()
    sys.exit(record["exit"] if isinstance(record["exit"], int) else 1)


if __name__ == "__main__":
    main()
