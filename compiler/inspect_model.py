"""`fusionc inspect`: op histogram, parameters, weight bytes and MACs of a model or of each build component."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx_ir as ir
from rich.console import Console
from rich.table import Table

from fusionc import buildfs
from fusionc.core.errors import BadInputError


def check_external_data(path: Path) -> None:
    """Refuse an ONNX file whose external-data locations leave its folder (absolute, `..`, or a symlink out).

    A model is untrusted input: `../../home/user/.ssh/id_rsa` as a tensor location would make us read it.
    """
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise BadInputError(f"'{path}' is not a readable ONNX model: {str(err).splitlines()[0]}") from err
    if not proto.graph.node and not proto.graph.output:
        raise BadInputError(f"'{path}' is not a readable ONNX model: it holds no graph")
    folder = path.resolve().parent
    tensors = list(proto.graph.initializer) + [a.t for n in proto.graph.node for a in n.attribute if a.HasField("t")]
    for f in proto.functions:
        tensors += [a.t for n in f.node for a in n.attribute if a.HasField("t")]
    for tensor in tensors:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if Path(location).is_absolute() or not target.is_relative_to(folder):
            raise BadInputError(f"'{path}': tensor '{tensor.name}' points its external data outside the model's "
                                f"folder ('{location}'): refused; keep external data files beside the model")


def model_summary(path: Path) -> dict:
    """{"ops": Counter, "params": N, "weight_bytes": N, "macs": N} for an ONNX file (weights not loaded)."""
    from fusionc.analysis.graph_stats import graph_stats

    check_external_data(path)
    try:
        model = ir.load(path)
    except Exception as err:
        raise BadInputError(f"'{path}' is not a readable ONNX model: {str(err).splitlines()[0]}") from err
    stats = graph_stats(model)
    # the ops that carry work: weight-only nodes (the decompression of palettized/quantized weights, Constant; every
    # target folds them into the stored weights, Core ML as constexpr ops: reported under "compression"), shape
    # arithmetic and a QDQ graph's activation QuantizeLinear/DequantizeLinear pairs (reported under "quantization")
    # are left out
    quantization = _qdq_quantization(model)
    ops = Counter(stats.runtime_op_counts)
    ops.subtract({"QuantizeLinear": sum(quantization.get("activations", {}).values()),
                  "DequantizeLinear": quantization.get("pairs", 0)})  # a QuantizeLinear may feed several
    return {"ops": +ops, "params": stats.params, "weight_bytes": stats.weight_bytes, "macs": stats.macs,
            "unknown_shape_ops": stats.unknown_shape_ops, "compression": _compression(model),
            "quantization": quantization}


def _qdq_quantization(model: ir.Model) -> dict:
    """A QDQ graph's quantization (a QNN build's model.qdq.onnx), {} when it has none: activation tensors quantized
    by a QuantizeLinear -> DequantizeLinear pair, and weights stored quantized for a DequantizeLinear, by type. QNN
    compiles each pair into the quantized ops around it: the pairs are not ops that run."""
    activations: Counter = Counter()
    weights: Counter = Counter()
    pairs = 0
    for node in model.graph:
        if node.op_type == "QuantizeLinear" and node.domain in ("", "ai.onnx"):
            dequantized = [u for u, _ in node.outputs[0].uses() if u.op_type == "DequantizeLinear"]
            if dequantized:  # its type: the zero point's (the output's may not be inferred); ONNX's default uint8
                zero_point = node.inputs[2] if len(node.inputs) > 2 else None
                dtype = (zero_point.dtype if zero_point is not None else None) or node.outputs[0].dtype
                activations[str(dtype).lower() if dtype is not None else "uint8"] += 1
                pairs += len(dequantized)
        elif (node.op_type == "DequantizeLinear" and node.domain in ("", "ai.onnx")
              and node.inputs[0] is not None and node.inputs[0].const_value is not None):
            weights[str(node.inputs[0].dtype).lower()] += 1
    if not activations:
        return {}
    return {"activations": dict(activations), "weights": dict(weights), "pairs": pairs}


def quantization_line(info: dict) -> str | None:
    """'activations uint16 at 68 tensors (...); weights int8 in 17 tensors, ...' for a QDQ graph, else None."""
    if not info:
        return None
    line = ("activations " + ", ".join(f"{t} at {n} tensors" for t, n in info["activations"].items())
            + " (QuantizeLinear/DequantizeLinear pairs, which QNN compiles into its quantized ops: not counted as ops)")
    if info.get("weights"):
        line += "; weights " + ", ".join(f"{t} in {n} tensors" for t, n in info["weights"].items())
    return line


def _compression(model: ir.Model) -> dict:
    """What the compression passes recorded on the model (fusionc.compression metadata), {} when none ran."""
    import json

    from fusionc.passes.compression.palettize import METADATA_KEY

    try:
        info = json.loads(model.metadata_props.get(METADATA_KEY, "{}"))
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def compression_line(info: dict) -> str | None:
    """'palettized 4-bit per_tensor, 132 tensors, 14.75 -> 1.98 MB' for a component's compression, else None."""
    parts = []
    for entry in info.values():
        if not isinstance(entry, dict):
            continue
        if entry.get("method") == "linear":
            what = f"quantized {entry.get('dtype')} {entry.get('mode', '')}".rstrip()
        else:
            bits = entry.get("average_bits")
            group = entry.get("group_size")
            what = (f"palettized {'mixed ' if entry.get('method') == 'mixed_bit_palettize' else ''}"
                    f"{bits:g}-bit " if isinstance(bits, (int, float)) else "palettized ") + (
                    f"per_grouped_channel (groups of {group})" if group else str(entry.get("granularity", "per_tensor")))
        sizes = ""
        if isinstance(entry.get("bytes_before"), (int, float)) and isinstance(entry.get("bytes_after"), (int, float)):
            sizes = f", {entry['bytes_before'] / 1e6:.2f} -> {entry['bytes_after'] / 1e6:.2f} MB"
        parts.append(f"{what}, {entry.get('layers', '?')} tensors{sizes}")
    return "; ".join(parts) or None


