"""The onnx target: a diffusers ONNX pipeline folder for ONNX Runtime, plus .ort files for ORT Mobile.

The build loads as-is in `diffusers.OnnxStableDiffusionPipeline.from_pretrained(BUILD)`:
model_index.json, text_encoder/model.onnx, unet/model.onnx, vae_decoder/model.onnx, tokenizer/, scheduler/.

Precisions (`--precision`, recorded in the manifest): fp32 (default; `--quantize-weights int8|int4` adds
weight-only compression), w8a8 (static int8 QDQ for ORT's CPU int8 kernels: quantized.py). `check_options`
refuses, before any work, what ONNX Runtime's CPU provider cannot run as asked.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from fusionc.core.options import CompileOptions
from fusionc.targets.base import ComponentContext, Feeds, LoweredComponent, PassEntry

EXTERNAL_DATA_THRESHOLD = 1 << 30  # weights above 1 GB: no .ort file (flatbuffers), row-by-row verification
# Weights above 64 MB go to model.onnx.data. Embedded weights cost a second copy while onnxruntime loads the
# model (the protobuf bytes and the initializer tensors): the small UNet's fp32 build peaked at 345 MB at load
# where the same graph with external data peaks at 216 MB (the mid UNet: 1206 vs 820 MB for the naive export,
# benchmarks/results/ort_cpu_mid.json); ORT reads external data straight into (or maps) its tensors.
EMBED_LIMIT = 64 << 20


def interface(values: Any) -> dict[str, dict[str, Any]]:
    """{name: {"shape", "dtype"}} of graph inputs or outputs; symbolic dims by name."""
    return {v.name: {"shape": [d if isinstance(d, int) else str(d) for d in v.shape],
                     "dtype": v.dtype.name.lower() if v.dtype is not None else None} for v in values}


def weight_bytes(model: ir.Model) -> int:
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


def save_model(model: ir.Model, path: Path) -> list[Path]:
    """Save with external data when the weights are large; returns the files written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if weight_bytes(model) > EMBED_LIMIT:
        ir.save(model, path, external_data=path.name + ".data")
        return [path, path.with_name(path.name + ".data")]
    ir.save(model, path)
    return [path]


