"""The Core ML target: pass pipeline, lowering to .mlpackage (chunked when too big), finalize, runner.

Artifacts: build/<component>/<Name>.mlpackage (mlprogram, fp16 compute, Apple's I/O names), where Name is
what apple/ml-stable-diffusion looks for (TextEncoder, Unet or UnetChunk1..N, VAEDecoder, ...). The manifest
records, per component, the packages in run order and the canonical<->artifact interface, which is all the
runner needs to verify the build on Linux through the MIL executor.
"""

from __future__ import annotations

import platform
import shutil
import time
from pathlib import Path
from typing import Any

import onnx_ir as ir

from fusionc.core.errors import BadInputError
from fusionc.core.options import CompileOptions
from fusionc.targets.base import ComponentContext, LoweredComponent, PassEntry

APPLE_NAMES = {"text_encoder": "TextEncoder", "text_encoder_2": "TextEncoder2", "unet": "Unet",
               "text_encoder_3": "TextEncoderT5", "transformer": "MultiModalDiffusionTransformer",
               "vae_decoder": "VAEDecoder", "vae_encoder": "VAEEncoder", "controlnet": "ControlNet"}
ATTENTION = ("original", "split_einsum", "split_einsum_v2")
FLOAT_TYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16)
COSTMODEL_GRAPH = "costmodel.onnx"  # per component: the lowered ONNX graph, shapes only (bench estimates on Linux)


def apple_name(component: str, model: ir.Model) -> str:
    """The package name the Swift package loads: a UNet that takes ControlNet residuals is `ControlledUnet`
    (ControlledUnetChunk1/2), which it loads instead of Unet when ControlNets are named; a ControlNet is placed
    under Resources/controlnet/ by `--bundle swift` (targets/coreml/bundle.py)."""
    if component == "unet" and any(v.name.startswith("additional_residual_") for v in model.graph.inputs):
        return "ControlledUnet"
    return APPLE_NAMES.get(component, component)


def precision(options: CompileOptions) -> str:
    value = options.compute_precision
    if value not in ("fp16", "fp32"):
        raise BadInputError(f"--compute-precision must be fp16 or fp32, got '{value}'")
    return value


def ane_pipeline(options: CompileOptions) -> list[PassEntry]:
    """The Core ML passes after the generic ones; the attention form picks the ANE rewrites."""
    from fusionc.passes.ane.attention import SplitEinsumAttentionPass
    from fusionc.passes.ane.interface import AdoptCoreMLInterfacePass
    from fusionc.passes.ane.layout import PropagateChannelsFirstPass
    from fusionc.passes.ane.linear import ConvertLinearToConvPass, NormalizeLayerNormOverChannelsPass
    from fusionc.passes.ane.norm import DecomposeGroupNormPass
    from fusionc.passes.generic import CleanUpGraphPass

    if options.attention not in ATTENTION:
        raise BadInputError(f"unknown --attention '{options.attention}': choose one of {', '.join(ATTENTION)}")

    def split_heads(o: CompileOptions) -> bool:
        return o.attention != "original"

    def query_chunk(o: CompileOptions) -> int | None:
        return o.attention_chunk if o.attention == "split_einsum_v2" else None

    return [
        PassEntry("AdoptCoreMLInterfacePass", lambda c: AdoptCoreMLInterfacePass(),
                  "Apple's I/O contract and static batch first, so every later pass sees static shapes"),
        PassEntry("CleanUpGraphPass", lambda c: CleanUpGraphPass(), "fold the shape arithmetic the static batch made constant"),
        PassEntry("ConvertLinearToConvPass", lambda c: ConvertLinearToConvPass(),
                  "constant-weight MatMul/Gemm -> 1x1 Conv in (B,C,1,S), wrapped in layout transposes", split_heads),
        PassEntry("NormalizeLayerNormOverChannelsPass", lambda c: NormalizeLayerNormOverChannelsPass(),
                  "LayerNorm over C in (B,C,1,S), wrapped the same way", split_heads),
        PassEntry("SplitEinsumAttentionPass", lambda c: SplitEinsumAttentionPass(query_chunk=query_chunk(c.options)),
                  "fused SDPA -> one einsum attention per head on (B,C,1,S) (needs the fusion pass before it)",
                  split_heads),
        PassEntry("PropagateChannelsFirstPass", lambda c: PropagateChannelsFirstPass(),
                  "cancel wrapper pairs, push layouts through elementwise ops: blocks stay (B,C,1,S)", split_heads),
        PassEntry("DecomposeGroupNormPass", lambda c: DecomposeGroupNormPass(),
                  "GroupNorm as rank-4 reductions, the form the ANE runs"),
        PassEntry("CleanUpGraphPass", lambda c: CleanUpGraphPass(), "last: drop what the rewrites left dead, re-infer shapes"),
    ]


