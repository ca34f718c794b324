"""ControlNet: the `controlnet` component and the UNet that takes its residuals, under Apple's Core ML contract.

A StableDiffusionControlNetPipeline folder has a ControlNetModel beside the UNet. Every denoising step runs
the ControlNet on (sample, timestep, encoder_hidden_states, controlnet_cond) and adds its outputs to the
UNet's skip connections (one per down-block output) and to its mid block. fusionc compiles both as separate
components with the names apple/ml-stable-diffusion uses (torch2coreml `--unet-support-controlnet` and
`--convert-controlnet`, swift/StableDiffusion/pipeline/ControlNet.swift and Unet.swift):

    controlnet:  sample [B,4,h,w], timestep, encoder_hidden_states, controlnet_cond [B,3,H,W] in [0, 1]
                 -> additional_residual_0 .. additional_residual_{N-1}   (N-1 down-block residuals, then the mid)
    unet:        sample, timestep, encoder_hidden_states, additional_residual_0 .. _{N-1} -> out_sample

At SD scale N = 13 (conv_in + 2 ResNets and a downsampler per stage, 2 ResNets at the last, then the mid).
The residuals keep Apple's names in every target, so the Swift package, the ONNX build and the HTP contexts
are fed alike. The conditioning scale is applied by the loop (trajectory.denoise), not baked into a graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

RESIDUAL_PREFIX = "additional_residual_"


def residual_names(count: int) -> list[str]:
    return [f"{RESIDUAL_PREFIX}{i}" for i in range(count)]


def is_residual(name: str) -> bool:
    return name.startswith(RESIDUAL_PREFIX)


class ControlNetWrapper(torch.nn.Module):
    """sample, timestep, encoder_hidden_states, controlnet_cond (+ text_embeds, time_ids) -> the residuals."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                controlnet_cond: torch.Tensor, text_embeds: torch.Tensor | None = None,
                time_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        added = {"text_embeds": text_embeds, "time_ids": time_ids} if text_embeds is not None else None
        down, mid = self.model(sample, timestep, encoder_hidden_states, controlnet_cond, added_cond_kwargs=added,
                               return_dict=False)
        return (*down, mid)


class ControlledUNetWrapper(torch.nn.Module):
    """sample, timestep, encoder_hidden_states (+ text_embeds, time_ids), additional_residual_* -> out_sample."""

    def __init__(self, model: torch.nn.Module, text_time: bool) -> None:
        super().__init__()
        self.model = model
        self.text_time = text_time
        self.varargs_start = 3  # fusionc.export nests the dynamic shapes of *rest for torch.export

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                *rest: torch.Tensor) -> torch.Tensor:
        added = {"text_embeds": rest[0], "time_ids": rest[1]} if self.text_time else None
        residuals = rest[2:] if self.text_time else rest
        return self.model(sample, timestep, encoder_hidden_states, added_cond_kwargs=added,
                          down_block_additional_residuals=tuple(residuals[:-1]),
                          mid_block_additional_residual=residuals[-1], return_dict=False)[0]


