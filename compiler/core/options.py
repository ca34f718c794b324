"""CompileOptions: every option of `fusionc compile`, shared by the CLI, the config file and the targets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ALL_COMPONENTS = ("text_encoder", "text_encoder_2", "unet", "vae_decoder", "vae_encoder")
DEFAULT_COMPONENTS = ("text_encoder", "text_encoder_2", "unet", "vae_decoder")


@dataclass
class CompileOptions:
    """What to build. Every knob of a build is a field here: a flag or a fusionc.toml key, recorded in the manifest."""

    target: str = "onnx"
    device: str | None = None
    components: tuple[str, ...] | None = None  # None: every default component the checkpoint has
    height: int | None = None  # image pixels; None: the model's sample size
    width: int | None = None
    opset: int = 18
    allow_pickle: bool = False
    verify: bool = True
    min_psnr: float | None = None
    # gates (fusionc.gates): MB (10^6 bytes) and estimated ms, by component name or "total"
    max_size: dict[str, float] | None = None
    max_latency_ms: dict[str, float] | None = None
    latency_steps: int = 8  # denoising steps of the per-image ("total") latency estimate, guidance on
    verify_steps: int = 3  # timesteps of the reference trajectory used for UNet verification
    verify_prompts: int = 2  # prompts of the reference trajectory (1 or 2)
    # --palettize auto:DB measures on a trajectory of the generation's length (generate's default 8 steps): a
    # recipe fitted to 3 verification timesteps hides its error at the others (images 29 dB at a 36 dB UNet)
    mixed_bit_steps: int = 8
    seed: int = 0
    # Core ML
    attention: str = "split_einsum"
    compute_units: str = "cpu_and_ne"
    deployment_target: str = "iOS17"
    chunk: str = "auto"
    bundle: str | None = None
    compute_precision: str = "fp16"  # Core ML program precision: fp16 | fp32
    attention_chunk: int = 512  # split_einsum_v2 query chunk (Apple's CHUNK_SIZE); small values test tiny models
    coreml_ct_passes: str = "minimal"  # coremltools pass pipeline at ct.convert: minimal | default
    # compression
    palettize: str | None = None
    granularity: str = "per_tensor"
    group_size: int = 16
    quantize_weights: str | None = None
    block_size: int | None = None  # input channels per scale; None: per channel for int8, 32 for int4
    quantize_mode: str = "symmetric"  # symmetric | affine
    recipe: Path | None = None
    min_weight_elements: int = 2048
    compress_embeddings: bool = False  # also compress Gather tables (token embeddings)
    compress_components: tuple[str, ...] | None = None  # None: the UNet only (fusionc.passes.compression.dispatch)
    # QNN
    precision: str = "w8a16"
    calibration_samples: int = 4
    qnn_range_margin: float = 3.0  # 16-bit activation ranges widened by this factor (unseen inputs stay in range)
    qnn_fp16_attention: bool = True  # activation x activation MatMuls in fp16 islands on the HTP
    qnn_target_db: float | None = None  # remedies stop here; None: the PSNR gate + 5 dB
    qnn_remedy_rounds: int | None = None  # remedy evaluations; 0 disables them; None: the remedies' default
    qnn_remedy_seconds: float = 600.0  # and at most this long
    qnn_max_context_bytes: int | None = None  # split contexts above this; None: the device's limit

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, Path):
                out[key] = str(value)
            elif isinstance(value, tuple):
                out[key] = list(value)
        return out
