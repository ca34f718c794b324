"""Split a model into N consecutive chunks with balanced weights and few crossing tensors.

Why: one Core ML model on iPhone should stay under ~1 GB (apple/ml-stable-diffusion chunks its UNet for iOS),
and a QNN context over 2 GB breaks protobuf. This is a graph operation, not a target's, so it lives here;
a target decides how many chunks it needs (targets/coreml/chunk.py).

The nodes stay in topological order. For the k-th cut we look at every position whose cumulative weight
bytes lie within `window` of k/N of the total and take the one with the fewest crossing activation bytes
(values produced before the cut and read after it). Crossing values become outputs of the earlier chunk
and inputs of the later one under the same name; original graph inputs may feed any chunk directly (the
Swift package merges the original inputs into every chunk's feeds).

    before                     after (N = 2)
    inputs -> n1 .. nK -> out  chunk1: inputs -> n1 .. nc -> crossing values
                               chunk2: inputs + crossing values -> nc+1 .. nK -> out
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir


@dataclass
class ChunkPlan:
    cuts: list[int]  # node index where each later chunk starts
    weight_bytes: list[int]  # per chunk
    crossing: list[list[str]]  # names of the values crossing each cut


def stored_bytes(tensor: ir.TensorProtocol, float_bytes: int = 2) -> int:
    """Bytes of a weight as the target stores it: floats at `float_bytes` each (fp16), others as they are."""
    if tensor.dtype.is_floating_point():
        return int(np.prod(tensor.shape.numpy())) * float_bytes if tensor.shape is not None else tensor.nbytes
    return tensor.nbytes


def total_weight_bytes(model: ir.Model, float_bytes: int = 2) -> int:
    return sum(stored_bytes(v.const_value, float_bytes) for v in model.graph.initializers.values()
               if v.const_value is not None)


def _value_bytes(value: ir.Value) -> int:
    if value.shape is None or any(not isinstance(d, int) for d in value.shape):
        return 1 << 20
    size = int(np.prod([int(d) for d in value.shape])) if len(value.shape) else 1
    return size * (2 if value.dtype is not None and value.dtype.is_floating_point() else 4)


def plan_split(model: ir.Model, n_chunks: int, window: float = 0.05, float_bytes: int = 2) -> ChunkPlan:
    nodes = list(model.graph)
    index = {id(n): i for i, n in enumerate(nodes)}
    weight_at = np.zeros(len(nodes), np.int64)
    seen: set[int] = set()
    for i, node in enumerate(nodes):
        for value in node.inputs:
            if value is not None and value.const_value is not None and id(value) not in seen and value.is_initializer():
                seen.add(id(value))
                weight_at[i] += stored_bytes(value.const_value, float_bytes)
    cumulative = np.cumsum(weight_at)
    total = int(cumulative[-1]) if len(nodes) else 0
    # crossing bytes after position i (cut between node i and i+1): produced <= i, last used > i
    delta = np.zeros(len(nodes) + 1, np.int64)
    for i, node in enumerate(nodes):
        for out in node.outputs:
            last = max((index[id(u.node)] for u in out.uses() if id(u.node) in index), default=i)
            if out.is_graph_output():
                last = len(nodes)
            if last > i:
                delta[i] += _value_bytes(out)
                delta[min(last, len(nodes))] -= _value_bytes(out)
    crossing_bytes = np.cumsum(delta)[:-1]
    cuts = []
    for k in range(1, n_chunks):
        target = total * k / n_chunks
        lo, hi = target - window * total, target + window * total
        candidates = [i for i in range(len(nodes) - 1) if lo <= cumulative[i] <= hi and (not cuts or i + 1 > cuts[-1])]
        if not candidates:
            candidates = [int(np.argmin(np.abs(cumulative - target)))]
        best = min(candidates, key=lambda i: (crossing_bytes[i], abs(cumulative[i] - target)))
        cuts.append(best + 1)
    bounds = [0] + cuts + [len(nodes)]
    weights = [int(cumulative[b - 1] - (cumulative[a - 1] if a else 0)) if b > a else 0 for a, b in zip(bounds, bounds[1:])]
    crossing = []
    for cut in cuts:
        names = []
        for node in nodes[:cut]:
            for out in node.outputs:
                if any(index.get(id(u.node), -1) >= cut for u in out.uses()):
                    names.append(out.name)
        crossing.append(names)
    return ChunkPlan(cuts, weights, crossing)


def split_model(model: ir.Model, plan: ChunkPlan) -> list[ir.Model]:
    """Move the nodes of `model` into len(plan.cuts) + 1 new models (the original is left empty)."""
    graph = model.graph
    nodes = list(graph)
    bounds = [0] + plan.cuts + [len(nodes)]
    chunk_nodes = [nodes[a:b] for a, b in zip(bounds, bounds[1:])]
    chunk_of = {id(node): c for c, members in enumerate(chunk_nodes) for node in members}
    final_outputs = {id(v) for v in graph.outputs}
    graph.outputs.clear()
    for node in nodes:
        graph.remove(node)
    initializers = dict(graph.initializers)
    graph.initializers.clear()
    claimed: dict[int, int] = {}  # initializer -> first chunk using it (later chunks get a Value copy)
    models = []
    for c, members in enumerate(chunk_nodes):
        inputs: list[ir.Value] = []
        inits: dict[str, ir.Value] = {}
        subs: dict[int, ir.Value] = {}
        for node in members:
            for i, value in enumerate(node.inputs):
                if value is None:
                    continue
                producer = value.producer()
                if producer is not None and chunk_of.get(id(producer)) == c:
                    continue
                sub = subs.get(id(value))
                if sub is None:
                    if value.name in initializers and initializers[value.name] is value:
                        owner = claimed.setdefault(id(value), c)
                        sub = value if owner == c else ir.Value(name=value.name, shape=value.shape, type=value.type,
                                                                const_value=value.const_value)
                        inits[value.name] = sub
                    else:  # a graph input or a value produced by an earlier chunk
                        sub = ir.Value(name=value.name, shape=value.shape, type=value.type)
                        inputs.append(sub)
                    subs[id(value)] = sub
                if sub is not value:
                    node.replace_input_with(i, sub)
        outputs = [out for node in members for out in node.outputs
                   if id(out) in final_outputs or any(chunk_of.get(id(u.node), -1) > c for u in out.uses())]
        sub_graph = ir.Graph(inputs, outputs, nodes=members, initializers=list(inits.values()),
                             opset_imports=dict(graph.opset_imports), name=f"{graph.name or 'graph'}_chunk{c + 1}")
        sub_graph.metadata_props.update(graph.metadata_props)
        models.append(ir.Model(sub_graph, ir_version=model.ir_version, producer_name=model.producer_name,
                               functions=list(model.functions.values())))
    return models