def save_graph_without_weights(model: ir.Model, path: Path) -> Path:
    """Save the graph with every initializer as an external reference to no file: shapes and dtypes only.

    A few KB whatever the model's size, enough for fusionc.analysis.graph_stats (which never reads weight
    data), so `fusionc bench` can estimate a build whose artifacts it cannot read (Core ML on Linux)."""
    import onnx

    from fusionc.core.memory import weightless_proto

    proto = weightless_proto(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return path


def save_raw_ort(onnx_path: Path, ort_path: Path) -> None:
    """onnxruntime's own ORT-format serialization (basic, hardware-independent optimizations only)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(ort_path)
    options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def write_ort_format(onnx_path: Path) -> Path | None:
    """Convert to ORT format (.ort, flatbuffers, < 2 GB only) for ONNX Runtime Mobile."""
    if _weights_on_disk(onnx_path) > EXTERNAL_DATA_THRESHOLD:
        return None
    ort_path = onnx_path.with_suffix(".ort")
    save_raw_ort(onnx_path, ort_path)
    from fusionc.core.reproducible import canonical_ort

    canonical_ort(ort_path)  # onnxruntime lays part of the file out in hash-map order: make it byte-identical
    return ort_path


def _compression_extra(model: ir.Model) -> dict[str, Any]:
    from fusionc.passes.compression.palettize import compression_info

    info = compression_info(model)  # palettization / quantization / mixed-bit recipe, when a pass ran
    return {"compression": info} if info else {}


def _weights_on_disk(onnx_path: Path) -> int:
    return sum(p.stat().st_size for p in onnx_path.parent.glob(onnx_path.name + "*"))


class OrtRunner:
    """An onnxruntime CPU session under the canonical interface."""

    def __init__(self, path: Path, providers: list[Any] | None = None, options: Any = None) -> None:
        import onnxruntime as ort

        large = _weights_on_disk(path) > EXTERNAL_DATA_THRESHOLD
        if options is None and large:
            # At SD scale, pre-packed weight copies and the arena would double the session's memory.
            options = ort.SessionOptions()
            options.enable_cpu_mem_arena = False
            options.add_session_config_entry("session.disable_prepacking", "1")
        # At SD scale a guidance batch's activations cost GBs (64x64 attention: 1 GB per score tensor per row):
        # run such models a row at a time; every op of these graphs is independent across the batch.
        self.row_by_row = large
        self.session = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.batched = {i.name for i in self.session.get_inputs() if i.shape and not isinstance(i.shape[0], int)}
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, feeds: Feeds) -> Feeds:
        feeds = {k: feeds[k] for k in self.inputs}
        rows = {feeds[k].shape[0] for k in self.batched if feeds[k].ndim}
        if not self.row_by_row or len(rows) != 1 or rows == {1}:
            return dict(zip(self.outputs, self.session.run(None, feeds)))
        parts = [self.session.run(None, {k: v[i:i + 1] if k in self.batched else v for k, v in feeds.items()})
                 for i in range(rows.pop())]
        return {name: np.concatenate([p[j] for p in parts]) for j, name in enumerate(self.outputs)}


PRECISIONS = ("fp32", "w8a8")


def check_options(options: CompileOptions) -> None:
    """Refuse (exit 2, one line) what ONNX Runtime's CPU provider cannot run as asked, before any work."""
    from fusionc.core.devices import get_device
    from fusionc.core.errors import BadInputError

    precision = options.precision
    if precision == "w8a16":
        raise BadInputError("--precision w8a16 is not an onnx precision: ONNX Runtime's CPU provider has no 16-bit "
                            "activation kernels (it would run fake-quantized in float, slower than fp32); use "
                            "--precision w8a8, or --quantize-weights int8|int4 for int weights with float activations")
    if precision == "fp16":
        device = get_device(options.device, "onnx")
        where = "on x86-64" if device is None or device.cpu_arch != "arm64" else "yet (no fp16 ONNX conversion)"
        raise BadInputError(f"--precision fp16 is not built for the onnx target {where}: ONNX Runtime's x86-64 CPU "
                            "provider has no fp16 kernels; use --precision fp32, w8a8 or --quantize-weights int4")
    if precision not in PRECISIONS:
        raise BadInputError(f"--precision {precision} is not an onnx precision: choose {', '.join(PRECISIONS)}")
    if precision == "w8a8" and (options.quantize_weights or options.palettize):
        flag = "--quantize-weights" if options.quantize_weights else "--palettize"
        raise BadInputError(f"--precision w8a8 already stores int8 weights: drop {flag}, or use it with --precision fp32 "
                            "for weight-only compression")


class OnnxTarget:
    name = "onnx"
    default_device = None
    extra_default_components = ("vae_encoder",)  # OnnxStableDiffusionPipeline requires it

    def check_options(self, options: CompileOptions) -> None:
        check_options(options)

    def input_roles(self, options: CompileOptions) -> tuple[str, ...]:
        """w8a8: calibration (ranges) and selection (remedies); float builds need no tuning inputs."""
        from fusionc.core.context import CALIBRATION, SELECTION

        return (CALIBRATION, SELECTION) if options.precision == "w8a8" else ()

    def pipeline(self, options: CompileOptions) -> list[PassEntry]:
        from fusionc.passes.generic import default_pipeline
        from fusionc.passes.compression.dispatch import compression_entries
        from fusionc.passes.ort.attention import FuseMultiHeadAttentionPass
        from fusionc.passes.ort.contrib import UseOrtGeluPass
        from fusionc.passes.qnn.rewrites import UpgradeOpsetPass

        return default_pipeline() + [
            PassEntry("FuseMultiHeadAttentionPass", lambda c: FuseMultiHeadAttentionPass(),
                      "after the generic fusions: attention with its head split/merge -> ORT's MultiHeadAttention "
                      "(CPU kernel, no [B,H,S,S] score tensor through the graph)"),
            PassEntry("UseOrtGeluPass", lambda c: UseOrtGeluPass(),
                      "after the generic fusions: fusionc::Gelu -> ORT's Gelu/FastGelu (one CPU kernel, and ORT "
                      "folds the bias Add into BiasGelu); the inlined function ran as five elementwise kernels"),
        ] + compression_entries(options, "onnx") + [
            PassEntry("UpgradeOpsetPass", lambda c: UpgradeOpsetPass(),
                      "last, w8a8 only: the remedies' 16-bit Q/DQ need opset 21 (onnxscript's converter)",
                      when=lambda o: o.precision == "w8a8"),
        ]

    def lower(self, model: ir.Model, build_dir: Path, ctx: ComponentContext) -> LoweredComponent:
        onnx_path = build_dir / ctx.name / "model.onnx"
        inputs, outputs = interface(model.graph.inputs), interface(model.graph.outputs)
        if ctx.options.precision == "w8a8":
            from fusionc.targets.onnx.quantized import quantize_component
            from fusionc.targets.qnn.quantize import save_model as save_quantized

            model, extra = quantize_component(model, ctx)
            files = save_quantized(model, onnx_path)  # lazy float weights from the scratch folder written out
        else:
            extra = {"precision": ctx.options.precision, **_compression_extra(model)}
            files = save_model(model, onnx_path)
        ort_path = write_ort_format(onnx_path)
        files += [ort_path] if ort_path else []
        return LoweredComponent([f.relative_to(build_dir).as_posix() for f in files], inputs, outputs,
                                {"ort_format": bool(ort_path), **extra})

    def finalize(self, build_dir: Path, checkpoint: Any, manifest: dict[str, Any], options: CompileOptions) -> None:
        write_diffusers_onnx_pipeline(build_dir, checkpoint, list(manifest["components"]))

    def runner(self, build_dir: Path, name: str, manifest: dict[str, Any]) -> OrtRunner:
        return OrtRunner(build_dir / name / "model.onnx")


def write_diffusers_onnx_pipeline(build_dir: Path, checkpoint: Any, components: list[str]) -> None:
    """model_index.json, tokenizer(s) and scheduler, so OnnxStableDiffusionPipeline loads the build."""
    for folder in ("tokenizer", "tokenizer_2", "tokenizer_3"):
        if folder in checkpoint.tokenizer_dirs:
            shutil.copytree(checkpoint.tokenizer_dirs[folder], build_dir / folder)
    if checkpoint.scheduler_dir is not None:
        shutil.copytree(checkpoint.scheduler_dir, build_dir / "scheduler")
    scheduler_class = None
    if checkpoint.scheduler_dir is not None:
        scheduler_config = (checkpoint.scheduler_dir / "scheduler_config.json").read_text(encoding="utf-8")
        scheduler_class = json.loads(scheduler_config).get("_class_name")
    index: dict[str, Any] = {
        "_class_name": "OnnxStableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None],
        "safety_checker": [None, None],
        "requires_safety_checker": False,
        "scheduler": ["diffusers", scheduler_class] if scheduler_class else [None, None],
        "tokenizer": ["transformers", "CLIPTokenizer"] if "tokenizer" in checkpoint.tokenizer_dirs else [None, None],
    }
    for name in ("text_encoder", "unet", "vae_decoder", "vae_encoder"):
        index[name] = ["diffusers", "OnnxRuntimeModel"] if name in components else [None, None]
    (build_dir / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


TARGET = OnnxTarget()
