"""`QnnTarget.lower`: one component from the prepared float graph to QDQ ONNX, EP-context model and .bin.

    <build>/<name>/model.qdq.onnx        the quantized graph (w8a16 / w8a8), runnable on any ORT
    <build>/<name>/model.onnx            (fp16 only) the float graph the context was built from
    <build>/<name>/model.encodings.json  AIMET-format encodings (qnn-onnx-converter --quantization_overrides)
    <build>/<name>/model_ctx.onnx        ONNX Runtime EP-context model (EPContext node, .bin kept outside)
    <build>/<name>/model_ctx_qnn.bin     the QNN HTP context binary for the device's Hexagon arch

A component whose context would pass the device's limit (2 GB), or whose context build would take more memory
than --qnn-max-build-bytes (8 GiB; the HTP backend's preparation grows with the activations), is split (split.py):
the files get a `.partN` infix and the manifest lists the context models in order under `context_parts`.

With a cache folder (--cache, or a fleet's), the graphs are stored for other devices' builds, which then only
build their contexts, and a fleet's first QNN variant builds its siblings' contexts beside its own (shared.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import onnx_ir as ir

from fusionc.core.devices import get_device
from fusionc.core.errors import BadInputError
from fusionc.core.memory import release_freed_memory
from fusionc.core.portable import peak_rss_mb
from fusionc.targets.base import ComponentContext, LoweredComponent
from fusionc.targets.qnn.ep import HtpConfig
from fusionc.targets.qnn.quantize import calibrate, calibration_feeds, quantize, save_float, save_model
from fusionc.targets.qnn.rules import QuantConfig, build_plan
from fusionc.targets.qnn.shared import SharedWork
from fusionc.targets.qnn.split import (build_activation_budget, parts_needed, quantize_part, split_float_model,
                                      weight_bytes)

PRECISIONS = ("w8a16", "w8a8", "fp16")
DEFAULT_LIMIT = 2 << 30


def _interface(values: Any) -> dict[str, dict[str, Any]]:
    return {v.name: {"shape": [d if isinstance(d, int) else str(d) for d in v.shape],
                     "dtype": v.dtype.name.lower() if v.dtype is not None else None} for v in values}


def _peak_mb() -> float:
    return round(peak_rss_mb(), 1)


def context_limit(options: Any, device: Any) -> int:
    """Largest context binary allowed: --qnn-max-context-bytes, else the device's limit."""
    if options.qnn_max_context_bytes:
        return int(options.qnn_max_context_bytes)
    return int(getattr(device, "max_model_bytes", None) or DEFAULT_LIMIT)