def inspect_path(path: Path) -> dict[str, dict]:
    if path.is_file() and path.suffix == ".onnx":
        summaries = {path.stem: model_summary(path)}
    elif path.is_dir():
        manifest = buildfs.read_manifest(path)
        summaries = {}
        for name, comp in manifest["components"].items():
            onnx_files = [f for f in comp["files"] if f.endswith(".onnx")]
            onnx_files = onnx_files or [comp["costmodel_graph"]] if comp.get("costmodel_graph") else onnx_files
            if onnx_files:
                model_path = path / onnx_files[0]
                if not model_path.resolve().is_relative_to(path.resolve()):
                    raise BadInputError(f"'{path}/manifest.json' lists '{onnx_files[0]}' outside the build: refused")
                summaries[name] = model_summary(model_path)
    else:
        raise BadInputError(f"'{path}' is neither an .onnx file nor a build folder")
    console = Console()
    totals = Table(title=f"fusionc inspect {path}")
    for column in ("component", "ops", "params (M)", "weights (MB)", "GMACs"):
        totals.add_column(column, justify="left" if column == "component" else "right")
    for name, s in summaries.items():
        totals.add_row(name, str(sum(s["ops"].values())), f"{s['params'] / 1e6:.3f}", f"{s['weight_bytes'] / 1e6:.2f}",
                       f"{s['macs'] / 1e9:.3f}")
    console.print(totals)
    for name, s in summaries.items():
        ops = ", ".join(f"{op} {n}" for op, n in s["ops"].most_common())
        console.print(f"[bold]{name}[/bold] ops: {ops}")
        compressed = compression_line(s["compression"])
        if compressed:  # decompressed into the stored weights at load (constexpr on Core ML), not runtime ops
            console.print(f"[bold]{name}[/bold] weights: {compressed} (stored compressed, not counted as ops)",
                          markup=True, highlight=False)
        quantized = quantization_line(s["quantization"])
        if quantized:  # QDQ: the QuantizeLinear/DequantizeLinear pairs mark quantized tensors, not ops that run
            console.print(f"[bold]{name}[/bold] quantized: {quantized}", markup=True, highlight=False)
    from fusionc.analysis.graph_stats import unknown_shapes_warning

    warning = unknown_shapes_warning({name: s["unknown_shape_ops"] for name, s in summaries.items()})
    if warning:
        console.print(warning, markup=False, highlight=False)
    return summaries
