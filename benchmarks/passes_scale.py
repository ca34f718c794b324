"""Time each generic pass (default_pipeline) on UNets of growing node count and on a full SD-1.5 UNet.

Node count, not width, drives pass cost, so the scaling runs use tiny widths and deeper topologies
(more transformer layers per block, as SDXL has); the SD-1.5 run (block_out_channels 320/640/1280/1280,
860M parameters, 64x64 latents) measures the real thing, including peak RSS. Writes
benchmarks/results/passes_scale.json. Run the SD-1.5 case under the heavy-job lock:

    flock /tmp/fusionc-heavy.lock nice -n 10 python benchmarks/passes_scale.py [--skip-sd15] [--skip-scaling]
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import onnx_ir as ir
import torch
from diffusers import UNet2DConditionModel

from fusionc.models.tiny import sd15_unet_config
from fusionc.core.options import CompileOptions
from fusionc.passes.generic import default_pipeline

RESULTS = Path(__file__).parent / "results" / "passes_scale.json"


def tiny_unet(layers: tuple[int, int, int]) -> UNet2DConditionModel:
    config = sd15_unet_config()
    config.update(transformer_layers_per_block=layers, use_linear_projection=True)
    return UNet2DConditionModel(**config)


def sd15_unet(width: int = 320) -> UNet2DConditionModel:
    """SD-1.5's UNet topology; width 320 is the real model, 64 the mid-size one (same node count)."""
    return UNet2DConditionModel(
        sample_size=64, cross_attention_dim=768, attention_head_dim=8, layers_per_block=2,
        block_out_channels=(width, 2 * width, 4 * width, 4 * width),
    )


class _Wrapper(torch.nn.Module):
    def __init__(self, unet: UNet2DConditionModel) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


def export(unet: UNet2DConditionModel) -> ir.Model:
    unet.eval()
    size, cross = unet.config.sample_size, unet.config.cross_attention_dim
    example = (torch.randn(2, 4, size, size), torch.tensor([10.0]), torch.randn(2, 77, cross))
    batch = torch.export.Dim.DYNAMIC
    with torch.no_grad():
        program = torch.onnx.export(
            _Wrapper(unet), example, dynamo=True, opset_version=18, verbose=False,
            input_names=["sample", "timestep", "encoder_hidden_states"], output_names=["out_sample"],
            dynamic_shapes=({0: batch}, None, {0: batch}),
        )
    return program.model


def run_pipeline(model: ir.Model, repeats: int) -> dict:
    """Median seconds per pass over `repeats` fresh copies is not possible for one exported model
    (passes are in place), so each repeat re-runs the whole pipeline on a deserialized copy."""
    proto = ir.to_proto(model) if repeats > 1 else None
    runs: list[list[dict]] = []
    for index in range(repeats):
        target = model if index == 0 else ir.from_proto(proto)
        options = CompileOptions()
        records = []
        for entry in default_pipeline():
            the_pass = entry.make(options)
            nodes_before = len(target.graph)
            start = time.perf_counter()
            result = the_pass(target)
            records.append({"pass": type(the_pass).__name__, "seconds": time.perf_counter() - start,
                            "modified": result.modified, "nodes_before": nodes_before, "nodes_after": len(target.graph)})
        runs.append(records)
    summary = []
    for position, record in enumerate(runs[0]):
        summary.append({**record, "seconds": round(statistics.median(r[position]["seconds"] for r in runs), 3)})
    fused = {}
    for node in model.graph:
        if node.domain == "fusionc":
            fused[node.op_type] = fused.get(node.op_type, 0) + 1
    return {"passes": summary, "total_seconds": round(sum(r["seconds"] for r in summary), 3), "fused": fused}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-sd15", action="store_true")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--skip-mid", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results: dict = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.update(machine="2 shared cores (other jobs running: timings are upper bounds)", python=sys.version.split()[0])
    if not args.skip_scaling:
        results["scaling"] = []
    for layers in () if args.skip_scaling else ((1, 1, 1), (2, 4, 4), (4, 10, 10)):
        torch.manual_seed(0)
        model = export(tiny_unet(layers))
        nodes = len(model.graph)
        run = run_pipeline(model, args.repeats)
        run.update(transformer_layers_per_block=list(layers), nodes=nodes,
                   ms_per_node=round(1000 * run["total_seconds"] / nodes, 3))
        results["scaling"].append(run)
        print(f"layers {layers}: {nodes} nodes, {run['total_seconds']} s, {run['ms_per_node']} ms/node", flush=True)
    if not args.skip_mid:  # SD-1.5 topology at 1/5 width: SD-1.5's node count without its memory
        torch.manual_seed(0)
        unet = sd15_unet(64)
        model = export(unet)
        nodes = len(model.graph)
        run = run_pipeline(model, args.repeats)
        run.update(parameters=sum(p.numel() for p in unet.parameters()), nodes=nodes,
                   block_out_channels=list(unet.config.block_out_channels))
        run["ms_per_node"] = round(1000 * run["total_seconds"] / run["nodes"], 3)
        results["sd15_topology_mid"] = run
        print(f"sd15 topology, width 64: {run['nodes']} nodes, {run['total_seconds']} s", flush=True)
    if not args.skip_sd15:
        torch.manual_seed(0)
        unet = sd15_unet()
        params = sum(p.numel() for p in unet.parameters())
        start = time.perf_counter()
        model = export(unet)
        export_seconds = time.perf_counter() - start
        del unet
        gc.collect()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        nodes = len(model.graph)
        run = run_pipeline(model, 1)
        run.update(parameters=params, nodes=nodes, export_seconds=round(export_seconds, 1),
                   peak_rss_mb_before_passes=round(rss_before), peak_rss_mb_after_passes=round(
                       resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
        results["sd15"] = run
        print(f"sd15: {nodes} nodes, {run['total_seconds']} s", flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
