"""default_pipeline on the exported tiny sd15 components: fused-unit counts match the configs, outputs
unchanged on onnxruntime (PSNR > 60 dB), and a second run of the whole pipeline changes nothing."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from _passes_helpers import psnr, run

from fusionc.core.context import ComponentContext
from fusionc.core.options import CompileOptions
from fusionc.passes.generic import default_pipeline, fused_ops


@pytest.fixture(scope="module")
def sd15_checkpoint(tiny_pipeline):
    from fusionc.checkpoint import load_checkpoint

    return load_checkpoint(tiny_pipeline("sd15"))


def _modules(module: torch.nn.Module, class_name: str) -> int:
    return sum(type(m).__name__ == class_name for m in module.modules())


def _expected(name: str, module: torch.nn.Module) -> dict[str, int]:
    """Fused units the config implies, counted on the torch modules the export traced."""
    if name == "vae_decoder":  # the wrapper holds the whole VAE; only its decoder is exported
        module = next(m for m in module.modules() if type(m).__name__ == "Decoder")
    if name == "text_encoder":  # CLIP: one causal (masked) attention per layer, quick_gelu (not GELU)
        layers = _modules(module, "CLIPEncoderLayer")
        return {"ScaledDotProductAttention:masked": layers, "LayerNormalization": _modules(module, "LayerNorm")}
    counts = {
        "GroupNorm": _modules(module, "GroupNorm"),
        "Gelu": _modules(module, "GEGLU") + _modules(module, "GELU"),
    }
    if name == "unet":  # self- and cross-attention in every transformer block
        counts["ScaledDotProductAttention"] = 2 * _modules(module, "BasicTransformerBlock")
        counts["LayerNormalization"] = _modules(module, "LayerNorm")
    else:  # VAE mid-block attention
        counts["ScaledDotProductAttention"] = _modules(module, "Attention")
    return {k: v for k, v in counts.items() if v}


def _fused_counts(model) -> dict[str, int]:
    counts: collections.Counter = collections.Counter()
    for node in model.graph:
        if node.domain == fused_ops.DOMAIN:
            counts[node.op_type + (f":{node.overload}" if node.overload else "")] += 1
        elif node.op_type == "LayerNormalization":
            counts["LayerNormalization"] += 1
    return dict(counts)


@pytest.mark.parametrize("name", ["unet", "vae_decoder", "text_encoder"])
def test_default_pipeline_on_tiny_sd15(sd15_checkpoint, name):
    from fusionc.export import component_spec, export_component

    options = CompileOptions()
    spec = component_spec(sd15_checkpoint, name, options)
    model = export_component(spec)
    feeds = {k: v.numpy() for k, v in spec.example.items()}
    before = run(model, feeds)

    records = [entry.make(options)(model).modified for entry in default_pipeline()]
    assert records[0] and records[1], "cleanup and attention fusion must change an exported graph"
    assert _fused_counts(model) == _expected(name, spec.module)
    leftovers = {n.op_type for n in model.graph} & {"InstanceNormalization", "Softmax", "Erf"}
    assert not leftovers, f"unfused pieces left: {leftovers}"

    after = run(model, feeds)
    for expected, got in zip(before, after):
        assert psnr(expected, got) > 60.0
        if np.issubdtype(expected.dtype, np.floating):
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert not any(entry.make(options)(model).modified for entry in default_pipeline()), "pipeline not idempotent"


def test_a_compiled_model_is_freed_when_the_driver_drops_it(sd15_checkpoint) -> None:
    """Neither the exporter's optimizer nor our module-level rewrite rules may keep the last model alive
    (onnxscript's matchers hold the graph of their last attempt: at SD scale 3.4 GB of weights)."""
    import gc
    import weakref

    from fusionc.export import component_spec, export_component
    from fusionc.pipeline import run_passes

    options = CompileOptions()
    model = export_component(component_spec(sd15_checkpoint, "unet", options))
    records = run_passes(model, default_pipeline(options), ComponentContext.for_options(options))
    assert any(r.modified for r in records)  # the fusion rules did match on it
    alive = weakref.ref(model.graph)  # what the matchers held: the graph, with its initializers
    del model
    gc.collect()
    assert alive() is None
