"""`fusionc bench` and `fusionc devices`: measured and estimated latency per component, backend and device.

Users pick a backend, a compression level and a step count by latency, so bench keeps two kinds of figures apart:
- measured: run here, median and spread over repeated calls after warm-up, on the runtimes present: onnxruntime
  CPU for onnx builds (and fake-quant graphs), the target's runner for qnn builds (on x86 that is the HTP emulator:
  labelled so, never a device figure), Core ML `predict` on macOS only, and an Android device over adb with
  onnxruntime_perf_test + the QNN EP when one is attached (detected, never assumed);
- estimated: fusionc.analysis.costmodel on the component's compiled graph for each device profile of the build's target
  (every profile for a portable onnx build).
The end-to-end budget adds text encoder calls (two with guidance), steps x UNet and one VAE decode per backend and
device, and names the component to shrink first and by how much. A figure is one call of the compiled graph at
its own batch: a guided step is one batch-2 call of a dynamic graph, or two calls of a static batch-1 graph
(every QNN context), and the budget counts the calls.
"""

from __future__ import annotations

import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fusionc import __version__
from fusionc.core.devices import DEVICES, Device
from fusionc.core.errors import BadInputError
from fusionc.core.generation import PIPELINE_ORDER, STEP_MODELS, calls_per_image, guided_batch  # one accounting


@dataclass
class Figure:
    component: str
    backend: str  # ort-cpu (host) | qnn-htp-emulator (host) | coreml (host) | adb:<serial> | coreml/ne | qnn/htp
    device: str  # "host" for measured-here figures, else a device profile name
    kind: str  # measured | estimated
    batch: int
    median_ms: float
    spread_ms: float = 0.0  # measured: interquartile range (max - min under 4 runs)
    runs: int = 0
    device_figure: bool = True  # False for host-side emulators whose time says nothing about a phone
    calls: int = 1  # graph calls per pipeline invocation: a guided step on a static batch-1 graph (QNN) is 2
    detail: dict[str, Any] = field(default_factory=dict)


def synthetic_feeds(spec: dict[str, dict[str, Any]], batch: int) -> dict[str, np.ndarray]:
    """Random inputs matching a manifest interface; symbolic dims become `batch`."""
    rng = np.random.default_rng(0)
    feeds = {}
    for name, info in spec.items():
        shape = [d if isinstance(d, int) else batch for d in info["shape"]]
        if name == "timestep":
            feeds[name] = np.array([500.0] * max(1, int(np.prod(shape))), dtype=np.float32).reshape(shape)
        elif "int" in str(info.get("dtype")):
            feeds[name] = rng.integers(0, 32, size=shape).astype(np.int64 if "64" in info["dtype"] else np.int32)
        else:
            feeds[name] = rng.standard_normal(shape).astype(np.float16 if "16" in str(info.get("dtype")) else np.float32)
    return feeds


def time_calls(call: Callable[[], Any], runs: int, warmup: int, max_seconds: float = 30.0) -> tuple[float, float, int]:
    """(median ms, spread ms, runs done): warm-up calls, then up to `runs` timed calls (at least 3, time permitting)."""
    for _ in range(warmup):
        call()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs and (len(times) < 3 or time.perf_counter() - start < max_seconds):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000)
    if len(times) >= 4:
        q = statistics.quantiles(times, n=4)
        spread = q[2] - q[0]
    else:
        spread = max(times) - min(times)
    return statistics.median(times), spread, len(times)


def call_shape(name: str, comp: dict[str, Any], guidance: bool) -> tuple[int, int]:
    """(batch of one graph call, calls per invocation) for a component of a build: a batch-1 QNN UNet runs
    twice per guided step, a dynamic-batch graph once at batch 2."""
    from fusionc.gates import graph_calls, static_batch

    return graph_calls(guided_batch(name, guidance), static_batch(s["shape"] for s in comp["inputs"].values()))


