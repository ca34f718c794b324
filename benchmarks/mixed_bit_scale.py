"""The mixed-bit search (`--palettize auto:DB`) at SDXL size: what part of it was measured, and the extrapolation.

The search (passes/compression/mixed_bit.py) has three costs:
  1. weight errors: every compressible weight palettized at each candidate width, from histograms (CPU);
  2. sensitivity probes: one batch-1 UNet inference per probe input per layer group, with that group's
     weights palettized at 4 bits (independent: issue 18's fleet runs them as Ray tasks);
  3. refinement: a few rounds of whole-recipe inferences on the selection inputs (~12 inferences).

Measured here, on this machine, light enough to run outside the heavy slot:
  - the compressible layers of the SD-1.5 and SDXL UNets (the search's `find_weights` rule: Linear/Conv
    weights of >= 2048 elements; counted on meta-device modules, no weights loaded);
  - cost 1 on the real SDXL weights of a few blocks read straight from the checkpoint (safetensors), scaled
    by element count to the whole UNet.
Taken from other measurements (named in the JSON): the batch-1 inference time of the SDXL UNet in onnxruntime
(the fp16 measurement of the SDXL Core ML compile: benchmarks/results/compile_memory_sdxl_coreml.json), and the
SD-1.5 search itself (compression_sd15_mixed.json) for the method's constants.

    python benchmarks/mixed_bit_scale.py --checkpoint /work/ckpt/sdxl_unet
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "mixed_bit_sdxl_estimate.json"
MIN_ELEMENTS = 2048
SAMPLE_PREFIXES = ("down_blocks.1.attentions.0.transformer_blocks.0.", "mid_block.resnets.0.",
                   "up_blocks.0.attentions.0.transformer_blocks.3.")
SEARCH_MINUTES = 30


def compressible_layers(config: dict[str, Any]) -> tuple[int, int]:
    """(layers, elements) the search would palettize, from the UNet's config on the meta device."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    layers = elements = 0
    for module in unet.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and module.weight.numel() >= MIN_ELEMENTS:
            layers, elements = layers + 1, elements + module.weight.numel()
    return layers, elements


def weight_error_seconds(checkpoint: Path) -> dict[str, Any]:
    """Cost 1 on real SDXL weights: palette_errors at the search's candidates for the sampled blocks."""
    from safetensors import safe_open

    from fusionc.passes.compression.lut import palette_errors
    from fusionc.passes.compression.mixed_bit import CANDIDATES

    path = next(checkpoint.glob("*.safetensors"))
    seconds = cpu = elements = tensors = 0
    with safe_open(str(path), framework="np") as handle:
        for name in handle.keys():
            if not name.startswith(SAMPLE_PREFIXES) or not name.endswith(".weight"):
                continue
            weight = handle.get_tensor(name)
            if weight.ndim < 2 or weight.size < MIN_ELEMENTS:
                continue
            start, start_cpu = time.perf_counter(), time.process_time()
            palette_errors(weight.astype(np.float32), CANDIDATES[:-1], 0, None)
            seconds += time.perf_counter() - start
            cpu += time.process_time() - start_cpu
            elements, tensors = elements + weight.size, tensors + 1
    return {"blocks": list(SAMPLE_PREFIXES), "tensors": tensors, "elements": elements, "seconds": round(seconds, 2),
            "cpu_seconds": round(cpu, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="the SDXL UNet folder")
    parser.add_argument("--sd15-config", type=Path, default=Path("/work/ckpt/sd15/unet/config.json"))
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=Path(__file__).parent).stdout.strip()
    sdxl_config = json.loads((args.checkpoint / "config.json").read_text())
    sd15_config = json.loads(args.sd15_config.read_text())
    sd15_layers, sd15_elements = compressible_layers(sd15_config)
    sdxl_layers, sdxl_elements = compressible_layers(sdxl_config)
    load_before = os.getloadavg()[0]
    sample = weight_error_seconds(args.checkpoint)
    # CPU seconds, not wall: the machine is shared (the load average is recorded); the step is single-threaded numpy
    errors_s = sample["cpu_seconds"] * sdxl_elements / max(sample["elements"], 1)

    sd15 = json.loads((RESULTS / "compression_sd15_mixed.json").read_text())["search"]
    profile_path = RESULTS / "compile_memory_sdxl_coreml.json"
    inference_s, inference_source = None, None
    if profile_path.exists():  # the fp16 measurement: onnxruntime runs of the whole SDXL UNet, batch 2, taps on
        profile = json.loads(profile_path.read_text())
        fp16 = [r for r in profile["rows"] if r["name"] == "KeepFp16InRangePass"]
        calls = 2  # --calibration-prompts 2 --calibration-steps 1: two batch-2 calls, i.e. 4 batch-1 rows
        if fp16:
            inference_s = round(fp16[0]["seconds"] / (2 * calls), 1)
            inference_source = (f"{profile_path.name}: KeepFp16InRangePass {fp16[0]['seconds']} s for {calls} batch-2 "
                                "onnxruntime runs of the whole UNet (plus writing the tapped graph), per batch-1 row")
    record: dict[str, Any] = {
        "benchmark": "mixed_bit_scale", "git_rev": rev, "machine": {"cores": os.cpu_count()},
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "layers": {"sd15": sd15_layers, "sdxl": sdxl_layers, "rule": f"Linear/Conv2d weights >= {MIN_ELEMENTS} elements"},
        "elements": {"sd15": sd15_elements, "sdxl": sdxl_elements},
        "measured": {"weight_errors_sample": sample,
                     "weight_errors_whole_unet_cpu_s": round(errors_s, 1),
                     "batch1_inference_s": inference_s, "batch1_inference_source": inference_source},
        "sd15_search": {k: sd15[k] for k in ("layers", "groups", "probe_inputs", "seconds_per_inference",
                                            "seconds_weight_errors", "seconds_probes", "seconds")},
    }
    if inference_s:
        refine = 12 * inference_s  # the SD-1.5 search's refinement: ~12 whole-recipe inferences (rounds on 2-3 inputs)
        per_layer = sdxl_layers * 1 * inference_s  # one probe input per layer (what SD-1.5 could afford too)
        total = errors_s + per_layer + refine
        budget = SEARCH_MINUTES * 60
        fits_groups = max(0, int((budget - errors_s - refine) / inference_s))
        record["extrapolated"] = {
            "per_layer_search_s": round(total, 0), "per_layer_search_h": round(total / 3600, 2),
            "probes_s": round(per_layer, 0), "refinement_s": round(refine, 0),
            "groups_that_fit_30_min_here": fits_groups,
            "machines_for_per_layer_probes_in_30_min": int(np.ceil(per_layer / max(budget - errors_s - refine, 1))),
            "how": "weight errors scaled by elements from the sampled blocks; probes = layers x 1 probe input x the "
                   "batch-1 inference; refinement = 12 inferences (as the SD-1.5 search did); each probe is "
                   "independent, so N machines divide the probe time by N (issue 18's Ray tasks)",
        }
    RESULTS.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    sys.exit(main())
