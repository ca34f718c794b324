"""Let removed graph values go: at SD scale what a graph keeps alive by accident is gigabytes.

onnx_ir's graph inputs and outputs count how often each value appears in them (a `collections.Counter`), and
removing a value only lowers its count to zero: the key, and so the value with its `const_value`, stays for the
life of the graph. torch's exporter first makes every weight a graph input, then moves it to the initializers, so
each weight the passes later remove or replace (fused, transposed, split weights) stays pinned, with its torch
tensor: 0.9 GB of the SD-1.5 UNet's weights stayed resident through the lowering. onnx_ir offers no public way
to drop the stale keys; we drop the non-positive counts ourselves (which is what `Counter` does on
`+= Counter()`), and do nothing if a future onnx_ir stores them differently.

`offload_weights` moves a graph's weights to an external data file on the build's disk, in place: what was
resident (torch parameters shared with the exported graph, numpy copies made by folding) becomes memory-mapped
file pages, which the kernel drops under pressure. At SDXL size (10 GB of fp32 weights) this is what lets the
passes, the fp16 measurement and the lowering run beside each other. Each weight becomes a `MappedTensor`: to
every pass and writer it is an ordinary in-memory tensor (its bytes are serialized, never a reference to the
scratch file), and a measurement that runs the graph in onnxruntime can point at the file instead (`external`).

`release_freed_memory` collects the graphs' reference cycles (a dropped graph frees nothing until then) and
hands the freed heap back to the OS: glibc keeps freed small and mid-sized blocks (most weights read from a
checkpoint) in its arenas, 0.9 GB of them after an SD-1.5 UNet is lowered.
"""

from __future__ import annotations

import functools
import gc
from collections import Counter
from pathlib import Path
from typing import Any

import onnx_ir as ir


def forget_removed_values(model: ir.Model) -> int:
    """Drop the graph-IO bookkeeping of values no longer in the graph's inputs or outputs; returns how many."""
    dropped = 0
    for graph in (model.graph, *model.graph.subgraphs()):
        for io in (graph.inputs, graph.outputs):
            counter = getattr(io, "_ref_counter", None)
            if not isinstance(counter, Counter):
                continue
            before = len(counter)
            counter += Counter()  # in place: keeps the positive counts only
            dropped += before - len(counter)
    return dropped


@functools.cache
def _malloc_trim():
    from fusionc.core.portable import libc

    return getattr(libc(), "malloc_trim", None)  # glibc only (musl, macOS and Windows have none)


def release_freed_memory() -> None:
    """Free unreachable graphs and modules now, and return the freed heap to the OS where the libc allows it."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


SMALL_BYTES = 4096  # initializers up to this size stay in memory when a graph's weights are offloaded


class MappedTensor(ir.LazyTensor):
    """A weight read from an external data file by memory map on every access; `external` is that file's tensor."""

    def __init__(self, external: ir.ExternalTensor) -> None:
        super().__init__(lambda: external, dtype=external.dtype, shape=external.shape, name=external.name)
        self.external = external


def _resident(tensor: object) -> bool:
    return tensor is not None and not isinstance(tensor, (ir.ExternalTensor, MappedTensor))


def resident_weight_bytes(model: ir.Model) -> int:
    """Bytes of the initializers held in memory (not mapped from a file) in the main graph and its subgraphs."""
    return sum(v.const_value.nbytes for g in (model.graph, *model.graph.subgraphs()) for v in g.initializers.values()
               if _resident(v.const_value))


ALIGNMENT = 65536  # offsets in an offload file: onnxruntime and numpy map each tensor in place


def offload_weights(model: ir.Model, folder: Path, min_bytes: int = 0, keep_below: int = SMALL_BYTES) -> int:
    """Write the resident initializers to a new external data file in `folder` and make each a MappedTensor of it;
    returns the bytes moved (0 when fewer than `min_bytes` were resident: not worth a file; the small ones kept are
    not counted). Initializers under `keep_below` bytes stay in memory (shapes, scalars: folding reads them often,
    each external tensor is a map).

    Only resident tensors are written: onnx_ir's `unload_from_model` writes every initializer again, the mapped ones
    too (a second offload of T5-XXL's graph wrote its 19 GB a second time for one folded constant). The file must
    outlive the model (a scratch folder removed after the compile)."""
    values = [v for g in (model.graph, *model.graph.subgraphs()) for v in g.initializers.values()
              if _resident(v.const_value) and v.const_value.nbytes >= keep_below]
    resident = resident_weight_bytes(model)
    if not values or resident < min_bytes:
        return 0
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index = 0
    while (folder / f"weights-{index}.data").exists():  # a new file: tensors already in an older one stay valid
        index += 1
    name = f"weights-{index}.data"
    moved = 0
    with open(folder / name, "wb") as handle:
        for value in values:
            tensor = value.const_value
            handle.write(b"\0" * (-handle.tell() % ALIGNMENT))
            offset = handle.tell()
            handle.write(tensor.tobytes())  # one tensor in memory at a time (a lazy one is read here)
            moved += handle.tell() - offset
            value.const_value = MappedTensor(ir.ExternalTensor(name, offset, handle.tell() - offset, tensor.dtype,
                                                               shape=tensor.shape, name=tensor.name, base_dir=folder))
    return moved


WEIGHTS_OMITTED = "weights-omitted"  # external-data location of a shapes-only graph: no such file exists


def weightless_proto(model: ir.Model, min_bytes: int = 0) -> Any:
    """The model as an onnx ModelProto whose initializers of at least `min_bytes` are references to no file
    (WEIGHTS_OMITTED): shapes and dtypes only, nothing read or copied; the model itself is left as it was.

    For what reads a graph's structure and never its weights (fusionc.analysis.graph_stats, a build's
    shapes-only cost-model graph): copying an SD-1.5 UNet's 3.4 GB would double a compile's peak memory, and a graph
    exported on the meta device would materialize every stand-in weight, past protobuf's 2 GB limit."""
    saved = {}
    try:
        for graph in (model.graph, *model.graph.subgraphs()):
            for value in graph.initializers.values():
                tensor = value.const_value
                if tensor is not None and tensor.nbytes >= min_bytes:
                    saved[value] = tensor
                    value.const_value = ir.ExternalTensor(WEIGHTS_OMITTED, 0, tensor.nbytes, tensor.dtype,
                                                          shape=tensor.shape, name=value.name or "")
        return ir.to_proto(model)
    finally:
        for value, tensor in saved.items():
            value.const_value = tensor