def measure_build(build: Path, manifest: dict[str, Any], guidance: bool, runs: int, warmup: int,
                  emulator: bool = False) -> list[Figure]:
    """Measured figures for every component on the runtimes present: ONNX Runtime's CPU, Core ML on macOS, the HTP
    emulator when asked (`emulator`: its time is no device figure, and one call of an SD-1.5 UNet takes hours), an
    adb-attached phone."""
    from fusionc.targets import MissingExtraError, get_target

    target_name = manifest["target"]
    if target_name == "coreml" and platform.system() != "Darwin":
        return []  # the MIL executor's CPU time is no Core ML device figure; predict needs macOS (estimates only)
    if target_name == "qnn" and not emulator:
        return measure_adb(build, manifest, guidance, runs)
    try:
        target = get_target(target_name, f"measuring a {target_name} build")
    except MissingExtraError as err:  # the core install still estimates every build
        print(f"fusionc bench: {build}: not measured: {err}; estimates only", file=sys.stderr)
        return []
    backend = {"onnx": "ort-cpu", "qnn": "qnn-htp-emulator", "coreml": "coreml"}[target_name]
    figures = []
    for name, comp in manifest["components"].items():
        if name not in PIPELINE_ORDER:
            continue
        batch, calls = call_shape(name, comp, guidance)
        runner = target.runner(build, name, manifest)
        # Core ML: the artifact's own names, shapes and dtypes (manifest inputs), every chunk in turn, as the app runs it
        call = runner.run_artifact if target_name == "coreml" else runner
        feeds = synthetic_feeds(comp["inputs"], batch)
        median, spread, done = time_calls(lambda: call(feeds), runs, warmup)
        detail: dict[str, Any] = {"host": platform.processor() or platform.machine()}
        if target_name == "coreml":
            detail.update(runtime="MLModel.predict", compute_units=comp.get("coreml", {}).get("compute_units"),
                          chunks=comp.get("coreml", {}).get("chunks", 1))
        figures.append(Figure(name, backend, "host", "measured", batch, median, spread, done,
                              device_figure=target_name != "qnn", calls=calls, detail=detail))
    figures += measure_adb(build, manifest, guidance, runs)
    return figures


PHONE_CPU_THREADS = 4  # intra-op threads on a phone: its big (prime + performance) cores, as the CPU profiles count


