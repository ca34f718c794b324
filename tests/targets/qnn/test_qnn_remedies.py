"""Remedies: group testing finds the few noisy layers of an additive noise model; conditioning paths are found."""

from __future__ import annotations

import math

import onnx_ir as ir

from fusionc.targets.qnn.remedies import conditioning_nodes, group_search


def test_group_search_finds_the_noisy_layers() -> None:
    names = [f"n{i}" for i in range(64)]
    noise = {n: 1e-7 for n in names}
    noise.update({"n3": 1e-3, "n40": 3e-4, "n41": 2e-4})  # three layers carry most of the 8-bit noise
    high_db = 50.0

    def only_low(groups: list[list[str]]) -> list[float]:  # per group: PSNR with every node raised except it
        return [-10 * math.log10(10 ** (-high_db / 10) + sum(noise[n] for n in group)) for group in groups]

    log: list = []
    chosen = group_search(names, only_low, high_db, target=40.0, budget=40, log=log)
    assert {"n3", "n40", "n41"} <= set(chosen) and len(chosen) <= 12
    rest = sum(noise[n] for n in names if n not in chosen)
    assert -10 * math.log10(10 ** (-high_db / 10) + rest) >= 40.0
    assert len(log) <= 40


def test_conditioning_nodes_stop_where_the_sample_joins() -> None:
    model = ir.from_onnx_text("""
    <ir_version: 10, opset_import: ["" : 21]>
    g (float[1,4] sample, float[1] timestep, float[1,4] encoder_hidden_states) => (float[1,4] y) {
      f = Mul (timestep, timestep)
      e = Sin (f)
      k = Relu (encoder_hidden_states)
      h = Add (sample, e)
      y = Mul (h, k)
    }""")
    for node in model.graph:
        node.name = node.outputs[0].name
    assert conditioning_nodes(model) == {"f", "e", "k"}
