"""ComponentContext: what a pass or a target gets for the one component being compiled, passed explicitly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fusionc.core.numerics import Feeds
from fusionc.core.options import CompileOptions


@dataclass
class ComponentContext:
    """One component's compile: its name, the options, scratch space and real trajectory inputs."""

    name: str  # text_encoder, unet, vae_decoder, ...
    options: CompileOptions
    work_dir: Path | None = None  # scratch space next to --out, deleted after the compile
    sample_feeds: list[Feeds] | None = None  # real inputs from a denoising trajectory (calibration, sensitivity)
    reference: Callable[[Feeds], Feeds] | None = None  # the fp32 torch module under the same interface

    @classmethod
    def for_options(cls, options: CompileOptions, name: str = "unet") -> "ComponentContext":
        """A context with no inputs: enough for passes that read only the options (tests, `fusionc passes`)."""
        return cls(name, options, None, [], None)
