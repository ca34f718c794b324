"""The fitted latency model: features from graph_stats rows, the fit, the split, and the fit script on small data."""

from __future__ import annotations

import gzip
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from fusionc.analysis import costfit
from fusionc.core.devices import DEVICES

ROOT = Path(__file__).resolve().parents[1]
SMALL_FEATURES = Path(__file__).parent / "data" / "latency_features_small.json.gz"
sys.path.insert(0, str(ROOT / "benchmarks"))


def _row(kind: str, macs: int = 0, vector: int = 0, params: int = 0, act_in: int = 0, act_out: int = 0,
         op_type: str = "X", transpose_form: str = "", feeds_matmul: int = 0) -> list:
    """One graph_stats op row in costfit.OP_FIELDS order."""
    rank = {"keeps_last": 3, "moves_last": 2, "nchw_nhwc": 2}.get(transpose_form, 0)  # head split, K^T, layout
    run = 64 if transpose_form == "keeps_last" else 1  # a 64-wide head moves whole
    return [op_type, kind, macs, vector, params, params, 0.0, act_in, act_out, False, 1, 0, 1, transpose_form, rank,
            run, feeds_matmul, 0]


def _aihub_csv(path: Path, rows: list[tuple]) -> None:
    """An AI Hub latency CSV (aihub_perf.csv's columns) of (model, chipset, runtime, precision, ms, release) rows, each
    its own job, every layer on the NPU."""
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "component", "precision", "chipset", "runtime", "inference_time_ms", "layers_total",
                    "layers_npu", "layers_gpu", "layers_cpu", "job_id", "job_shared_with_device", "release",
                    "qairt_version"])
        for i, (model, chip, runtime, precision, ms, release) in enumerate(rows):
            w.writerow([model, model.upper(), precision, chip, runtime, ms, 10, 10, 0, 0, f"{path.name}{i}", "",
                        release, ""])


def test_features_by_hand() -> None:
    rows = [_row("conv", macs=2 * 10**9, params=10**6, act_in=10**6, act_out=10**6),
            _row("linear", macs=10**9, params=4 * 10**6, act_in=10**3, act_out=10**3),
            _row("attention", macs=5 * 10**8, act_in=4 * 10**6, act_out=10**6),
            _row("vector", vector=3 * 10**6, act_in=10**6, act_out=10**6),
            _row("layout", act_in=10**6, act_out=2 * 10**6),
            _row("free", act_in=10**9, act_out=10**9)]
    x = costfit.features_from_rows(rows, "w8a16", fallback_layers=3)
    assert x["conv_gmacs"] == 2 and x["linear_gmacs"] == 1 and x["attn_gmacs"] == 0.5
    assert x["vector_g"] == pytest.approx(0.003) and x["layout_g"] == pytest.approx(0.002)
    assert x["weight_mb"] == pytest.approx(5.0)  # 5M int8 weights
    # only the attention op moves more than the 8 MiB local memory: (4M + 1M) x 2 bytes
    assert x["spill_mb"] == pytest.approx(10.0)
    assert x["kilo_ops"] == pytest.approx(0.005) and x["fallback_layers"] == 3 and x["one"] == 1
    fp = costfit.features_from_rows(rows, "float")
    assert fp["weight_mb"] == pytest.approx(10.0)  # fp16 weights on the HTP
    assert costfit.features_from_rows(rows, "w8a8")["spill_mb"] == 0  # 1-byte activations fit
    # every op's activation bytes; a smaller local memory spills more (conv: 2M x 2 bytes = 4 MB > 2 MiB)
    assert x["act_mb"] == pytest.approx(4 + 0.004 + 10 + 4 + 6)
    assert costfit.features_from_rows(rows, "w8a16", vtcm_bytes=2 << 20)["spill_mb"] == pytest.approx(4 + 10 + 4 + 6)
    # a depthwise 3x3 conv does 9 MACs per output: low intensity; the dense conv above does 2000
    dw = costfit.features_from_rows([_row("conv", macs=9 * 10**6, act_in=10**6, act_out=10**6)] + rows, "w8a16")
    assert dw["lowint_conv_gmacs"] == pytest.approx(0.009) and x["lowint_conv_gmacs"] == 0
    assert dw["conv_gmacs"] == pytest.approx(2.009)  # still a conv MAC: the low-intensity term is an extra cost


def test_a_layer_norm_is_charged_per_output_element_beyond_its_vector_work() -> None:
    norm = _row("vector", vector=5 * 10**6, act_in=10**6, act_out=10**6, op_type="LayerNormalization")
    add = _row("vector", vector=10**6, act_in=2 * 10**6, act_out=10**6, op_type="Add")
    x = costfit.features_from_rows([norm, add], "w8a16")
    assert x["norm_g"] == pytest.approx(0.001)  # the Add's million elements are not a norm's
    assert x["vector_g"] == pytest.approx(0.006)  # and the norm's vector work is still counted there


def test_a_concat_moves_nothing_of_its_own() -> None:
    """Its producers write into their slices of its output: a Concat is a launch and an activation, not layout work."""
    concat = _row("layout", act_in=2 * 10**6, act_out=2 * 10**6, op_type="Concat")
    pad = _row("layout", act_in=10**6, act_out=10**6, op_type="Pad")
    x = costfit.features_from_rows([concat, pad], "w8a16", vtcm_bytes=2 << 20)
    assert x["layout_g"] == pytest.approx(0.001)  # the Pad's elements only
    assert x["kilo_ops"] == pytest.approx(0.002) and x["spill_mb"] == pytest.approx(8 + 4)  # both still count here


def test_a_head_split_or_k_transpose_is_charged_beyond_its_layout_work_and_a_layout_permute_is_not() -> None:
    to_nhwc = _row("layout", act_in=10**6, act_out=10**6, op_type="Transpose", transpose_form="nchw_nhwc")
    heads = _row("layout", act_in=10**6, act_out=10**6, op_type="Transpose", transpose_form="keeps_last")
    k_t = _row("layout", act_in=2 * 10**6, act_out=2 * 10**6, op_type="Transpose", transpose_form="moves_last")
    x = costfit.features_from_rows([to_nhwc, heads, k_t], "w8a16")
    # the head split moves whole rows, K^T transposes every element; the channels-last permute is in neither
    assert (x["permute_rows_g"], x["permute_last_g"]) == (pytest.approx(0.001), pytest.approx(0.002))
    assert x["layout_g"] == pytest.approx(0.004)  # all three still move their elements
    # rows stored before graph_stats recorded the form (no column) charge no permute term, as before it existed
    before = costfit.OP_FIELDS[:costfit.OP_FIELDS.index("transpose_form")]
    old = costfit.features_from_rows([r[:len(before)] for r in (to_nhwc, heads, k_t)], "w8a16", fields=before)
    assert old["permute_rows_g"] == old["permute_last_g"] == 0 and old["layout_g"] == pytest.approx(0.004)
    unknown = _row("layout", act_in=10**6, act_out=10**6, op_type="Transpose")  # a stored row's empty form
    assert costfit.features_from_rows([unknown], "w8a16")["permute_rows_g"] == 0


def test_a_head_split_only_matmuls_read_is_left_to_the_matmul() -> None:
    """QK^T and the V product read a head split strided (feeds_matmul 1, or 2 through the 1/sqrt(d) scale): no
    permute_rows_g. The head merge after them (read by a Reshape) is charged; so is a K^T the MatMul reads."""
    split = _row("layout", act_in=10**6, act_out=10**6, op_type="Transpose", transpose_form="keeps_last",
                 feeds_matmul=1)
    scaled = _row("layout", act_in=10**6, act_out=10**6, op_type="Transpose", transpose_form="keeps_last",
                  feeds_matmul=2)
    merge = _row("layout", act_in=3 * 10**6, act_out=3 * 10**6, op_type="Transpose", transpose_form="keeps_last")
    k_t = _row("layout", act_in=2 * 10**6, act_out=2 * 10**6, op_type="Transpose", transpose_form="moves_last",
               feeds_matmul=1)
    x = costfit.features_from_rows([split, scaled, merge, k_t], "w8a16")
    assert x["permute_rows_g"] == pytest.approx(0.003)  # the merge only
    assert x["permute_last_g"] == pytest.approx(0.002)  # K^T still transposes every element
    assert x["layout_g"] == pytest.approx(0.007)  # all four still move their elements
    # rows stored before feeds_matmul was recorded charge every head split
    before = costfit.OP_FIELDS[:costfit.OP_FIELDS.index("feeds_matmul")]
    old = costfit.features_from_rows([r[:len(before)] for r in (split, scaled, merge)], "w8a16", fields=before)
    assert old["permute_rows_g"] == pytest.approx(0.005)


