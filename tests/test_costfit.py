"""The fitted latency model: features from graph_stats rows, the fit, the split, and the fit script on small data."""

from __future__ import annotations

import gzip
import json
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
         op_type: str = "X") -> list:
    return [op_type, kind, macs, vector, params, params, 0.0, act_in, act_out, False]


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


def test_split_keeps_families_together() -> None:
    import costmodel_fit

    sides = {costmodel_fit.held_out(m) for m in ("opus_mt_en_es", "opus_mt_en_zh", "opus_mt_es_en", "opus_mt_zh_en")}
    assert len(sides) == 1
    assert costmodel_fit.held_out("depth_anything") == costmodel_fit.held_out("depth_anything_v2")


def test_every_phone_and_laptop_chipset_has_a_profile_and_fitted_coefficients() -> None:
    import costmodel_fit

    params = costfit.load_params()
    for chipset, name in costmodel_fit.CHIPSETS.items():
        assert name in DEVICES, chipset
        device = DEVICES[name]
        assert device.family == "htp" and device.hexagon_arch and device.memory_bandwidth_gbs > 0
        assert any(k.startswith(f"{name}|") for k in params["groups"]) or name in params["chipset_speed"], name


def test_fit_script_on_small_features(tmp_path: Path) -> None:
    import costmodel_fit

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
    assert written["features"] == list(costfit.FEATURES) and written["groups"]