def adb_devices() -> list[str]:
    """Serials of attached Android devices (empty when adb is missing or nothing is attached)."""
    if shutil.which("adb") is None:
        return []
    try:
        out = subprocess.run(["adb", "devices"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.split()[0] for line in out.splitlines()[1:] if line.strip().endswith("device")]


ADB_ROOT = "/data/local/tmp"  # onnxruntime_perf_test, libQnnHtp.so and friends are pushed here beforehand
FALLBACK_OFF = "session.disable_cpu_ep_fallback|1"  # a node the HTP cannot run fails the run instead of timing the CPU


def context_files(build: Path, name: str, comp: dict[str, Any]) -> list[list[Path]]:
    """Per context of a qnn component (several when split), the EP-context model and the .bin files it names."""
    import onnx

    groups = []
    for rel in comp.get("context_parts") or [f"{name}/model_ctx.onnx"]:
        model = build / rel
        if not model.is_file():
            return []
        proto = onnx.load(str(model), load_external_data=False)
        bins = [model.parent / attr.s.decode() for node in proto.graph.node if node.op_type == "EPContext"
                for attr in node.attribute if attr.name == "ep_cache_context"]
        groups.append([model, *bins])
    return groups


def _perf_ms(output: str) -> tuple[float, str] | None:
    """onnxruntime_perf_test's median (P50, seconds) or, from older builds, its mean (ms)."""
    for line in output.splitlines():
        if line.strip().startswith("P50 Latency"):
            return float(line.split(":")[-1].strip().split()[0]) * 1000, "median (P50, onnxruntime_perf_test)"
    for line in output.splitlines():
        if "Average inference time cost" in line:
            return float(line.split(":")[-1].strip().split()[0]), "mean (onnxruntime_perf_test)"
    return None


def phone_files(build: Path, name: str, comp: dict[str, Any], target: str) -> list[list[Path]]:
    """What runs on the phone, per graph: a qnn build's contexts (never model.qdq.onnx), an onnx build's
    model.onnx with its external data."""
    if target == "qnn":
        return context_files(build, name, comp)
    models = [build / f for f in comp["files"] if f.endswith("model.onnx")]
    if not models or not models[0].is_file():
        return []
    return [[models[0], *[build / f for f in comp["files"] if f.endswith("model.onnx.data")]]]


def measure_adb(build: Path, manifest: dict[str, Any], guidance: bool, runs: int) -> list[Figure]:
    """On an attached phone: push each component and time it with onnxruntime_perf_test: a qnn build's EP-context
    model and its context binary on the QNN EP (HTP) with CPU fallback disabled, an onnx build on ORT's CPU
    provider with the phone's big cores (`-x PHONE_CPU_THREADS`).

    Needs ADB_ROOT/onnxruntime_perf_test (and libQnnHtp.so for qnn builds) pushed beforehand (an ORT Android
    build); without them the device is reported as skipped, never timed some other way. A QNN context runs
    batch 1 (static shapes): the figure says batch 1 and the budget counts two calls per guided step. A split
    component is timed context by context and summed.
    """
    target = manifest.get("target")
    if target not in ("qnn", "onnx"):
        return []
    ep = (f"-e cpu -x {PHONE_CPU_THREADS}" if target == "onnx"
          else f"-e qnn -i 'backend_path|libQnnHtp.so' -C '{FALLBACK_OFF}'")
    figures = []
    for serial in adb_devices():
        adb = ["adb", "-s", serial]
        probe = subprocess.run(adb + ["shell", "ls", f"{ADB_ROOT}/onnxruntime_perf_test"], capture_output=True,
                               text=True)
        if probe.returncode != 0:
            print(f"fusionc bench: adb device {serial} attached but {ADB_ROOT}/onnxruntime_perf_test is missing: "
                  "skipped", file=sys.stderr)
            continue
        for name, comp in manifest["components"].items():
            groups = phone_files(build, name, comp, target)
            if name not in PIPELINE_ORDER or not groups:
                continue
            remote = f"{ADB_ROOT}/fusionc/{name}"
            subprocess.run(adb + ["shell", "mkdir", "-p", remote], check=True, capture_output=True)
            total, statistic = 0.0, ""
            for files in groups:
                for file in files:
                    subprocess.run(adb + ["push", str(file), f"{remote}/{file.name}"], check=True, capture_output=True)
                cmd = (f"cd {ADB_ROOT} && LD_LIBRARY_PATH=. ./onnxruntime_perf_test {ep} -I -m times -r {runs} "
                       f"{remote}/{files[0].name}")
                done = subprocess.run(adb + ["shell", cmd], capture_output=True, text=True)
                timing = _perf_ms(done.stdout) if done.returncode == 0 else None
                if timing is None:
                    total = -1.0
                    break
                total += timing[0]
                statistic = timing[1]
            if total < 0:
                print(f"fusionc bench: adb {serial}: no timing for {name} (onnxruntime_perf_test failed; with CPU "
                      "fallback off, a node the HTP cannot run fails it): skipped", file=sys.stderr)
                continue
            batch, calls = call_shape(name, comp, guidance)
            where = f"adb:{serial}" + ("/cpu" if target == "onnx" else "")
            figures.append(Figure(name, where, serial, "measured", batch, total, 0.0, runs, calls=calls,
                                  detail={"statistic": statistic, "graphs": len(groups), "provider":
                                          "cpu" if target == "onnx" else "qnn", "cpu_fallback": target == "onnx",
                                          "runtime": "onnxruntime"}))
    return figures


def component_graph(build: Path, comp: dict[str, Any]) -> Path | None:
    """The component's compiled ONNX graph (not an EPContext wrapper), if the build keeps one: a Core ML build
    keeps its lowered graph without weights for this (`costmodel_graph`)."""
    kept = comp.get("costmodel_graph")
    if kept and (build / kept).is_file():
        return build / kept
    for rel in comp["files"]:
        path = build / rel
        if rel.endswith(".onnx") and path.is_file():
            import onnx

            proto = onnx.load(str(path), load_external_data=False)
            if not any(node.op_type == "EPContext" for node in proto.graph.node):
                return path
    return None


def build_precision(manifest: dict[str, Any], device: Device) -> str | None:
    """The precision a build runs at on `device`: a qnn build's on its Hexagon NPU, an onnx build's on a CPU; None
    (the device family's default) where the build's own precision says nothing (an onnx build on an NPU profile
    is estimated as the graph a build for that NPU would compile)."""
    target = manifest["target"]
    if target == "qnn" or (target == "onnx" and device.family == "cpu"):
        return (manifest.get("options") or {}).get("precision")
    return None


def estimated_devices(target: str) -> list[Device]:
    """The device profiles a build of `target` is estimated on: its own target's, or every profile for onnx."""
    return [d for d in DEVICES.values() if target == "onnx" or d.target == target]


def estimate_build(build: Path, manifest: dict[str, Any], guidance: bool, qnn_runtime: str,
                   cache: Path | None = None) -> tuple[list[Figure], dict[str, Any]]:
    """Estimated figures on every device profile of the build's target (Hexagon: for `qnn_runtime`, a key of
    fusionc.analysis.costfit.QNN_RUNTIMES), and each component's graph summary. An onnx build is estimated on a CPU
    profile from its own graph, and on an NPU from the graph that NPU's target compiles (npu_graphs)."""
    from fusionc.analysis.costmodel import backend_of, estimate
    from fusionc.analysis.graph_stats import graph_stats
    from fusionc.core.generation import hexagon_batch
    from fusionc.estimate_graphs import npu_graphs

    devices = estimated_devices(manifest["target"])
    paths = {n: component_graph(build, comp) for n, comp in manifest["components"].items() if n in PIPELINE_ORDER}
    paths = {n: path for n, path in paths.items() if path is not None}
    # an onnx build is estimated on every profile, NPUs included
    npu = npu_graphs(build, manifest, list(paths), cache) if manifest["target"] == "onnx" else None
    figures, graphs = [], {}
    for name, path in paths.items():
        comp = manifest["components"][name]
        graph_batch, graph_calls = call_shape(name, comp, guidance)
        symbolic = {d for spec in comp["inputs"].values() for d in spec["shape"] if isinstance(d, str)}
        stats_at: dict[int, Any] = {}

        def stats_of(batch: int) -> Any:
            if batch not in stats_at:
                stats_at[batch] = graph_stats(path, {dim: batch for dim in symbolic | {"batch"}})
            return stats_at[batch]

        graphs[name] = {k: v for k, v in stats_of(graph_batch).summary().items() if k != "by_kind"}
        for device in devices:
            batch, calls = hexagon_batch(device, graph_batch, graph_calls)
            from_checkpoint = npu is not None and device.family != "cpu"
            if from_checkpoint:
                stats = npu[name]["qnn"] if device.family == "htp" else npu[name]["generic"][batch]
            else:
                stats = stats_of(batch)
            est = estimate(stats, device, build_precision(manifest, device), qnn_runtime=qnn_runtime)
            figures.append(Figure(name, backend_of(device), device.name, "estimated", batch, est.latency_s * 1000,
                                  calls=calls, detail={"precision": est.precision, "bound": est.bound,
                                          "compute_ms": est.compute_s * 1000, "memory_ms": est.memory_s * 1000,
                                          "overhead_ms": est.overhead_s * 1000, "fallback_ms": est.fallback_s * 1000,
                                          "fallback_ops": est.fallback_ops, "weight_bytes": est.weight_bytes,
                                          "range_ms": [v * 1000 for v in est.range_s] if est.range_s else None,
                                          "range_coverage": est.range_coverage, "runtime": est.runtime,
                                          "outside_training": est.outside_training,
                                          "graph": "checkpoint, as its target compiles it" if from_checkpoint
                                          else "build"}))
    return figures, graphs


def budget_rows(build: str, figures: list[Figure], steps: int, guidance: bool, budget_s: float) -> list[dict[str, Any]]:
    """End-to-end latency per (backend, device) with the components it has, against the budget."""
    groups: dict[tuple[str, str, str], dict[str, Figure]] = {}
    for fig in figures:
        groups.setdefault((fig.backend, fig.device, fig.kind), {})[fig.component] = fig
    rows = []
    for (backend, device, kind), comps in groups.items():
        if not any(name in comps for name in STEP_MODELS):  # no UNet or transformer: not an image
            continue
        calls = {name: calls_per_image(name, steps, guidance) * comps[name].calls for name in comps}
        breakdown = {name: comps[name].median_ms * calls[name] for name in PIPELINE_ORDER if name in comps}
        total = sum(breakdown.values())
        on_device = all(f.device_figure for f in comps.values())
        rows.append({"build": build, "backend": backend, "device": device, "kind": kind, "steps": steps,
                     "guidance": guidance, "calls": calls, "per_call_ms": {n: comps[n].median_ms for n in breakdown},
                     "breakdown_ms": breakdown, "total_ms": total, "budget_ms": budget_s * 1000,
                     "within_budget": on_device and total <= budget_s * 1000, "device_figure": on_device,
                     "advice": advice(breakdown, calls, total, budget_s * 1000, steps) if on_device else
                     "not a device figure (a host emulator): see the estimated rows of the devices"})
    return rows


def _ms(value: float) -> str:
    """A gap in ms to the precision that keeps it non-zero: 610, 3.4, 0.04."""
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}" if value >= 0.1 else f"{value:.2g}"


