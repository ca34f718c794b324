"""AdoptCoreMLInterfacePass: give a component the input/output contract of Apple's Swift StableDiffusion package.

apple/ml-stable-diffusion feeds fixed shapes and its own names: the UNet gets `sample` [2,4,h,w],
`timestep` [2] and `encoder_hidden_states` in the ANE layout [2,C,1,S] and returns `noise_pred`; the
text encoder gets float32 `input_ids` [1,77] and returns `last_hidden_state` (SDXL: `hidden_embeds`,
`pooled_outputs`); the VAE decoder gets `z` and returns `image`. Making this an ONNX rewrite (rather than a
wrapper around the .mlpackage) lets the layout passes cancel the encoder_hidden_states transpose against
the K/V projections that consume it. Static batch sizes are fixed here, so later passes see static shapes.

    before (unet)                                   after
    encoder_hidden_states [batch,77,768] -> K/V     encoder_hidden_states [2,768,1,77] -> Squeeze(2)
                                                       -> Transpose(0,2,1) -> K/V
    timestep [1]                                    timestep [2]
    out_sample [batch,4,64,64]                      noise_pred [2,4,64,64]

The SD3 transformer takes the MMDiT contract of the Swift package's StableDiffusion3Pipeline
(MultiModalDiffusionTransformer.swift): `latent_image_embeddings` [2,C,h,w], `timestep` [2],
`token_level_text_embeddings` [2,C,1,S] and `pooled_text_embeddings` [2,C,1,1]; the Swift code reads the
first output whatever its name. T5 (TextEncoderT5.swift) returns `encoder_hidden_states`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from fusionc.core.numerics import Feeds
from fusionc.passes.ane.graph import Emitter, replace, reset_fresh_names

UNET_BATCH = 2  # the Swift package runs the unconditional and conditional halves of CFG as one batch


@dataclass
class Interface:
    """Canonical (ONNX export) name -> artifact name, for inputs and outputs, plus how each input changed."""

    component: str
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    bc1s_inputs: list[str] = field(default_factory=list)  # canonical [B,S,C] inputs fed as [B,C,1,S]
    float_inputs: list[str] = field(default_factory=list)  # integer inputs fed as float32
    bc11_inputs: list[str] = field(default_factory=list)  # canonical [B,C] inputs fed as [B,C,1,1]

    def to_json(self) -> dict:
        return {"component": self.component, "inputs": self.inputs, "outputs": self.outputs,
                "bc1s_inputs": self.bc1s_inputs, "float_inputs": self.float_inputs, "bc11_inputs": self.bc11_inputs}


def component_of(graph: ir.Graph) -> str:
    names = {v.name for v in graph.inputs}
    if {"sample", "timestep", "controlnet_cond"} <= names:  # Apple's ControlNet: the UNet's contract + the image
        return "controlnet"
    if {"sample", "timestep"} <= names:
        return "unet"
    if {"hidden_states", "timestep", "encoder_hidden_states", "pooled_projections"} <= names:
        return "mmdit"  # SD3's transformer (PixArt's has no Swift contract: it keeps the ONNX names)
    if "input_ids" in names:
        return "text_encoder"
    if "latent_sample" in names:
        return "vae_decoder"
    if "sample" in names:
        return "vae_encoder"
    return "unknown"


def plan(graph: ir.Graph) -> Interface:
    kind = component_of(graph)
    outs = {v.name for v in graph.outputs}
    it = Interface(kind)
    if kind in ("unet", "controlnet"):  # ControlNet outputs keep their names: additional_residual_*
        if kind == "unet":
            it.outputs["out_sample"] = "noise_pred"
        it.bc1s_inputs.append("encoder_hidden_states")
    elif kind == "mmdit":
        it.inputs.update(hidden_states="latent_image_embeddings", encoder_hidden_states="token_level_text_embeddings",
                         pooled_projections="pooled_text_embeddings")
        it.bc1s_inputs.append("encoder_hidden_states")
        it.bc11_inputs.append("pooled_projections")
    elif kind == "text_encoder" and "attention_mask" in names_of(graph):  # T5 (TextEncoderT5.swift)
        it.outputs["last_hidden_state"] = "encoder_hidden_states"
    elif kind == "text_encoder":
        it.float_inputs.append("input_ids")
        if "hidden_states_penultimate" in outs:  # SDXL: TextEncoderXL reads hidden_embeds and pooled_outputs
            it.outputs["hidden_states_penultimate"] = "hidden_embeds"
            for pooled in ("text_embeds", "pooler_output"):
                if pooled in outs:
                    it.outputs[pooled] = "pooled_outputs"
    elif kind == "vae_decoder":
        it.inputs["latent_sample"] = "z"
        it.outputs["sample"] = "image"
    return it


def names_of(graph: ir.Graph) -> set[str]:
    return {v.name for v in graph.inputs}


def _batch(kind: str) -> int:
    return UNET_BATCH if kind in ("unet", "controlnet", "mmdit") else 1


class AdoptCoreMLInterfacePass(ir.passes.InPlacePass):
    """Static batch, Apple's names, (B,C,1,S) encoder_hidden_states, float32 input_ids; idempotent."""

    def __init__(self) -> None:
        super().__init__()
        self.interface: Interface | None = None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        if graph.metadata_props.get("fusionc.coreml_interface") == "1":
            return ir.passes.PassResult(model, modified=False)
        reset_fresh_names()  # first ANE pass on this model: its new names start at 0 whatever ran before
        it = plan(graph)
        self.interface = it
        batch = _batch(it.component)
        first = next(iter(graph), None)
        for index, value in enumerate(list(graph.inputs)):
            if value.shape is None:
                continue
            dims = list(value.shape)
            if value.name == "timestep" and it.component in ("unet", "controlnet", "mmdit"):
                dims = [batch]
            elif dims and not isinstance(dims[0], int):
                dims[0] = batch
            value.shape = ir.Shape(dims)
            if value.name in it.bc1s_inputs and len(dims) == 3 and first is not None:
                b, s, c = dims
                new = ir.Value(name=value.name, shape=ir.Shape([b, c, 1, s]), type=value.type)
                value.name = value.name + "_bsc"
                graph.inputs[index] = new
                emit = Emitter(graph, first)
                replace(value, emit.from_bc1s(new))
                emit.commit()
            elif value.name in it.bc11_inputs and len(dims) == 2 and first is not None:
                b, c = dims
                new = ir.Value(name=value.name, shape=ir.Shape([b, c, 1, 1]), type=value.type)
                value.name = value.name + "_bc"
                graph.inputs[index] = new
                emit = Emitter(graph, first)
                replace(value, emit.op("Reshape", [new, emit.ints([b, c])], None, [b, c], value.dtype))
                emit.commit()
            elif value.name in it.float_inputs and first is not None:
                new = ir.Value(name=value.name, shape=value.shape, type=ir.TensorType(ir.DataType.FLOAT))
                value.name = value.name + "_int"
                graph.inputs[index] = new
                emit = Emitter(graph, first)
                replace(value, emit.op("Cast", [new], {"to": value.dtype}, dims, value.dtype))
                emit.commit()
        for value in graph.outputs:
            if value.shape is not None and len(value.shape) and not isinstance(value.shape[0], int):
                value.shape = ir.Shape([batch, *list(value.shape)[1:]])
        _forget_symbolic_shapes(graph)
        for old, new in it.inputs.items():
            for value in graph.inputs:
                if value.name == old:
                    value.name = new
        for old, new in it.outputs.items():
            for value in graph.outputs:
                if value.name == old:
                    value.name = new
        graph.metadata_props["fusionc.coreml_interface"] = "1"
        graph.metadata_props["fusionc.coreml_interface_json"] = _dump(it)
        return ir.passes.PassResult(model, modified=True)


