"""The qnn target: QDQ ONNX + ONNX Runtime EP-context model + QNN HTP context binary per component.

    fused float graph --(pipeline: static batch 1, opset 21, QNN lowerings)--> prepared float model
      --calibrate (streaming, real trajectory inputs)--> ranges --rules + remedies--> QdqPlan
      --InsertQdqPass--> <name>/model.qdq.onnx --QNN EP, HTP backend--> <name>/model_ctx.onnx + .bin

The context binary is prepared for the device's Hexagon arch (v73/v75/v79, `fusionc.core.devices`) by
onnxruntime-qnn's HTP backend; on x86-64 Linux the same binary runs in the HTP emulator, which is what
`fusionc verify` and `generate` use through `runner()`. The whole graph must run on the HTP: CPU fallback
is disabled and a compile that would need it fails listing the nodes (targets/qnn/ep.py).

Why fusionc quantizes instead of onnxruntime.quantization: see targets/qnn/calibrate.py (streaming
statistics) and passes/qnn/qdq.py (Q/DQ insertion on onnx_ir past 2 GB); the QNN rules it follows are in
targets/qnn/rules.py and the accuracy remedies in targets/qnn/remedies.py.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from fusionc.core.options import CompileOptions
from fusionc.targets.base import ComponentContext, Feeds, LoweredComponent, PassEntry

CONTEXT_MODEL = "model_ctx.onnx"


def _fp16_safety() -> list[PassEntry]:
    """fp16 contexts: rescale what overflows fp16 on real inputs (the HTP has no fp32 to fall back to).

    Ranges come from the calibration and selection sets together: a safety margin should see every input
    the compile may tune on, and never the verification set, which then shows whether it generalizes."""
    from fusionc.passes.precision.fp16_safety import KeepFp16InRangePass

    return [PassEntry("KeepFp16InRangePass",
                      lambda c: KeepFp16InRangePass(c.calibration_feeds + c.selection_feeds, allow_fp32=False,
                                                    work_dir=c.work_dir),
                      "before the static batch: the batch-2 trajectory inputs still fit; GroupNorm is still one op",
                      when=lambda o: o.precision == "fp16")]


class QnnTarget:
    name = "qnn"
    default_device = "snapdragon-8-gen-2"

    def input_roles(self, options: CompileOptions) -> tuple[str, ...]:
        """Quantized: calibration (ranges) and selection (remedies); fp16: calibration (overflow ranges)."""
        from fusionc.core.context import CALIBRATION, SELECTION

        return (CALIBRATION,) if options.precision == "fp16" else (CALIBRATION, SELECTION)

    def check_options(self, options: CompileOptions) -> None:
        """Refuse a precision the HTP does not build, before any work."""
        from fusionc.core.errors import BadInputError
        from fusionc.targets.qnn.build import PRECISIONS

        if options.precision not in PRECISIONS:
            raise BadInputError(f"--precision {options.precision} is not a QNN precision: choose {', '.join(PRECISIONS)}")
        if options.qnn_verify_runtime == "cpu" and options.precision == "fp16":
            raise BadInputError("--qnn-verify-runtime cpu runs the QDQ graphs and an fp16 build has none: "
                                "verify it with --qnn-verify-runtime htp")

    def pipeline(self, options: CompileOptions) -> list[PassEntry]:
        from fusionc.passes.generic import CleanUpGraphPass, default_pipeline
        from fusionc.passes.qnn import rewrites as rw

        return default_pipeline() + _fp16_safety() + [
            PassEntry("StaticBatchPass", lambda c: rw.StaticBatchPass(1),
                      "the HTP compiles static shapes: every context is batch 1"),
            PassEntry("UpgradeOpsetPass", lambda c: rw.UpgradeOpsetPass(),
                      "opset 21 before lowering: GroupNormalization-21, 16-bit Q/DQ"),
            PassEntry("CleanUpGraphPass", lambda c: CleanUpGraphPass(),
                      "fold what the static batch made constant (the causal mask) before matching it"),
            PassEntry("LowerFusedOpsPass", lambda c: rw.LowerFusedOpsPass(),
                      "fused units become the ops the QNN EP maps one to one"),
            PassEntry("GiveLayerNormABiasPass", lambda c: rw.GiveLayerNormABiasPass(),
                      "after lowering: LayerNorms without affine (SD3/PixArt) get a zero bias, the HTP needs three inputs"),
            PassEntry("ConstantOperandsLastPass", lambda c: rw.ConstantOperandsLastPass(),
                      "after lowering: Mul/Add take the activation first and a full-rank constant (fp16 HTP, T5's RMSNorm)",
                      when=lambda o: o.precision == "fp16"),
            PassEntry("ClampAttentionMaskPass", lambda c: rw.ClampAttentionMaskPass(),
                      "after lowering exposes the mask Add: finite ranges"),
            PassEntry("DropNanGuardPass", lambda c: rw.DropNanGuardPass(),
                      "after clamping: masks are finite, the guard is dead"),
            PassEntry("CleanUpGraphPass", lambda c: CleanUpGraphPass(), "fold and drop what the lowerings left"),
            PassEntry("InferStaticShapesPass", lambda c: rw.InferStaticShapesPass(),
                      "last: the QNN EP needs every tensor shape"),
        ]

    def lower(self, model: ir.Model, build_dir: Path, ctx: ComponentContext) -> LoweredComponent:
        from fusionc.targets.qnn.build import build_component

        return build_component(model, build_dir, ctx)

    def finalize(self, build_dir: Path, checkpoint: Any, manifest: dict[str, Any], options: CompileOptions) -> None:
        """Tokenizers and scheduler beside the components, for `fusionc generate`."""
        for folder, source in getattr(checkpoint, "tokenizer_dirs", {}).items():
            shutil.copytree(source, build_dir / folder, dirs_exist_ok=True)
        if getattr(checkpoint, "scheduler_dir", None) is not None:
            shutil.copytree(checkpoint.scheduler_dir, build_dir / "scheduler", dirs_exist_ok=True)

    def runner(self, build_dir: Path, name: str, manifest: dict[str, Any]) -> "HtpRunner":
        from fusionc.core.devices import get_device
        from fusionc.targets.qnn.ep import HtpConfig

        device = get_device(manifest.get("device"), "qnn") if manifest.get("device") else None
        entry = manifest.get("components", {}).get(name, {})
        parts = [Path(build_dir) / p for p in entry.get("context_parts", [])] or [Path(build_dir) / name / CONTEXT_MODEL]
        return HtpRunner(parts, replace(HtpConfig.from_device(device), soc_model=None), list(entry.get("outputs", {})))

    def verification_runner(self, build_dir: Path, name: str, manifest: dict[str, Any],
                            options: CompileOptions) -> Any:
        """`runner`, or with --qnn-verify-runtime cpu the QDQ graphs on ORT's CPU EP (cpu_check.py)."""
        if options.qnn_verify_runtime != "cpu":
            return self.runner(build_dir, name, manifest)
        from fusionc.targets.qnn.cpu_check import QdqCpuRunner, qdq_graphs

        entry = manifest.get("components", {}).get(name, {})
        return QdqCpuRunner(qdq_graphs(build_dir, name, entry), list(entry.get("outputs", {})))


