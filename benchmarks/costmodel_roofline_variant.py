"""A variant of the Hexagon cost model that was tried and not kept: a per-op roofline term.

Each op costs max(MACs / peak MAC rate, traffic / DRAM bandwidth) with the Snapdragon 8 Gen 3 profile's figures
(fusionc.core.devices: 34 int8 / 17 fp16 TOPS, 77 GB/s; W8A16 at half the int8 rate), traffic being the op's weights
at the deployed precision plus its activations when they exceed the local memory (as `spill_mb` counts them). The
term is cross-validated exactly as benchmarks/costmodel_fit.py chooses its model (training models only, grouped by
family, the same shuffles and score), beside the shipped terms and in place of the MAC and byte terms.

    python benchmarks/costmodel_roofline_variant.py     # ~1 minute; prints the three scores (lower is better)
                                                        # and writes benchmarks/results/costmodel_roofline_variant.json

Measured 2026-12-06 (02132f1, results/costmodel_roofline_variant.json): shipped 13.79, shipped + roofline 13.70 (within the selection's 0.25 margin),
roofline in place of gmacs / conv / linear / attention MACs / weight_mb / spill_mb 19.75.
"""

from __future__ import annotations

import gzip
import json
import time

import numpy as np

import costmodel_cv
import costmodel_fit
from fusionc.analysis import costfit

PEAK_MACS_PER_S = {"float": 17e12 / 2, "w8a16": 34e12 / 4, "w8a8": 34e12 / 2}  # TOPS / 2 ops per MAC
DRAM_BYTES_PER_S = 77e9
REPLACED = ("gmacs", "conv_gmacs", "linear_gmacs", "attn_gmacs", "weight_mb", "spill_mb")


def roofline_ms(entry: dict, precision: str, vtcm_bytes: int) -> float:
    """Sum over the graph's ops of max(compute time, traffic time), ms."""
    index = {f: i for i, f in enumerate(entry["fields"])}
    weight_bytes, act_bytes = costfit.PRECISION_BYTES[precision]
    total = 0.0
    for op in entry["ops"]:
        if op[index["kind"]] == "free":
            continue
        act = (op[index["act_in_elems"]] + op[index["act_out_elems"]]) * act_bytes
        weights = (op[index["float_weight_elems"]] * weight_bytes
                   + min(op[index["compressed_weight_bytes"]], op[index["params"]] * weight_bytes))
        traffic = weights + (act if act > vtcm_bytes else 0.0)
        total += max(op[index["macs"]] / PEAK_MACS_PER_S[precision], traffic / DRAM_BYTES_PER_S)
    return total * 1e3


def main() -> None:
    with gzip.open(costmodel_fit.FEATURES_PATH, "rt", encoding="utf-8") as f:
        features = {k: v for k, v in json.load(f).items() if not k.startswith("stable_diffusion")}
    train = [r for r in costmodel_fit.load_rows(features) if costmodel_fit.on_npu(r) and not r["held_out"]]
    params = costfit.load_params()
    names, vtcm = tuple(params["features"]), params["vtcm_bytes"]
    chosen = json.loads((costmodel_fit.RESULTS / "costmodel_fit.json").read_text(encoding="utf-8"))["model"]
    base = costmodel_fit.design(train, features, names, vtcm)
    roof = np.array([[roofline_ms(features[r["key"]], r["precision"], vtcm)] for r in train])
    kept = [i for i, n in enumerate(names) if n not in REPLACED]

    def score(X: np.ndarray, terms: tuple[str, ...]) -> float:
        pred = costmodel_cv.cross_validated(train, X, costmodel_fit.family, lambda r, x: costmodel_fit.fit(
            r, x, terms, chosen["ridge_to_pooled"], chosen["floor_weights"], chosen["speed_mode"]),
            costmodel_fit.predict_rows)
        return costmodel_cv.score(costmodel_cv.chip_errors(train, pred, costmodel_fit.PHONE_LAPTOP))

    scores = {"shipped terms": score(base, names),
              "shipped + roofline": score(np.hstack([base, roof]), names + ("roofline",)),
              f"roofline replacing {'/'.join(REPLACED)}":
                  score(np.hstack([base[:, kept], roof]), tuple(names[i] for i in kept) + ("roofline",))}
    for how, value in scores.items():
        print(f"{how:40} {value:.2f}")
    result = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "git_rev": costmodel_fit.git_rev(),
              "what": "cross-validated score on the training models (costmodel_cv.score; lower is better), the shipped "
                      "model's terms and selection, with and without a per-op roofline term",
              "peak_macs_per_s": PEAK_MACS_PER_S, "dram_bytes_per_s": DRAM_BYTES_PER_S,
              "scores": {k: round(v, 3) for k, v in scores.items()}}
    (costmodel_fit.RESULTS / "costmodel_roofline_variant.json").write_text(json.dumps(result, indent=1) + "\n",
                                                                          encoding="utf-8")


if __name__ == "__main__":
    main()