def _forget_symbolic_shapes(graph: ir.Graph) -> None:
    """Intermediate values still carry the exporter's batch symbol (s72, ...): drop those shapes so the
    shape inference that follows derives static ones from the now static inputs."""
    for node in graph:
        for value in node.outputs:
            if value.shape is not None and any(not isinstance(d, int) for d in value.shape):
                value.shape = None


def _dump(it: Interface) -> str:
    import json

    return json.dumps(it.to_json())


def read_interface(model: ir.Model) -> Interface | None:
    """The Interface recorded by AdoptCoreMLInterfacePass, if it ran."""
    import json

    raw = model.graph.metadata_props.get("fusionc.coreml_interface_json")
    if raw is None:
        return None
    data = json.loads(raw)
    return Interface(data["component"], data["inputs"], data["outputs"], data["bc1s_inputs"], data["float_inputs"],
                     data.get("bc11_inputs", []))


def artifact_feeds(feeds: Feeds, names: dict[str, str], bc1s: set[str], floats: set[str],
                   bc11: set[str] = frozenset()) -> Feeds:
    """Canonical feeds under Apple's contract: renamed, [B,S,C] text states as [B,C,1,S], [B,C] pooled vectors as
    [B,C,1,1], integer ids as float32."""
    out: Feeds = {}
    for name, value in feeds.items():
        value = np.asarray(value)
        if name in bc1s:
            value = np.ascontiguousarray(value.transpose(0, 2, 1)[:, :, None, :])
        if name in bc11:
            value = np.ascontiguousarray(value[:, :, None, None])
        if name in floats:
            value = value.astype(np.float32)
        out[names.get(name, name)] = value
    return out
