"""What one text-to-image generation calls: which components run every denoising step, which once per prompt.

One definition for everything that adds components up to an image: `fusionc estimate`, `fusionc bench`'s budget,
the CI latency gates, a fleet's per-generation latency and the mixed-bit search. (Each once kept its own list, and
none but the search knew SD3's and PixArt's `transformer` or SD3's third text encoder: their totals left them out.)
"""

from __future__ import annotations

from typing import Any

from fusionc.core.options import DEFAULT_COMPONENTS

# run every denoising step on the guidance batch (cond + uncond): a ControlNet before the UNet, or the diffusion
# transformer of SD3 / PixArt in the UNet's place
DENOISERS = ("controlnet", "unet", "transformer")
STEP_MODELS = ("unet", "transformer")  # the model a step is (a ControlNet only feeds it): no image without one
# run once per prompt: twice per image with classifier-free guidance (the prompt and the empty prompt)
TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")
# the order a generation calls them in (a compile's default components: vae_encoder is not part of text-to-image)
PIPELINE_ORDER = DEFAULT_COMPONENTS


def calls_per_image(name: str, steps: int, guidance: bool = True) -> int:
    """Invocations of component `name` per image (a guided denoiser step is one invocation on the batch-2 input;
    how many graph calls that is depends on the graph's batch: fusionc.gates.graph_calls)."""
    if name in DENOISERS:
        return steps
    if name in TEXT_ENCODERS:
        return 2 if guidance else 1
    return 1 if name == "vae_decoder" else 0


def guided_batch(name: str, guidance: bool = True) -> int:
    """The batch one invocation of `name` runs at: a denoiser with guidance takes cond + uncond as one batch of 2."""
    return 2 if guidance and name in DENOISERS else 1


def hexagon_batch(device: Any, batch: int, calls: int) -> tuple[int, int]:
    """(batch, calls) of `calls` invocations at `batch` on `device` (a fusionc.core.devices.Device): on Hexagon each
    runs as `batch` batch-1 calls of the static context a QNN build compiles (fusionc.gates.graph_calls); on Core ML
    and ONNX Runtime as they are."""
    return (1, calls * batch) if device.family == "htp" else (batch, calls)
