"""How many .mlpackages a component becomes: `--chunk auto|none|N` against the device's per-model limit.

auto: a UNet or a diffusion transformer (SD3's MMDiT, PixArt) whose stored weights (fp16, or their compressed
size) exceed the device profile's `max_model_bytes` (1 GB on iPhone profiles) is split in two, as
apple/ml-stable-diffusion does for the UNet on iOS; more chunks only if two halves would still exceed it. N forces N chunks (any component), `none` never splits.
The split itself is the target-neutral passes/generic/chunk.py.
"""

from __future__ import annotations

import logging
import math

import onnx_ir as ir

from fusionc.core.devices import get_device
from fusionc.core.errors import BadInputError
from fusionc.core.options import CompileOptions
from fusionc.passes.generic.chunk import plan_split, split_model, total_weight_bytes

log = logging.getLogger(__name__)


def forced_chunks(chunk: str | int | None) -> int | None:
    """The chunk count `--chunk` forces (`none`: 1), or None for `auto`; anything else is refused (exit 2)."""
    value = "auto" if chunk is None else str(chunk).strip().lower()
    if value == "auto":
        return None
    if value == "none":
        return 1
    try:
        count = int(value)
    except ValueError:
        raise BadInputError(f"--chunk must be auto, none or a number of chunks, got '{chunk}'") from None
    if count < 1:
        raise BadInputError(f"--chunk must be at least 1, got {count}")
    return count


def chunk_count(model: ir.Model, component: str, options: CompileOptions) -> int:
    count = forced_chunks(options.chunk)
    if count is None:
        if component not in ("unet", "transformer"):
            return 1
        device = get_device(options.device, "coreml")
        limit = device.max_model_bytes if device is not None else None
        if not limit:
            return 1
        weights = total_weight_bytes(model, 4 if options.compute_precision == "fp32" else 2)
        return max(1, math.ceil(weights / limit))
    return count


def plan_chunks(model: ir.Model, component: str, options: CompileOptions) -> list[ir.Model]:
    """[model] or the chunks, in run order (the input model is consumed when it is split)."""
    count = chunk_count(model, component, options)
    if count <= 1:
        return [model]
    plan = plan_split(model, count)
    log.info("splitting %s into %d chunks at nodes %s (weights %s bytes)", component, count, plan.cuts, plan.weight_bytes)
    boundary = {name for names in plan.crossing for name in names}
    chunks = split_model(model, plan)
    for chunk in chunks:
        for value in [*chunk.graph.inputs, *chunk.graph.outputs]:
            if value.name in boundary:
                value.name = BOUNDARY_PREFIX + value.name
    return chunks


# A value passed from one chunk to the next keeps its exported name behind this prefix. The exporter's names
# (add_229, conv2d_5) have the form of the names coremltools gives unnamed ops in a MIL program, and a chunk
# input called add_229 was shadowed by an op of the same name inside that chunk (an SDXL-shaped UNet in two
# chunks failed its check with a concat of mismatched shapes). No MIL op type is called "chunk".
BOUNDARY_PREFIX = "chunk_"
