"""Fit the NPU cost model on Qualcomm AI Hub's published latencies; report its error on models it never saw.

One command reproduces the fit and its held-out errors from committed inputs:
    python benchmarks/costmodel_fit.py
Inputs: /work/shared/latency/aihub_perf.csv (release v0.46.1; every chipset) and aihub_perf_history.csv (the
Snapdragon 8 Gen 2, which the current release dropped, and the last figures of rebuilt models it dropped: Swin), and
the per-op features of the rebuilt graphs in benchmarks/results/latency_features.json.gz (benchmarks/latency_graphs.py).
Outputs:
    benchmarks/results/costmodel_fit.json   split, per-chipset / per-runtime / per-precision held-out errors,
                                            every held-out prediction, Stable Diffusion predictions
    benchmarks/results/costmodel_fit.png    estimated vs published, log-log, train and held-out
    compiler/analysis/costmodel_params.json the coefficients `fusionc estimate` and `fusionc bench` use (fitted on
                                            the training split only: the held-out errors describe them), and the
                                            80% range of an estimate (costmodel_cv.error_interval: the chosen model's
                                            cross-validated errors on the training models; the JSON reports how many
                                            held-out rows it holds)

The split is by model family (a model, and its near-duplicates such as the four Opus-MT language pairs or
Depth-Anything v1/v2, wholly in or wholly out): a family is held out when sha1(family) mod 4 == 0 (about a quarter).
Every modelling choice (which optional terms, the local-memory size that decides what spills, how far a chipset may
leave the pooled fit, how each chipset generation scales from the reference chipset: SPEED_MODES) is made by grouped
k-fold cross-validation over the training models only (costmodel_cv.py: folds of whole families, three shuffles);
the held-out models are predicted once, with the chosen model, to report. The JSON also keeps the cross-validated
residuals of the training models by op class, family, size, fallback and chipset (`diagnostics`).
Stable Diffusion (aihub has no diffusion rows on purpose) is predicted here with the shipped coefficients and
written beside the errors; comparing those predictions with published SD figures is left to a later step. The
predictions first committed before any comparison (commit 194cda8) are kept verbatim in
benchmarks/results/costmodel_sd_preregistered.json and reported beside a later fit's, never replaced by them.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import re
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

import provenance
from fusionc.analysis import costfit
from fusionc.analysis.costmodel import QNN_REFERENCE
from fusionc.core.devices import DEVICES

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# the project's shared/ folder: beside the repository (CI's copy), else the machine's
DATA = next((p for p in (ROOT.parent / "shared" / "latency", Path("/work/shared/latency")) if p.is_dir()),
            Path("/work/shared/latency"))
FEATURES_PATH = RESULTS / "latency_features.json.gz"
# the params file of this checkout (costfit.PARAMS_PATH is the installed package's, which may be another checkout's:
# a fit run in a git worktree beside an editable install would otherwise overwrite the install's coefficients)
PARAMS_PATH = ROOT / "compiler" / "analysis" / costfit.PARAMS_PATH.name

# AI Hub chipset name -> fusionc device name (fusionc.core.devices) or a slug for chipsets no phone/laptop ships with
CHIPSETS = {
    "Snapdragon 8 Gen 2": "snapdragon-8-gen-2",
    "Snapdragon 8 Gen 3": "snapdragon-8-gen-3",
    "Snapdragon 8 Elite For Galaxy": "snapdragon-8-elite",
    "Snapdragon 8 Elite Gen 5": "snapdragon-8-elite-gen-5",
    "Snapdragon 7 Gen 4": "snapdragon-7-gen-4",
    "Snapdragon X Elite": "snapdragon-x-elite",
}
PHONE_LAPTOP = list(CHIPSETS.values())
RUNTIMES = ("QNN_CONTEXT_BINARY", "QNN_DLC", "QNN", "PRECOMPILED_QNN_ONNX", "ONNX", "TFLITE")
# near-duplicate architectures share a family: they go to the same side of the split
FAMILY = {"opus_mt_en_es": "opus_mt", "opus_mt_en_zh": "opus_mt", "opus_mt_es_en": "opus_mt", "opus_mt_zh_en": "opus_mt",
          "depth_anything_v2": "depth_anything", "whisper_small_quantized": "whisper_small",
          "detr_resnet50_dc5": "detr_resnet50", "detr_resnet101_dc5": "detr_resnet101",
          "conditional_detr_resnet50": "detr_resnet50", "resnet_3d": "resnet_video", "resnet_mixed": "resnet_video",
          "resnet_2plus1d": "resnet_video", "real_esrgan_x4plus": "esrgan", "quicksrnetmedium": "quicksrnet",
          "quicksrnetsmall": "quicksrnet", "quicksrnetlarge": "quicksrnet",
          "yolov8_seg": "yolov8_det", "yolov11_seg": "yolov11_det",  # a segmentor: its detector + a mask head
          # FFNet: one design (ResNet-S / narrow ResNet backbone, up-head) at several depths and resolutions
          "ffnet_40s": "ffnet_78s", "ffnet_54s": "ffnet_78s", "ffnet_78s_lowres": "ffnet_78s",
          "ffnet_122ns_lowres": "ffnet_78s",
          "hrnet_face": "hrnet_pose",  # HRNet-W18 and -W32: one design, two widths
          "mediapipe_hand_gesture": "mediapipe_hand"}  # its palm detector is mediapipe_hand's (SAME_GRAPH)
# The models every fit before 2026-12-08 held out (24, QNN figures in the README's history); that day's training data
# (Ultralytics YOLOs, FFNet, MediaPipe, Qualcomm's own models, the authors'-code YOLOs) brought held-out models of its
# own, so the report also keeps these 24 apart: the one test that stays comparable from fit to fit
EARLIER_HELD_OUT = frozenset({
    "bert_base_uncased_hf", "convnext_tiny", "depth_anything", "depth_anything_v2", "dla102x", "efficientnet_b4",
    "efficientvit_l2_cls", "googlenet", "mobile_vit", "mobilenet_v2", "nasnet", "openai_clip", "opus_mt_en_es",
    "opus_mt_en_zh", "opus_mt_es_en", "opus_mt_zh_en", "regnet_y_800mf", "resnet101", "resnext101", "trocr", "vit",
    "whisper_base", "whisper_large_v3_turbo", "whisper_tiny"})
# DETR-DC5 rebuilt with transformers' own ResNet ignores `dilation` (only a timm backbone is dilated): such a graph
# has exactly its plain twin's MACs and is not the model AI Hub timed; it is left out (latency_graphs.py now builds
# DC5 on timm's dilated ResNet, which these checks let in)
UNDILATED_TWIN = {"detr_resnet50_dc5": "detr_resnet50/DETR-ResNet50", "detr_resnet101_dc5": "detr_resnet101/DETR-ResNet101"}


def excluded_graphs(features: dict) -> dict[str, str]:
    """Rebuilt graphs known not to be the published model: model -> why (left out of fit and report)."""
    macs = lambda entry: sum(op[entry["fields"].index("macs")] for op in entry["ops"])  # noqa: E731
    out = {}
    for model, twin in UNDILATED_TWIN.items():
        mine = [v for k, v in features.items() if k.split("/")[0] == model]
        if mine and twin in features and macs(mine[0]) == macs(features[twin]):
            out[model] = f"the rebuilt graph has {twin}'s MACs: the dilation of the DC5 model AI Hub timed is not in it"
    return out


MIN_ROWS = 8  # a (chipset, precision, runtime) group with fewer training rows borrows the pooled fit
RIDGE = 0.05  # per-chipset fit -> the chipset-scaled pooled fit
EXTRA_RIDGE = 0.02  # pooled fit: per-kind extra MAC costs -> 0 (ms/GMAC; 1 ms/GMAC weighs like a 2% row error),
# unless cross-validation chooses otherwise (costmodel_cv.EXTRA_RIDGE_CHOICES)


def slug(chipset: str) -> str:
    return CHIPSETS.get(chipset) or chipset.lower().replace(" ", "-").replace("(", "").replace(")", "")


def family(model: str) -> str:
    return FAMILY.get(model, model)


def held_out(model: str) -> bool:
    return int(hashlib.sha1(family(model).encode()).hexdigest(), 16) % 4 == 0


def mixed_precision(label: str) -> bool:
    """AI Hub's mixed labels (w8a16_mixed_int16, w8a8_mixed_int16, w8a16_mixed_fp16): some layers run at another
    precision, and which ones is not in the data, so neither precision's coefficients describe the row. Left out
    (before the history keeps its newest row per precision group, so a newer mixed row cannot displace a plain one)."""
    return "mixed" in label.lower()


def mixed_rows(features: dict) -> dict:
    """How many published rows of rebuilt graphs carry a mixed precision label (left out by load_rows)."""
    n = Counter()
    for name, chip_ok in (("aihub_perf.csv", lambda c: True), ("aihub_perf_history.csv", lambda c: c == "Snapdragon 8 Gen 2")):
        with open(DATA / name) as f:
            for r in csv.DictReader(f):
                if mixed_precision(r["precision"]) and chip_ok(r["chipset"]) and f"{r['model']}/{r['component']}" in features:
                    n[r["precision"]] += 1
    return {"n": sum(n.values()), "by_label": dict(sorted(n.items())),
            "why": "some layers at another precision, which ones not in the data (8 Gen 2: every release of the history)"}


# chipsets AI Hub stopped timing after v0.37.1 (QAIRT 2.37), read from the history at their last release: the
# 8 Gen 2 (the current release dropped it) and the 8 Elite's reference design, the era's companion (ERA_COMPANION)
HISTORY_CHIPSETS = {"Snapdragon 8 Gen 2": "snapdragon-8-gen-2"}
ERA_COMPANION = ("Snapdragon 8 Elite", "snapdragon-8-elite-qrd")
CURRENT_ERA, HISTORY_ERA = "current", "v0.37.1"


def load_rows(features: dict, companion: bool = False) -> list[dict]:
    """Published rows of rebuilt models: the current release for every chipset; from the history, the 8 Gen 2's
    (and, with `companion`, the 8 Elite QRD's at the same release: a training-only chipset that shows what that
    release's toolchain was fast and slow at), and, on the current chipsets, the last figures of models the current
    release no longer lists (Swin: v0.39.1-v0.45.0). Each row's `era` says which toolchain timed it: HISTORY_ERA for
    the chipsets timed only until v0.37.1, CURRENT_ERA for the others."""
    rows, seen_jobs = [], set()
    excluded = excluded_graphs(features)
    history_chipsets = dict(HISTORY_CHIPSETS, **({ERA_COMPANION[0]: ERA_COMPANION[1]} if companion else {}))
    with open(DATA / "aihub_perf.csv") as f:
        current = [r for r in csv.DictReader(f) if not mixed_precision(r["precision"])]
    listed, chipsets = {r["model"] for r in current}, {r["chipset"] for r in current}
    with open(DATA / "aihub_perf_history.csv") as f:
        history = [r for r in csv.DictReader(f) if not mixed_precision(r["precision"]) and (
            r["chipset"] in history_chipsets or (r["model"] not in listed and r["chipset"] in chipsets))]
    # the history repeats a key under older runtime/precision labels (QNN vs QNN_DLC, fp16 vs float) and older
    # releases: keep the newest release of each chipset x model x component x precision group x runtime group
    history.sort(key=lambda r: release_order(r["release"]), reverse=True)
    newest, seen_keys = [], set()
    for r in history:
        try:
            key = (r["chipset"], r["model"], r["component"], costfit.precision_group(r["precision"]),
                   costfit.RUNTIME_GROUPS.get(r["runtime"]))
        except ValueError:
            continue
        if key not in seen_keys:
            seen_keys.add(key)
            newest.append(r)
    history = newest
    for source, table in (("aihub_perf.csv", current), ("aihub_perf_history.csv", history)):
        for r in table:
            key = f"{r['model']}/{r['component']}"
            if key not in features or not r["inference_time_ms"] or r["model"] in excluded:
                continue
            if r.get("job_id") and (r["job_id"], r["chipset"]) in seen_jobs:
                continue
            if r.get("job_shared_with_device") and r["job_id"] in {j for j, _ in seen_jobs}:
                continue  # SA7255P repeats QCS8275's jobs: one independent point
            seen_jobs.add((r.get("job_id"), r["chipset"]))
            runtime = costfit.RUNTIME_GROUPS.get(r["runtime"])
            try:
                precision = costfit.precision_group(r["precision"])
            except ValueError:
                continue
            if runtime is None or precision == "w4a16":
                continue
            layers = lambda k: float(r[k]) if r.get(k) not in (None, "") else 0.0  # noqa: E731
            old = source == "aihub_perf_history.csv" and r["chipset"] in history_chipsets
            rows.append({"model": r["model"], "component": r["component"], "key": key,
                         "chipset": history_chipsets[r["chipset"]] if old else slug(r["chipset"]),
                         "era": HISTORY_ERA if old else CURRENT_ERA,
                         "runtime": r["runtime"], "runtime_group": runtime, "precision": precision,
                         "published_ms": float(r["inference_time_ms"]), "source": source,
                         "fallback_layers": layers("layers_cpu") + layers("layers_gpu"),
                         "layers_total": layers("layers_total"), "layers_npu": layers("layers_npu"),
                         "release": r.get("release", ""), "qairt_version": r.get("qairt_version", ""),
                         "precision_label": r["precision"],
                         "held_out": held_out(r["model"])})
    return rows


def on_npu(row: dict) -> bool:
    """False for a row whose every layer ran on the CPU or GPU (AI Hub's layer counts): not an NPU latency."""
    return not (row["layers_total"] > 0 and row["layers_npu"] == 0)


def design(rows: list[dict], features: dict, names: tuple[str, ...] = costfit.BASE_FEATURES,
           vtcm_bytes: float = costfit.VTCM_BYTES) -> np.ndarray:
    cache = {}
    out = []
    for r in rows:
        k = (r["key"], r["precision"])
        if k not in cache:
            entry = features[r["key"]]
            cache[k] = costfit.features_from_entry(entry, r["precision"], vtcm_bytes)
        x = dict(cache[k], fallback_layers=r["fallback_layers"])
        out.append(costfit.vector(x, names))
    return np.array(out).reshape(len(rows), len(names))


def weight_floor(chip: str, names: tuple[str, ...]) -> np.ndarray:
    """Physical lower bounds per term for a chipset: every weight byte is read from DRAM at least once per call, no
    faster than the profile's memory bandwidth (fusionc.core.devices; 0 for chipsets without a profile)."""
    from fusionc.core.devices import DEVICES

    floor = np.zeros(len(names))
    device = DEVICES.get(chip)
    if device is not None and device.memory_bandwidth_gbs > 0 and "weight_mb" in names:
        floor[names.index("weight_mb")] = 1.0 / device.memory_bandwidth_gbs  # ms per MB at GB/s
    return floor


# how each chipset generation scales relative to the reference chipset (candidates compared by costmodel_cv.py):
#   "chipset"  one speed per chipset (median published ratio to the 8 Gen 3 over the training models both have)
#   "group"    one speed per chipset x precision x runtime group (the chipset's own when fewer than MIN_PAIRS pairs)
#   "class"    the group speed, split per op class: conv MACs, matmul MACs (weights and attention), vector/layout
#              work, memory traffic and per-op/per-call overhead each scale by their own factor, fitted on the same
#              pairs from the pooled fit's breakdown of each reference row (pulled towards the group speed)
SPEED_MODES = ("chipset", "group", "class")
REFERENCE_CHIPSET = "snapdragon-8-gen-3"
MIN_PAIRS = 5
SPEED_CLASSES = {"conv": ("gmacs", "conv_gmacs", "lowint_conv_gmacs"), "matmul": ("linear_gmacs", "attn_gmacs"),
                 "vector": ("vector_g", "special_g", "layout_g", "norm_g", "permute_rows_g", "permute_last_g"),
                 "memory": ("weight_mb", "spill_mb", "act_mb"),
                 "overhead": ("kilo_ops", "fused_kilo_ops", "path_kilo_ops", "fallback_layers", "input_mb", "one")}
CLASS_RIDGE = 0.05  # per-class speeds -> the group speed (relative; the classes a chipset's pairs barely exercise stay)


def scaling_matrix(names: tuple[str, ...], speeds: dict[str, float]) -> np.ndarray:
    """M with theta_chip = M @ theta_pooled for per-class speeds. The shared `gmacs` rate is split by kind: a matmul
    MAC costs theta[gmacs] + theta[linear_gmacs] on the reference, so on the chipset it costs s_matmul times that,
    which the per-kind extra carries as (s_matmul - s_conv) * theta[gmacs] + s_matmul * theta[linear_gmacs]."""
    col = {n: i for i, n in enumerate(names)}
    M = np.zeros((len(names), len(names)))
    for cls, members in SPEED_CLASSES.items():
        for n in members:
            if n in col:
                M[col[n], col[n]] = speeds[cls]
    if "gmacs" in col:
        for n in SPEED_CLASSES["matmul"]:
            if n in col:
                M[col[n], col["gmacs"]] = speeds["matmul"] - speeds["conv"]
    return M


def class_fractions(X: np.ndarray, theta: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Share of each row's pooled-fit estimate per speed class (SPEED_CLASSES order), gmacs split by MAC kind."""
    col = {n: i for i, n in enumerate(names)}
    parts = X * theta
    out = np.zeros((len(X), len(SPEED_CLASSES)))
    for k, (cls, members) in enumerate(SPEED_CLASSES.items()):
        out[:, k] = sum(parts[:, col[n]] for n in members if n in col and n != "gmacs")
    mm = sum(X[:, col[n]] for n in SPEED_CLASSES["matmul"] if n in col)
    share_mm = np.clip(mm / np.maximum(X[:, col["gmacs"]], 1e-12), 0, 1)
    out[:, 0] += parts[:, col["gmacs"]] * (1 - share_mm)
    out[:, 1] += parts[:, col["gmacs"]] * share_mm
    return out / np.maximum(out.sum(axis=1, keepdims=True), 1e-12)


def pairs_to_reference(rows: list[dict], train: np.ndarray) -> list[tuple[int, int]]:
    """(row, reference row) for every training row whose model x precision x runtime the reference chipset has."""
    ref = {}
    for i, r in enumerate(rows):
        if train[i] and r["chipset"] == REFERENCE_CHIPSET:
            ref[(r["key"], r["precision"], r["runtime"])] = i
    return [(i, ref[(r["key"], r["precision"], r["runtime"])]) for i, r in enumerate(rows)
            if train[i] and (r["key"], r["precision"], r["runtime"]) in ref]


def group_speeds(rows: list[dict], train: np.ndarray, speed: dict[str, float], mode: str) -> dict[tuple, float]:
    """(chipset, precision, runtime group) -> speed relative to the reference chipset."""
    out: dict[tuple, float] = {}
    keys = {(r["chipset"], r["precision"], r["runtime_group"]) for r, t in zip(rows, train) if t}
    ratios = defaultdict(list)
    if mode != "chipset":
        for i, j in pairs_to_reference(rows, train):
            r = rows[i]
            ratios[(r["chipset"], r["precision"], r["runtime_group"])].append(r["published_ms"] / rows[j]["published_ms"])
    for key in keys:
        v = ratios.get(key, [])
        out[key] = float(statistics.median(v)) if len(v) >= MIN_PAIRS else speed.get(key[0], 1.0)
    return out


def fit(rows: list[dict], X: np.ndarray, names: tuple[str, ...] = costfit.BASE_FEATURES,
        ridge_to_pooled: float | None = RIDGE, floor_weights: bool = False,
        speed_mode: str = "chipset", anchored: frozenset[str] | set[str] = frozenset(),
        convert_runtime_rows: bool = False, family_balance: float = 0.0,
        precision_ridge: float | None = None, extra_ridge: float = EXTRA_RIDGE,
        eras: bool = False, era_ridge: float | None = None) -> dict[str, list[float]]:
    """Coefficients per (chipset, precision, runtime group), pulled towards the pooled fit scaled to the chipset
    (`speed_mode`, SPEED_MODES) with `ridge_to_pooled` (None: no per-chipset refit, every chipset is the scaled
    pooled fit). With `floor_weights`, a chipset's weight-byte cost is at least 1 / its DRAM bandwidth. A chipset in
    `anchored` gets no coefficients of its own: the reference chipset's refit, scaled by its speed (each chipset's
    choice is made by cross-validation, costmodel_cv.choose_anchored). `convert_runtime_rows`: fit a factored
    runtime's rows (runtime_factors) divided by its factor, as their base runtime would run them. `family_balance`:
    a row weighs n ** -family_balance, n its family's rows in the group fitted (0, as shipped: every row alike; 1: every
    family alike; benchmarks/costmodel_variants.py scores it). `extra_ridge`: how hard the pooled fit pulls the per-kind
    extra MAC costs to 0 (ms/GMAC; cross-validation chooses, costmodel_cv.EXTRA_RIDGE_CHOICES). `precision_ridge`: each
    precision's pooled fit pulled to one fitted over every precision of its runtime group (None, as shipped: fitted
    apart; costmodel_variants.py scores it). `eras`: the rows of the history's toolchain (row["era"], load_rows) get a
    pooled fit of their own, which the chipsets timed only then (the 8 Gen 2) are pulled towards instead of the current
    one; `era_ridge` pulls that pooled fit towards the current era's (relative, as `ridge_to_pooled`; None: fitted
    apart, per-kind extra MAC costs held as the current era's are)."""
    train = np.array([not r["held_out"] for r in rows])
    factors = runtime_factors(rows, train)
    y = np.array([r["published_ms"] / (factors.get(r["runtime"], 1.0) if convert_runtime_rows else 1.0)
                  for r in rows])
    groups: dict[str, list[float]] = {}
    pooled: dict[tuple[str, str], np.ndarray] = {}
    by_prec_rt = defaultdict(list)
    by_group = defaultdict(list)
    era_of = lambda r: r.get("era", CURRENT_ERA) if eras else CURRENT_ERA  # noqa: E731
    chip_era = {}
    for i, r in enumerate(rows):
        if train[i]:
            by_prec_rt[(r["precision"], r["runtime_group"], era_of(r))].append(i)
            by_group[(r["chipset"], r["precision"], r["runtime_group"])].append(i)
            chip_era[r["chipset"]] = era_of(r)
    speed = chipset_speed(rows, train)
    gspeed = group_speeds(rows, train, speed, speed_mode)
    n = len(names)
    scaling = {key: np.eye(n) * s for key, s in gspeed.items()}

    def weight(idx: list[int]) -> np.ndarray | None:
        if not family_balance:
            return None
        count = Counter(family(rows[i]["model"]) for i in idx)
        return np.array([count[family(rows[i]["model"])] ** -family_balance for i in idx], dtype=float)

    def pooled_fit() -> None:
        # pooled over chipsets: each row's features mapped to the reference chipset (generation scaling)
        mapped = lambda idx: np.array([scaling[(rows[i]["chipset"], rows[i]["precision"], rows[i]["runtime_group"])].T  # noqa: E731
                                       @ X[i] for i in idx])
        shared = {}
        if precision_ridge is not None:  # one fit over every precision of a runtime group, each precision pulled to it
            by_rt = defaultdict(list)
            for (_, rt, era), idx in by_prec_rt.items():
                by_rt[(rt, era)].extend(idx)
            shared = {key: costfit.fit_group(mapped(idx), y[idx], None, costfit.extra_ridge(extra_ridge, names),
                                             absolute=True, sample_weight=weight(idx)) for key, idx in by_rt.items()}
        for key, idx in sorted(by_prec_rt.items(), key=lambda kv: kv[0][2] != CURRENT_ERA):  # the current era first
            current = pooled.get((key[0], key[1], CURRENT_ERA))
            if key[2] != CURRENT_ERA and len(idx) < MIN_ROWS:  # too few of the old release's rows: the current shape
                if current is not None:
                    pooled[key] = current
            elif key[2] != CURRENT_ERA and current is not None and era_ridge is not None:
                pooled[key] = costfit.fit_group(mapped(idx), y[idx], current, era_ridge, sample_weight=weight(idx))
            elif (key[1], key[2]) in shared:
                pooled[key] = costfit.fit_group(mapped(idx), y[idx], shared[(key[1], key[2])], precision_ridge,
                                                sample_weight=weight(idx))
            else:
                pooled[key] = costfit.fit_group(mapped(idx), y[idx], None, costfit.extra_ridge(extra_ridge, names),
                                                absolute=True, sample_weight=weight(idx))

    pooled_fit()
    class_speeds: dict[str, dict[str, float]] = {}
    if speed_mode == "class":  # per-class speeds from the pairs, then the pooled fit again on the re-mapped rows
        by_chip = defaultdict(list)
        for i, j in pairs_to_reference(rows, train):
            if rows[i]["chipset"] != REFERENCE_CHIPSET and (rows[j]["precision"], rows[j]["runtime_group"],
                                                            CURRENT_ERA) in pooled:
                by_chip[rows[i]["chipset"]].append((i, j))
        for chip, pairs in by_chip.items():
            Fr = np.array([class_fractions(X[j:j + 1], pooled[(rows[j]["precision"], rows[j]["runtime_group"],
                                                               CURRENT_ERA)],
                                           names)[0] * gspeed[(chip, rows[i]["precision"], rows[i]["runtime_group"])]
                           for i, j in pairs])
            ratio = np.array([y[i] / y[j] for i, j in pairs])
            rel = costfit.fit_group(Fr, ratio, np.ones(len(SPEED_CLASSES)), CLASS_RIDGE)
            class_speeds[chip] = dict(zip(SPEED_CLASSES, (float(v) for v in rel)))
        for key, s in gspeed.items():
            if key[0] in class_speeds:
                scaling[key] = scaling_matrix(names, {c: s * v for c, v in class_speeds[key[0]].items()})
        pooled_fit()
    for (chip, prec, rt), idx in by_group.items():
        M = scaling[(chip, prec, rt)]
        base = pooled.get((prec, rt, chip_era[chip]))
        if base is None:  # a precision / runtime only the history's toolchain timed: no pooled shape to start from
            continue
        prior = M @ base
        floor = weight_floor(chip, names) if floor_weights else np.zeros(n)
        if ridge_to_pooled is None or len(idx) < MIN_ROWS:
            theta = np.maximum(prior, floor) if speed_mode != "class" else prior
        elif speed_mode == "class":  # refit in the reference chipset's coordinates, then map to this chipset
            ridge = np.where(costfit.extra_ridge(1.0, names) > 0, 1e4, ridge_to_pooled)
            theta = M @ costfit.fit_group(X[idx] @ M, y[idx], base, ridge, sample_weight=weight(idx))
        else:
            # the per-kind extra MAC costs stay the pooled fit's (a chipset's rows alone cannot pin them)
            ridge = np.where(costfit.extra_ridge(1.0, names) > 0, 1e4, ridge_to_pooled)
            theta = costfit.fit_group(X[idx], y[idx], prior, ridge, floor=floor, sample_weight=weight(idx))
        groups[f"{chip}|{prec}|{rt}"] = [float(v) for v in theta]
    for (chip, prec, rt) in by_group:
        ref = groups.get(f"{REFERENCE_CHIPSET}|{prec}|{rt}")
        if chip in anchored and chip != REFERENCE_CHIPSET and ref is not None:
            groups[f"{chip}|{prec}|{rt}"] = [float(v) for v in scaling[(chip, prec, rt)] @ np.asarray(ref)]
    for (prec, rt, era), theta in pooled.items():  # a chipset without rows in a group falls back to the pooled shape
        if era == CURRENT_ERA:
            groups[f"*|{prec}|{rt}"] = [float(v) for v in theta]
    return {"groups": groups, "chipset_speed": speed, "speed_mode": speed_mode, "anchored": sorted(anchored),
            "runtime_factors": factors,
            "class_speeds": class_speeds,
            "group_speeds": {"|".join(k): round(v, 4) for k, v in sorted(gspeed.items())}}


def runtime_pairs(rows: list[dict], train: np.ndarray) -> dict[str, list[dict]]:
    """runtime -> training pairs that time one graph on one chipset at one precision both in that runtime and in the
    runtime its factor is relative to (costfit.FACTORED_RUNTIMES), with the same layer count (AI Hub's: the same
    compiled graph; Whisper-Small's quantizable encoder has 1,918 layers as precompiled ONNX and 1,774 as a context
    binary, and 0.2x the latency: not one graph timed two ways)."""
    by = defaultdict(dict)
    for i, r in enumerate(rows):
        if train[i] and r["chipset"] != ERA_COMPANION[1]:
            by[(r["key"], r["precision"], r["chipset"])][r["runtime"]] = r
    out = {}
    for runtime, base in costfit.FACTORED_RUNTIMES.items():
        out[runtime] = [{"model": v[runtime]["model"], "component": v[runtime]["component"], "chipset": chip,
                         "precision": prec, "ratio": v[runtime]["published_ms"] / v[base]["published_ms"]}
                        for (_, prec, chip), v in sorted(by.items())
                        if runtime in v and base in v and v[runtime]["layers_total"] == v[base]["layers_total"]]
    return out


def runtime_factors(rows: list[dict], train: np.ndarray) -> dict[str, float]:
    """runtime -> median latency ratio to its base runtime over the training pairs (1 without pairs). The per-group
    coefficients are fitted on every QNN row as published; an estimate for the runtime is the fitted one times this
    factor (dividing the runtime's fitted rows by it first scored worse in cross-validation: the README says)."""
    return {rt: float(statistics.median(p["ratio"] for p in pairs)) if pairs else 1.0
            for rt, pairs in runtime_pairs(rows, train).items()}


def runtime_report(rows: list[dict], pred: np.ndarray, params: dict, cv_preds: dict[str, np.ndarray],
                   train_rows: list[dict]) -> dict:
    """Each factored runtime: its factor and the training pairs behind it, its held-out rows with and without the
    factor (the same coefficients), and the cross-validated score (training models) of fitting its rows as
    published or converted by the factor."""
    import costmodel_cv

    out = {}
    for runtime, pairs in runtime_pairs(rows, np.array([not r["held_out"] for r in rows])).items():
        factor = costfit.runtime_factor(params, runtime)
        held = lambda r, rt=runtime: r["held_out"] and r["runtime"] == rt  # noqa: E731
        unfactored = np.array([p / factor if r["runtime"] == runtime else p for r, p in zip(rows, pred)])
        ratios = [p["ratio"] for p in pairs]
        out[runtime] = {"relative_to": costfit.FACTORED_RUNTIMES[runtime], "factor": round(factor, 4),
                        "pairs": len(pairs), "models": sorted({f"{p['model']}/{p['component']}" for p in pairs}),
                        "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)] if ratios else None,
                        "models_timed": sorted({r["model"] for r in rows if r["runtime"] == runtime}),
                        "held_out": errors(rows, pred, held), "held_out_without_factor": errors(rows, unfactored, held)}
    out["cv_score_training"] = {how: round(costmodel_cv.score(costmodel_cv.chip_errors(train_rows, p, PHONE_LAPTOP)), 3)
                                for how, p in cv_preds.items()}
    return out


def chipset_speed(rows: list[dict], train: np.ndarray) -> dict[str, float]:
    """Median of published / (same model, precision, runtime on the 8 Gen 3) over shared keys: relative slowness."""
    ref = {}
    for i, r in enumerate(rows):
        if train[i] and r["chipset"] == REFERENCE_CHIPSET:
            ref[(r["key"], r["precision"], r["runtime"])] = r["published_ms"]
    ratios = defaultdict(list)
    for i, r in enumerate(rows):
        k = (r["key"], r["precision"], r["runtime"])
        if train[i] and k in ref:
            ratios[r["chipset"]].append(r["published_ms"] / ref[k])
    return {c: float(statistics.median(v)) for c, v in ratios.items()}


def predict_rows(rows: list[dict], X: np.ndarray, params: dict) -> np.ndarray:
    out = []
    for r, x in zip(rows, X):
        theta = params["groups"].get(f"{r['chipset']}|{r['precision']}|{r['runtime_group']}")
        if theta is None:
            pooled = params["groups"].get(f"*|{r['precision']}|{r['runtime_group']}")
            if pooled is None:  # a precision/runtime no training row had (a cross-validation fold): no estimate
                out.append(float("nan"))
                continue
            theta = np.array(pooled) * params["chipset_speed"].get(r["chipset"], 1.0)
        out.append(float(x @ np.asarray(theta)) * costfit.runtime_factor(params, r["runtime"]))
    return np.array(out)


def worst_models(rows: list[dict], pred: np.ndarray, select, top: int = 8) -> list[dict]:  # noqa: ANN001
    """Models with the largest median signed error over the selected rows (reported, never used to choose)."""
    by = defaultdict(list)
    for i, r in enumerate(rows):
        if select(r):
            by[r["model"]].append(pred[i] / r["published_ms"] - 1)
    out = [{"model": m, "rows": len(e), "median_signed": round(float(np.median(e)), 3)} for m, e in by.items()]
    return sorted(out, key=lambda e: -abs(e["median_signed"]))[:top]


def errors(rows: list[dict], pred: np.ndarray, select) -> dict:  # noqa: ANN001
    err = [pred[i] / r["published_ms"] - 1 for i, r in enumerate(rows) if select(r)]
    if not err:
        return {"n": 0}
    a = np.abs(err)
    return {"n": len(err), "models": len({r["model"] for r in rows if select(r)}),
            "median_abs": float(np.median(a)), "p90_abs": float(np.percentile(a, 90)),
            "median_signed": float(np.median(err))}


def bootstrap_over_models(rows: list[dict], pred: np.ndarray, select, resamples: int = 2000,  # noqa: ANN001
                          seed: int = 0) -> dict:
    """How much `errors`' median / p90 |error| depend on which models happened to be held out: the selected rows'
    models drawn with replacement (a model brings all its rows), the 5th-95th percentiles of the two figures over
    the resamples. With a few dozen held-out models this is the width a refit or a different split may move them by."""
    by = defaultdict(list)
    for i, r in enumerate(rows):
        if select(r):
            by[r["model"]].append(abs(pred[i] / r["published_ms"] - 1))
    if len(by) < 2:
        return {"n_models": len(by)}
    models = [np.array(e) for e in by.values()]
    rng = np.random.default_rng(seed)
    medians, p90s = [], []
    for _ in range(resamples):
        a = np.concatenate([models[j] for j in rng.integers(0, len(models), len(models))])
        medians.append(np.median(a))
        p90s.append(np.percentile(a, 90))
    band = lambda v: [round(float(x), 4) for x in np.percentile(v, [5, 95])]  # noqa: E731
    return {"n_models": len(models), "resamples": resamples, "median_abs_5_95": band(medians),
            "p90_abs_5_95": band(p90s)}


# SD-1.5 component -> its reference graph key (reference_graphs.json.gz), from the cost model's own mapping
SD_REFERENCE = {name.split("/")[1]: key for key, name in QNN_REFERENCE.items()}


def gen2_report(rows: list[dict], pred: np.ndarray, features: dict) -> dict:
    """Is the Snapdragon 8 Gen 2 systematically off? Its rows' releases, runtime and precision mix against the
    8 Gen 3's; the published 8 Gen 2 / 8 Gen 3 ratio of the same training model, precision and runtime within one
    release (aihub_perf_history.csv, every release with both) and across the releases the fit uses; and the held-out error
    of the 8 Gen 3 on exactly the keys the 8 Gen 2 has (read after the fit; nothing is chosen on it)."""
    def mix(chip: str, held: bool) -> dict:
        sel = [r for r in rows if r["chipset"] == chip and r["held_out"] == held and r["runtime_group"] == "qnn"]
        return {"rows": len(sel),
                "runtime_precision": dict(Counter(f"{r['runtime']} {r['precision']}" for r in sel).most_common()),
                "release_qairt": dict(Counter(f"{r['release']} {r['qairt_version'][:4] or '?'}" for r in sel)
                                      .most_common())}

    same_release = defaultdict(dict)
    with open(DATA / "aihub_perf_history.csv") as f:
        for r in csv.DictReader(f):
            if (r["chipset"] in ("Snapdragon 8 Gen 2", "Snapdragon 8 Gen 3") and r["inference_time_ms"]
                    and f"{r['model']}/{r['component']}" in features and not mixed_precision(r["precision"])
                    and not held_out(r["model"])):
                key = (r["model"], r["component"], r["precision"], r["runtime"], r["release"])
                same_release[key][r["chipset"]] = float(r["inference_time_ms"])
    ratios = [v["Snapdragon 8 Gen 2"] / v["Snapdragon 8 Gen 3"] for v in same_release.values() if len(v) == 2]
    ref = {(r["key"], r["precision"], r["runtime"]): r["published_ms"] for r in rows
           if r["chipset"] == REFERENCE_CHIPSET and not r["held_out"]}
    fitted = [r for r in rows if r["chipset"] == "snapdragon-8-gen-2" and not r["held_out"] and r["runtime_group"] == "qnn"]
    across = [r["published_ms"] / ref[(r["key"], r["precision"], r["runtime"])] for r in fitted
              if (r["key"], r["precision"], r["runtime"]) in ref]
    matmul = [r for r in fitted if dominant_mac_kind(features[r["key"]]) == "matmul"]
    matmul_across = [r["published_ms"] / ref[(r["key"], r["precision"], r["runtime"])] for r in matmul
                     if (r["key"], r["precision"], r["runtime"]) in ref]
    q = lambda v: {"n": len(v), "median": round(float(np.median(v)), 3),  # noqa: E731
                   "p5_p95": [round(float(x), 3) for x in np.percentile(v, [5, 95])],
                   "median_abs_dev_from_median": round(float(np.median(np.abs(np.array(v) / np.median(v) - 1))), 3)} \
        if v else {"n": 0}
    g2 = {(r["key"], r["precision"], r["runtime"]) for r in rows
          if r["chipset"] == "snapdragon-8-gen-2" and r["held_out"] and r["runtime_group"] == "qnn"}
    on_keys = {c: errors(rows, pred, lambda r, c=c: r["held_out"] and r["chipset"] == c and r["runtime_group"] == "qnn"
                         and (r["key"], r["precision"], r["runtime"]) in g2)
               for c in ("snapdragon-8-gen-2", REFERENCE_CHIPSET, "snapdragon-8-elite")}
    return {"mix_train": {c: mix(c, False) for c in ("snapdragon-8-gen-2", REFERENCE_CHIPSET)},
            "mix_held_out": {c: mix(c, True) for c in ("snapdragon-8-gen-2", REFERENCE_CHIPSET)},
            "ratio_to_8_gen_3_same_release": q(ratios),
            "ratio_to_8_gen_3_rows_fitted_training_qnn": q(across),
            # what the fit has to learn the 8 Gen 2's transformers from: its matmul-dominated training rows
            "matmul_dominated_training_qnn": {"rows": len(matmul), "ratio_to_8_gen_3": q(matmul_across)},
            "held_out_qnn_on_the_8_gen_2_keys": on_keys,
            "toolchain_gap": toolchain_gap(rows, features)}


def release_order(release: str) -> tuple[int, ...]:
    """'v0.30.7' -> (0, 30, 7): AI Hub releases in time order."""
    return tuple(int(re.sub(r"\D.*", "", v) or 0) for v in release.lstrip("v").split("."))


def dominant_mac_kind(entry: dict) -> str:
    """'matmul' when a rebuilt graph (one features entry) does more weight-matmul and attention MACs than convolution
    MACs, else 'conv'."""
    col = {f: i for i, f in enumerate(entry["fields"])}
    macs = Counter()
    for op in entry["ops"]:
        macs["matmul" if op[col["kind"]] in ("linear", "attention") else op[col["kind"]]] += op[col["macs"]]
    return "matmul" if macs["matmul"] > macs["conv"] else "conv"


def toolchain_gap(rows: list[dict], features: dict) -> dict:
    """How much of the 8 Gen 2 / 8 Gen 3 ratio the fit sees is the toolchain, not the chipset. The fitted rows put
    the 8 Gen 2 at AI Hub v0.37.1 (QAIRT 2.37, its last release) beside the 8 Gen 3 at v0.46.1 (QAIRT 2.42). For
    every model x component x precision (QNN rows, train and held out) that an older release published on both
    chipsets with one runtime, this compares that same-release ratio with the fitted one, and how far each chipset's
    own figure moved between the shared release and the fitted one; grouped by the graph's dominant MAC kind (our
    rebuild), with every held-out key listed. Read after the fit; nothing is chosen on it."""
    fitted = defaultdict(dict)
    for r in rows:
        if r["runtime_group"] == "qnn" and r["chipset"] in ("snapdragon-8-gen-2", REFERENCE_CHIPSET):
            fitted[(r["model"], r["component"], r["precision"], r["runtime"])][r["chipset"]] = r
    fitted = {k: v for k, v in fitted.items() if len(v) == 2}
    wanted = {k[:3] for k in fitted}
    shared = defaultdict(lambda: defaultdict(dict))  # key -> (release, runtime) -> chipset -> ms
    with open(DATA / "aihub_perf_history.csv") as f:
        for r in csv.DictReader(f):
            if r["chipset"] not in ("Snapdragon 8 Gen 2", "Snapdragon 8 Gen 3") or not r["inference_time_ms"] \
                    or mixed_precision(r["precision"]) or costfit.RUNTIME_GROUPS.get(r["runtime"]) != "qnn":
                continue
            try:
                key = (r["model"], r["component"], costfit.precision_group(r["precision"]))
            except ValueError:
                continue
            if key in wanted:
                shared[key][(r["release"], r["runtime"])][slug(r["chipset"])] = float(r["inference_time_ms"])
    entries = []
    for (*key, runtime), pair in fitted.items():
        g2, g3 = pair["snapdragon-8-gen-2"], pair[REFERENCE_CHIPSET]
        # the newest release before the 8 Gen 2's fitted one that timed both chipsets with one runtime (this one
        # first: an older release's runtime label may differ, e.g. QNN before QNN_DLC)
        both = [(release_order(rel), rt == runtime, rel, v) for (rel, rt), v in shared[tuple(key)].items()
                if len(v) == 2 and release_order(rel) < release_order(g2["release"])]
        if not both:
            continue
        *_, release, at = max(both, key=lambda t: t[:2])
        entries.append({"key": g2["key"], "precision": key[2], "runtime": runtime, "held_out": g2["held_out"],
                        "dominant": dominant_mac_kind(features[g2["key"]]), "shared_release": release,
                        "same_release_ratio": round(at["snapdragon-8-gen-2"] / at[REFERENCE_CHIPSET], 3),
                        "fitted_ratio": round(g2["published_ms"] / g3["published_ms"], 3),
                        "gen_3_change": round(g3["published_ms"] / at[REFERENCE_CHIPSET], 3),
                        "gen_2_change": round(g2["published_ms"] / at["snapdragon-8-gen-2"], 3)})
    by_kind = {}
    for kind in ("conv", "matmul"):
        sel = [e for e in entries if e["dominant"] == kind]
        if sel:
            by_kind[kind] = {"n": len(sel), **{f"median_{k}": round(float(np.median([e[k] for e in sel])), 3)
                                               for k in ("same_release_ratio", "fitted_ratio", "gen_3_change",
                                                         "gen_2_change")}}
    return {"pairs": len(entries), "by_dominant_mac_kind": by_kind,
            "held_out": sorted((e for e in entries if e["held_out"]), key=lambda e: e["fitted_ratio"] / e["same_release_ratio"])}


# the chipset AI Hub timed at the 8 Gen 2's releases and at the current one: the control for the release's share
CONTROL_CHIPSET = ("Snapdragon 8 Elite", "snapdragon-8-elite")


def release_control_rows(rows: list[dict]) -> list[dict]:
    """The 8 Elite's published rows at the 8 Gen 2's own release, on the 8 Gen 2's keys (model x component x
    precision x runtime, aihub_perf_history.csv), each a copy of the 8 Gen 2 row with the 8 Elite's figure and layer
    counts, under the chipset name 'snapdragon-8-elite@8-gen-2-release': a chipset of their own for the fit."""
    g2 = {(r["key"], r["precision"], r["runtime"]): r for r in rows if r["chipset"] == "snapdragon-8-gen-2"}
    out = {}
    with open(DATA / "aihub_perf_history.csv") as f:
        for r in csv.DictReader(f):
            if r["chipset"] != CONTROL_CHIPSET[0] or not r["inference_time_ms"] or mixed_precision(r["precision"]):
                continue
            try:
                precision = costfit.precision_group(r["precision"])
            except ValueError:
                continue
            match = g2.get((f"{r['model']}/{r['component']}", precision, r["runtime"]))
            if match is None or match["release"] != r["release"]:
                continue
            layers = lambda k: float(r[k]) if r.get(k) not in (None, "") else 0.0  # noqa: E731
            out[(match["key"], precision, r["runtime"])] = dict(
                match, chipset=f"{CONTROL_CHIPSET[1]}@8-gen-2-release", published_ms=float(r["inference_time_ms"]),
                fallback_layers=layers("layers_cpu") + layers("layers_gpu"), layers_total=layers("layers_total"),
                layers_npu=layers("layers_npu"), qairt_version=r.get("qairt_version", ""))
    return [r for r in out.values() if on_npu(r)]


def same_release_control(rows: list[dict], pred: np.ndarray, features: dict, names: tuple[str, ...], vtcm: int,
                         fit_fn) -> dict:  # noqa: ANN001 - fit_fn(rows, X) -> params, the chosen model's fit
    """Is the 8 Gen 2's held-out miss its chipset or its release? The 8 Elite, which meets the goal at the current
    release, was also timed at the 8 Gen 2's release: its rows there (release_control_rows) are fitted as a chipset of
    their own, beside every training row, with the chosen model (its training models only), and its held-out errors
    compared with the 8 Gen 2's and the current 8 Elite's (the shipped fit) on exactly the same held-out keys. Read
    after the fit; nothing is chosen on it."""
    control = release_control_rows(rows)
    if not control:
        return {"rows": 0}
    both = rows + control
    X = design(both, features, names, vtcm)
    params = fit_fn([r for r in both if not r["held_out"]], X[[not r["held_out"] for r in both]])
    control_pred = predict_rows(control, X[len(rows):], params)
    keys = {(r["key"], r["precision"], r["runtime"]) for r in control if r["held_out"] and r["runtime_group"] == "qnn"}
    on_keys = lambda r: r["held_out"] and r["runtime_group"] == "qnn" and (r["key"], r["precision"], r["runtime"]) in keys  # noqa: E731
    return {"chipset": f"{CONTROL_CHIPSET[0]} at the 8 Gen 2's release",
            "releases": dict(Counter(f"{r['release']} {r['qairt_version'][:4] or '?'}" for r in control)),
            "rows": len(control), "rows_train": sum(not r["held_out"] for r in control),
            "held_out_qnn_same_keys": {
                "8_elite_at_8_gen_2_release": errors(control, control_pred, on_keys),
                "8_gen_2": errors(rows, pred, lambda r: r["chipset"] == "snapdragon-8-gen-2" and on_keys(r)),
                "8_elite_current_release": errors(rows, pred, lambda r: r["chipset"] == CONTROL_CHIPSET[1]
                                                  and on_keys(r))}}


def sd_graphs(features: dict) -> dict[str, dict]:
    """SD-1.5's components: the rebuilt QNN-pipeline graphs when latency_graphs.py exported them, else the raw
    dynamo exports stored by benchmarks/backends.py (reference_graphs.json.gz; no QNN passes: recorded as such)."""
    out = {k.split("/")[1]: dict(v, graph_source="latency_features (QNN pass pipeline)")
           for k, v in features.items() if k.startswith("stable_diffusion") and not k.endswith(AIHUB_FORM)}
    missing = [c for c in SD_REFERENCE if c not in out]
    if missing and (RESULTS / "reference_graphs.json.gz").exists():
        with gzip.open(RESULTS / "reference_graphs.json.gz", "rt") as f:
            reference = json.load(f)
        for component in missing:
            entry = reference.get(SD_REFERENCE[component])
            if entry:
                out[component] = {"fields": entry["fields"], "ops": entry["ops"], "input_elems": entry["input_elems"],
                                  "graph_source": "reference_graphs.json.gz (raw dynamo export, no QNN passes)"}
    return out


# the SD predictions first committed before any comparison with published SD figures (commit 194cda8): the
# pre-registered record, never overwritten by a later fit
PREREGISTERED_PATH = RESULTS / "costmodel_sd_preregistered.json"


def sd_provenance(predictions: list[dict], preregistered: dict | None) -> str:
    """Whether this fit's SD predictions are the pre-registered ones or were made after the comparison was known.
    The published SD figures are W8A16: W8A16 predictions equal to the record are still the pre-registered test."""
    if preregistered is None:
        return "predictions published in this JSON"
    key = lambda p: (p["component"], p["chipset"], p["precision"], p["predicted_ms"])  # noqa: E731
    mine, record = sorted(map(key, predictions)), sorted(map(key, preregistered["predictions"]))
    commit = preregistered["commit"][:7]
    if mine == record:
        return f"these exact predictions were first committed without any comparison in commit {commit} on main"
    if [k for k in mine if k[2] == "w8a16"] == [k for k in record if k[2] == "w8a16"]:
        return (f"these exact W8A16 predictions were first committed without any comparison in commit {commit} on "
                f"main; this refit moved only the float ones, which no published SD figure is compared with")
    return (f"NOT a pre-registered test: this model was fitted after the pre-registered predictions of commit "
            f"{commit} had been compared with AI Hub's SD figures (both below); its changes were chosen on the "
            f"training models only, never on SD")


def preregistered_sd() -> dict | None:
    """The pre-registered SD predictions (commit 194cda8) and their comparison with the published figures."""
    if not PREREGISTERED_PATH.exists():
        return None
    record = json.loads(PREREGISTERED_PATH.read_text())
    return dict(record, vs_published=sd_comparison(record["predictions"]))


def qnn_theta(params: dict, chip: str, precision: str) -> list[float]:
    """A chipset's QNN coefficients at one precision: its own, else the pooled ones scaled by its speed."""
    theta = params["groups"].get(f"{chip}|{precision}|qnn")
    if theta is None:
        theta = list(np.array(params["groups"][f"*|{precision}|qnn"]) * params["chipset_speed"].get(chip, 1.0))
    return theta


def stable_diffusion(features: dict, params: dict) -> list[dict]:
    """Predicted SD-1.5 text encoder / UNet / VAE decoder on each phone/laptop chipset, QNN context binary, W8A16."""
    out = []
    for component, entry in sorted(sd_graphs(features).items()):
        for chip in PHONE_LAPTOP:
            for prec in ("w8a16", "float"):
                x = costfit.features_from_entry(entry, prec, params["vtcm_bytes"])
                parts = costfit.breakdown(x, qnn_theta(params, chip, prec), params["features"])
                out.append({"component": component, "chipset": chip, "precision": prec, "runtime": "qnn",
                            "batch": 1, "predicted_ms": round(sum(parts.values()), 3),
                            "bound": max(parts, key=parts.get), "graph": entry["graph_source"],
                            "outside_training": costfit.outside_training(x, prec, params)})
    return out


AIHUB_FORM = "_aihub_form"  # an SD component rebuilt as AI Hub adapts it (latency_graphs.py), not fusionc's graph


def sd_aihub_form(features: dict, params: dict, predictions: list[dict], train_rows: list[dict],
                  cv_pred: np.ndarray, compare: bool = True) -> dict:  # cv_pred: one per training row
    """SD-1.5's UNet rebuilt in AI Hub's form (aihub_adapted.adapt_sd_unet: split-head attention, NCHW blocks, 1x1
    convolutions), predicted by this model beside fusionc's own UNet graph and AI Hub's published figure. Made after
    the published SD figures were known, to test one explanation of the UNet's miss (that AI Hub timed another graph);
    nothing is fitted or chosen on it. Beside it, the training graphs whose attention scores exceed the local memory
    and their cross-validated QNN errors."""
    entry = features.get(f"stable_diffusion_v1_5/unet{AIHUB_FORM}")
    if entry is None:
        return {"rows": 0}
    published = {c["chipset"]: c for c in sd_comparison(predictions) if c["component"] == "unet"} if compare else {}
    ours = {p["chipset"]: p for p in predictions if p["component"] == "unet" and p["precision"] == "w8a16"}
    x = costfit.features_from_entry(entry, "w8a16", params["vtcm_bytes"])
    out = []
    for chip in PHONE_LAPTOP:
        parts = costfit.breakdown(x, qnn_theta(params, chip, "w8a16"), params["features"])
        total = sum(parts.values())
        row = {"chipset": chip, "predicted_ms": round(total, 3), "bound": max(parts, key=parts.get),
               "spill_ms": round(parts.get("spill_mb", 0.0), 3),
               # the spilled bytes written and read back once at the chipset's DRAM bandwidth (its device profile)
               "spill_at_dram_bandwidth_ms": round(x["spill_mb"] / DEVICES[chip].memory_bandwidth_gbs, 1),
               "fusionc_graph_predicted_ms": ours[chip]["predicted_ms"] if chip in ours else None}
        if chip in published:
            row.update(published_ms=published[chip]["published_ms"],
                       error=round(total / published[chip]["published_ms"] - 1, 3))
        out.append(row)
    return {"graph": "stable_diffusion_v1_5/unet" + AIHUB_FORM, "spill_mb": round(x["spill_mb"], 1),
            "spill_mb_fusionc_graph": round(costfit.features_from_entry(
                features["stable_diffusion_v1_5/unet"], "w8a16", params["vtcm_bytes"])["spill_mb"], 1),
            "training_graphs_scores_beyond_local_memory": {
                key: {"largest_scores_mib": mib, "cv_qnn": errors(train_rows, cv_pred, lambda r, key=key: r["key"] == key
                                                                  and r["runtime_group"] == "qnn")}
                for key, mib in scores_beyond(features, params["vtcm_bytes"]).items()},
            "predictions": out}


def scores_beyond(features: dict, vtcm_bytes: int) -> dict[str, float]:
    """Fitted graphs (training models) with an attention-score tensor larger than the local memory: {graph: MiB of
    its largest}."""
    out = {}
    for key, entry in features.items():
        if key.startswith("stable_diffusion") or held_out(entry.get("model", key.split("/")[0])):
            continue
        index = {f: i for i, f in enumerate(entry["fields"])}
        sizes = [op[index["act_out_elems"]] * 2 for op in entry["ops"] if op[index["attention_scores"]]]
        if sizes and max(sizes) > vtcm_bytes:
            out[key] = round(max(sizes) / 2**20, 1)
    return out


# Qualcomm AI Hub's SD-1.5 W8A16 figures at the release the fitted rows come from: quic/ai-hub-models v0.46.1 (commit
# 52c080d2), qai_hub_models/models/stable_diffusion_v1_5/perf.yaml, QNN context binary, QAIRT 2.42; Galaxy S24 (8 Gen
# 3), Galaxy S25 (8 Elite for Galaxy) and the QRD / CRD reference devices. No 8 Gen 2 at that release. The layer counts
# are QNN's for the graph AI Hub timed (its adapted UNet). Read after the predictions, never by the fit.
SD_SAME_RELEASE_SOURCE = ("Qualcomm AI Hub perf.yaml, quic/ai-hub-models v0.46.1 (52c080d2), QNN context binary, "
                          "QAIRT 2.42")
SD_SAME_RELEASE_MS = {
    "text_encoder": {"snapdragon-8-gen-3": 2.275, "snapdragon-8-elite": 1.759, "snapdragon-8-elite-gen-5": 1.493,
                     "snapdragon-7-gen-4": 3.629, "snapdragon-x-elite": 3.607},
    "unet": {"snapdragon-8-gen-3": 79.077, "snapdragon-8-elite": 60.171, "snapdragon-8-elite-gen-5": 44.845,
             "snapdragon-7-gen-4": 183.924, "snapdragon-x-elite": 112.945},
    "vae_decoder": {"snapdragon-8-gen-3": 203.237, "snapdragon-8-elite": 180.005, "snapdragon-8-elite-gen-5": 116.863,
                    "snapdragon-7-gen-4": 512.113, "snapdragon-x-elite": 264.468},
}
SD_SAME_RELEASE_LAYERS = {"text_encoder": 438, "unet": 3272, "vae_decoder": 172}


def sd_same_release(predictions: list[dict], preregistered: dict | None, features: dict) -> dict:
    """This fit's and the pre-registered W8A16 SD predictions against AI Hub's figures at the fitted rows' release
    (SD_SAME_RELEASE_MS), with AI Hub's layer count beside our graph's op count."""
    def compare(preds: list[dict]) -> list[dict]:
        got = {(p["component"], p["chipset"]): p["predicted_ms"] for p in preds if p["precision"] == "w8a16"}
        return [{"component": c, "chipset": chip, "published_ms": ms, "predicted_ms": got[(c, chip)],
                 "error": round(got[(c, chip)] / ms - 1, 3)}
                for c, by_chip in SD_SAME_RELEASE_MS.items() for chip, ms in by_chip.items() if (c, chip) in got]
    graphs = sd_graphs(features)
    return {"source": SD_SAME_RELEASE_SOURCE,
            "layers": {c: {"aihub_qnn_layers": n, "our_ops": len(graphs[c]["ops"]) if c in graphs else None}
                       for c, n in SD_SAME_RELEASE_LAYERS.items()},
            "our_ops_unet_aihub_form": len(features.get(f"stable_diffusion_v1_5/unet{AIHUB_FORM}", {}).get("ops", [])),
            "this_fit": compare(predictions),
            "preregistered": compare(preregistered["predictions"]) if preregistered else [],
            "preregistered_commit": preregistered["commit"] if preregistered else None}


def sd_comparison(predictions: list[dict]) -> list[dict]:
    """The SD predictions against Qualcomm AI Hub's published SD-1.5 W8A16 figures (fusionc.analysis.costmodel.
    CALIBRATION). Added after the predictions were committed (git: the commit that first wrote them): nothing in
    the fit reads these figures."""
    from fusionc.analysis.costmodel import CALIBRATION

    component = {"clip_text_encoder": "text_encoder", "sd15_unet": "unet", "sd_vae_decoder": "vae_decoder"}
    out = []
    for p in CALIBRATION:
        if p.graph not in component or not p.device.startswith("snapdragon"):
            continue
        match = [x for x in predictions if x["component"] == component[p.graph] and x["chipset"] == p.device
                 and x["precision"] == "w8a16"]
        if match:
            out.append({"component": component[p.graph], "chipset": p.device, "published_ms": p.latency_ms,
                        "source": p.source, "predicted_ms": match[0]["predicted_ms"],
                        "error": round(match[0]["predicted_ms"] / p.latency_ms - 1, 3)})
    return out


def scatter(rows: list[dict], pred: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 6))
    y = np.array([r["published_ms"] for r in rows])
    test = np.array([r["held_out"] for r in rows])
    ax.scatter(y[~test], pred[~test], s=5, alpha=0.25, color="#999999", label=f"training models ({(~test).sum()} rows)")
    ax.scatter(y[test], pred[test], s=9, alpha=0.7, color="#dd4444", label=f"held-out models ({test.sum()} rows)")
    lo, hi = max(min(y.min(), pred.min()), 0.05), max(y.max(), pred.max())
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    for f in (0.6, 1.4):
        ax.plot([lo, hi], [lo * f, hi * f], "k:", lw=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("published latency, ms (Qualcomm AI Hub)")
    ax.set_ylabel("estimated latency, ms (fusionc cost model)")
    ax.set_title("fusionc cost model: estimated vs published (dotted: +-40%)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def git_rev() -> str:
    """HEAD, with "+dirty" when tracked files had uncommitted changes (the fit's inputs may not be HEAD's)."""
    return provenance.git_revision() or "unknown"


def run(features_path: Path = FEATURES_PATH, out_json: Path = RESULTS / "costmodel_fit.json",
        out_png: Path | None = RESULTS / "costmodel_fit.png", params_path: Path = PARAMS_PATH,
        select: bool = True, compare_sd: bool = True) -> dict:
    """The whole fit: rows, cross-validated model choice (training models only), the fit on every training row,
    held-out errors, SD predictions (and, with `compare_sd`, their comparison with published figures)."""
    import costmodel_cv

    with gzip.open(features_path, "rt") as f:
        features = json.load(f)
    fit_features = {k: v for k, v in features.items() if not k.startswith("stable_diffusion")}
    all_rows = load_rows(fit_features)
    rows = [r for r in all_rows if on_npu(r)]
    train_rows = [r for r in rows if not r["held_out"]]
    if select:
        selection = costmodel_cv.select(train_rows, fit_features, family, design, fit, predict_rows, PHONE_LAPTOP)
    else:  # tests: the base terms at the documented local-memory size, no cross-validation
        selection = {"chosen": {"optional": [], "ops_term": "kilo_ops", "vtcm_mb": costfit.VTCM_BYTES >> 20,
                                "ridge_to_pooled": RIDGE, "extra_ridge": EXTRA_RIDGE,
                                "floor_weights": False, "speed_mode": "chipset", "score": None},
                     "rule": "not selected (select=False)", "candidates": [], "diagnostics": {}}
    names = costmodel_cv.names_of(selection["chosen"])
    vtcm = selection["chosen"]["vtcm_mb"] << 20
    X_train = design(train_rows, fit_features, names, vtcm)
    chosen = selection["chosen"]
    fit_anchoring = lambda r, x, a, **how: fit(r, x, names, chosen.get("ridge_to_pooled", RIDGE),  # noqa: E731
                                               chosen.get("floor_weights", False), chosen.get("speed_mode", "chipset"),
                                               a, extra_ridge=chosen.get("extra_ridge", EXTRA_RIDGE), **how)
    if select:  # per chipset: its own coefficients, or the reference chipset's scaled by its speed (CV, training)
        selection["anchoring"] = costmodel_cv.choose_anchored(
            train_rows, X_train, family, fit_anchoring, predict_rows, [c for c in PHONE_LAPTOP if c != REFERENCE_CHIPSET])
    anchored = frozenset(selection.get("anchoring", {}).get("anchored", []))
    chosen_fit = lambda r, x: fit_anchoring(r, x, anchored)  # noqa: E731
    # the range an estimate's published latency falls in: the chosen model's cross-validated errors (training only)
    cv_pred = costmodel_cv.cross_validated(train_rows, X_train, family, chosen_fit, predict_rows)
    interval = costmodel_cv.error_interval(train_rows, cv_pred)
    X = design(rows, fit_features, names, vtcm)
    params = dict(chosen_fit(rows, X), features=list(names), vtcm_bytes=vtcm)
    params["training_range"] = costfit.training_range(
        (key, prec, costfit.features_from_entry(fit_features[key], prec, vtcm))
        for key, prec in sorted({(r["key"], r["precision"]) for r in train_rows}))
    pred = predict_rows(rows, X, params)
    test = lambda r: r["held_out"]  # noqa: E731
    chips = sorted({r["chipset"] for r in rows})
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "git_rev": git_rev(),
        "inputs": {"perf": "aihub_perf.csv (v0.46.1) + aihub_perf_history.csv (Snapdragon 8 Gen 2; models the "
                           "current release dropped, on its chipsets: "
                           + ", ".join(sorted({r["model"] for r in rows if r["source"] == "aihub_perf_history.csv"
                                               and r["era"] == CURRENT_ERA})) + ")",
                   "features": str(features_path.relative_to(ROOT)) if features_path.is_relative_to(ROOT)
                   else str(features_path), "graphs": len(fit_features)},
        "model": {"features": list(names), "vtcm_bytes": vtcm,
                  "ridge_to_pooled": selection["chosen"].get("ridge_to_pooled", RIDGE),
                  "floor_weights": selection["chosen"].get("floor_weights", False),
                  "extra_ridge": chosen.get("extra_ridge", EXTRA_RIDGE),
                  "min_rows": MIN_ROWS, "speed_mode": params["speed_mode"], "anchored": params["anchored"],
                  "generation_scaling": {"reference": REFERENCE_CHIPSET, "chipset_speed": params["chipset_speed"],
                                         "group_speeds": params["group_speeds"],
                                         "class_speeds": params["class_speeds"]},
                  "interval": interval, "training_range": params["training_range"]},
        "selection": {k: v for k, v in selection.items() if k != "diagnostics"},
        "diagnostics_cv_training": selection["diagnostics"],
        "excluded": {"graphs": excluded_graphs(fit_features),
                     "rows_mixed_precision": mixed_rows(fit_features),
                     "rows_off_npu": {"n": len(all_rows) - len(rows),
                                      "why": "every layer ran on the CPU or GPU (AI Hub's layer counts): not an NPU "
                                             "latency, not modelled",
                                      "by_runtime": dict(sorted(Counter(r["runtime"] for r in all_rows
                                                                        if not on_npu(r)).items()))}},
        "split": {"rule": "family held out when sha1(family) % 4 == 0",
                  "train_models": sorted({r["model"] for r in rows if not r["held_out"]}),
                  "held_out_models": sorted({r["model"] for r in rows if r["held_out"]}),
                  "rows_train": sum(not r["held_out"] for r in rows), "rows_held_out": sum(r["held_out"] for r in rows)},
        "held_out": {
            "by_chipset_qnn": {c: errors(rows, pred, lambda r, c=c: test(r) and r["chipset"] == c
                                         and r["runtime_group"] == "qnn") for c in chips},
            "by_chipset_qnn_earlier_models": {
                c: errors(rows, pred, lambda r, c=c: test(r) and r["model"] in EARLIER_HELD_OUT and r["chipset"] == c
                          and r["runtime_group"] == "qnn") for c in chips},
            "by_runtime": {rt: errors(rows, pred, lambda r, rt=rt: test(r) and r["runtime"] == rt) for rt in RUNTIMES},
            "by_precision_qnn": {p: errors(rows, pred, lambda r, p=p: test(r) and r["precision"] == p
                                           and r["runtime_group"] == "qnn") for p in ("float", "w8a16", "w8a8")},
            "by_chipset_all_runtimes": {c: errors(rows, pred, lambda r, c=c: test(r) and r["chipset"] == c)
                                        for c in chips},
            "by_chipset_runtime": {f"{c}|{rt}": errors(rows, pred, lambda r, c=c, rt=rt: test(r) and r["chipset"] == c
                                                       and r["runtime"] == rt)
                                   for c in PHONE_LAPTOP for rt in RUNTIMES},
            "all": errors(rows, pred, test),
            "bootstrap_by_chipset_qnn": {c: bootstrap_over_models(rows, pred, lambda r, c=c: test(r) and r["chipset"] == c
                                                                  and r["runtime_group"] == "qnn") for c in PHONE_LAPTOP},
            "interval_coverage_qnn": {c: costmodel_cv.coverage(rows, pred, interval, lambda r, c=c: test(r)
                                                                and r["chipset"] == c and r["runtime_group"] == "qnn")
                                      for c in chips},
        },
        "train": {"all": errors(rows, pred, lambda r: not r["held_out"]),
                  # the shipped fit on its own rows: how far the model's terms can follow the data they were fitted on
                  "in_sample_by_chipset_qnn": {c: errors(rows, pred, lambda r, c=c: not r["held_out"]
                                                         and r["chipset"] == c and r["runtime_group"] == "qnn")
                                               for c in chips}},
        "stable_diffusion_predictions": stable_diffusion(features, params),
        "apple_neural_engine": apple(features),
        "sd_predictions_published": "filled below",
        "stable_diffusion_preregistered": preregistered_sd() if compare_sd else None,
        "stable_diffusion_vs_published": "filled below, after the predictions",
        "held_out_rows": [{k: r[k] for k in ("model", "component", "chipset", "runtime", "precision", "published_ms")}
                          | {"estimated_ms": round(float(p), 3)} for r, p in zip(rows, pred) if r["held_out"]],
    }
    converted_fit = lambda r, x: fit_anchoring(r, x, anchored, convert_runtime_rows=True)  # noqa: E731
    report["runtime_factors"] = runtime_report(rows, pred, params, {
        "rows as published (shipped)": cv_pred,
        "rows converted by the factor": costmodel_cv.cross_validated(train_rows, X_train, family, converted_fit,
                                                                     predict_rows)}, train_rows)
    report["snapdragon_8_gen_2"] = gen2_report(rows, pred, fit_features)
    report["snapdragon_8_gen_2"]["same_release_control"] = same_release_control(
        rows, pred, fit_features, names, vtcm, chosen_fit)
    report["held_out_worst_models_qnn"] = worst_models(rows, pred, lambda r: r["held_out"] and r["runtime_group"] == "qnn")
    report["stable_diffusion_vs_published"] = (sd_comparison(report["stable_diffusion_predictions"]) if compare_sd
                                               else "not compared in this run (--no-compare-sd)")
    report["stable_diffusion_unet_aihub_form"] = sd_aihub_form(features, params, report["stable_diffusion_predictions"],
                                                                 train_rows, cv_pred.mean(axis=0), compare_sd)
    report["stable_diffusion_vs_published_same_release"] = (sd_same_release(
        report["stable_diffusion_predictions"], report["stable_diffusion_preregistered"], features) if compare_sd
        else "not compared in this run (--no-compare-sd)")
    report["sd_predictions_published"] = sd_provenance(report["stable_diffusion_predictions"],
                                                       report["stable_diffusion_preregistered"])
    params_out = {"features": list(names), "vtcm_bytes": vtcm, "fitted_on": "training split of benchmarks/costmodel_fit.py",
                  "git_rev": report["git_rev"], "groups": params["groups"], "chipset_speed": params["chipset_speed"],
                  "speed_mode": params["speed_mode"], "anchored": params["anchored"],
                  "runtime_factors": params["runtime_factors"], "interval": interval,
                  "training_range": params["training_range"]}
    params_path.write_text(json.dumps(params_out, indent=1) + "\n")
    out_json.write_text(json.dumps(report, indent=1) + "\n")
    if out_png:
        scatter(rows, pred, out_png)
    return report


# Apple Neural Engine figures in the data for chips fusionc has a profile of, with the rebuilt graph that matches
# (other_perf.csv; apple_perf.csv's distilbert rows are on an A15, which has no profile). That is all there is.
APPLE_ROWS = [
    {"model": "Depth Anything small (DPT + DINOv2-S)", "chip": "A17 Pro", "device": "iphone-15-pro",
     "features": "depth_anything/Depth-Anything", "published_ms": 33.9,
     "source": "huggingface.co/apple/coreml-depth-anything-small (iPhone 15 Pro Max)"},
    {"model": "FastViT-T8", "chip": "A18 Pro", "device": "iphone-16-pro", "features": "apple_fastvit_t8/FastViT-T8",
     "published_ms": 0.52, "source": "developer.apple.com/machine-learning/models (iPhone 16 Pro)"},
    {"model": "MobileNet v2 (ONNX Runtime CoreML EP)", "chip": "M2", "device": "mac-m2",
     "features": "apple_mobilenet_v2/MobileNet-v2", "published_ms": 1.8, "source": "other_perf.csv (MacBook Pro M2)"},
]


def apple(features: dict) -> dict:
    """The Apple Neural Engine figures: the roofline's estimate of each (calibrated on 4 SD-scale figures, never on
    these), and the one parameter three figures can carry, an ANE speed scale (geometric mean of published /
    roofline), fitted leave-one-out: each figure's `loo_error` is that of the scale fitted on the other figures.
    The scale ships only if it beats the plain roofline on the leave-one-out errors (`ships`)."""
    from fusionc.analysis.costmodel import estimate, stats_of
    from fusionc.core.devices import DEVICES

    out = []
    for row in APPLE_ROWS:
        entry = features.get(row["features"])
        result = dict(row)
        if entry is None:
            result["error"] = None
            result["note"] = "graph not rebuilt in this run"
        else:
            est = estimate(stats_of(entry), DEVICES[row["device"]], "fp16")
            result["estimated_ms"] = round(est.latency_s * 1000, 3)
            result["error"] = round(est.latency_s * 1000 / row["published_ms"] - 1, 3)
        out.append(result)
    matched = [r for r in out if r.get("error") is not None]
    logs = {r["model"]: np.log(r["published_ms"] / r["estimated_ms"]) for r in matched}
    for r in matched:
        others = [v for m, v in logs.items() if m != r["model"]]
        if others:
            scale = float(np.exp(np.mean(others)))
            r["loo_scale"] = round(scale, 3)
            r["loo_estimated_ms"] = round(r["estimated_ms"] * scale, 3)
            r["loo_error"] = round(r["estimated_ms"] * scale / r["published_ms"] - 1, 3)
    loo = [abs(r["loo_error"]) for r in matched if "loo_error" in r]
    plain = [abs(r["error"]) for r in matched]
    return {"figures": out, "n_matched": len(matched),
            "scale_all": round(float(np.exp(np.mean(list(logs.values())))), 3) if logs else None,
            "median_abs_roofline": float(np.median(plain)) if plain else None,
            "median_abs_loo_scaled": float(np.median(loo)) if loo else None,
            "ships": bool(loo and np.median(loo) < np.median(plain)),
            "note": "too few figures to fit more than one scale; the estimate fusionc ships for Apple devices stays the "
                    "roofline unless `ships` is true"}


def write_readme(readme: Path = ROOT / "README.md") -> list[str]:
    """Re-render the README's measured blocks (the fit's table among them) from the JSON files just written."""
    import render_readme

    text, changed = render_readme.render_readme(readme.read_text())
    readme.write_text(text)
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=Path, default=FEATURES_PATH)
    parser.add_argument("--readme", action="store_true", help="re-render the README's tables from the new JSON")
    parser.add_argument("--no-compare-sd", dest="compare_sd", action="store_false",
                        help="publish the SD predictions without comparing them with published SD figures")
    args = parser.parse_args()
    report = run(args.features, compare_sd=args.compare_sd)
    if args.readme:
        write_readme()
    print(f"{len(report['split']['train_models'])} training models, {len(report['split']['held_out_models'])} held "
          f"out ({report['split']['rows_held_out']} rows)", file=sys.stderr)
    print(f"{'chipset (QNN runtimes)':34} {'n':>5} {'models':>6} {'median':>7} {'p90':>7}")
    for chip, e in report["held_out"]["by_chipset_qnn"].items():
        if e["n"]:
            print(f"{chip:34} {e['n']:5d} {e['models']:6d} {e['median_abs']:7.1%} {e['p90_abs']:7.1%}")
    for rt, e in report["held_out"]["by_runtime"].items():
        if e["n"]:
            print(f"runtime {rt:26} {e['n']:5d} {e['models']:6d} {e['median_abs']:7.1%} {e['p90_abs']:7.1%}")
    e = report["train"]["all"]
    print(f"{'(training rows, all)':34} {e['n']:5d} {e['models']:6d} {e['median_abs']:7.1%} {e['p90_abs']:7.1%}")


if __name__ == "__main__":
    main()