def test_op_counts_for_horizontal_fusion_and_the_longest_path() -> None:
    """A fire module: squeeze conv, then a 1x1 and a 3x3 conv side by side (siblings 2, one level), then a concat.
    fused_kilo_ops counts the two as one launch; path_kilo_ops counts the 3 ops on the longest path."""
    fields = costfit.OP_FIELDS
    row = lambda op_type, level, siblings: dict(zip(fields, [op_type, "conv", 10**6, 0, 10, 10, 0.0, 100, 100, False,  # noqa: E731
                                                             1, level, siblings, "", 0, 0, 0, 0, 0]))
    rows = [row("Conv", 1, 1), row("Conv", 2, 2), row("Conv", 2, 2), dict(row("Concat", 3, 1), kind="layout")]
    x = costfit.features_from_rows([[r[f] for f in fields] for r in rows], "float")
    assert x["kilo_ops"] == pytest.approx(0.004)
    assert x["fused_kilo_ops"] == pytest.approx(0.003)
    assert x["path_kilo_ops"] == pytest.approx(0.003)
    # an LSTM's extra launches run in sequence: on the path too
    lstm = dict(row("LSTM", 4, 1), kind="linear", timesteps=10)
    y = costfit.features_from_rows([[r[f] for f in fields] for r in rows + [lstm]], "float")
    launches = 10 * costfit.RECURRENT_LAUNCHES_PER_STEP
    assert y["path_kilo_ops"] == pytest.approx(0.004 + (launches - 1) / 1000)
    assert y["kilo_ops"] == pytest.approx(0.004 + launches / 1000)
    # feature rows from before graph_stats stored the structure: no path or fusion terms, the plain count stays
    before = fields[:fields.index("level")]
    old = costfit.features_from_rows([[r[f] for f in before] for r in rows], "float", fields=before)
    assert old["kilo_ops"] == pytest.approx(0.004) and old["path_kilo_ops"] == old["fused_kilo_ops"] == 0


def test_a_recurrent_op_launches_per_timestep() -> None:
    """An LSTM counts RECURRENT_LAUNCHES_PER_STEP ops per timestep and direction (QNN unrolls it: Sequencer2D's layer
    count); rows from feature files without the timesteps column count every op once, as before."""
    fields = costfit.OP_FIELDS[:11]  # up to timesteps
    lstm = ["LSTM", "linear", 10**6, 0, 1000, 1000, 0.0, 10**3, 10**3, False, 64]
    relu = ["Relu", "vector", 0, 10**3, 0, 0, 0.0, 10**3, 10**3, False, 1]
    x = costfit.features_from_rows([lstm, relu], "float", fields=fields)
    assert x["kilo_ops"] == pytest.approx((64 * costfit.RECURRENT_LAUNCHES_PER_STEP + 1) / 1000)
    assert x["linear_gmacs"] == pytest.approx(1e-3)
    old = costfit.features_from_rows([lstm[:-1], relu[:-1]], "float", fields=fields[:-1])
    assert old["kilo_ops"] == pytest.approx(0.002)


def test_stale_recurrent_rows_are_refreshed_from_the_modules_own_shapes() -> None:
    """latency_graphs.refresh_recurrent: features written before graph_stats counted LSTMs (a 'vector' op, 0 MACs, no
    timesteps) get graph_stats' rule from the module's recurrent calls, in graph order; other rows are kept."""
    import torch
    from latency_graphs import refresh_recurrent

    class Two(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.LSTM(5, 3, batch_first=True, bidirectional=True)
            self.b = torch.nn.GRU(6, 4)

        def forward(self, x):  # noqa: ANN001
            return self.b(self.a(x)[0])[0]

    fields = list(costfit.OP_FIELDS[:10])  # before the timesteps column
    entry = {"key": "two/Two", "fields": fields,
             "ops": [["LSTM", "vector", 0, 42, 0, 0, 0.0, 0, 0, False], ["Relu", "vector", 0, 7, 0, 0, 0.0, 0, 0, False],
                     ["GRU", "vector", 0, 42, 0, 0, 0.0, 0, 0, False]]}
    assert refresh_recurrent(entry, lambda: (Two(), {"x": torch.zeros(2, 9, 5)})) == 2
    col = {f: i for i, f in enumerate(entry["fields"])}
    lstm, relu, gru = entry["ops"]
    # LSTM: batch 2, seq 9, 2 directions x 4 gates x hidden 3 x (5 + 3); GRU (seq-first): seq 2, batch 9, 3 gates
    assert (lstm[col["kind"]], lstm[col["macs"]], lstm[col["timesteps"]]) == ("linear", 9 * 2 * 2 * 4 * 3 * 8, 18)
    assert (gru[col["macs"]], gru[col["timesteps"]]) == (2 * 9 * 3 * 4 * (6 + 4), 2)
    assert relu == ["Relu", "vector", 0, 7, 0, 0, 0.0, 0, 0, False, 1]
    entry["ops"].pop()
    with pytest.raises(ValueError, match="1 recurrent nodes in the graph, 2 recurrent calls"):
        refresh_recurrent(entry, lambda: (Two(), {"x": torch.zeros(2, 9, 5)}))


def test_the_preregistered_sd_predictions_stay_beside_a_refit(tmp_path: Path) -> None:
    """The SD predictions first committed before any comparison (194cda8) are a record no refit overwrites: a fit
    whose predictions differ says it is not a pre-registered test and the README shows both sets."""
    import costmodel_fit
    import render_readme

    record = json.loads(costmodel_fit.PREREGISTERED_PATH.read_text())
    assert record["commit"].startswith("194cda8") and record["predictions"]
    same = [dict(p) for p in record["predictions"]]
    assert costmodel_fit.sd_provenance(same, record).startswith("these exact predictions")
    floats = [dict(p, predicted_ms=p["predicted_ms"] * (1.1 if p["precision"] == "float" else 1))
              for p in record["predictions"]]
    assert costmodel_fit.sd_provenance(floats, record).startswith("these exact W8A16 predictions")
    moved = [dict(p, predicted_ms=p["predicted_ms"] * 1.1) for p in record["predictions"]]
    assert costmodel_fit.sd_provenance(moved, record).startswith("NOT a pre-registered test")
    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", results, ignore=shutil.ignore_patterns("*.png", "*.gz"))
    data = json.loads((results / "costmodel_fit.json").read_text())
    data.update(stable_diffusion_predictions=moved, stable_diffusion_preregistered=dict(record, vs_published=[]),
                sd_predictions_published=costmodel_fit.sd_provenance(moved, record))
    (results / "costmodel_fit.json").write_text(json.dumps(data))
    block = render_readme.TABLES["costmodel_fit"].render(results)
    unet = next(p for p in record["predictions"] if p["component"] == "unet" and p["precision"] == "w8a16"
                and p["chipset"] == "snapdragon-8-gen-3")["predicted_ms"]
    assert "Pre-registered: Stable Diffusion 1.5" in block and "NOT a pre-registered test" in block
    assert render_readme.ms(unet) in block and render_readme.ms(unet * 1.1) in block


def test_params_file_names_its_terms_and_local_memory() -> None:
    """The shipped params say which terms and which local-memory size they were fitted with; estimates use both."""
    params = costfit.load_params()
    assert set(params["features"]) <= set(costfit.FEATURES)
    # the base terms, with the per-op overhead on exactly one of the op counts
    ops = [f for f in params["features"] if f in costfit.OPS_TERMS]
    assert len(ops) == 1 and set(costfit.BASE_FEATURES) - {"kilo_ops"} <= set(params["features"])
    assert params["vtcm_bytes"] in [mb << 20 for mb in (2, 4, 8, 16)]
    assert all(len(theta) == len(params["features"]) for theta in params["groups"].values())
    with pytest.raises(ValueError, match="coefficients for"):
        costfit.breakdown(dict.fromkeys(costfit.FEATURES, 1.0), [1.0, 2.0], params["features"])


def test_params_with_an_unknown_term_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "params.json"
    path.write_text(json.dumps({"features": ["gmacs", "quantum_gmacs"], "groups": {}}))
    with pytest.raises(ValueError, match="quantum_gmacs"):
        costfit.load_params(path)


def test_precision_groups() -> None:
    assert costfit.precision_group("float") == "float" and costfit.precision_group("fp16") == "float"
    assert costfit.precision_group("w8a16_mixed_int16") == "w8a16"
    assert costfit.precision_group("w8a8_mixed_int16") == "w8a8"
    with pytest.raises(ValueError):
        costfit.precision_group("bf12")


def test_fit_recovers_coefficients_and_stays_non_negative() -> None:
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 5, (60, len(costfit.FEATURES)))
    X[:, costfit.FEATURES.index("one")] = 1
    theta = np.zeros(len(costfit.FEATURES))
    theta[:4] = [2.0, 1.0, 3.0, 0.5]
    theta[costfit.FEATURES.index("one")] = 0.3
    y = X @ theta
    fitted = costfit.fit_group(X, y)
    assert (fitted >= 0).all()
    assert np.allclose(X @ fitted, y, rtol=1e-3)
    # with noise the relative error stays at the noise level, and a strong prior pulls towards itself
    noisy = y * rng.uniform(0.9, 1.1, len(y))
    assert np.median(np.abs(X @ costfit.fit_group(X, noisy) / noisy - 1)) < 0.1
    pulled = costfit.fit_group(X, noisy, prior=theta * 2, ridge=100.0)
    assert np.abs(pulled - theta * 2).sum() < np.abs(costfit.fit_group(X, noisy) - theta * 2).sum()
    # a physical floor holds (coefficient 4 of the truth is 0; floored at 0.2 it stays >= 0.2) and costs accuracy
    floor = np.zeros(len(theta))
    floor[4] = 0.2
    floored = costfit.fit_group(X, y, floor=floor)
    assert (floored >= floor - 1e-12).all() and floored[4] >= 0.2
    assert np.median(np.abs(X @ floored / y - 1)) > np.median(np.abs(X @ fitted / y - 1))