def advice(breakdown: dict[str, float], calls: dict[str, int], total: float, budget: float, steps: int) -> str:
    """Which component to compress or shrink first, and by how much, to meet the budget."""
    if total <= budget:
        return f"within budget ({total:.0f} of {budget:.0f} ms, {_ms(budget - total)} ms spare)"
    excess = total - budget
    ranked = sorted(breakdown, key=breakdown.get, reverse=True)
    first = ranked[0]
    share = breakdown[first]
    if excess < share:
        cut = excess / share
        per_call = breakdown[first] / calls[first]
        text = (f"over by {_ms(excess)} ms: shrink {first} first, by {cut:.0%} per call "
                f"({per_call:.1f} -> {per_call * (1 - cut):.1f} ms)")
        if first in STEP_MODELS:
            fewer = int((budget - (total - share)) // per_call)
            if fewer >= 1:
                text += f", or cut steps {steps} -> {fewer}"
        return text
    rest = budget - (total - share)
    return (f"over by {_ms(excess)} ms: even a free {first} leaves {total - share:.0f} ms; shrink {first} and then "
            f"{', '.join(ranked[1:]) or 'nothing else'}" + (f" (the rest alone exceeds the budget by {_ms(-rest)} ms)"
                                                            if rest < 0 else ""))


def bench(builds: list[Path], steps: int = 8, guidance: bool = True, budget_s: float = 2.0, runs: int = 10,
          warmup: int = 2, measure: bool = True, qnn_runtime: str | None = None,
          emulator: bool = False, cache: Path | None = None) -> dict[str, Any]:
    """Everything `fusionc bench` shows and writes, as one JSON-ready dict (`emulator`: time qnn builds' contexts in
    the HTP emulator too; `cache`: where an onnx build's NPU graph statistics are kept, estimate_graphs.npu_graphs)."""
    from fusionc.buildfs import read_manifest
    from fusionc.analysis.costmodel import DEFAULT_QNN_RUNTIME, FAMILY_PARAMS, calibration_report, check_qnn_runtime

    import onnxruntime

    manifests = [read_manifest(build) for build in builds]
    check_qnn_runtime(qnn_runtime, [d for m in manifests for d in estimated_devices(m["target"])],
                      "bench a qnn or onnx build")
    qnn_runtime = qnn_runtime or DEFAULT_QNN_RUNTIME
    result: dict[str, Any] = {
        "fusionc_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "host": {"platform": platform.platform(), "machine": platform.machine(), "python": platform.python_version(),
                 "onnxruntime": onnxruntime.__version__, "adb_devices": adb_devices()},
        "settings": {"steps": steps, "guidance": guidance, "budget_s": budget_s, "runs": runs, "warmup": warmup,
                     "qnn_runtime": qnn_runtime},
        "builds": [], "budgets": [],
        "cost_model": {"params": {k: v.to_json() for k, v in FAMILY_PARAMS.items()}},
    }
    try:
        result["cost_model"]["calibration"] = calibration_report()
    except FileNotFoundError:
        result["cost_model"]["calibration"] = []
    for build, manifest in zip(builds, manifests):
        figures = measure_build(build, manifest, guidance, runs, warmup, emulator) if measure else []
        estimated, graphs = estimate_build(build, manifest, guidance, qnn_runtime, cache)
        figures += estimated
        if not figures:
            raise BadInputError(f"'{build}' has no component that can be measured or estimated")
        result["builds"].append({"path": str(build), "target": manifest["target"], "device": manifest.get("device"),
                                 "graphs": graphs, "figures": [asdict(f) for f in figures]})
        result["budgets"] += budget_rows(str(build), figures, steps, guidance, budget_s)
    return result


