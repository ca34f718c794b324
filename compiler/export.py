"""Export each component to ONNX with the canonical interface and static spatial shapes.

Wrappers give every component the names the ONNX Runtime diffusers pipeline feeds (team contract in
targets/base.py). The dynamo exporter returns an onnx_ir Model whose initializers still point at the torch
parameters, so no 3.4 GB protobuf is ever serialized in memory; the batch axis stays dynamic.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import warnings
from dataclasses import dataclass
from typing import Any

import onnx_ir as ir
import torch
from onnxscript.rewriter import _DEFAULT_REWRITE_RULES as onnxscript_default_rules

from fusionc.checkpoint import Checkpoint
from fusionc.controlnet import (ControlledUNetWrapper, ControlNetWrapper, controlled_unet_example, controlnet_example,
                                residual_names, residual_shapes)
from fusionc.core.errors import BadInputError, UnsupportedError
from fusionc.core.options import CompileOptions
from fusionc.dit import dit_component, lone_t5_length, t5_component
from fusionc.export_rules import linear_time_rules, on_folded_initializer, slices_to_split
from fusionc.passes.generic._match import forget_last_match
from fusionc.streaming import StreamedWeights, lazy_folded_transposes, lazy_initializer, streamed_weights


class TextEncoderWrapper(torch.nn.Module):
    """input_ids int32 -> last_hidden_state, pooler_output | text_embeds (+ penultimate for SDXL)."""

    def __init__(self, model: torch.nn.Module, penultimate: bool) -> None:
        super().__init__()
        self.model = model
        self.penultimate = penultimate
        self.projection = hasattr(model, "text_projection")

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(input_ids.long(), output_hidden_states=self.penultimate, return_dict=True)
        pooled = out.text_embeds if self.projection else out.pooler_output
        result = (out.last_hidden_state, pooled)
        return result + (out.hidden_states[-2],) if self.penultimate else result


class UNetWrapper(torch.nn.Module):
    """sample, timestep [1], encoder_hidden_states (+ text_embeds, time_ids for SDXL) -> out_sample."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                text_embeds: torch.Tensor | None = None, time_ids: torch.Tensor | None = None) -> torch.Tensor:
        added = {"text_embeds": text_embeds, "time_ids": time_ids} if text_embeds is not None else None
        return self.model(sample, timestep, encoder_hidden_states, added_cond_kwargs=added, return_dict=False)[0]


class VaeDecoderWrapper(torch.nn.Module):
    """latent_sample (already divided by the scaling factor) -> sample in [-1, 1]."""

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent_sample, return_dict=False)[0]


class VaeEncoderWrapper(torch.nn.Module):
    """sample in [-1, 1] -> latent_sample (the posterior mean; AutoencoderTiny's latents)."""

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        encoded = self.vae.encode(sample, return_dict=False)[0]
        return encoded if isinstance(encoded, torch.Tensor) else encoded.mean


@dataclass
class ComponentSpec:
    """The wrapper, example inputs (batch 2) and interface names of one component."""

    name: str
    module: torch.nn.Module
    example: dict[str, torch.Tensor]
    outputs: list[str]

    def reference(self, feeds: dict) -> dict:
        """Run the fp32 torch module on numpy feeds; numpy outputs by name."""
        with torch.no_grad():
            args = [torch.from_numpy(feeds[k]) for k in self.example]
            result = self.module(*args)
        result = result if isinstance(result, tuple) else (result,)
        return {name: value.float().numpy() for name, value in zip(self.outputs, result)}


def latent_scale(checkpoint: Checkpoint) -> int:
    vae = checkpoint.configs.get("vae")
    if vae is None or not hasattr(vae, "block_out_channels") or hasattr(vae, "encoder_block_out_channels"):
        return 8
    return 2 ** (len(vae.block_out_channels) - 1)


def image_size(checkpoint: Checkpoint, options: CompileOptions) -> tuple[int, int]:
    """(height, width) in pixels: the options, else the UNet's sample size (or the VAE's)."""
    scale = latent_scale(checkpoint)
    denoiser = "unet" if "unet" in checkpoint.configs else "transformer"
    if denoiser in checkpoint.configs:
        size = checkpoint.configs[denoiser].sample_size
        default = (size, size) if isinstance(size, int) else tuple(size)
        default = (default[0] * scale, default[1] * scale)
    elif "vae" in checkpoint.configs and getattr(checkpoint.configs["vae"], "sample_size", None):
        default = (checkpoint.configs["vae"].sample_size,) * 2
    else:
        default = (512, 512)
    height = default[0] if options.height is None else options.height  # 0 is refused below, not the default
    width = default[1] if options.width is None else options.width
    if height % scale or width % scale or height <= 0 or width <= 0:
        raise BadInputError(f"--height/--width {height}x{width} must be positive multiples of {scale} (the VAE's downsampling)")
    return height, width