def build_component(model: ir.Model, build_dir: Path, ctx: ComponentContext) -> LoweredComponent:
    options = ctx.options
    if options.precision not in PRECISIONS:
        raise BadInputError(f"--precision {options.precision} is not a QNN precision: choose {', '.join(PRECISIONS)}")
    device = get_device(options.device, "qnn")
    htp = HtpConfig.from_device(device)
    out = Path(build_dir) / ctx.name
    out.mkdir(parents=True, exist_ok=True)
    inputs, outputs = _interface(model.graph.inputs), _interface(model.graph.outputs)
    float_path = save_float(model, Path(ctx.work_dir) / "model.float.onnx")
    del model
    timings: dict[str, float] = {}
    peaks: dict[str, float] = {"save_float": _peak_mb()}
    extra: dict[str, Any] = {"precision": options.precision, "htp_arch": f"v{htp.arch}", "soc_model": htp.soc_model}
    limit = context_limit(options, device)
    feeds: list = []
    selection: list = []
    if options.precision != "fp16":
        # ranges from the calibration set; remedies judged on the selection set (other prompts, seeds and
        # timesteps: clipping on unseen inputs counts); the verification set, held out, reports the result
        feeds = calibration_feeds(ctx.calibration_feeds, options.calibration_samples)
        if not feeds:
            raise BadInputError(f"no calibration inputs for {ctx.name}: QNN quantization needs sample inputs")
        selection = calibration_feeds(ctx.selection_feeds, options.selection_samples) or feeds
    shared = SharedWork(ctx.cache_dir, float_path, feeds, selection, options, limit)
    contexts = Contexts(shared, htp, ctx.sibling_devices, options.qnn_max_build_bytes, Path(ctx.work_dir), timings)
    stored = shared.load_graphs(out)
    if stored is not None:  # another device's build of this graph: only the context is this device's
        record = stored[1]["record"]
        extra.update(record["extra"], qnn_cache="hit: quantized graph" if feeds else "hit: float graph")
        contexts.htp = replace(htp, fp16=record["htp_fp16"])
        files = [out / name for name in record["head"]]
        for graph in record["graphs"]:
            files += [out / name for name in graph]
            files += contexts.build(out / graph[0])
    else:
        graphs, names = _graphs(float_path, options, limit, feeds, selection, ctx, contexts, extra, timings, peaks)
        files = _write_and_compile(graphs, names, out, contexts, options.precision != "fp16", timings)
        built = set(contexts.files)
        head = [f for f in files[:1] if f.name.endswith(".json")]
        groups = [[f.name for f in files if f.name.startswith(n) and f not in built] for n in names]
        if shared.key is not None:
            extra["qnn_cache"] = "miss: graph stored for other devices"
        shared.store_graphs([*head, *[out / n for g in groups for n in g]],
                            {"extra": {k: v for k, v in extra.items() if k not in ("htp_arch", "soc_model")},
                             "htp_fp16": contexts.htp.fp16, "head": [f.name for f in head], "graphs": groups})
    htp = contexts.htp
    extra["htp_fp16"] = htp.fp16  # float ops (fp16 precision, fp16 islands) run in fp16 on the HTP
    extra["context_bytes"] = sum(f.stat().st_size for f in files if f.suffix == ".bin")
    if len(contexts.models) > 1:
        extra["context_parts"] = [c.relative_to(build_dir).as_posix() for c in contexts.models]
    extra["qnn_contexts"] = contexts.status
    extra["qnn_timings"] = {k: round(v, 2) for k, v in timings.items()}
    extra["qnn_peak_rss_mb_after"] = {**peaks, "context_build": _peak_mb()}
    return LoweredComponent([Path(f).relative_to(build_dir).as_posix() for f in files], inputs, outputs, extra)