def test_fit_follows_the_rows_that_weigh_more() -> None:
    # two groups of rows that disagree on the one coefficient (1 ms vs 2 ms per unit): the fit follows the heavier
    x = np.arange(1.0, 21.0)[:, None]
    y = np.where(np.arange(20) < 15, 1.0, 2.0) * x[:, 0]  # 15 rows say 1, 5 rows say 2
    assert costfit.fit_group(x, y)[0] == pytest.approx(1.0, rel=0.02)
    assert costfit.fit_group(x, y, sample_weight=np.ones(20))[0] == pytest.approx(1.0, rel=0.02)
    few_count_more = np.where(np.arange(20) < 15, 1.0, 30.0)
    assert costfit.fit_group(x, y, sample_weight=few_count_more)[0] == pytest.approx(2.0, rel=0.02)


def test_family_balance_gives_each_family_one_say() -> None:
    import costmodel_fit

    # one chipset: a family timed 6 times says 1 ms per unit, three families timed once say 2; rows as published follow
    # the many rows, families weighed alike follow the many families
    rows, xs = [], []
    for i in range(6):
        rows.append({"model": "resnet50", "held_out": False, "chipset": "snapdragon-8-gen-3", "precision": "float",
                     "runtime_group": "qnn", "runtime": "QNN_CONTEXT_BINARY", "key": f"r{i}", "published_ms": 1.0 * (i + 1),
                     "layers_total": 0})
        xs.append([i + 1.0])
    for i, model in enumerate(("vit", "bert", "clip")):
        rows.append(dict(rows[0], model=model, key=model, published_ms=2.0 * (i + 2)))
        xs.append([i + 2.0])
    X = np.array(xs)
    slope = lambda params: params["groups"]["snapdragon-8-gen-3|float|qnn"][0]  # noqa: E731
    assert slope(costmodel_fit.fit(rows, X, ("gmacs",))) == pytest.approx(1.0, rel=0.05)
    assert slope(costmodel_fit.fit(rows, X, ("gmacs",), family_balance=1.0)) > 1.8


def test_the_pull_of_extra_mac_costs_towards_zero_is_a_cross_validated_choice() -> None:
    """Every graph here pays 0.5 ms per conv GMAC beyond the shared MAC rate, timed with 30% noise: the pooled fit's
    default pull (0.02 ms/GMAC) holds that extra cost nearer 0 than no pull does. Cross-validation compares both, and the pull
    counts as the simpler model (chosen within the margin)."""
    import costmodel_cv
    import costmodel_fit

    names = ("gmacs", "conv_gmacs", "one")
    rng = np.random.default_rng(0)
    rows, xs = [], []
    for i in range(24):
        gmacs = rng.uniform(1, 20)
        x = [gmacs, gmacs * rng.uniform(0, 1), 1.0]
        rows.append({"model": f"m{i}", "held_out": False, "chipset": costmodel_fit.REFERENCE_CHIPSET,
                     "precision": "float", "runtime_group": "qnn", "runtime": "QNN_DLC", "key": f"m{i}/c",
                     "published_ms": float(np.dot(x, [0.2, 0.5, 0.3]) * rng.lognormal(0, 0.3)), "layers_total": 0})
        xs.append(x)
    X = np.array(xs)
    conv = lambda params: params["groups"]["*|float|qnn"][1]  # noqa: E731 - the pooled fit's extra conv cost
    free, pulled = conv(costmodel_fit.fit(rows, X, names, extra_ridge=0.0)), conv(costmodel_fit.fit(rows, X, names))
    assert 0 <= pulled < free - 0.01  # (0.64 vs 0.66 here)
    assert {c["extra_ridge"] for c in costmodel_cv.candidates()} == set(costmodel_cv.EXTRA_RIDGE_CHOICES)
    pulled, free = (dict(costmodel_cv.candidates()[0], extra_ridge=e) for e in costmodel_cv.EXTRA_RIDGE_CHOICES)
    assert costmodel_cv.simplicity(pulled) < costmodel_cv.simplicity(free)


def test_split_keeps_families_together() -> None:
    import costmodel_fit

    sides = {costmodel_fit.held_out(m) for m in ("opus_mt_en_es", "opus_mt_en_zh", "opus_mt_es_en", "opus_mt_zh_en")}
    assert len(sides) == 1
    assert costmodel_fit.held_out("depth_anything") == costmodel_fit.held_out("depth_anything_v2")
    assert costmodel_fit.family("real_esrgan_x4plus") == costmodel_fit.family("esrgan")  # one RRDBNet, two wrappers
    assert len({costmodel_fit.family(f"quicksrnet{size}") for size in ("small", "medium", "large")}) == 1
    assert costmodel_fit.family("yolov8_seg") == costmodel_fit.family("yolov8_det")  # one network, a mask head more


def test_the_earlier_held_out_models_are_all_still_held_out() -> None:
    """The README's column on the 24 models held out before 2026-12-08 compares fits only while the split keeps them
    out: a family mapping that moved one into training would quietly change what that column measures."""
    import costmodel_fit

    assert len(costmodel_fit.EARLIER_HELD_OUT) == 24
    assert all(costmodel_fit.held_out(model) for model in costmodel_fit.EARLIER_HELD_OUT)


def test_the_held_out_figures_spread_by_which_models_happened_to_be_held_out() -> None:
    import costmodel_fit

    rows = [{"model": m, "published_ms": 1.0} for m in "abcdefghij" for _ in range(3)]
    alike = costmodel_fit.bootstrap_over_models(rows, np.full(len(rows), 1.1), lambda r: True)
    assert alike["n_models"] == 10 and alike["median_abs_5_95"] == pytest.approx([0.1, 0.1])  # every model 10% off
    two_bad = np.array([2.0 if r["model"] in "ab" else 1.1 for r in rows])  # two models 100% off, the rest 10%
    spread = costmodel_fit.bootstrap_over_models(rows, two_bad, lambda r: True)
    low, high = spread["p90_abs_5_95"]
    assert low == pytest.approx(0.1) and high == pytest.approx(1.0)  # a resample without them, one with more
    assert costmodel_fit.bootstrap_over_models(rows, two_bad, lambda r: r["model"] == "a") == {"n_models": 1}


def test_models_restated_from_their_authors_code_have_ai_hubs_parameter_counts() -> None:
    """aihub_custom re-states the AI Hub models no library ships: each has the parameter count AI Hub publishes (to
    its 3 significant figures), builds on the meta device (no weights), and is in the rebuilt graphs' table."""
    import aihub_custom
    import latency_graphs
    import torch

    assert latency_graphs.LIBRARIES["custom"] is aihub_custom.CUSTOM
    for (key, component), build in aihub_custom.CUSTOM.items():
        with torch.device("meta"):
            module, feeds = build()
        # images, or the hand-gesture classifier's [1, 64] hand embeddings
        assert feeds and all(feed.dim() in (2, 4) for feed in feeds.values())
        published = aihub_custom.published_params(key, component)
        if published is None:  # AI Hub's figure is another model's (a stale info.yaml): NOT_PUBLISHED says why
            assert key in aihub_custom.NOT_PUBLISHED or (key, component) in aihub_custom.NOT_PUBLISHED, key
            continue
        params = aihub_custom.counted_params(key, module)
        assert abs(params / published - 1) < 0.005, (key, component, params, published)


