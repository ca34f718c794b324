"""A cheap remedy evaluation: one float session whose activation quantization is set per run by its inputs.

The exact evaluation (`remedies._trial_psnr`) re-plans, re-quantizes and re-saves the whole model and runs
it segment by segment for every candidate config: on the mid UNet (142M parameters) one evaluation took
134 s on the shared machine, more than the remedy budget, so no remedy ran. Here the float model is
rewritten once; every planned activation (at its producer) and every possible conversion (a consumer
reading a tensor at another width) gets a fake quantizer whose scale, zero point and integer range are
graph inputs:

    x ─Div(s)─Round─Add(z)─Clip(lo, hi)─Sub(z)─Mul(s)─ y        = DequantizeLinear(QuantizeLinear(x))

so a candidate config is one `build_plan` (cheap: statistics only) and one run per selection input; an
unplanned slot gets s = 2^-40, z = 0 and an unbounded range, which leaves every float32 value unchanged
(x * 2^40 is exact; values below 2^-16 move by at most 2^-41). Weights are quantized once, at the base
config's weight encodings, and stored dequantized (the exact graph's DQ(Wq)); int32 biases stay float (their
step, s_x * s_w, is ~1e-9 of the range); fp32 islands keep those weights (judged slightly pessimistically).
Configs the slots cannot express -- other weight widths, fp16 islands -- return None and the caller falls back to the exact evaluation. Same numbers as the QDQ graph
(tests/targets/qnn/test_fakequant.py), not the same bytes: the run order of float ops may differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from fusionc.core.numerics import Feeds, outputs_psnr
from fusionc.passes.qnn.qdq import Encoding
from fusionc.targets.qnn.calibrate import TensorStats
from fusionc.targets.qnn.rules import QuantConfig, build_plan, quantized_nodes

OFF_SCALE = np.float32(2.0 ** -40)  # a slot that quantizes nothing
OFF_BOUND = np.float32(3e38)


def _scalar(graph: ir.Graph, name: str) -> ir.Value:
    value = ir.Value(name=name, shape=ir.Shape([]), type=ir.TensorType(ir.DataType.FLOAT))
    graph.inputs.append(value)
    return value


def _fake_quant(graph: ir.Graph, x: ir.Value, slot: str) -> tuple[list[ir.Node], ir.Value]:
    s, z, lo, hi = (_scalar(graph, f"fq/{slot}/{p}") for p in ("s", "z", "lo", "hi"))
    div = ir.Node("", "Div", [x, s], name=f"fq/{slot}/div")
    rnd = ir.Node("", "Round", [div.outputs[0]], name=f"fq/{slot}/round")
    add = ir.Node("", "Add", [rnd.outputs[0], z], name=f"fq/{slot}/add")
    clip = ir.Node("", "Clip", [add.outputs[0], lo, hi], name=f"fq/{slot}/clip")
    sub = ir.Node("", "Sub", [clip.outputs[0], z], name=f"fq/{slot}/sub")
    mul = ir.Node("", "Mul", [sub.outputs[0], s], name=f"fq/{slot}/mul")
    nodes = [div, rnd, add, clip, sub, mul]
    for node in nodes:
        node.outputs[0].name = node.name
        node.outputs[0].dtype = ir.DataType.FLOAT
        node.outputs[0].shape = x.shape
    return nodes, mul.outputs[0]


def _slot_feeds(slot: str, enc: Encoding | None) -> dict[str, np.ndarray]:
    if enc is None:
        values = (OFF_SCALE, 0.0, -OFF_BOUND, OFF_BOUND)
    else:
        lo, hi = enc.qrange
        values = (float(enc.scale), float(enc.zero_point), lo, hi)
    return {f"fq/{slot}/{p}": np.array(v, np.float32) for p, v in zip(("s", "z", "lo", "hi"), values)}


class FakeQuantEvaluator:
    """PSNR of a QuantConfig's QDQ graph against the float outputs, from one session built once (docstring)."""

    def __init__(self, float_path: Path, stats: dict[str, TensorStats], base: QuantConfig, feeds: list[Feeds],
                 reference: list[Feeds], work_dir: Path) -> None:
        import onnxruntime as ort

        from fusionc.targets.qnn.quantize import save_model

        self.stats, self.feeds, self.reference = stats, feeds, reference
        model = ir.load(float_path)
        self.model = model  # re-planned per config, activations only (no weight reads)
        plan = build_plan(model, stats, base)
        self.base_weight_bits = {n.name: base.weight_bits_by_node.get(n.name, base.weight_bits)
                                 for n in quantized_nodes(model.graph, base)}
        self.slots: dict[str, str] = {}  # tensor name -> slot
        self.edges: dict[tuple[str, str], str] = {}  # (tensor, consumer) -> slot
        work = ir.load(float_path)
        graph = work.graph
        values = {v.name: v for v in graph.inputs}
        values.update({out.name: out for node in graph for out in node.outputs})
        quantized = {n.name for n in quantized_nodes(graph, base)}
        self.outputs = [v.name for v in graph.outputs]
        for index, name in enumerate(plan.activations):
            value = values.get(name)
            if value is None:
                continue
            slot = f"a{index}"
            users = list(value.uses())
            nodes, out = _fake_quant(graph, value, slot)
            producer = value.producer()
            if producer is None:
                graph.insert_before(next(iter(graph)), nodes)
            else:
                graph.insert_after(producer, nodes)
            for user, i in users:
                user.replace_input_with(i, out)
            if name in self.outputs:
                value.name, out.name = f"{name}_float", name
                graph.outputs[self.outputs.index(name)] = out
            self.slots[name] = slot
            for user, i in users:  # every quantized consumer may read it at another width (a conversion)
                if user.name not in quantized or (name, user.name) in self.edges:
                    continue
                edge = f"c{len(self.edges)}"
                nodes, converted = _fake_quant(graph, out, edge)
                graph.insert_before(user, nodes)
                for j, inp in enumerate(user.inputs):
                    if inp is out:
                        user.replace_input_with(j, converted)
                self.edges[(name, user.name)] = edge
        by_name = {n.name: n for n in graph}
        for (node_name, index), enc in plan.weights.items():
            node = by_name.get(node_name)
            if node is None or enc.dtype == ir.DataType.INT32:  # biases stay float (module docstring)
                continue
            value = node.inputs[index]
            array = enc.dequantize(enc.quantize(value.const_value.numpy()))
            fq = ir.Value(name=f"{value.name}_fq_{node_name}", shape=value.shape, type=value.type,
                          const_value=ir.tensor(array, name=f"{value.name}_fq_{node_name}"))
            graph.register_initializer(fq)
            node.replace_input_with(index, fq)
        ir.passes.common.RemoveUnusedNodesPass()(work)
        path = Path(work_dir) / "fakequant.onnx"
        save_model(work, path)
        del work
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}

    def supports(self, config: QuantConfig) -> bool:
        bits = {n: config.weight_bits_by_node.get(n, config.weight_bits) for n in self.base_weight_bits}
        # fp32 islands (the CPU remedy): their tensors are simply unplanned; their weights stay the baked 8-bit
        # ones here, so a float node is judged with a little more noise than it has (a conservative estimate)
        floats_ok = not config.float_nodes or config.float_islands == "fp32"
        return floats_ok and bits == self.base_weight_bits

    def psnr(self, config: QuantConfig) -> float | None:
        """The worst output's PSNR over the feeds, or None when the slots cannot express `config`."""
        results = self.outputs_for(config)
        return None if results is None else outputs_psnr(self.reference, results)

    def outputs_for(self, config: QuantConfig) -> list[Feeds] | None:
        """The fake-quant outputs for each feed under `config`, or None when the slots cannot express it."""
        if not self.supports(config):
            return None
        plan = build_plan(self.model, self.stats, config, weights=False)
        if set(plan.activations) - set(self.slots) or set(plan.conversions) - set(self.edges):
            return None
        settings: dict[str, np.ndarray] = {}
        for name, slot in self.slots.items():
            settings.update(_slot_feeds(slot, plan.activations.get(name)))
        for edge, slot in self.edges.items():
            settings.update(_slot_feeds(slot, plan.conversions.get(edge)))
        results = []
        for feeds in self.feeds:
            run = {k: v for k, v in feeds.items() if k in self.input_names}
            results.append(dict(zip(self.outputs, self.session.run(self.outputs, {**run, **settings}))))
        return results

    def describe(self) -> dict[str, Any]:
        return {"activation_slots": len(self.slots), "conversion_slots": len(self.edges)}
