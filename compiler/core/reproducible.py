"""Byte-identical artifacts: canonical re-serialization where a library writes non-deterministic bytes.

ONNX files are already deterministic (the exporter, onnx_ir and our passes name and order everything the same
way on every run). ONNX Runtime's ORT format is not: `InferenceSession` serializes its kernel-type-string
resolver from absl hash maps whose seed depends on memory addresses, so the same model converted twice gives
the same content in a different byte layout (the model itself, written first, is identical). `canonical_ort`
rewrites only that part: it keeps the model's bytes verbatim (flatbuffers offsets are relative, and the model
sits at the end of the buffer) and rebuilds the resolver and the root table in sorted order with the generated
flatbuffers builders shipped in onnxruntime.tools. Core ML packages get random item UUIDs, a conversion date and
hash-ordered metadata from coremltools: `canonical_mlpackage` makes them deterministic too. The exporter's
stack traces (absolute paths of this machine) are dropped from every graph (`strip_host_paths`).
"""

from __future__ import annotations

import os
from pathlib import Path

import flatbuffers
import onnx_ir as ir
from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import (
    ArgTypeAndIndex,
    InferenceSession,
    KernelTypeStrArgsEntry,
    KernelTypeStrResolver,
    OpIdKernelTypeStrArgsEntry,
)

FILE_IDENTIFIER = b"ORTM"
ALIGNMENT = 16  # bytes: the largest alignment a flatbuffers scalar or vector needs


def _resolver_entries(session: InferenceSession.InferenceSession) -> list[tuple[str, list[tuple[str, list[tuple[int, int]]]]]]:
    resolver = session.KernelTypeStrResolver()
    entries = []
    for i in range(resolver.OpKernelTypeStrArgsLength()):
        op = resolver.OpKernelTypeStrArgs(i)
        type_strs = []
        for j in range(op.KernelTypeStrArgsLength()):
            entry = op.KernelTypeStrArgs(j)
            args = [(entry.Args(k).ArgType(), entry.Args(k).Index()) for k in range(entry.ArgsLength())]
            type_strs.append((entry.KernelTypeStr().decode(), args))
        entries.append((op.OpId().decode(), sorted(type_strs)))
    return sorted(entries)


def _table_vector(builder: flatbuffers.Builder, offsets: list[int]) -> int:
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _field_position(table: flatbuffers.table.Table, slot: int) -> int | None:
    """Absolute position of the object an offset field (vtable slot 4 + 2 * index) points to."""
    o = table.Offset(slot)
    return table.Indirect(table.Pos + o) if o else None


