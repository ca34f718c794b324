"""ComponentContext: what a pass or a target gets for the one component being compiled, passed explicitly."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fusionc.core.executor import SERIAL
from fusionc.core.numerics import Feeds
from fusionc.core.options import CompileOptions

# The input sets of a compile (fusionc.inputs builds them; disjoint prompts, seeds and timesteps). A target
# names the ones it needs in `input_roles(options)`; the driver hands them over here.
CALIBRATION, SELECTION, VERIFICATION = "calibration", "selection", "verification"
# The classifier-free guidance scale of the UNet input sets' trajectories (SD's default). Their UNet calls are
# batch 2 (unconditional, conditional); the sampler steps with uncond + g (cond - uncond), which is what the
# mixed-bit search judges a recipe on (passes/compression/mixed_bit.py).
TRAJECTORY_GUIDANCE = 7.5


@dataclass
class ComponentContext:
    """One component's compile: its name, the options, scratch space and real trajectory inputs.

    Passes and targets see the two tuning sets only: `calibration_feeds` (what quantization ranges, fp16
    overflow ranges and mixed-bit sensitivities are measured on) and `selection_feeds` (what remedies and
    recipes are judged on). The verification set is deliberately absent: the reported PSNR is held out.
    Each list holds the component's batch-2 guidance calls (targets split them into batch-1 rows)."""

    name: str  # text_encoder, unet, vae_decoder, ...
    options: CompileOptions
    work_dir: Path | None = None  # scratch space next to --out, deleted after the compile
    calibration_feeds: list[Feeds] = field(default_factory=list)
    reference: Callable[[Feeds], Feeds] | None = None  # the fp32 torch module under the same interface
    selection_feeds: list[Feeds] = field(default_factory=list)
    executor: Any = field(default=SERIAL)  # where independent measurements run (fusionc.core.executor.TaskExecutor)
    cache_dir: Path | None = None  # --cache or a fleet's cache (fusionc.core.store entries): work other compiles reuse
    # devices of other variants of the same fleet that differ only in the device: a target may do their
    # device-specific work now, beside its own, into cache_dir (QNN: their context builds, targets/qnn/shared.py)
    sibling_devices: tuple[str, ...] = ()

    @classmethod
    def for_options(cls, options: CompileOptions, name: str = "unet") -> "ComponentContext":
        """A context with no inputs: enough for passes that read only the options (tests, `fusionc passes`)."""
        return cls(name, options, None, [], None, [])
