"""Batch accounting of latency estimates and gates: a static batch-1 graph (every QNN context) runs once per
guidance row, so a guided UNet step is two calls, not one call "at batch 2"."""

from __future__ import annotations

from pathlib import Path

import onnx_ir as ir

from fusionc.bench import Figure, budget_rows, call_shape
from fusionc.core.devices import DEVICES
from fusionc.core.options import CompileOptions
from fusionc.gates import estimate_latency, graph_calls, latency_gates, static_batch


def test_static_and_dynamic_batches() -> None:
    assert static_batch([[1, 4, 8, 8], [1], [1, 77, 32]]) == 1
    assert static_batch([[1], ["batch", 4, 8, 8]]) is None  # timestep has no batch axis; the sample is dynamic
    assert graph_calls(2, 1) == (1, 2) and graph_calls(2, None) == (2, 1) and graph_calls(1, 1) == (1, 1)


def test_a_batch_1_unet_costs_two_calls_per_guided_step(sd15_onnx_build: Path) -> None:
    from fusionc.passes.qnn.rewrites import StaticBatchPass

    device = DEVICES["snapdragon-8-gen-2"]
    options = CompileOptions(target="qnn")
    dynamic = ir.load(sd15_onnx_build / "unet" / "model.onnx")
    both = estimate_latency(dynamic, "unet", device, options)
    assert (both["batch"], both["calls"]) == (2, 1)
    static = ir.load(sd15_onnx_build / "unet" / "model.onnx")
    StaticBatchPass(1)(static)
    one = estimate_latency(static, "unet", device, options)
    assert (one["batch"], one["calls"]) == (1, 2), one  # was labelled batch 2 and counted once
    assert one["ms"] > 0  # a batch-1 call costs about a batch-2 one when the tiny model is weight-bound
    manifest = {"components": {"unet": {"latency_estimate": one}}}
    total = latency_gates(manifest, {"total": 1e9}, steps=8)[0]
    assert abs(total.value - one["ms"] * 8 * 2) < 1e-3 * total.value
    per_call = latency_gates(manifest, {"unet": 1e9}, steps=8)[0]
    assert "at batch 1" in per_call.message and "2 calls per guided step" in per_call.message


def test_bench_counts_calls_of_a_static_batch_graph() -> None:
    static = {"inputs": {"sample": {"shape": [1, 4, 8, 8]}, "timestep": {"shape": [1]}}}
    dynamic = {"inputs": {"sample": {"shape": ["batch", 4, 8, 8]}, "timestep": {"shape": [1]}}}
    assert call_shape("unet", static, guidance=True) == (1, 2)
    assert call_shape("unet", static, guidance=False) == (1, 1)
    assert call_shape("unet", dynamic, guidance=True) == (2, 1)
    figures = [Figure("unet", "qnn/htp", "sd8g2", "estimated", 1, 100.0, calls=2),
               Figure("vae_decoder", "qnn/htp", "sd8g2", "estimated", 1, 50.0)]
    row = budget_rows("b", figures, steps=8, guidance=True, budget_s=10.0)[0]
    assert row["calls"]["unet"] == 16 and row["total_ms"] == 100.0 * 16 + 50.0


def test_a_diffusion_transformer_and_a_third_text_encoder_count_in_an_image() -> None:
    """SD3 / PixArt builds have a `transformer` where SD has a `unet`, and SD3 a T5 `text_encoder_3`: the CI gate's
    total, bench's end-to-end budget and a fleet's per-generation latency count them like the UNet and the CLIP
    encoders (they used to leave them out: a total gate passed on the text encoders and the VAE alone)."""
    from fusionc.core.generation import calls_per_image

    assert calls_per_image("transformer", 8) == 8 and calls_per_image("text_encoder_3", 8) == 2
    assert calls_per_image("text_encoder_3", 8, guidance=False) == 1
    estimates = {"text_encoder": 1.0, "text_encoder_2": 1.0, "text_encoder_3": 5.0, "transformer": 20.0,
                 "vae_decoder": 10.0}
    manifest = {"components": {n: {"latency_estimate": {"ms": ms, "batch": 1, "calls": 2 if n == "transformer" else 1,
                                                        "device": "snapdragon-8-gen-3"}}
                               for n, ms in estimates.items()}}
    total = latency_gates(manifest, {"total": 1e9}, steps=8)[0]
    assert total.value == 2 * (1 + 1 + 5) + 20 * 8 * 2 + 10
    figures = [Figure(n, "qnn/htp", "sd8g3", "estimated", 1, ms, calls=2 if n == "transformer" else 1)
               for n, ms in estimates.items()]
    (row,) = budget_rows("sd3", figures, steps=8, guidance=True, budget_s=10.0)
    assert row["calls"]["transformer"] == 16 and row["total_ms"] == total.value
    assert list(row["breakdown_ms"]) == ["text_encoder", "text_encoder_2", "text_encoder_3", "transformer",
                                         "vae_decoder"]