def residual_shapes(unet: torch.nn.Module, batch: int, latent_hw: tuple[int, int]) -> list[tuple[int, ...]]:
    """The shapes of the residuals the UNet's down path adds (as diffusers collects down_block_res_samples):
    conv_in, each down block's ResNets and downsampler, then the mid block."""
    h, w = latent_hw
    conv = unet.conv_in
    h = (h + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
    w = (w + 2 * conv.padding[1] - conv.kernel_size[1]) // conv.stride[1] + 1
    shapes = [(batch, conv.out_channels, h, w)]
    channels = conv.out_channels
    for block in unet.down_blocks:
        for resnet in block.resnets:
            channels = resnet.out_channels
            shapes.append((batch, channels, h, w))
        for sampler in block.downsamplers or []:
            c = sampler.conv
            h = (h + 2 * c.padding[0] - c.kernel_size[0]) // c.stride[0] + 1
            w = (w + 2 * c.padding[1] - c.kernel_size[1]) // c.stride[1] + 1
            shapes.append((batch, c.out_channels, h, w))
    if unet.mid_block is None:
        raise ValueError("a UNet without a mid block takes no mid-block residual")
    shapes.append((batch, channels, h, w))
    return shapes


def controlnet_example(checkpoint: Any, unet_example: dict[str, torch.Tensor], height: int, width: int,
                       gen: torch.Generator) -> dict[str, torch.Tensor]:
    """The ControlNet's example inputs: the UNet's (without residuals) + controlnet_cond in [0, 1]."""
    config = checkpoint.configs["controlnet"]
    batch = unet_example["sample"].shape[0]
    example = {k: v for k, v in unet_example.items() if not is_residual(k)}
    cond = torch.rand(batch, int(config.conditioning_channels), height, width, generator=gen)
    ordered = {k: example[k] for k in ("sample", "timestep", "encoder_hidden_states")}
    ordered["controlnet_cond"] = cond
    ordered.update({k: v for k, v in example.items() if k not in ordered})
    return ordered


def controlled_unet_example(unet: torch.nn.Module, example: dict[str, torch.Tensor], gen: torch.Generator,
                            scale: float = 0.1) -> dict[str, torch.Tensor]:
    """The UNet's example inputs + small random residuals under Apple's names."""
    sample = example["sample"]
    shapes = residual_shapes(unet, sample.shape[0], (sample.shape[2], sample.shape[3]))
    out = dict(example)
    for name, shape in zip(residual_names(len(shapes)), shapes):
        out[name] = torch.randn(*shape, generator=gen) * scale
    return out


POSITIONS = {"left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25), "bottom": (0.5, 0.75), "center": (0.5, 0.5)}


def outline_from_sdf(sdf: np.ndarray, thickness: float = 1.5) -> np.ndarray:
    """A signed distance field [H, W] in pixels -> its anti-aliased outline [1, 3, H, W] in [0, 1] on black."""
    line = np.clip(thickness - np.abs(sdf), 0.0, 1.0).astype(np.float32)
    return np.repeat(line[None, None], 3, axis=1)


def outline_image(prompt: str, height: int, width: int, jitter_seed: int | None = None) -> np.ndarray:
    """A control image [1, 3, H, W] in [0, 1]: the outline of the circle or square the prompt names, at the
    position it names (a circle in the center otherwise), 11/64 of the width in half-size, as the built-in
    ControlNet saw in training (fusionc.models.train_controlnet). The verification trajectory's conditioning.

    With `jitter_seed` (a tuning set's trajectory, fusionc.inputs) the outline is moved by up to 3/64 of the image
    and sized 9.5/64 to 12.5/64, the training data's jitter, drawn from that seed: prompts of different sets can
    name the same shape and place ("a red circle on the left", "a purple triangle on the left"), and the held-out
    set must not share its control images with the sets a build is tuned on."""
    words = prompt.lower().replace(",", " ").split()
    fx, fy = next((POSITIONS[w] for w in words if w in POSITIONS), POSITIONS["center"])
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    r = 11.0 / 64 * width
    if jitter_seed is not None:
        rng = np.random.default_rng([jitter_seed, 1])  # not the stream the trajectory's latents come from
        fx, fy = fx + rng.uniform(-3, 3) / 64, fy + rng.uniform(-3, 3) / 64
        r = rng.uniform(9.5, 12.5) / 64 * width
    dx, dy = xs - fx * width, ys - fy * height
    if "square" in words:
        h = r * 0.85
        qx, qy = np.abs(dx) - h, np.abs(dy) - h
        sdf = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)
    else:
        sdf = np.hypot(dx, dy) - r
    return outline_from_sdf(sdf)


def read_control_image(path: Any, height: int, width: int) -> np.ndarray:
    """An image file -> [1, 3, H, W] float32 in [0, 1] (resized to the build's size, as diffusers'
    ControlNet pipeline prepares `image`); exit 2 naming the file when it cannot be read."""
    from pathlib import Path

    from fusionc.core.errors import BadInputError

    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"--control-image '{path}' does not exist: pass an image file (PNG, JPEG)")
    try:
        from PIL import Image

        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((width, height), Image.BILINEAR)
    except Exception as err:  # PIL raises several types for a file that is not an image
        raise BadInputError(f"--control-image '{path}' is not a readable image: {err}") from err
    return (np.asarray(rgb, np.float32) / 255.0).transpose(2, 0, 1)[None].copy()