def fp16_safety(options: CompileOptions) -> list[PassEntry]:
    """fp16 programs: rescale or keep in fp32 what overflows fp16 on the calibration and selection inputs."""
    from fusionc.passes.precision.fp16_safety import KeepFp16InRangePass

    precision(options)  # refuse a bad --compute-precision now
    # calibration + selection: every input the compile may tune on, never the held-out verification set
    return [PassEntry("KeepFp16InRangePass",
                      lambda c: KeepFp16InRangePass(c.calibration_feeds + c.selection_feeds, work_dir=c.work_dir),
                      "before the ANE rewrites: the canonical interface still matches the trajectory inputs and "
                      "GroupNorm is still one op to rescale around", when=lambda o: precision(o) == "fp16")]


class CoreMLTarget:
    name = "coreml"
    default_device = "iphone-14-pro"

    def check_options(self, options: CompileOptions) -> None:
        """Refuse a --chunk that is not auto, none or a positive count, before any work (it was found at lowering)."""
        from fusionc.targets.coreml.chunk import forced_chunks

        forced_chunks(options.chunk)

    def input_roles(self, options: CompileOptions) -> tuple[str, ...]:
        """fp16 programs measure overflow ranges on the calibration set (and selection, when a search made it)."""
        from fusionc.core.context import CALIBRATION

        return (CALIBRATION,) if options.compute_precision == "fp16" else ()

    def check_checkpoint(self, checkpoint: Any, options: CompileOptions) -> None:
        """What this checkpoint cannot be built into, refused before the export: `--bundle swift` writes the Resources
        of apple/ml-stable-diffusion's Swift package, whose pipelines are SD-1.x/2.x, SDXL (ControlNets) and SD3; a
        PixArt bundle would hold its T5 as a `TextEncoder` it loads as CLIP and its DiT as an SD3 MMDiT."""
        if options.bundle == "swift" and getattr(checkpoint, "dit_family", None) == "pixart":
            raise BadInputError("--bundle swift writes Resources for apple/ml-stable-diffusion's Swift package, which "
                                "has no PixArt pipeline (SD 1.x/2.x, SDXL, SD3): drop --bundle; the build's .mlpackages "
                                "are written either way")

    def pipeline(self, options: CompileOptions) -> list[PassEntry]:
        from fusionc.passes.generic import default_pipeline
        from fusionc.passes.compression.dispatch import compression_entries

        return (default_pipeline(options) + fp16_safety(options) + ane_pipeline(options)
                + compression_entries(options, "coreml"))

    def lower(self, model: ir.Model, build_dir: Path, ctx: ComponentContext) -> LoweredComponent:
        from fusionc.passes.ane.interface import plan, read_interface
        from fusionc.targets.coreml.chunk import plan_chunks
        from fusionc.targets.coreml.lowering.table import LoweringOptions, lower_model
        from fusionc.targets.coreml.package import save_mlpackage
        from fusionc.targets.onnx import save_graph_without_weights

        options = ctx.options
        interface = read_interface(model) or plan(model.graph)
        base = apple_name(ctx.name, model)
        inputs = _interface_info(model.graph.inputs)
        outputs = _interface_info(model.graph.outputs)
        output_names = [v.name for v in model.graph.outputs]
        final_inputs = {v.name for v in model.graph.inputs}
        folder = build_dir / ctx.name
        # The graph being lowered, without its weights (a few KB), saved before chunking takes its nodes: `fusionc
        # bench` estimates the build from it where the packages cannot run or be read (Linux, no coremltools).
        # Not shipped to the device, so not in `files`.
        shapes = save_graph_without_weights(model, folder / COSTMODEL_GRAPH)
        parts = plan_chunks(model, ctx.name, options)
        files, timings, op_counts = [], {"lower_s": 0.0, "convert_s": 0.0, "save_s": 0.0}, {}
        fp16 = precision(options) == "fp16"
        metadata = {"fusionc.component": ctx.name, "fusionc.attention": options.attention,
                    "com.github.apple.coremltools.source": "fusionc (ONNX -> MIL)"}
        for index, part in enumerate(parts):
            name = base if len(parts) == 1 else f"{base}Chunk{index + 1}"
            # float tensors cross between chunks in fp16; an integer one (token positions) stays int32 on both sides:
            # declaring it fp16 made chunk 2 expect a dtype chunk 1 does not produce (found by the predict stand-in)
            crossing_in = {v.name: "fp16" for v in part.graph.inputs
                           if v.name not in final_inputs and fp16 and v.dtype in FLOAT_TYPES}
            crossing_out = {v.name for v in part.graph.outputs if v.name not in output_names and fp16}
            lowering = LoweringOptions(compute_precision=precision(options), deployment_target=options.deployment_target,
                                       input_dtypes=crossing_in, native_outputs=crossing_out)
            start = time.perf_counter()
            program = lower_model(part, lowering)
            timings["lower_s"] += time.perf_counter() - start
            for op in program.functions["main"].operations:
                op_counts[op.op_type] = op_counts.get(op.op_type, 0) + 1
            path = folder / f"{name}.mlpackage"
            spent = save_mlpackage(program, path, options.deployment_target, options.compute_units,
                                   metadata={**metadata, "description": f"{ctx.name} ({name})"},
                                   passes=["default"] if options.coreml_ct_passes == "default" else None)
            del program
            for key, value in spent.items():
                timings[key] += value
            files.append(path.relative_to(build_dir).as_posix())
        extra = {"coreml": {
            "packages": files, "interface": interface.to_json(), "outputs": output_names,
            "chunks": len(parts), "compute_precision": precision(options), "deployment_target": options.deployment_target,
            "attention": options.attention, "compute_units": options.compute_units,
            "mil_ops": dict(sorted(op_counts.items(), key=lambda kv: -kv[1])),
            "seconds": {k: round(v, 3) for k, v in timings.items()},
        }}
        from fusionc.passes.compression.palettize import compression_info
        extra["costmodel_graph"] = shapes.relative_to(build_dir).as_posix()
        if compression := compression_info(model):  # palettization / quantization / mixed-bit recipe
            extra["compression"] = compression
        return LoweredComponent(files, inputs, outputs, extra)

    def finalize(self, build_dir: Path, checkpoint: Any, manifest: dict[str, Any], options: CompileOptions) -> None:
        for folder in ("tokenizer", "tokenizer_2", "tokenizer_3"):
            source = getattr(checkpoint, "tokenizer_dirs", {}).get(folder)
            if source is not None and not (build_dir / folder).exists():
                shutil.copytree(source, build_dir / folder)
        scheduler = getattr(checkpoint, "scheduler_dir", None)
        if scheduler is not None and not (build_dir / "scheduler").exists():
            shutil.copytree(scheduler, build_dir / "scheduler")
        if options.bundle == "swift":
            from fusionc.targets.coreml.bundle import write_swift_resources

            manifest["bundle"] = write_swift_resources(build_dir, checkpoint, manifest)
        elif options.bundle not in (None, ""):
            raise BadInputError(f"unknown --bundle '{options.bundle}': the coreml target writes 'swift'")

    def runner(self, build_dir: Path, name: str, manifest: dict[str, Any]) -> Any:
        from fusionc.targets.coreml.runner import CoreMLRunner

        info = manifest["components"][name]["coreml"]
        packages = [build_dir / p for p in info["packages"]]
        # macOS runs the real Core ML (MLModel.predict); elsewhere the MIL executor. The host decides, never the
        # manifest: its options describe how the build was made (the old `options.extra` knob is gone).
        backend = "coreml" if platform.system() == "Darwin" else "executor"
        return CoreMLRunner(packages, info["interface"], info.get("outputs"), backend, info.get("compute_units", "cpu_and_ne"))


def _interface_info(values: Any) -> dict[str, dict[str, Any]]:
    return {v.name: {"shape": [d if isinstance(d, int) else str(d) for d in v.shape] if v.shape is not None else None,
                     "dtype": v.dtype.name.lower() if v.dtype is not None else None} for v in values}