def _graphs(float_path: Path, options: Any, limit: int, feeds: list, selection: list, ctx: ComponentContext,
            contexts: "Contexts", extra: dict[str, Any], timings: dict[str, float],
            peaks: dict[str, float]) -> tuple[Iterable[ir.Model], list[str]]:
    """The graphs to build contexts from, made lazily one at a time, and their file names: the float graph
    (fp16), or calibration, remedies and the QDQ graph (w8a16, w8a8); `extra` gets the quantization's record."""
    if options.precision == "fp16":
        float_bytes = weight_bytes(ir.load(float_path))
        count = parts_needed(float_bytes // 2, limit)  # the HTP stores fp32 weights as fp16
        sources = split_float_model(float_path, count, build_activation_budget(options.qnn_max_build_bytes))
        names = ["model.onnx"] if len(sources) == 1 else [f"model.part{i}.onnx" for i in range(len(sources))]
        contexts.htp = replace(contexts.htp, fp16=True)
        return (ir.load(p) for p in sources), names
    from fusionc.targets.qnn.remedies import choose_config

    start = time.perf_counter()
    stats = calibrate(float_path, feeds, histograms=options.precision == "w8a8")  # 8-bit may clip
    release_freed_memory()  # the segment sessions' freed heap (0.4 GB on 2 of SD3's 24 layers) back to the OS
    timings["calibrate_s"] = time.perf_counter() - start
    peaks["calibrate"] = _peak_mb()
    start = time.perf_counter()
    config, report = choose_config(float_path, stats, selection,
                                   QuantConfig.for_precision(options.precision, options.qnn_range_margin), ctx.name, options,
                                   ctx.executor)
    timings["remedies_s"] = time.perf_counter() - start
    peaks["remedies"] = _peak_mb()
    if config.float_nodes:  # fp16 islands: the HTP runs the float ops in fp16
        contexts.htp = replace(contexts.htp, fp16=True)
    start = time.perf_counter()
    # One plan for the whole graph and its parts. The QDQ graphs are lazy (each integer weight is computed
    # when its graph is saved) and the parts are made one at a time, each saved and built before the next:
    # no graph's integer weights are ever held (SD3-medium's transformer: 2 GB of 8-bit weights held twice,
    # once in the whole graph and once in the parts, while the context build's process ran)
    plan = build_plan(ir.load(float_path), stats, config)
    release_freed_memory()  # the planning graph's maps of every float weight (file pages, but resident)
    whole = quantize(float_path, stats, config, plan=plan, lazy=True)
    count = parts_needed(weight_bytes(whole), limit)
    sources = split_float_model(float_path, count, build_activation_budget(options.qnn_max_build_bytes))
    if len(sources) > 1:
        del whole
        graphs: Iterable[ir.Model] = (quantize_part(p, plan, lazy=True) for p in sources)
        names = [f"model.part{i}.qdq.onnx" for i in range(len(sources))]
    else:
        graphs, names = [whole], ["model.qdq.onnx"]
        del whole
    timings["quantize_s"] = time.perf_counter() - start
    peaks["quantize"] = _peak_mb()
    extra.update(calibration_samples=len(feeds), selection_samples=len(selection), quantization=config.to_json(),
                 remedies=report)
    return graphs, names


@dataclass
class Contexts:
    """The context builds of one component, in order: each from the cache (another device's build built it beside
    its own) or built, with the sibling devices' contexts beside it (shared.py)."""

    shared: SharedWork
    htp: HtpConfig
    siblings: tuple[str, ...]
    max_build_bytes: int | None
    scratch: Path
    timings: dict[str, float]
    models: list[Path] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    status: list[str] = field(default_factory=list)

    def build(self, graph_path: Path) -> list[Path]:
        """The context files of one saved graph (model_ctx.onnx, or model_ctx.partN.onnx, and its .bin)."""
        name = graph_path.name
        stem = "model_ctx.onnx" if name in ("model.qdq.onnx", "model.onnx") else name.replace("model.", "model_ctx.").replace(".qdq", "")
        start = time.perf_counter()
        built, how = self.shared.build_contexts(graph_path, graph_path.with_name(stem), self.htp, self.siblings,
                                                self.max_build_bytes, self.scratch)
        self.timings["context_build_s"] = self.timings.get("context_build_s", 0.0) + time.perf_counter() - start
        self.models.append(built[0])
        self.files += built
        self.status.append(how)
        return built


def _write_and_compile(graphs: Iterable[ir.Model], names: list[str], out: Path, contexts: Contexts, quantized: bool,
                       timings: dict[str, float]) -> list[Path]:
    """Save and build each graph in turn, taking the next from `graphs` only when the last one's context is
    built: the context build's process runs while this one holds no graph's weights (saved graphs read theirs
    from disk), and with the freed heap handed back to the OS (release_freed_memory)."""
    from fusionc.targets.qnn.encodings import merge_encodings, model_encodings, write_json

    files: list[Path] = []
    encodings: list[dict[str, Any]] = []
    timings["save_s"] = timings["context_build_s"] = 0.0
    for graph, name in zip(graphs, names):
        start = time.perf_counter()
        if quantized:
            encodings.append(model_encodings(graph))
        written = save_model(graph, out / name)  # lazy integer weights are computed here, one at a time
        del graph
        release_freed_memory()
        timings["save_s"] += time.perf_counter() - start
        files += written
        files += contexts.build(written[0])
    if quantized:  # first in the file list, as when it was written before the parts
        files.insert(0, write_json(merge_encodings(encodings), out / "model.encodings.json"))
    return files
