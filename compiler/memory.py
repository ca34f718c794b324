"""Let removed graph values go: at SD scale what a graph keeps alive by accident is gigabytes.

onnx_ir's graph inputs and outputs count how often each value appears in them (a `collections.Counter`), and
removing a value only lowers its count to zero: the key, and so the value with its `const_value`, stays for the
life of the graph. torch's exporter first makes every weight a graph input, then moves it to the initializers, so
each weight the passes later remove or replace (fused, transposed, split weights) stays pinned, with its torch
tensor. Those tensors are views into the checkpoint's memory map, so even 0.9 GB of them keeps the whole 3.4 GB
SD-1.5 UNet file resident through the lowering. onnx_ir offers no public way to drop the stale keys; we drop
the non-positive counts ourselves (which is what `Counter` does on `+= Counter()`), and do nothing if a future
onnx_ir stores them differently.
"""

from __future__ import annotations

from collections import Counter

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