def canonical_ort_bytes(data: bytes) -> bytes:
    """The same ORT-format model with its kernel-type-string resolver laid out in sorted order."""
    session = InferenceSession.InferenceSession.GetRootAsInferenceSession(data, 0)
    model = session.Model()
    if model is None or session.KernelTypeStrResolver() is None or session._tab.Offset(8):  # noqa: SLF001
        return data  # an unexpected layout (a deprecated session state): leave it alone
    tab = session._tab  # noqa: SLF001
    version_pos = _field_position(tab, 4)
    model_pos = model._tab.Pos  # noqa: SLF001
    vtable_pos = model_pos - int.from_bytes(data[model_pos:model_pos + 4], "little", signed=True)
    tail_start = min(model_pos, vtable_pos)
    if version_pos is None or version_pos < tail_start:
        return data
    entries = _resolver_entries(session)
    size = len(data)
    tail = data[tail_start:]
    builder = flatbuffers.Builder(len(tail) + 64 * 1024)
    builder.Bytes[len(builder.Bytes) - len(tail):] = tail
    builder.head = len(builder.Bytes) - len(tail)
    # A fixed alignment, not the raw file's: its size (and so size & -size) varies with the hash-map layout. Any
    # alignment the model needs divides 16, and the model keeps its distance from the end of the buffer.
    builder.minalign = ALIGNMENT
    op_offsets = []
    for op_id, type_strs in entries:
        type_offsets = []
        for type_str, args in type_strs:
            arg_offsets = []
            for arg_type, index in args:
                ArgTypeAndIndex.Start(builder)
                ArgTypeAndIndex.AddArgType(builder, arg_type)
                ArgTypeAndIndex.AddIndex(builder, index)
                arg_offsets.append(ArgTypeAndIndex.End(builder))
            args_vector = _table_vector(builder, arg_offsets)
            name = builder.CreateString(type_str)
            KernelTypeStrArgsEntry.Start(builder)
            KernelTypeStrArgsEntry.AddKernelTypeStr(builder, name)
            KernelTypeStrArgsEntry.AddArgs(builder, args_vector)
            type_offsets.append(KernelTypeStrArgsEntry.End(builder))
        types_vector = _table_vector(builder, type_offsets)
        name = builder.CreateString(op_id)
        OpIdKernelTypeStrArgsEntry.Start(builder)
        OpIdKernelTypeStrArgsEntry.AddOpId(builder, name)
        OpIdKernelTypeStrArgsEntry.AddKernelTypeStrArgs(builder, types_vector)
        op_offsets.append(OpIdKernelTypeStrArgsEntry.End(builder))
    ops_vector = _table_vector(builder, op_offsets)
    KernelTypeStrResolver.Start(builder)
    KernelTypeStrResolver.AddOpKernelTypeStrArgs(builder, ops_vector)
    resolver = KernelTypeStrResolver.End(builder)
    InferenceSession.Start(builder)
    InferenceSession.AddOrtVersion(builder, size - version_pos)
    InferenceSession.AddModel(builder, size - model_pos)
    InferenceSession.AddKernelTypeStrResolver(builder, resolver)
    builder.Finish(InferenceSession.End(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def canonical_ort(path: Path) -> None:
    """Rewrite an .ort file in place (atomically) in its canonical byte layout."""
    path = Path(path)
    data = path.read_bytes()
    canonical = canonical_ort_bytes(data)
    if canonical != data:
        tmp = path.with_name(path.name + ".canonical")
        tmp.write_bytes(canonical)
        os.replace(tmp, path)


HOST_DEPENDENT_METADATA = ("pkg.torch.onnx.stack_trace",)  # absolute source paths of this machine's install


def strip_host_paths(model: ir.Model) -> int:
    """Drop node metadata that embeds this machine's paths (the exporter's stack traces); returns how many.

    The same checkpoint compiled from another checkout or venv must give the same bytes.
    """
    removed = 0
    graphs = [model.graph, *model.functions.values()]
    for graph in graphs:
        for node in graph.all_nodes() if hasattr(graph, "all_nodes") else graph:
            for key in HOST_DEPENDENT_METADATA:
                if node.metadata_props.pop(key, None) is not None:
                    removed += 1
    return removed


FOLD_PROVENANCE = "pkg.onnxscript.optimizer.folded_from"


def strip_fold_provenance(model: ir.Model) -> int:
    """Drop the constant folder's provenance notes (the names a folded value came from); returns how many.

    onnxscript's folder lists the values it folded through, and which are still reachable differs between a graph
    kept in memory and the same graph loaded from the --cache (values an earlier stage removed): the same
    passes gave the same nodes with different notes, so builds differed by cache state. They are debug notes only.
    """
    removed = 0
    for graph in [model.graph, *(function.graph for function in model.functions.values())]:
        values = list(graph.inputs) + list(graph.initializers.values())
        for node in graph.all_nodes():
            values += list(node.outputs)
        for value in values:
            if value is not None and value.metadata_props.pop(FOLD_PROVENANCE, None) is not None:
                removed += 1
    return removed


def reset_name_state(model: ir.Model) -> None:
    """Give every graph the name bookkeeping it would have after `ir.load`: counters at 0, current names taken.

    onnx_ir names new nodes and values from per-graph counters. A freshly exported graph has advanced them, a
    graph loaded from the --cache has not, so the same passes would name their nodes differently (`val_189` vs
    `val_1`) and the artifacts would differ by cache state. Resetting after export and after the passes makes
    both paths name alike.
    """
    from onnx_ir._name_authority import NameAuthority  # private, but the only handle on the counters

    for graph in [model.graph, *(function.graph for function in model.functions.values())]:
        authority = NameAuthority()
        authority._node_names = {node.name for node in graph if node.name}  # noqa: SLF001
        authority._value_names = ({v.name for node in graph for v in node.outputs if v.name}  # noqa: SLF001
                                  | {v.name for v in graph.inputs if v.name} | set(getattr(graph, "initializers", {})))
        graph._name_authority = authority  # noqa: SLF001


# ---- Core ML ---------------------------------------------------------------------------------------------------

MLPACKAGE_VOLATILE_METADATA = ("com.github.apple.coremltools.conversion_date",)


def canonical_mlpackage(path: Path) -> None:
    """Rewrite an .mlpackage so the same program always gives the same bytes.

    coremltools names the package items with random UUIDs (Manifest.json), stamps the conversion date into the
    model's metadata and serializes the metadata map in hash order. We derive the identifiers from the item paths
    (uuid5), drop the date, and write the spec with protobuf's deterministic serialization (sorted map keys).
    """
    import json
    import uuid

    from coremltools.proto import Model_pb2

    path = Path(path)
    manifest_path = path / "Manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    renamed = {old: str(uuid.uuid5(uuid.NAMESPACE_URL, "fusionc:" + entry["path"]))
               for old, entry in manifest.get("itemInfoEntries", {}).items()}
    manifest["itemInfoEntries"] = {renamed[k]: v for k, v in manifest["itemInfoEntries"].items()}
    if manifest.get("rootModelIdentifier") in renamed:
        manifest["rootModelIdentifier"] = renamed[manifest["rootModelIdentifier"]]
    manifest_path.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n", encoding="utf-8")
    for entry in manifest["itemInfoEntries"].values():
        spec_path = path / "Data" / entry["path"]
        if not spec_path.is_file() or not spec_path.name.endswith(".mlmodel"):
            continue
        spec = Model_pb2.Model()
        spec.ParseFromString(spec_path.read_bytes())
        for key in MLPACKAGE_VOLATILE_METADATA:
            spec.description.metadata.userDefined.pop(key, None)
        spec_path.write_bytes(spec.SerializeToString(deterministic=True))
