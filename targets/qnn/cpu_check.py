"""`--qnn-verify-runtime cpu`: verify a QNN build by running its QDQ graphs on ONNX Runtime's CPU EP.

The HTP emulator runs a context binary bit for bit as the Hexagon would, but slowly: one call of SD-1.5's
UNet takes ~12 minutes on this 2-core machine, and one call of SDXL's UNet or SD3-medium's transformer at full
size takes hours, so full-size QNN builds went unverified. The QDQ graphs the contexts were built from
(`model.qdq.onnx`, or `model.partN.qdq.onnx` chained as the contexts are) hold the same encodings; on the CPU EP
each QuantizeLinear/DequantizeLinear pair rounds and clips activations to their 16- or 8-bit grid and every
weight is its 8-bit value times its scale, while the ops between them run in fp32 (ORT_ENABLE_BASIC: no QDQ
fusion into integer kernels). So this measures the quantization -- what decides a W8A16 build's PSNR --
and not the HTP's own arithmetic (its fixed-point softmax, layernorm and the fp16 islands it runs in fp16).
How close the two figures come is measured, not assumed: benchmarks/qnn_cpu_check.py verifies the same builds of
every built-in, tiny and tiny-DiT pipeline on both and writes the gap (benchmarks/results/qnn_cpu_check.json); the
manifest records which runtime a `psnr_db` came from (`verified_on`).

The graphs run segment by segment under the calibration's byte budgets (calibrate.SegmentedModel): one
segment's weights and activations at a time, whatever the model's size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from fusionc.core.errors import BadInputError
from fusionc.core.numerics import Feeds

RUNS_ON = "QDQ graph on ONNX Runtime CPU (fake-quant; not the HTP)"


def qdq_graphs(build_dir: Path, name: str, entry: dict[str, Any]) -> list[Path]:
    """The QDQ graphs of a component, in the order their contexts chain."""
    files = [Path(build_dir) / f for f in entry.get("files", []) if f.endswith(".qdq.onnx")]
    if not files:
        raise BadInputError(f"component {name} has no QDQ graph (precision {entry.get('precision')}): "
                            "--qnn-verify-runtime cpu checks quantized builds; verify fp16 builds with htp")
    return files


class QdqCpuRunner:
    """Runs a QNN build's QDQ graphs on the CPU EP: canonical feeds, any batch (run as batch-1 rows).

    One part is loaded at a time (a part under 256 MB of weights keeps them inside its .onnx) and its sessions run
    unoptimized, so each weight is dequantized at its use: the full-size SDXL check took 14 GB of anonymous memory
    with every part's graph held and each segment's weights folded to fp32 copies."""

    runs_on = RUNS_ON

    def __init__(self, graphs: list[Path], outputs: list[str] | None = None) -> None:
        from fusionc.targets.qnn.split import chain_inputs

        self.graphs = [Path(p) for p in graphs]
        interfaces, types = [], {}
        for path in self.graphs:
            graph = onnx.load(str(path), load_external_data=False).graph
            weights = {i.name for i in graph.initializer}
            inputs = [i for i in graph.input if i.name not in weights]
            types.update({i.name: i.type.tensor_type.elem_type for i in inputs})
            interfaces.append(([i.name for i in inputs], [o.name for o in graph.output]))
        self.inputs = {n: onnx.helper.tensor_dtype_to_np_dtype(types[n]) for n in chain_inputs(interfaces)}
        self.outputs = outputs or interfaces[-1][1]

    def __call__(self, feeds: Feeds) -> Feeds:
        from fusionc.targets.qnn.calibrate import SegmentedModel
        from fusionc.targets.qnn.quantize import split_batch

        rows = [{k: np.ascontiguousarray(v, dtype=self.inputs[k]) for k, v in single.items() if k in self.inputs}
                for single in split_batch({k: v for k, v in feeds.items() if k in self.inputs})]
        for path in self.graphs:  # all rows through one part, then the next: each part is read once
            part = SegmentedModel(path)
            results = part.run([{n: row[n] for n in part.graph_inputs} for row in rows], lambda *_: None, set(),
                               label="QDQ check on CPU", optimize=False)
            for row, got in zip(rows, results):
                row.update(got)
            del part
        return {name: np.concatenate([row[name] for row in rows], axis=0) for name in self.outputs}