def print_report(result: dict[str, Any], console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=max(Console().width, 150))
    for build in result["builds"]:
        table = Table(title=f"{build['path']} ({build['target']}): per-call latency, ms "
                            "[M] measured here, [E] estimated by the cost model (spread: the range that held that "
                            "share of the fit's cross-validated published latencies)")
        for column in ("component", "backend", "device", "batch", "latency ms", "spread", "kind", "note"):
            table.add_column(column, justify="right" if column in ("batch", "latency ms", "spread") else "left")
        for f in build["figures"]:
            mark = "[M] measured" if f["kind"] == "measured" else "[E] estimated"
            note = "" if f["device_figure"] else "host emulator, not a device figure"
            if f["kind"] == "estimated":
                note = f"{f['detail']['precision']}, {f['detail']['bound']}-bound"
            if f["detail"].get("runtime"):  # Hexagon: which runtime the figure is for (--qnn-runtime)
                note += f"{', ' if note else ''}{f['detail']['runtime']}"
            span, coverage = f["detail"].get("range_ms"), f["detail"].get("range_coverage")
            spread = (f"±{f['spread_ms'] / 2:.2f}" if f["kind"] == "measured"
                      else f"{span[0]:.2f}-{span[1]:.2f} ({coverage:.0%})" if span else "-")
            table.add_row(f["component"], f["backend"], f["device"], str(f["batch"]), f"{f['median_ms']:.2f}",
                          spread, mark, note)
        console.print(table)
        from fusionc.analysis.costmodel import extrapolation_lines
        from fusionc.analysis.graph_stats import unknown_shapes_warning

        for line in extrapolation_lines({"component": f["component"], **f["detail"]} for f in build["figures"]
                                        if f["kind"] == "estimated"):
            console.print(line, markup=False, highlight=False)
        warning = unknown_shapes_warning({name: g.get("unknown_shape_ops", 0) for name, g in build["graphs"].items()})
        if warning:
            console.print(warning, markup=False, highlight=False)
    s = result["settings"]
    table = Table(title=f"end to end: {s['steps']} steps, guidance {'on' if s['guidance'] else 'off'}, "
                        f"budget {s['budget_s']:g} s")
    for column in ("build", "backend", "device", "kind", "total ms", "fits", "advice"):
        table.add_column(column, justify="right" if column == "total ms" else "left")
    for row in result["budgets"]:
        table.add_row(Path(row["build"]).name, row["backend"], row["device"],
                      "[M] measured" if row["kind"] == "measured" else "[E] estimated", f"{row['total_ms']:.0f}",
                      "-" if not row["device_figure"] else "yes" if row["within_budget"] else "NO", row["advice"])
    console.print(table)