class HtpRunner:
    """Runs compiled contexts on the HTP (the emulator on x86-64): canonical feeds, any batch (run per item).

    A split component is a chain of contexts: each reads what it needs from the tensors computed so far."""

    runs_on = "QNN context binaries on the HTP backend (the HTP emulator on x86-64)"

    def __init__(self, contexts: Path | list[Path], config: Any = None, outputs: list[str] | None = None) -> None:
        from fusionc.targets.qnn.ep import load_context
        from fusionc.targets.qnn.split import chain_inputs

        paths = [contexts] if isinstance(contexts, (str, Path)) else list(contexts)
        self.sessions = [load_context(Path(p), config) for p in paths]
        types = {i.name: i for s in self.sessions for i in s.get_inputs()}
        reads = [([i.name for i in s.get_inputs()], [o.name for o in s.get_outputs()]) for s in self.sessions]
        self.inputs = {n: types[n] for n in chain_inputs(reads)}
        self.outputs = outputs or [o.name for o in self.sessions[-1].get_outputs()]

    def __call__(self, feeds: Feeds) -> Feeds:
        from fusionc.targets.qnn.quantize import split_batch

        results: dict[str, list[np.ndarray]] = {name: [] for name in self.outputs}
        for single in split_batch({k: v for k, v in feeds.items() if k in self.inputs}):
            values = {k: np.ascontiguousarray(v, dtype=_np_type(self.inputs[k].type)) for k, v in single.items()}
            for session in self.sessions:
                names = [o.name for o in session.get_outputs()]
                got = session.run(names, {i.name: values[i.name] for i in session.get_inputs()})
                values.update(zip(names, got))
            for name in self.outputs:
                results[name].append(values[name])
        return {name: np.concatenate(values, axis=0) for name, values in results.items()}


def _np_type(ort_type: str) -> type:
    return {"tensor(float)": np.float32, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
            "tensor(float16)": np.float16}.get(ort_type, np.float32)


TARGET = QnnTarget()