def test_mediapipe_counts_parameters_as_ai_hubs_graph_holds_them() -> None:
    """AI Hub's MediaPipe figures count the exported graph's distinct initializers: the TFLite-converted depthwise
    convolutions' all-zero biases merge into one per channel count. BlazeFace's back-camera detector: 136,240
    parameters, 134,872 after merging (AI Hub: 135K; the value-deduplicated checkpoint has the same 134,872)."""
    import aihub_mediapipe
    import torch

    with torch.device("meta"):
        detector = aihub_mediapipe.FaceDetector()
    assert sum(p.numel() for p in detector.parameters()) == 136_240
    assert aihub_mediapipe.deduplicated_params(detector) == 134_872


def test_ultralytics_wrappers_decode_anchors_and_take_the_best_class_as_ai_hub_does() -> None:
    """aihub_ultralytics re-states AI Hub's export wrapper, not Ultralytics: the anchor constants are each cell's
    centre at its level's stride, and AI Hub's class max over chunks of 5,000 anchors is the plain max."""
    import aihub_ultralytics as au
    import torch

    points, strides = au.anchor_points([torch.zeros(1, 64, 2, 3), torch.zeros(1, 64, 1, 1)], [8, 16])
    assert points.T.tolist() == [[0.5, 0.5], [1.5, 0.5], [2.5, 0.5], [0.5, 1.5], [1.5, 1.5], [2.5, 1.5], [0.5, 0.5]]
    assert strides.tolist() == [[8.0] * 6 + [16.0]]
    assert au.xywh_to_xyxy(torch.tensor([[10.0, 20.0, 4.0, 6.0]])).tolist() == [[8.0, 17.0, 12.0, 23.0]]
    torch.manual_seed(0)
    scores = torch.rand(1, 8400, 80)
    chunked, plain = au.best_class(scores, au.CHUNK), au.best_class(scores)
    assert torch.equal(chunked[0], plain.values) and torch.equal(chunked[1], plain.indices)


@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None,
                    reason="ultralytics is a benchmark-only dependency, installed in the torchvision venv "
                           "(benchmarks/latency_graphs.py); CI's venv does not have it")
def test_ultralytics_models_have_ai_hubs_parameter_counts_and_outputs() -> None:
    """YOLOv3 / v5 / v8 / v10 / 11 and the segmentors, as AI Hub exports them: its parameter counts (within 1%: AI Hub
    rounds a count about 20k above Ultralytics' own for every one; YOLOv3's and v5's figures are of the models before
    the "u" ones) and its outputs (boxes, best score, class index;
    the segmentors' mask coefficients and prototypes)."""
    import aihub_ultralytics as au
    import torch

    for (key, _), build in au.ULTRALYTICS.items():
        module, feeds = build()
        params = sum(p.numel() for p in module.parameters()) / 1e6
        assert key in au.NOT_PUBLISHED or abs(params / au.PUBLISHED_PARAMS_M[key] - 1) < 0.01, (key, params)
        with torch.no_grad():
            shapes = [tuple(t.shape) for t in module(**feeds)]
        anchors = 2000 if key == "yolov3" else 8400  # YOLOv3-Tiny: two levels, strides 16 and 32
        assert shapes[:3] == ([(1, anchors, 4), (1, anchors), (1, anchors, 32)] if module.segment
                              else [(1, anchors, 4), (1, anchors), (1, anchors)]), key


def test_swinv2_is_torchvisions_swin_v2_b_with_its_parameter_only_subgraphs_folded() -> None:
    """AI Hub's info.yaml repeats Swin-Base's count for SwinV2-Base, so ours is checked against torchvision's own: the
    re-stated model holds each block's position bias and shift mask as constants; swapped back for the position MLPs
    torchvision computes them with, the count is swin_v2_b's to the parameter. Maps padded to whole 8x8 windows shift
    except where one window covers the map (the last stage, 7 -> 8)."""
    import aihub_swinv2
    import torch

    with torch.device("meta"):
        model = aihub_swinv2.SwinV2()
    folded = sum(p.numel() for name, p in model.named_parameters() if name.endswith((".position_bias", ".mask")))
    total = sum(p.numel() for p in model.parameters())
    assert total - folded + aihub_swinv2.position_mlp_params() == aihub_swinv2.TORCHVISION_PARAMS
    attentions = [m for m in model.modules() if isinstance(m, aihub_swinv2.WindowAttentionV2)]
    assert [(a.padded, a.shift) for a in attentions[:2]] == [(56, 0), (56, 4)]
    assert {(a.padded, a.shift) for a in attentions[-2:]} == {(8, 0)}
    assert attentions[3].mask.shape == (16, 64, 64)  # 28 padded to 32: 4 x 4 windows of 64 tokens


def test_swins_split_linears_compute_what_one_linear_computes(monkeypatch: pytest.MonkeyPatch) -> None:
    """AI Hub's Swin splits every linear wider than 512 channels (aihub_swin.split_linear): the graph changes, the
    function does not; the widest one (1536 -> 768, Swin-Tiny's last patch merging) becomes 2 x 3 partial products."""
    import aihub_swin
    import torch

    torch.manual_seed(0)
    linear, x = torch.nn.Linear(1536, 768), torch.randn(2, 49, 1536)
    assert torch.allclose(aihub_swin.split_linear(x, linear), linear(x), atol=1e-5)
    weights, plain = [], torch.nn.functional.linear
    monkeypatch.setattr(torch.nn.functional, "linear", lambda x, w, b=None: weights.append(w.shape) or plain(x, w, b))
    aihub_swin.split_linear(x, linear)
    assert weights == [torch.Size([384, 512])] * 6


def test_every_phone_and_laptop_chipset_has_a_profile_and_fitted_coefficients() -> None:
    import costmodel_fit

    params = costfit.load_params()
    for chipset, name in costmodel_fit.CHIPSETS.items():
        assert name in DEVICES, chipset
        device = DEVICES[name]
        assert device.family == "htp" and device.hexagon_arch and device.memory_bandwidth_gbs > 0
        assert any(k.startswith(f"{name}|") for k in params["groups"]) or name in params["chipset_speed"], name


def test_cross_validation_never_predicts_a_family_it_was_fitted_on() -> None:
    import costmodel_cv

    family = lambda m: m.split("_")[0]  # noqa: E731 - opus_a / opus_b are one family
    models = ["opus_a", "opus_b", "resnet_1", "vit_1", "bert_1", "gpt_1", "t5_1"]
    rows = [{"model": m, "published_ms": 1.0} for m in models for _ in range(3)]
    seen: list[set[str]] = []

    def fit(train_rows: list[dict], X: np.ndarray) -> set[str]:
        seen.append({family(r["model"]) for r in train_rows})
        return seen[-1]

    def predict(test_rows: list[dict], X: np.ndarray, trained_on: set[str]) -> np.ndarray:
        assert not {family(r["model"]) for r in test_rows} & trained_on
        return np.ones(len(test_rows))

    pred = costmodel_cv.cross_validated(rows, np.zeros((len(rows), 1)), family, fit, predict)
    assert pred.shape == (len(costmodel_cv.SHUFFLES), len(rows)) and (pred == 1).all()  # every row predicted
    assert len(seen) == costmodel_cv.FOLDS * len(costmodel_cv.SHUFFLES)


