"""Does the built-in ControlNet's outline move the shape? `builtin:controlnet` against the plain built-in pipeline.

For each case (a prompt naming one position, an outline at another: fusionc.models.train_controlnet.EVAL_CASES),
generate in torch (8 steps, guidance 4) with the ControlNet pipeline and the outline as control image, and
with the plain built-in pipeline on the same prompt and seed; fusionc.models.shapes_check.detect says where the
shape went. Writes benchmarks/results/controlnet_follow.json (git rev, load before/after).

    nice -n 10 python benchmarks/controlnet_follow.py [--seeds 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    from fusionc.generate import generate, torch_runners
    from fusionc.models.shapes_check import detect
    from fusionc.models.train_controlnet import EVAL_CASES, control_follow_rate

    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    controlled = control_follow_rate(torch_runners("builtin:controlnet"), EVAL_CASES, seeds=args.seeds)
    plain_rs = torch_runners(None)
    plain = []
    for prompt, shape, position in EVAL_CASES:
        for seed in range(args.seeds):
            image, _ = generate(prompt, plain_rs.runners, plain_rs.tokenizer, copy.deepcopy(plain_rs.scheduler), 8,
                                seed, 4.0, plain_rs.height, plain_rs.width, scaling_factor=plain_rs.scaling_factor,
                                latent_channels=plain_rs.latent_channels, text_length=plain_rs.text_length)
            plain.append({"prompt": prompt, "outline": f"{shape} {position}", "seed": seed,
                          "detected": detect(image).position})
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=Path(__file__).parent).stdout.strip()
    record = {
        "benchmark": "controlnet_follow", "git_rev": rev, "steps": 8, "guidance": 4.0, "seeds": args.seeds,
        "controlnet_pipeline": {"shape_at_outline": controlled["rate"], "cases": controlled["cases"]},
        "plain_pipeline": {"shape_at_outline": sum(c["detected"] == c["outline"].split()[1] for c in plain) / len(plain),
                           "shape_at_prompt_position": sum(c["detected"] in c["prompt"].split() for c in plain) / len(plain),
                           "cases": plain},
        "seconds": round(time.perf_counter() - start, 1),
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "controlnet_follow.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: v for k, v in record.items() if not isinstance(v, dict)}, indent=1))
    print("controlnet:", controlled["rate"], "plain at outline:", record["plain_pipeline"]["shape_at_outline"])


if __name__ == "__main__":
    main()
