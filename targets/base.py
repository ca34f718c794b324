"""The contract between the compiler driver and a target (onnx, coreml, qnn).

The driver (fusionc.compile) exports each component to ONNX, runs the target's pass pipeline on it, then
asks the target to lower and package it. Verification, generation and benchmarking all go through the
target's `Runner`, which takes and returns numpy arrays under the canonical ONNX interface names
(`sample`, `timestep`, `encoder_hidden_states` -> `out_sample`, ...), whatever names the artifact uses inside.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import onnx_ir as ir

from fusionc.core.context import ComponentContext
from fusionc.core.numerics import Feeds
from fusionc.core.options import CompileOptions
from fusionc.passes.entry import PassEntry

__all__ = ["ComponentContext", "Feeds", "LoweredComponent", "PassEntry", "Runner", "Target"]


@dataclass
class LoweredComponent:
    """What `Target.lower` wrote for one component (paths relative to the build folder)."""

    files: list[str]
    inputs: dict[str, dict[str, Any]]
    outputs: dict[str, dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)  # target-specific manifest fields


class Runner(Protocol):
    """Runs one compiled component: canonical feeds in, canonical outputs out."""

    def __call__(self, feeds: Feeds) -> Feeds: ...


class Target(Protocol):
    name: str
    default_device: str | None

    def pipeline(self, options: CompileOptions) -> list[PassEntry]:
        """Every pass of the target in order, each with its reason and whether `options` switch it on."""

    def lower(self, model: ir.Model, build_dir: Path, ctx: ComponentContext) -> LoweredComponent:
        """Write the component's artifacts under build_dir/<ctx.name>/ and describe them."""

    def finalize(self, build_dir: Path, checkpoint: Any, manifest: dict[str, Any], options: CompileOptions) -> None:
        """Write the files that are not one component (tokenizer, scheduler, model_index.json, bundles)."""

    def runner(self, build_dir: Path, name: str, manifest: dict[str, Any]) -> Runner:
        """Load a component of a finished build for verification, generation and benchmarks.

        A target may also define `verification_runner(build_dir, name, manifest, options)`: what verification
        runs instead when the options ask for a cheaper stand-in (fusionc.targets.verification_runner). A runner
        with a `runs_on` attribute says what it ran on; the manifest records it as `verified_on`."""
