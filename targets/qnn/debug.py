"""Layer-wise accuracy debugger: every quantized tensor against fp32, on the CPU (fake-quant) and the HTP.

For each activation that model.qdq.onnx quantizes (named by the float tensor behind its Q node), it
reports the PSNR against the fp32 graph of (a) onnxruntime's CPU execution of the QDQ graph and (b) the HTP
emulator, and the *local loss*: how many dB the tensor lost relative to the worst of its producer's inputs,
which names the layer that loses accuracy rather than the layers downstream that inherit the loss. A large
gap between (a) and (b) points at the HTP lowering (a fusion, a requantization, an unsupported encoding)
instead of the quantization itself.

HTP intermediates are read by exposing the chosen tensors as graph outputs of a copy of the QDQ graph. An
output pins its tensor, so the HTP cannot fuse across it: what is measured is the quantized value of each
tensor, while fusions that only exist without observers are checked by the end-to-end PSNR. At SD scale
both the emulator (minutes per evaluation) and memory call for `tensors` (a subset) and one sample.
"""

from __future__ import annotations

import math
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx_ir as ir

from fusionc.core.numerics import Feeds, psnr

from fusionc.passes.qnn.qdq import TENSOR_KEY
from fusionc.targets.qnn.calibrate import SegmentedModel



@dataclass
class TensorReport:
    tensor: str
    op: str
    node: str
    bits: int
    psnr_cpu: float  # fake-quant (onnxruntime CPU on the QDQ graph) vs fp32
    psnr_htp: float | None  # HTP emulator vs fp32
    local_loss_db: float  # worst input PSNR minus this tensor's PSNR (HTP when measured, else CPU)

    def to_json(self) -> dict:
        return {k: (round(v, 2) if isinstance(v, float) and math.isfinite(v) else v) for k, v in asdict(self).items()}


@dataclass
class QuantizedTensor:
    tensor: str  # float tensor name (fp32 graph)
    dq_output: str  # its dequantized value in the QDQ graph
    node: ir.Node | None  # the float node producing it (None: graph input)
    bits: int


def quantized_tensors(qdq: ir.Model) -> list[QuantizedTensor]:
    """The activations quantized by the QDQ graph, in graph order."""
    out = []
    for node in qdq.graph:
        name = node.metadata_props.get(TENSOR_KEY)
        if node.op_type != "QuantizeLinear" or not name or "@" in name:
            continue
        dq = [u.node for u in node.outputs[0].uses() if u.node.op_type == "DequantizeLinear"]
        if not dq:
            continue
        producer = node.inputs[0].producer()
        bits = int(node.outputs[0].dtype.itemsize * 8) if node.outputs[0].dtype else 0
        out.append(QuantizedTensor(name, dq[0].outputs[0].name, producer, bits))
    return out


def _float_inputs(node: ir.Node | None, qdq_to_float: dict[str, str]) -> list[str]:
    """Float tensor names of the activation inputs of a QDQ-graph node (through their DQ nodes)."""
    if node is None:
        return []
    names = []
    for value in node.inputs:
        if value is not None and value.name in qdq_to_float:
            names.append(qdq_to_float[value.name])
    return names


def _collect(model_path: Path, feeds: list[Feeds], wanted: set[str]) -> dict[str, list[np.ndarray]]:
    values: dict[str, list[np.ndarray]] = {}

    def visit(name: str, _sample: int, array: np.ndarray) -> None:
        values.setdefault(name, []).append(np.array(array, copy=True))

    SegmentedModel(model_path).run(feeds, visit, wanted)
    return values


def _htp_values(qdq_path: Path, outputs: list[str], feeds: list[Feeds], htp, work_dir: Path) -> dict[str, list[np.ndarray]]:
    from fusionc.targets.qnn.ep import compile_context, load_context

    model = ir.load(qdq_path)
    values = {}
    for node in model.graph:
        for out in node.outputs:
            values[out.name] = out
    present = {v.name for v in model.graph.outputs}
    for name in outputs:
        if name not in present and name in values:
            model.graph.outputs.append(values[name])
    probe = work_dir / "probe.qdq.onnx"
    ir.save(model, probe)
    context = compile_context(probe, work_dir / "probe_ctx.onnx", htp)[0]
    session = load_context(context)
    names = [o.name for o in session.get_outputs()]
    got: dict[str, list[np.ndarray]] = {}
    for feed in feeds:
        inputs = {i.name: feed[i.name] for i in session.get_inputs()}
        for name, array in zip(names, session.run(names, inputs)):
            got.setdefault(name, []).append(array)
    return got


def compare_layers(float_path: Path, qdq_path: Path, feeds: list[Feeds], htp=None,
                   tensors: Iterable[str] | str | None = None, work_dir: Path | None = None) -> list[TensorReport]:
    """Per quantized tensor: PSNR vs fp32 on CPU fake-quant (and on the HTP when `htp` is an HtpConfig).

    `tensors`: names, or a regular expression over names, to restrict the comparison (frugal at scale).
    """
    qdq = ir.load(qdq_path)
    chosen = quantized_tensors(qdq)
    if isinstance(tensors, str):
        pattern = re.compile(tensors)
        chosen = [t for t in chosen if pattern.search(t.tensor)]
    elif tensors is not None:
        keep = set(tensors)
        chosen = [t for t in chosen if t.tensor in keep]
    by_float = {t.tensor: t for t in chosen}
    qdq_to_float = {t.dq_output: t.tensor for t in quantized_tensors(qdq)}
    inputs_of = {t.tensor: _float_inputs(t.node, qdq_to_float) for t in chosen}
    reference = _collect(Path(float_path), feeds, set(by_float))
    cpu = _collect(Path(qdq_path), feeds, {t.dq_output for t in chosen})
    device: dict[str, list[np.ndarray]] = {}
    if htp is not None:
        with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
            device = _htp_values(Path(qdq_path), [t.dq_output for t in chosen], feeds, htp, Path(tmp))

    def score(values: dict[str, list[np.ndarray]], key: str, name: str) -> float | None:
        if key not in values or name not in reference:
            return None
        return psnr(np.concatenate([r.ravel() for r in reference[name]]),
                    np.concatenate([v.ravel() for v in values[key]]))

    scores: dict[str, tuple[float | None, float | None]] = {}
    for t in chosen:
        scores[t.tensor] = (score(cpu, t.dq_output, t.tensor), score(device, t.dq_output, t.tensor))
    reports = []
    for t in chosen:
        cpu_db, htp_db = scores[t.tensor]
        if cpu_db is None:
            continue
        own = htp_db if htp_db is not None else cpu_db
        ins = [scores[i][1] if scores[i][1] is not None else scores[i][0] for i in inputs_of[t.tensor] if i in scores]
        ins = [v for v in ins if v is not None]
        # graph inputs: loss against a 60 dB "lossless" input (16-bit ~90 dB: 0; 8-bit ~45 dB: 15)
        loss = (min(ins) - own) if ins else (max(0.0, 60.0 - own) if t.node is None else 0.0)
        node = t.node.name if t.node is not None else "(graph input)"
        op = t.node.op_type if t.node is not None else "Input"
        reports.append(TensorReport(t.tensor, op, node, t.bits, cpu_db, htp_db, loss))
    return reports


def worst_layers(reports: list[TensorReport], top: int = 15) -> list[TensorReport]:
    return sorted(reports, key=lambda r: -r.local_loss_db)[:top]