def test_fit_script_on_small_features(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import costmodel_cv
    import costmodel_fit

    # 72 of the 1,728 candidates (every optional-term set, op count and refit; one local memory, pull, scaling): the
    # selection still compares models, in a quarter of a minute
    monkeypatch.setattr(costmodel_cv, "VTCM_CHOICES_MB", (8,))
    monkeypatch.setattr(costmodel_cv, "EXTRA_RIDGE_CHOICES", (0.0,))
    monkeypatch.setattr(costmodel_cv, "SPEED_CHOICES", ("chipset",))
    monkeypatch.setattr(costmodel_cv, "FLOOR_CHOICES", (False,))

    if not (costmodel_fit.DATA / "aihub_perf.csv").exists():
        pytest.skip(f"{costmodel_fit.DATA} (the AI Hub CSVs) is not on this machine")
    params_path = tmp_path / "params.json"
    report = costmodel_fit.run(SMALL_FEATURES, tmp_path / "fit.json", None, params_path)
    train, test = set(report["split"]["train_models"]), set(report["split"]["held_out_models"])
    assert train and test and not train & test
    assert report["held_out"]["all"]["n"] == report["split"]["rows_held_out"] > 0
    rows = report["held_out_rows"]
    assert {r["model"] for r in rows} == test and all(r["estimated_ms"] > 0 for r in rows)
    # the training fit explains its own rows far better than chance
    assert report["train"]["all"]["median_abs"] < 0.3
    with gzip.open(SMALL_FEATURES, "rt") as f:
        has_sd = any(k.startswith("stable_diffusion") for k in json.load(f))
    if has_sd:
        sd = report["stable_diffusion_predictions"]
        assert {p["chipset"] for p in sd} == set(costmodel_fit.PHONE_LAPTOP)
        assert all(p["predicted_ms"] > 0 for p in sd)
    written = json.loads(params_path.read_text())
    assert written["features"] == report["model"]["features"] and written["groups"]
    assert written["vtcm_bytes"] == report["model"]["vtcm_bytes"]
    # the error range ships with the coefficients and is checked on the held-out models
    assert written["interval"] == report["model"]["interval"] and written["interval"]["pooled"][0] < 1
    assert any(c["n"] for c in report["held_out"]["interval_coverage_qnn"].values())
    assert any(b.get("resamples") for b in report["held_out"]["bootstrap_by_chipset_qnn"].values())
    assert report["train"]["in_sample_by_chipset_qnn"]
    # the model was chosen by cross-validation over the training models: the diagnostics name no held-out model
    chosen = report["selection"]["chosen"]
    assert chosen in [{k: c[k] for k in chosen} for c in report["selection"]["candidates"]]
    assert min(c["score"] for c in report["selection"]["candidates"]) <= chosen["score"]
    worst = {w["model"] for w in report["diagnostics_cv_training"]["worst_models"]}
    assert worst and worst <= train
    assert report["stable_diffusion_vs_published"] and report["apple_neural_engine"]["figures"]
    assert "same_release_control" in report["snapdragon_8_gen_2"]


def test_sd_unet_in_ai_hubs_form_is_predicted_beside_the_pre_registered_components() -> None:
    """A graph rebuilt in AI Hub's form (key suffix _aihub_form) is not one of the SD predictions (they stay the
    pre-registered set) but its own comparison: per chipset, beside fusionc's graph and the published figure."""
    import costmodel_fit

    with gzip.open(SMALL_FEATURES, "rt") as f:
        features = json.load(f)
    vae = features["stable_diffusion_v1_5/vae_decoder"]
    features["stable_diffusion_v1_5/unet"] = vae
    features["stable_diffusion_v1_5/unet_aihub_form"] = dict(vae, ops=vae["ops"] * 2)
    params = costfit.load_params()
    predictions = costmodel_fit.stable_diffusion(features, params)
    assert {"unet", "vae_decoder"} <= {p["component"] for p in predictions} and not any(
        p["component"].endswith("_aihub_form") for p in predictions)
    form = costmodel_fit.sd_aihub_form(features, params, predictions, [], np.array([]))
    by_chip = {p["chipset"]: p for p in form["predictions"]}
    assert set(by_chip) == set(costmodel_fit.PHONE_LAPTOP)
    gen3 = by_chip["snapdragon-8-gen-3"]
    assert gen3["predicted_ms"] == pytest.approx(2 * gen3["fusionc_graph_predicted_ms"] - params["groups"][
        "snapdragon-8-gen-3|w8a16|qnn"][params["features"].index("one")], rel=1e-3)  # twice the ops, one constant
    assert gen3["published_ms"] == pytest.approx(78.019) and gen3["error"] == pytest.approx(
        gen3["predicted_ms"] / 78.019 - 1, abs=1e-3)
    assert form["spill_mb"] == pytest.approx(2 * form["spill_mb_fusionc_graph"], rel=1e-3)
    assert "published_ms" not in by_chip["snapdragon-x-elite"]  # AI Hub publishes no SD figure for it


def test_sd_predictions_are_compared_at_the_fitted_rows_release_pre_registered_and_refitted() -> None:
    import costmodel_fit

    predictions = [{"component": "unet", "chipset": "snapdragon-8-gen-3", "precision": "w8a16", "predicted_ms": 158.154},
                   {"component": "unet", "chipset": "snapdragon-8-gen-2", "precision": "w8a16", "predicted_ms": 1.0},
                   {"component": "unet", "chipset": "snapdragon-8-gen-3", "precision": "float", "predicted_ms": 1.0}]
    preregistered = {"commit": "194cda8", "predictions": [dict(predictions[0], predicted_ms=79.077)]}
    same = costmodel_fit.sd_same_release(predictions, preregistered, {})
    assert same["this_fit"] == [{"component": "unet", "chipset": "snapdragon-8-gen-3", "published_ms": 79.077,
                                 "predicted_ms": 158.154, "error": 1.0}]  # no 8 Gen 2 at that release; W8A16 only
    assert same["preregistered"][0]["error"] == 0.0 and same["layers"]["unet"]["aihub_qnn_layers"] == 3272


def test_estimate_reads_the_local_memory_size_from_the_params(monkeypatch: pytest.MonkeyPatch) -> None:
    """`fusionc estimate` / bench use the fitted local-memory size: an op whose activations (4 MB at 16-bit) exceed
    it spills and costs more; with 16 MB it does not."""
    from fusionc.analysis import costmodel
    from fusionc.analysis.graph_stats import GraphStats, OpStat

    stats = GraphStats([OpStat("c", "Conv", "", "conv", macs=10**9, params=10**5, float_weight_elems=10**5,
                               act_in_elems=10**6, act_out_elems=10**6)], "none")
    params = costfit.load_params()
    names = params["features"]
    theta = list(params["groups"]["snapdragon-8-gen-3|w8a16|qnn"])
    theta[names.index("spill_mb")] = 0.25  # whatever the fit found: a cost per spilled MB, so that spills show
    params = dict(params, groups=dict(params["groups"], **{"snapdragon-8-gen-3|w8a16|qnn": theta}))
    totals = {}
    for mb in (2, 16):
        monkeypatch.setattr(costmodel, "_FITTED", dict(params, vtcm_bytes=mb << 20))
        totals[mb] = costmodel.estimate(stats, DEVICES["snapdragon-8-gen-3"], "w8a16").latency_s
    spill_s = 4.0 * theta[names.index("spill_mb")] / 1000
    assert totals[2] - totals[16] == pytest.approx(spill_s, rel=1e-6)


def test_an_undilated_dc5_rebuild_is_left_out_and_a_dilated_one_kept() -> None:
    import costmodel_fit

    fields = list(costfit.OP_FIELDS)
    plain = {"fields": fields, "ops": [_row("conv", macs=10**9)]}
    features = {"detr_resnet50/DETR-ResNet50": plain, "detr_resnet50_dc5/DETR-ResNet50-DC5": dict(plain)}
    assert set(costmodel_fit.excluded_graphs(features)) == {"detr_resnet50_dc5"}
    features["detr_resnet50_dc5/DETR-ResNet50-DC5"] = {"fields": fields, "ops": [_row("conv", macs=3 * 10**9)]}
    assert costmodel_fit.excluded_graphs(features) == {}


def test_special_vector_work_counts_softmax_norms_and_transcendentals_only() -> None:
    rows = [_row("vector", vector=10**9, op_type="Add"), _row("vector", vector=2 * 10**9, op_type="Softmax"),
            _row("vector", vector=3 * 10**9, op_type="LayerNormalization"), _row("vector", vector=4 * 10**9, op_type="Gelu")]
    x = costfit.features_from_rows(rows, "float")
    assert x["vector_g"] == pytest.approx(10) and x["special_g"] == pytest.approx(9)


def test_per_class_generation_scaling_is_a_linear_map_of_the_pooled_coefficients() -> None:
    """theta_chip = M @ theta_pooled: a conv MAC costs s_conv times the reference's, a matmul MAC (shared rate plus
    its per-kind extra) s_matmul times, vector work s_vector times, and so on (costmodel_fit.scaling_matrix)."""
    import costmodel_fit

    names = costfit.FEATURES
    rng = np.random.default_rng(1)
    theta = rng.uniform(0.1, 1.0, len(names))
    speeds = {"conv": 1.3, "matmul": 1.9, "vector": 0.7, "memory": 1.1, "overhead": 0.9}
    M = costmodel_fit.scaling_matrix(names, speeds)
    col = {n: i for i, n in enumerate(names)}
    x = dict.fromkeys(names, 0.0)
    x.update(gmacs=5.0, conv_gmacs=3.0, linear_gmacs=1.5, attn_gmacs=0.5, vector_g=2.0, special_g=1.0, weight_mb=7.0,
             kilo_ops=0.4, one=1.0)
    v = costfit.vector(x, names)
    ref = {  # the reference chipset's cost of each class, gmacs split by kind
        "conv": theta[col["gmacs"]] * 3.0 + theta[col["conv_gmacs"]] * 3.0,
        "matmul": theta[col["gmacs"]] * 2.0 + theta[col["linear_gmacs"]] * 1.5 + theta[col["attn_gmacs"]] * 0.5,
        "vector": theta[col["vector_g"]] * 2.0 + theta[col["special_g"]] * 1.0,
        "memory": theta[col["weight_mb"]] * 7.0,
        "overhead": theta[col["kilo_ops"]] * 0.4 + theta[col["one"]],
    }
    assert v @ theta == pytest.approx(sum(ref.values()))
    assert v @ (M @ theta) == pytest.approx(sum(speeds[c] * t for c, t in ref.items()))
    fractions = costmodel_fit.class_fractions(v[None, :], theta, names)[0]
    assert fractions == pytest.approx([ref[c] / sum(ref.values()) for c in costmodel_fit.SPEED_CLASSES])
    same = costmodel_fit.scaling_matrix(names, dict.fromkeys(speeds, 1.6))
    assert np.allclose(same, 1.6 * np.eye(len(names)))  # equal class speeds: the per-chipset scalar


def test_group_speeds_need_enough_pairs_else_the_chipset_speed() -> None:
    import costmodel_fit

    def row(chip: str, model: str, ms: float, precision: str = "float") -> dict:
        return {"chipset": chip, "key": f"{model}/m", "model": model, "precision": precision, "runtime": "QNN_DLC",
                "runtime_group": "qnn", "published_ms": ms, "held_out": False}

    ref = costmodel_fit.REFERENCE_CHIPSET
    rows = [row(ref, f"m{i}", 1.0) for i in range(6)] + [row("chip-a", f"m{i}", 2.0 + 0.1 * i) for i in range(6)]
    rows += [row(ref, "q0", 1.0, "w8a8"), row("chip-a", "q0", 5.0, "w8a8")]  # one pair only
    train = np.ones(len(rows), dtype=bool)
    speed = costmodel_fit.chipset_speed(rows, train)
    groups = costmodel_fit.group_speeds(rows, train, speed, "group")
    assert groups[("chip-a", "float", "qnn")] == pytest.approx(2.25)  # median of its 6 pairs
    assert groups[("chip-a", "w8a8", "qnn")] == pytest.approx(speed["chip-a"])  # 1 pair < MIN_PAIRS
    assert costmodel_fit.group_speeds(rows, train, speed, "chipset")[("chip-a", "float", "qnn")] == speed["chip-a"]


def test_an_anchored_chipset_takes_the_reference_coefficients_scaled_by_its_speed() -> None:
    """fit(anchored=...): a chipset chosen (by cross-validation) to have no coefficients of its own gets the
    reference chipset's refit times its speed; the others keep their own refit."""
    import costmodel_fit

    names = ("gmacs", "kilo_ops", "one")
    rng = np.random.default_rng(0)
    ref, rows, X = costmodel_fit.REFERENCE_CHIPSET, [], []
    for i in range(12):
        x = np.array([rng.uniform(1, 50), rng.uniform(0.1, 1), 1.0])
        base = float(x @ [0.2, 1.0, 0.3])
        for chip, factor in ((ref, 1.0), ("chip-a", 1.5 * (1 + 0.3 * (i % 2))), ("chip-b", 0.7)):
            rows.append({"chipset": chip, "key": f"m{i}/m", "model": f"m{i}", "precision": "float",
                         "runtime": "QNN_DLC", "runtime_group": "qnn", "published_ms": base * factor,
                         "held_out": False})
            X.append(x)
    X = np.array(X)
    own = costmodel_fit.fit(rows, X, names, 0.05)
    anchored = costmodel_fit.fit(rows, X, names, 0.05, anchored=frozenset({"chip-a"}))
    theta_ref = np.array(anchored["groups"][f"{ref}|float|qnn"])
    speed = anchored["chipset_speed"]["chip-a"]
    assert anchored["anchored"] == ["chip-a"] and speed == pytest.approx(1.5 * 1.15, rel=0.2)
    assert np.allclose(anchored["groups"]["chip-a|float|qnn"], speed * theta_ref)
    assert not np.allclose(own["groups"]["chip-a|float|qnn"], speed * theta_ref)
    assert anchored["groups"]["chip-b|float|qnn"] == own["groups"]["chip-b|float|qnn"]


def test_precompiled_onnx_costs_the_context_binary_times_the_factor_of_graphs_timed_both_ways() -> None:
    """A graph AI Hub timed as a context binary and as precompiled ONNX (ONNX Runtime's QNN EP) on one chipset, with
    the same layer count, gives one ratio; their median is the runtime's factor. A pair whose layer counts differ is
    two compiled graphs and is not used; a held-out row gets no say."""
    import costmodel_fit

    names = ("gmacs", "one")
    rows, X = [], []

    def add(model: str, runtime: str, ms: float, layers: int, held_out: bool = False, gmacs: float = 0.0) -> None:
        rows.append({"chipset": costmodel_fit.REFERENCE_CHIPSET, "key": f"{model}/c", "model": model,
                     "component": "c", "precision": "float", "runtime": runtime, "runtime_group": "qnn",
                     "published_ms": ms, "layers_total": layers, "held_out": held_out})
        X.append([gmacs or ms / 2, 1.0])

    for i, (cb, pre) in enumerate([(10.0, 12.0), (20.0, 26.0), (30.0, 42.0)]):  # 1.2, 1.3, 1.4
        add(f"m{i}", "QNN_CONTEXT_BINARY", cb, 100)
        add(f"m{i}", "PRECOMPILED_QNN_ONNX", pre, 100, gmacs=cb / 2)  # one graph: the context binary's features
    add("other-graph", "QNN_CONTEXT_BINARY", 50.0, 100)
    add("other-graph", "PRECOMPILED_QNN_ONNX", 10.0, 120)  # 0.2x: a different compiled graph
    add("held", "QNN_CONTEXT_BINARY", 10.0, 100, held_out=True)
    add("held", "PRECOMPILED_QNN_ONNX", 50.0, 100, held_out=True)
    for i in range(8):
        add(f"dlc{i}", "QNN_DLC", 5.0 + i, 50)
    X = np.array(X)
    params = costmodel_fit.fit(rows, X, names, 0.5)
    # 1.3: with the held-out pair (5.0) the median would be 1.35, with the other graph's (0.2) 1.25
    assert params["runtime_factors"] == {"PRECOMPILED_QNN_ONNX": pytest.approx(1.3)}
    pred = costmodel_fit.predict_rows(rows, X, params)
    assert pred[1] == pytest.approx(pred[0] * 1.3)  # one graph: the same features, the runtime's factor
    assert costfit.runtime_factor(params, "QNN_DLC") == costfit.runtime_factor({}, "PRECOMPILED_QNN_ONNX") == 1.0


def test_a_graph_beyond_every_training_graph_is_named_an_extrapolation() -> None:
    """The fit records, per precision, the largest MACs, weights, spilled and per-op activations among its training
    graphs; an estimate of a graph beyond them says which and by how much (the SD UNet: 2x the MACs of any)."""
    def x(gmacs: float, act: float, input_mb: float = 0.6) -> dict[str, float]:
        return {"gmacs": gmacs, "weight_mb": 10.0, "spill_mb": 0.0, "largest_op_act_mb": act, "input_mb": input_mb}

    ranges = costfit.training_range([("a/A", "w8a16", x(5.0, 2.0)), ("b/B", "w8a16", x(50.0, 1.0)),
                                     ("c/C", "float", x(500.0, 9.0))])
    assert ranges["w8a16"]["gmacs"] == [50.0, "b/B"] and ranges["w8a16"]["largest_op_act_mb"] == [2.0, "a/A"]
    params = {"training_range": ranges}
    assert costfit.outside_training(x(40.0, 1.5), "w8a16", params) == []
    (why,) = costfit.outside_training(x(400.0, 1.5), "w8a16", params)
    assert why == "MACs 400 G vs at most 50 G (b/B)"
    assert costfit.outside_training(x(400.0, 1.5), "fp16", params) == []  # float's range: 500 G
    assert costfit.outside_training(x(400.0, 1.5), "w8a16", {}) == []  # a params file without a range
    (why,) = costfit.outside_training(x(40.0, 1.5, input_mb=12.6), "w8a16", params)  # a 1024x1024 image in
    assert why == "inputs 12.6 MB vs at most 0.6 MB (a/A)"


def test_mixed_precision_rows_are_left_out_and_cannot_displace_an_older_plain_row(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The 8 Gen 2 history keeps the newest row per precision group: a newer w8a8_mixed_int16 row (some layers at
    16 bits) must not replace the plain w8a8 figure, and no mixed row enters the fit."""
    import costmodel_fit

    _aihub_csv(tmp_path / "aihub_perf.csv", [("m", "Snapdragon 8 Gen 3", "QNN_DLC", "w8a8", 5.0, "v0.46.1"),
                                             ("m", "Snapdragon 8 Gen 3", "QNN_DLC", "w8a16_mixed_int16", 9.0, "v0.46.1")])
    _aihub_csv(tmp_path / "aihub_perf_history.csv",
               [("m", "Snapdragon 8 Gen 2", "QNN_DLC", "w8a8", 10.5, "v0.34.3"),
                ("m", "Snapdragon 8 Gen 2", "QNN_DLC", "w8a8_mixed_int16", 21.1, "v0.37.1")])
    monkeypatch.setattr(costmodel_fit, "DATA", tmp_path)
    features = {"m/M": {"fields": list(costfit.OP_FIELDS), "ops": [_row("conv", macs=10**9)]}}
    got = {(r["chipset"], r["precision_label"]): r["published_ms"] for r in costmodel_fit.load_rows(features)}
    assert got == {("snapdragon-8-gen-3", "w8a8"): 5.0, ("snapdragon-8-gen-2", "w8a8"): 10.5}
    assert costmodel_fit.mixed_rows(features)["n"] == 2


def test_the_history_rows_can_bring_a_companion_chipset_timed_at_the_same_release(tmp_path: Path,
                                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """load_rows(companion=True) adds the 8 Elite reference design's history rows under a chipset name of their own;
    every history row carries the old release's era, every current row the current one."""
    import costmodel_fit

    _aihub_csv(tmp_path / "aihub_perf.csv", [("m", "Snapdragon 8 Gen 3", "QNN_DLC", "float", 5.0, "v0.46.1")])
    _aihub_csv(tmp_path / "aihub_perf_history.csv", [("m", "Snapdragon 8 Gen 2", "QNN_DLC", "float", 7.0, "v0.37.1"),
                                                     ("m", "Snapdragon 8 Elite", "QNN_DLC", "float", 4.5, "v0.37.1")])
    monkeypatch.setattr(costmodel_fit, "DATA", tmp_path)
    features = {"m/M": {"fields": list(costfit.OP_FIELDS), "ops": [_row("conv", macs=10**9)]}}
    era = lambda companion: {r["chipset"]: (r["era"], r["published_ms"])  # noqa: E731
                             for r in costmodel_fit.load_rows(features, companion)}
    old, new = costmodel_fit.HISTORY_ERA, costmodel_fit.CURRENT_ERA
    assert era(False) == {"snapdragon-8-gen-3": (new, 5.0), "snapdragon-8-gen-2": (old, 7.0)}
    assert era(True) == {"snapdragon-8-gen-3": (new, 5.0), "snapdragon-8-gen-2": (old, 7.0),
                         "snapdragon-8-elite-qrd": (old, 4.5)}


def test_models_the_current_release_dropped_come_from_the_history_on_the_current_chipsets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model the current release no longer lists (Swin) keeps its last figure per chipset x precision x runtime from
    the history, on the chipsets the current release has; a listed model's older figures and other chipsets' stay
    out."""
    import costmodel_fit

    _aihub_csv(tmp_path / "aihub_perf.csv", [("m", "Snapdragon 8 Gen 3", "QNN_DLC", "float", 5.0, "v0.46.1")])
    _aihub_csv(tmp_path / "aihub_perf_history.csv", [("m", "Snapdragon 8 Gen 3", "QNN_DLC", "float", 6.0, "v0.40.0"),
                                                     ("gone", "Snapdragon 8 Gen 3", "QNN", "float", 9.0, "v0.30.7"),
                                                     ("gone", "Snapdragon 8 Gen 3", "QNN_DLC", "float", 8.0, "v0.43.0"),
                                                     ("gone", "Snapdragon 8 Elite", "QNN_DLC", "float", 7.0, "v0.37.1")])
    monkeypatch.setattr(costmodel_fit, "DATA", tmp_path)
    features = {k: {"fields": list(costfit.OP_FIELDS), "ops": [_row("conv", macs=10**9)]} for k in ("m/M", "gone/GONE")}
    got = {(r["model"], r["chipset"], r["release"], r["era"]): r["published_ms"] for r in costmodel_fit.load_rows(features)}
    assert got == {("m", "snapdragon-8-gen-3", "v0.46.1", "current"): 5.0,
                   ("gone", "snapdragon-8-gen-3", "v0.43.0", "current"): 8.0}


def test_an_old_release_slow_at_attention_is_learned_only_from_a_pooled_fit_of_its_own() -> None:
    """Two chipsets of the current release and two timed by an old toolchain that ran attention MACs 3x slower: one
    pooled fit pins a chipset's per-kind extra costs to the current release's, so the old chipsets' attention-heavy
    graphs miss; `eras` gives the old release's rows a pooled fit of their own, which follows them."""
    import costmodel_fit

    names = ("gmacs", "attn_gmacs", "one")
    rng = np.random.default_rng(0)
    rows, X = [], []
    for i in range(16):
        gmacs = rng.uniform(1, 20)
        x = np.array([gmacs, gmacs * (i % 4) / 4, 1.0])
        for chip, speed, era in ((costmodel_fit.REFERENCE_CHIPSET, 1.0, costmodel_fit.CURRENT_ERA),
                                 ("chip-now", 0.8, costmodel_fit.CURRENT_ERA),
                                 ("chip-now-2", 0.6, costmodel_fit.CURRENT_ERA),
                                 ("chip-old", 1.4, costmodel_fit.HISTORY_ERA),
                                 ("chip-old-2", 1.1, costmodel_fit.HISTORY_ERA)):
            attn = 0.5 * (3.0 if era == costmodel_fit.HISTORY_ERA else 1.0)
            rows.append({"chipset": chip, "key": f"m{i}/m", "model": f"m{i}", "precision": "float", "era": era,
                         "runtime": "QNN_DLC", "runtime_group": "qnn", "held_out": False,
                         "published_ms": speed * float(x @ [0.2, attn, 0.3])})
            X.append(x)
    X = np.array(X)
    old = [i for i, r in enumerate(rows) if r["chipset"] == "chip-old"]

    def worst_error(params: dict) -> float:
        pred = costmodel_fit.predict_rows([rows[i] for i in old], X[old], params)
        return float(np.max(np.abs(pred / np.array([rows[i]["published_ms"] for i in old]) - 1)))

    one_pool = costmodel_fit.fit(rows, X, names, 0.5, extra_ridge=0.0)
    by_era = costmodel_fit.fit(rows, X, names, 0.5, extra_ridge=0.0, eras=True)
    assert worst_error(by_era) < 0.05 < worst_error(one_pool)
    # and the current release's pooled fit is no longer bent by the old rows
    assert by_era["groups"]["*|float|qnn"] == pytest.approx([0.2, 0.5, 0.3], rel=0.02)
    assert one_pool["groups"]["*|float|qnn"] != pytest.approx([0.2, 0.5, 0.3], rel=0.1)


def test_the_error_range_is_the_cross_validated_ratio_percentiles_per_chipset() -> None:
    """published / estimated over every shuffle's prediction of a chipset's QNN rows: its 10th and 90th percentiles;
    a chipset with fewer than MIN_INTERVAL_ROWS rows (and other runtimes' rows) falls back to the pooled range."""
    import costmodel_cv

    n = costmodel_cv.MIN_INTERVAL_ROWS
    rows = ([{"chipset": "big", "runtime_group": "qnn", "published_ms": 1.0 + k} for k in range(n)]
            + [{"chipset": "small", "runtime_group": "qnn", "published_ms": 5.0}]
            + [{"chipset": "big", "runtime_group": "tflite", "published_ms": 1000.0}])
    pred = np.ones((2, len(rows)))  # two shuffles, both predicting 1 ms
    interval = costmodel_cv.error_interval(rows, pred)
    ratios = [1.0 + k for k in range(n)]
    assert interval["by_chipset"]["big"] == pytest.approx([np.percentile(ratios, 10), np.percentile(ratios, 90)],
                                                          abs=1e-4)
    assert "small" not in interval["by_chipset"]
    assert costfit.interval_of(interval, "small") == interval["pooled"]
    assert interval["pooled"] == pytest.approx([np.percentile(ratios + [5.0], 10), np.percentile(ratios + [5.0], 90)],
                                               abs=1e-4)
    # coverage: a row whose published / estimated ratio lies inside its chipset's factors counts as inside
    inside = costmodel_cv.coverage(rows, np.ones(len(rows)), interval, lambda r: r["chipset"] == "big"
                                   and r["runtime_group"] == "qnn")
    assert inside["n"] == n and inside["inside"] == pytest.approx(
        np.mean([interval["by_chipset"]["big"][0] <= v <= interval["by_chipset"]["big"][1] for v in ratios]), abs=1e-3)


def test_toolchain_gap_compares_the_fitted_ratio_with_one_release_timing_both(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 8 Gen 2 is fitted at an older release than the 8 Gen 3: an earlier release that timed both chipsets says
    how much of the fitted ratio is the chipset (here 1.4x) and how much the 8 Gen 3's later toolchain (1.4 -> 1.75)."""
    import csv

    import costmodel_fit

    history = [("vit", "Snapdragon 8 Gen 2", "QNN", "v0.30.7", 14.0), ("vit", "Snapdragon 8 Gen 3", "QNN", "v0.30.7", 10.0),
               ("vit", "Snapdragon 8 Gen 3", "QNN", "v0.27.1", 11.0),  # older than the newest shared release
               ("cnn", "Snapdragon 8 Gen 2", "QNN", "v0.30.7", 2.8)]   # one chipset only: no same-release ratio
    with open(tmp_path / "aihub_perf_history.csv", "w", newline="") as f:
        out = csv.DictWriter(f, ["model", "component", "precision", "chipset", "runtime", "release", "inference_time_ms"])
        out.writeheader()
        for model, chip, runtime, release, ms in history:
            out.writerow({"model": model, "component": model.upper(), "precision": "float", "chipset": chip,
                          "runtime": runtime, "release": release, "inference_time_ms": ms})
    monkeypatch.setattr(costmodel_fit, "DATA", tmp_path)
    fitted = [("vit", "snapdragon-8-gen-2", "v0.37.1", 14.0), ("vit", "snapdragon-8-gen-3", "v0.46.1", 8.0),
              ("cnn", "snapdragon-8-gen-2", "v0.37.1", 2.8), ("cnn", "snapdragon-8-gen-3", "v0.46.1", 2.0)]
    rows = [{"model": m, "component": m.upper(), "key": f"{m}/{m.upper()}", "chipset": chip, "precision": "float",
             "runtime": "QNN_DLC", "runtime_group": "qnn", "release": release, "published_ms": ms, "held_out": True}
            for m, chip, release, ms in fitted]
    fields = list(costfit.OP_FIELDS)
    features = {"vit/VIT": {"fields": fields, "ops": [_row("linear", macs=10)]},
                "cnn/CNN": {"fields": fields, "ops": [_row("conv", macs=10)]}}
    gap = costmodel_fit.toolchain_gap(rows, features)
    assert gap["pairs"] == 1 and list(gap["by_dominant_mac_kind"]) == ["matmul"]
    (vit,) = gap["held_out"]
    assert vit["shared_release"] == "v0.30.7" and vit["same_release_ratio"] == 1.4 and vit["fitted_ratio"] == 1.75
    assert vit["gen_3_change"] == 0.8 and vit["gen_2_change"] == 1.0


def test_the_release_control_takes_the_8_elite_at_the_8_gen_2s_own_release_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 8 Gen 2 is timed at an older release than every other chipset. The 8 Elite's figure at that same release,
    on the same key, becomes a row of a chipset of its own; its figures at other releases, and other chipsets'
    figures, do not."""
    import csv

    import costmodel_fit

    history = [("vit", "Snapdragon 8 Elite", "v0.37.1", 9.0, "4"), ("vit", "Snapdragon 8 Elite", "v0.30.7", 12.0, "4"),
               ("vit", "Snapdragon 8 Gen 3", "v0.37.1", 10.0, "4"),
               ("cnn", "Snapdragon 8 Elite", "v0.34.3", 1.5, "0")]  # no layer on the NPU: not an NPU latency
    with open(tmp_path / "aihub_perf_history.csv", "w", newline="") as f:
        out = csv.DictWriter(f, ["model", "component", "precision", "chipset", "runtime", "release", "inference_time_ms",
                                 "layers_total", "layers_npu", "layers_cpu", "layers_gpu"])
        out.writeheader()
        for model, chip, release, ms, npu in history:
            out.writerow({"model": model, "component": model.upper(), "precision": "float", "chipset": chip,
                          "runtime": "QNN_DLC", "release": release, "inference_time_ms": ms, "layers_total": 4,
                          "layers_npu": npu, "layers_cpu": 4 - int(npu), "layers_gpu": 0})
    monkeypatch.setattr(costmodel_fit, "DATA", tmp_path)
    rows = [{"model": m, "component": m.upper(), "key": f"{m}/{m.upper()}", "chipset": "snapdragon-8-gen-2",
             "precision": "float", "runtime": "QNN_DLC", "runtime_group": "qnn", "release": release,
             "published_ms": ms, "held_out": True, "fallback_layers": 0.0, "layers_total": 4.0, "layers_npu": 4.0,
             "qairt_version": "2.37"}
            for m, release, ms in (("vit", "v0.37.1", 14.0), ("cnn", "v0.34.3", 2.0))]
    (control,) = costmodel_fit.release_control_rows(rows)
    assert control["chipset"] == "snapdragon-8-elite@8-gen-2-release" and control["published_ms"] == 9.0
    assert control["key"] == "vit/VIT" and control["release"] == "v0.37.1" and control["held_out"]
    assert rows[0]["chipset"] == "snapdragon-8-gen-2" and rows[0]["published_ms"] == 14.0  # a copy


def test_bert_family_graphs_hand_out_one_token_id_as_ai_hubs_wrapper_does() -> None:
    """AI Hub times a masked LM inside its BaseBertModel: the vocabulary head over every position, then the masked
    position's softmax argmax. The rebuilt graph does the same work and hands the caller one id, not the logits."""
    import latency_graphs
    import torch
    import transformers

    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32)
    model = latency_graphs.MaskedTokenPrediction(transformers.BertForMaskedLM(cfg).eval())
    ids, mask = torch.randint(0, 50, (1, 8)), torch.ones(1, 8, dtype=torch.int64)
    with torch.no_grad():
        token = model(ids, mask, torch.tensor([3]))
        logits = model.model(input_ids=ids, attention_mask=mask).logits
    assert token.shape == (1,) and token.item() == logits[0, 3].argmax().item()


def test_a_variant_can_make_the_transposes_writing_graph_outputs_free() -> None:
    """costmodel_variants' output terms, on a stored graph of a K projection whose K^T is a graph output: the copy out
    counts its elements as fp32 MB, and with those Transposes left out no permute or layout work is charged."""
    import costmodel_variants

    fields = list(costfit.OP_FIELDS)
    row = dict.fromkeys(fields, 0) | {"transpose_form": ""}
    matmul = row | {"op_type": "MatMul", "kind": "linear", "macs": 4096, "act_in_elems": 512, "act_out_elems": 512}
    k_t = row | {"op_type": "Transpose", "kind": "layout", "act_in_elems": 512, "act_out_elems": 512,
                 "transpose_form": "moves_last", "output_elems": 512}
    entry = {"fields": fields, "ops": [[r[f] for f in fields] for r in (matmul, k_t)], "inputs": {"x": [1, 64, 8]}}
    assert costmodel_variants.output_mb(entry, "float", costfit.VTCM_BYTES) == pytest.approx(512 * 4 / 1e6)
    before = costfit.features_from_entry(entry, "float")
    after = costfit.features_from_entry(
        costmodel_variants.without_ops({"g": entry}, costmodel_variants.output_transpose)["g"], "float")
    assert before["permute_last_g"] > 0 and after["permute_last_g"] == after["layout_g"] == 0
    assert after["gmacs"] == before["gmacs"]


def test_residual_correlations_find_a_descriptor_the_misses_follow() -> None:
    """If the models a fit under-predicts are the ones with the most ops per MAC, that descriptor correlates fully."""
    import costmodel_variants

    fields = list(costfit.OP_FIELDS)
    conv = dict.fromkeys(fields, 0) | {"op_type": "Conv", "kind": "conv", "macs": 10**9, "act_out_elems": 1000,
                                        "transpose_form": "", "level": 1}
    add = conv | {"op_type": "Add", "kind": "vector", "macs": 0}
    features = {f"m{n}/g": {"model": f"m{n}", "fields": fields, "inputs": {"x": [1, 3, 8, 8]},
                            "ops": [[r[f] for f in fields] for r in [conv] + [add] * n]} for n in range(1, 6)}
    errors = {f"m{n}": -0.1 * n for n in range(1, 6)}  # more launches per MAC, more under-predicted
    found = costmodel_variants.residual_correlations(features, errors)
    assert found["models"] == 5 and found["signed"]["log_ops_per_gmac"]["rho"] == pytest.approx(-1.0)
    assert found["absolute"]["log_ops_per_gmac"]["rho"] == pytest.approx(1.0)  # and the misses grow with it