def plot(result: dict[str, Any], path: Path) -> None:
    """Stacked per-component end-to-end latency per backend and device, one panel per build; hatched = estimated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["budgets"]
    if not rows:
        raise BadInputError("nothing to plot: no build has a denoiser (UNet or transformer) figure")
    builds = list(dict.fromkeys(row["build"] for row in rows))
    colors = {"text_encoder": "#4c72b0", "text_encoder_2": "#64b5cd", "text_encoder_3": "#8c8c8c",
              "controlnet": "#c44e52", "unet": "#dd8452", "transformer": "#dd8452", "vae_decoder": "#55a868"}
    widths = [sum(r["build"] == b for r in rows) + 1 for b in builds]
    fig, axes = plt.subplots(1, len(builds), figsize=(max(6.0, 0.5 * sum(widths) + 1.5), 4.8), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    seen: dict[str, Any] = {}
    budget = result["settings"]["budget_s"]
    for ax, build in zip(axes[0], builds):
        group = [r for r in rows if r["build"] == build]
        for i, row in enumerate(group):
            bottom = 0.0
            for name, ms in row["breakdown_ms"].items():
                bar = ax.bar(i, ms / 1000, bottom=bottom, color=colors.get(name, "#8172b3"), edgecolor="white",
                             hatch="//" if row["kind"] == "estimated" else None)
                seen.setdefault(name, bar)
                bottom += ms / 1000
        top = max(sum(r["breakdown_ms"].values()) for r in group) / 1000
        if budget <= 1.5 * top:
            seen["budget"] = ax.axhline(budget, color="red", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(group)), [f"{r['device']} ({'meas.' if r['kind'] == 'measured' else 'est.'})"
                                          for r in group], fontsize=7, rotation=40, ha="right")
        ax.set_title(Path(build).name, fontsize=9)
        ax.set_ylabel("seconds per image", fontsize=8)
    s = result["settings"]
    fig.suptitle(f"fusionc bench: {s['steps']} steps, guidance {'on' if s['guidance'] else 'off'}, budget "
                 f"{budget:g} s (hatched = cost-model estimate, solid = measured here)", fontsize=9)
    fig.legend(list(seen.values()), list(seen), fontsize=7, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def run_bench_cli(builds: tuple[Path, ...], json_path: Path | None, plot_path: Path | None, steps: int,
                  guidance: bool, budget: float, runs: int, warmup: int, no_measure: bool,
                  qnn_runtime: str | None = None, check: bool = False, emulator: bool = False,
                  cache: Path | None = None) -> dict[str, Any]:
    if not builds:
        raise BadInputError("pass at least one build folder: fusionc bench BUILD_DIR...")
    from fusionc.buildfs import check_output_files

    check_output_files(("--json", json_path), ("--plot", plot_path))
    if plot_path is not None:
        from matplotlib.backend_bases import FigureCanvasBase

        kinds = FigureCanvasBase.get_supported_filetypes()
        if plot_path.suffix.lstrip(".").lower() not in kinds:
            raise BadInputError(f"--plot '{plot_path}': name the image .png (or one of {', '.join(sorted(kinds))})")
    if steps < 1:
        raise BadInputError(f"--steps {steps}: a generation takes at least 1 denoising step")
    if budget <= 0:
        raise BadInputError(f"--budget {budget:g}: give the end-to-end budget in seconds, > 0")
    from fusionc.buildfs import read_manifest

    targets = {read_manifest(Path(b))["target"] for b in builds}
    if emulator and "qnn" not in targets:
        raise BadInputError("--emulator times a qnn build's contexts in the HTP emulator, and none of these builds is "
                            "a qnn build: drop --emulator")
    if cache is not None and "onnx" not in targets:
        raise BadInputError("--cache keeps what an onnx build's estimates export from its checkpoint, and none of "
                            "these builds is an onnx build: drop --cache")
    images = [flag for flag, on in (("--check", check), ("--plot", plot_path)) if on]
    if images:  # both are about an image's end-to-end time: some build must make an image (before any run)
        if not any(set(STEP_MODELS) & set(read_manifest(Path(b))["components"]) for b in builds):
            what = {"--check": "holds an image's end-to-end time to the --budget",
                    "--plot": "draws an image's end-to-end time"}[images[0]]
            raise BadInputError(f"{images[0]} {what}, and these builds have no UNet or transformer to make one: "
                                f"bench a build that has, or drop {images[0]}")
    result = bench(list(builds), steps, guidance, budget, runs, warmup, measure=not no_measure, qnn_runtime=qnn_runtime,
                   emulator=emulator, cache=cache)
    print_report(result)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    if plot_path:
        plot(result, plot_path)
    return result


def print_devices() -> None:
    from rich.console import Console
    from rich.table import Table

    from fusionc.core.devices import devices_table

    rows = devices_table()
    table = Table(title="fusionc device profiles (sources in compiler/core/devices.py); --device takes either name")
    for column in rows[0]:
        table.add_column(column, no_wrap=column in ("device", "name", "soc"))
    for row in rows:
        table.add_row(*row.values())
    console = Console()
    width = max(console.width, 170)
    if not console.is_terminal:  # a pipe or a CI log: every figure whole, none cut to "int8…"
        width = max(width, Console(width=10_000).measure(table).maximum)
    Console(width=width).print(table)