def text_length(checkpoint: Checkpoint) -> int:
    """CLIP tokens (T5 lengths: fusionc.dit.t5_length)."""
    encoder = checkpoint.configs.get("text_encoder") or checkpoint.configs.get("text_encoder_2")
    return int(getattr(encoder, "max_position_embeddings", 77)) if encoder is not None else 77


def _denoiser_example(cfg: Any, batch: int, latent_hw: tuple[int, int], tokens: int, image_hw: tuple[int, int],
                      gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Example inputs of a UNet or ControlNet from its config: sample, timestep, encoder_hidden_states
    (+ SDXL's text_embeds and time_ids)."""
    example = {
        "sample": torch.randn(batch, cfg.in_channels, *latent_hw, generator=gen),
        "timestep": torch.tensor([500.0]),
        "encoder_hidden_states": torch.randn(batch, tokens, cfg.cross_attention_dim, generator=gen),
    }
    if cfg.addition_embed_type == "text_time":
        pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        example["text_embeds"] = torch.randn(batch, pooled, generator=gen)
        example["time_ids"] = torch.tensor([[*image_hw, 0, 0, *image_hw]] * batch, dtype=torch.float32)
    elif cfg.addition_embed_type is not None or cfg.class_embed_type is not None:
        raise UnsupportedError(f"UNet conditioning '{cfg.addition_embed_type or cfg.class_embed_type}' is not "
                               "supported: fusionc compiles text-conditioned and SDXL text_time UNets")
    return example


def component_spec(checkpoint: Checkpoint, name: str, options: CompileOptions, batch: int = 2) -> ComponentSpec:
    """The canonical wrapper and example inputs of component `name`."""
    height, width = image_size(checkpoint, options)
    scale = latent_scale(checkpoint)
    gen = torch.Generator().manual_seed(options.seed)
    if checkpoint.dit_family is not None:  # SD3 / PixArt: the transformer and T5 (fusionc.dit)
        found = dit_component(checkpoint, name, options, batch, (height // scale, width // scale), (height, width), gen)
        if found is not None:
            return ComponentSpec(name, *found)
    if checkpoint.classes.get(name) == "T5EncoderModel":  # a T5 folder alone (a pipeline's T5: dit_component)
        return ComponentSpec(name, *t5_component(checkpoint.models[name], lone_t5_length(options), batch, gen))
    if name in ("text_encoder", "text_encoder_2"):
        model = checkpoint.models[name]
        ids = torch.randint(0, model.config.vocab_size, (batch, text_length(checkpoint)), generator=gen, dtype=torch.int32)
        outputs = ["last_hidden_state", "text_embeds" if hasattr(model, "text_projection") else "pooler_output"]
        penultimate = checkpoint.is_sdxl or checkpoint.dit_family == "sd3"  # both condition on the penultimate state
        if penultimate:
            outputs.append("hidden_states_penultimate")
        return ComponentSpec(name, TextEncoderWrapper(model, penultimate).eval(), {"input_ids": ids}, outputs)
    if name in ("unet", "controlnet"):
        model = checkpoint.models[name]
        example = _denoiser_example(model.config, batch, (height // scale, width // scale), text_length(checkpoint),
                                    (height, width), gen)
        if name == "controlnet":
            example = controlnet_example(checkpoint, example, height, width, gen)
            outputs = residual_names(len(residual_shapes(model, batch, (height // scale, width // scale))))
            return ComponentSpec(name, ControlNetWrapper(model).eval(), example, outputs)
        if checkpoint.has_controlnet:  # the UNet of a ControlNet pipeline takes the residuals (Apple's names)
            example = controlled_unet_example(model, example, gen)
            wrapper = ControlledUNetWrapper(model, "text_embeds" in example)
            return ComponentSpec(name, wrapper.eval(), example, ["out_sample"])
        return ComponentSpec(name, UNetWrapper(model).eval(), example, ["out_sample"])
    if name in ("vae_decoder", "vae_encoder"):
        vae = checkpoint.models["vae"]
        channels = vae.config.latent_channels
        if name == "vae_decoder":
            latent = torch.randn(batch, channels, height // scale, width // scale, generator=gen)
            return ComponentSpec(name, VaeDecoderWrapper(vae).eval(), {"latent_sample": latent}, ["sample"])
        image = torch.rand(batch, 3, height, width, generator=gen) * 2 - 1
        return ComponentSpec(name, VaeEncoderWrapper(vae).eval(), {"sample": image}, ["latent_sample"])
    raise BadInputError(f"unknown component '{name}'")


def export_component(spec: ComponentSpec, opset: int = 18) -> ir.Model:
    """torch.onnx.export (dynamo) of one component; returns the onnx_ir Model, weights not copied. A streamed
    component (fusionc.streaming) is traced with its weights on the meta device; its initializers read the
    checkpoint's files lazily."""
    dynamic = dynamic_shapes(spec)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    streamed = streamed_weights(spec.module)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), linear_time_rules(), \
            (streamed.pause() if streamed is not None else contextlib.nullcontext()):
        warnings.simplefilter("ignore")
        names = {"input_names": list(spec.example), "output_names": spec.outputs} if streamed is None else {}
        program = torch.onnx.export(
            spec.module, tuple(spec.example.values()), dynamo=True, opset_version=opset, optimize=streamed is None,
            dynamic_shapes=dynamic, verbose=False, **names)
        if streamed is not None:  # weights read from the files when a pass or the writer asks, one at a time
            from torch.onnx._internal.exporter import _ir_passes

            _point_at_files(program.model, spec.module, streamed)
            with lazy_folded_transposes():
                program.optimize()  # then what export(optimize=True, input_names, output_names) runs after the trace
            _ir_passes.rename_inputs(program.model, list(spec.example))
            _ir_passes.rename_outputs(program.model, spec.outputs)
    return finish_export(program.model)


def dynamic_shapes(spec: ComponentSpec) -> tuple:
    """torch.export's dynamic_shapes for a component: the batch axis of every input but the timestep (a module whose
    forward takes `*rest` from `varargs_start` on gets them nested, as torch.export expects)."""
    dynamic = tuple({0: torch.export.Dim.DYNAMIC} if k != "timestep" else None for k in spec.example)
    varargs = getattr(spec.module, "varargs_start", None)
    return dynamic if varargs is None else (*dynamic[:varargs], tuple(dynamic[varargs:]))


def finish_export(model: ir.Model) -> ir.Model:
    """What every export ends with: the one default rule linear_time_rules left out, no-op Squeezes dropped, the
    exporter's rules forgotten (they would pin this model), and the dynamic batch axis named `batch`."""
    slices_to_split(model)
    drop_noop_squeezes(model)
    forget_last_match(onnxscript_default_rules)
    for value in [*model.graph.inputs, *model.graph.outputs]:
        if value.shape is not None and len(value.shape) and not isinstance(value.shape[0], int):
            value.shape = ir.Shape(["batch", *value.shape[1:]])
    return model


def _point_at_files(model: ir.Model, module: torch.nn.Module, streamed: StreamedWeights) -> None:
    """Make every initializer that is a streamed parameter of `module` (an uninitialized stand-in while traced,
    fusionc.streaming.StreamedWeights.pause) a lazy tensor of its bytes in the checkpoint's safetensors files."""
    by_name = dict(module.named_parameters(remove_duplicate=False))
    for value in model.graph.initializers.values():
        raw = getattr(value.const_value, "raw", None)
        if not isinstance(raw, torch.Tensor):
            continue
        stored = streamed.source(by_name.get(value.name, raw)) or streamed.source(raw)
        if stored is None:
            continue  # a buffer or a constant of the trace: real values
        value.const_value = lazy_initializer(stored, value.dtype, value.shape, value.name)


def export_structure(spec: ComponentSpec, opset: int = 18) -> ir.Model:
    """Export a component whose parameters live on the meta device (fusionc.checkpoint.load_structure).

    torch.export traces with fake tensors anyway; what breaks on meta weights is the exporter's constant folding,
    which copies initializers. So: export unoptimized, make every meta initializer a lazy stand-in tensor of its
    dtype and shape (materialized only if a folding pass reads it: small constants such as norm scales; random
    floats seeded by the name, not zeros or ones, which the rewriter would take for no-op Adds and Muls and
    delete, nor one value for all, which common-subexpression elimination would merge; integers count
    up like the position ids such buffers usually hold), then run
    the same onnxscript optimizer the exporter runs (constants it folds from stand-ins stay stand-ins). Tracing
    time stays (an SDXL UNet's whole estimate: 78 s on 2 cores, benchmarks/estimate_speed.py); what goes is
    reading, hashing and holding the weights.
    """
    import numpy as np
    import onnxscript.optimizer

    dynamic = dynamic_shapes(spec)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            spec.module, tuple(spec.example.values()), dynamo=True, opset_version=opset, optimize=False,
            input_names=list(spec.example), output_names=spec.outputs, dynamic_shapes=dynamic, verbose=False,
        )
    model = program.model
    for value in model.graph.initializers.values():
        raw = getattr(value.const_value, "raw", None)
        if isinstance(raw, torch.Tensor) and raw.device.type == "meta":
            value.const_value = stand_in_tensor(value.dtype, tuple(value.shape), value.name)
    with lazy_folded_stand_ins(), linear_time_rules():
        onnxscript.optimizer.optimize_ir(model)
    return finish_export(model)


class StandInTensor(ir.LazyTensor):
    """A weight of a meta-device export: its values are made up (_stand_in) when something reads them."""


def stand_in_tensor(dtype: ir.DataType, shape: tuple[int, ...], name: str) -> StandInTensor:
    return StandInTensor(lambda: ir.tensor(_stand_in(dtype.numpy(), shape, name)), dtype=dtype, shape=ir.Shape(shape),
                         name=name)


def lazy_folded_stand_ins(min_bytes: int = 1 << 16) -> contextlib.AbstractContextManager:
    """While the optimizer folds a meta export: a folded constant of at least `min_bytes` computed from a stand-in
    (a Transpose of a Linear weight, which onnxscript folds whatever its size) becomes a stand-in of its own shape
    instead of an in-memory array. Without this an SDXL UNet's estimate held its 10 GB of folded stand-ins; the
    values were made up anyway, and only shapes reach the cost model."""

    def hook(node: ir.Node, value: ir.Value) -> None:
        tensor = value.const_value
        if tensor.nbytes >= min_bytes and any(isinstance(getattr(i, "const_value", None), StandInTensor)
                                              for i in node.inputs):
            value.const_value = stand_in_tensor(tensor.dtype, tuple(tensor.shape), value.name or tensor.name or "")

    return on_folded_initializer(hook)


def _stand_in(dtype, shape: tuple[int, ...], name: str):  # noqa: ANN001 - a numpy dtype
    """Values for a meta initializer: distinct per name (equal constants would be merged by common-subexpression
    elimination, e.g. the q/k/v projections of one attention). Floats are one fixed random block tiled to the
    shape, scaled and shifted by the name's CRC: drawing fresh normals took 7 s per 200 M values, a sixth of an
    SD-1.5 UNet's estimate, for numbers nobody reads (this: 0.15 s)."""
    import zlib

    import numpy as np

    crc = zlib.crc32(name.encode())
    if np.issubdtype(dtype, np.floating):
        values = np.resize(_stand_in_block(), int(np.prod(shape))).astype(dtype, copy=False).reshape(shape)
        values *= dtype.type(0.5 + (crc & 0xFFFF) / 65536)
        values += dtype.type(((crc >> 16) & 0xFFFF) / 65536)
        return values
    if dtype == np.bool_:
        return np.ones(shape, dtype=bool)
    return np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)


@functools.cache
def _stand_in_block():  # noqa: ANN202 - a numpy array
    """4 K-element random normals (a prime count: the tiling does not line up with rows of a power-of-two width)."""
    import numpy as np

    return np.random.default_rng(0).standard_normal(4093).astype(np.float32)


def drop_noop_squeezes(model: ir.Model) -> int:
    """Remove Squeeze nodes whose axes all have a static size other than 1: a no-op in torch (`x.squeeze(1)` on
    [B, 16, C], PixArt's output head), but the exporter emits an ONNX Squeeze that fails at load. Returns the count."""
    removed = 0
    for node in list(model.graph.all_nodes()):
        if node.op_type != "Squeeze" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
            continue
        data, axes = node.inputs[0], node.inputs[1]
        axes_value = ir.convenience.get_const_tensor(axes) if axes is not None else None
        if data is None or data.shape is None or axes_value is None:
            continue
        rank = len(data.shape)
        dims = [data.shape[int(a) % rank] for a in axes_value.numpy().ravel()]
        if not dims or not all(isinstance(d, int) and d != 1 for d in dims):
            continue
        ir.convenience.replace_all_uses_with(node.outputs[0], data)
        if node.outputs[0] in node.graph.outputs:
            continue
        node.graph.remove(node, safe=True)
        removed += 1
    return removed
