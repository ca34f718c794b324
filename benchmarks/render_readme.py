"""Render the README's measured tables from the JSON files in benchmarks/results/ (and check they agree).

Every measured table of README.md sits between two marker comments naming its renderer:

    <!-- measured:qnn_families -->
    | family | w8a16 | ...            (generated: do not edit by hand)
    <!-- /measured:qnn_families -->

    python benchmarks/render_readme.py           # rewrite every marked block from its JSON
    python benchmarks/render_readme.py --check   # exit 1 naming each block that differs (tests/test_readme_tables.py)

Adding a table: write `def render_NAME(results: Path) -> str` below (read the JSON, return markdown), register
it with `@table("NAME", "file.json", ...)`, put the two markers where it goes in README.md, run this script.
A block whose JSON is missing is an error, never left stale.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- measured:(?P<name>[a-z0-9_]+) -->\n)(?P<body>.*?)(<!-- /measured:(?P=name) -->)", re.S)


@dataclass
class Table:
    name: str
    files: tuple[str, ...]
    render: Callable[[Path], str]


TABLES: dict[str, Table] = {}


def table(name: str, *files: str) -> Callable[[Callable[[Path], str]], Callable[[Path], str]]:
    def register(func: Callable[[Path], str]) -> Callable[[Path], str]:
        TABLES[name] = Table(name, files, func)
        return func
    return register


def table_per_file(render: Callable[[Path, str], str], **files: str) -> None:
    """One table per results file drawn by the same `render(results, file)`: name=file.json, ..."""
    for name, file in files.items():
        TABLES[name] = Table(name, (file,), lambda results, file=file: render(results, file))


def load(results: Path, name: str) -> dict[str, Any]:
    path = results / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the benchmark that writes it")
    return json.loads(path.read_text())


def rows(header: list[str], body: list[list[Any]], right: set[int] | None = None) -> str:
    right = right if right is not None else set(range(1, len(header)))
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---:" if i in right else "---" for i in range(len(header))) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in body]
    return "\n".join(lines) + "\n"


def db(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"


def psnr_cell(part: dict[str, Any]) -> str:
    """A part's PSNR, marked when it was measured on the QDQ graphs on the CPU instead of the HTP emulator."""
    on_cpu = (part.get("verified_on") or "").startswith("QDQ graph")
    return db(part.get("psnr_db")) + (" (QDQ on CPU)" if on_cpu and part.get("psnr_db") is not None else "")


def ms(value: float) -> str:
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


def short_rev(revision: str) -> str:
    """A git revision in 10 hex digits, keeping provenance.git_revision's "+dirty" mark."""
    return revision[:10] + ("+dirty" if revision.endswith("+dirty") else "")


def source(data: dict[str, Any], file: str) -> str:
    """One line naming the JSON, its git revision and the machine load, when the JSON records them."""
    prov = data.get("provenance") or {}
    parts = [f"benchmarks/results/{file}"]
    if prov.get("git_revision"):
        parts.append(f"git {short_rev(prov['git_revision'])}")
    if prov.get("load_average_before") and prov.get("load_average_after"):
        parts.append(f"load {prov['load_average_before'][0]:.1f} before, {prov['load_average_after'][0]:.1f} after")
    return "(" + "; ".join(parts) + ")\n"


# ---- the tables ---------------------------------------------------------------------------------------------------


def _ort_cpu(results: Path, name: str) -> str:
    data = load(results, name)
    names = {"naive_dynamo_export": "naive `torch.onnx.export(..., dynamo=True)`", "fusionc_fp32": "fusionc fp32",
             "fusionc_w8a8": "fusionc w8a8", "fusionc_int4": "fusionc fp32 + `--quantize-weights int4`"}
    body = []
    for key, label in names.items():
        m = data["models"].get(key)
        if m is None:
            continue
        if "median_s" not in m:
            body.append([label, "failed" if m["build"].get("failed") else "not run", "-", "-", "-", "-"])
            continue
        top = ", ".join(f"{op} {s:.2f}" for op, s in list(m["kernel_s_per_step_by_op"].items())[:3])
        naive = data["models"].get("naive_dynamo_export", {}).get("median_s")
        ratio = m.get("vs_naive", m["median_s"] / naive if naive else None)  # a partial run has no vs_naive yet
        body.append([label, f"{m['median_s']:.3f} s", f"{ratio:.2f}x" if ratio is not None else "-",
                     f"{m['peak_rss_bytes'] / 2**20:.0f} MB", db(m["build"].get("psnr_db")), top])
    return rows(["model", "step (median)", "vs naive", "peak RSS", "PSNR dB (held out)", "top kernels, s per step"], body)


@table("ort_cpu_small_frontier", "ort_cpu_small.json")
def _ort_cpu_small_frontier(results: Path) -> str:
    """Every w8a8 build of the run (the variant and --extra-builds) and fp32: speed against held-out PSNR."""
    data = load(results, "ort_cpu_small.json")
    body = []
    for key, m in data["models"].items():
        if "w8a8" not in key and key != "fusionc_fp32":
            continue
        remedies = m["build"].get("remedies") or {}
        ranges = max(remedies.get("ranges") or [{"db": 0}], key=lambda r: r["db"])
        rule = "fp32 build" if key == "fusionc_fp32" else (
            f"{'percentile ' + str(ranges['percentile']) if 'percentile' in ranges else 'margin ' + str(ranges.get('margin', 1.5))}"
            if remedies.get("ranges") else "margin 1.5")
        floats = remedies.get("nodes_float") or 0
        sixteen = remedies.get("nodes_16bit_activations") or 0
        kept = "all" if key == "fusionc_fp32" else f"{floats} fp32" if floats else f"{sixteen} at 16-bit" if sixteen \
            else "a priori only (conditioning, attention)" if remedies.get("final_db") is None else "0"
        target = remedies.get("target_db")
        body.append([f"`{key}`", rule, kept, "-" if target is None else f"{target:.0f}",
                     f"{m['vs_naive']:.2f}x", db(m["build"].get("psnr_db"))])
    return rows(["build", "8-bit ranges", "nodes kept out of int8", "target dB (selection)", "step vs naive",
                 "PSNR dB (held out)"], body)


table_per_file(_ort_cpu, ort_cpu_mid="ort_cpu_mid.json", ort_cpu_small="ort_cpu_small.json",
               ort_cpu_sd15="ort_cpu_sd15.json")


@table("compile_scale_unet", "compile_scale_onnx_unet.json")
def render_compile_scale_unet(results: Path) -> str:
    data = load(results, "compile_scale_onnx_unet.json")
    stages = data["stage_seconds"]
    label = {"load checkpoint": "load checkpoint (3.4 GB safetensors, hashed and read)",
             "reference trajectory (torch)": "reference trajectory in torch (1 prompt, 1 step, guidance: batch 2, 64x64 latents)",
             "unet: export": "export (torch.onnx.export, dynamo)", "unet: passes": "fusionc pass pipeline",
             "unet: lower to onnx": "lowering: save with external data (3.44 GB)",
             "unet: verify on onnx": "verification on onnxruntime"}
    body = [[label.get(k, k), f"{v:.1f}"] for k, v in stages.items()]
    body.append(["**whole compile**", f"**{data['wall_seconds']:.1f}**"])
    load_avg = data.get("load_average_before_after")
    note = f"(load average {load_avg[0]} before, {load_avg[1]} after; " if load_avg else "("
    return (rows(["stage (UNet only, 860M params)", "wall s"], body)
            + f"\n{note}peak RSS {data['peak_rss_bytes'] / 1e9:.2f} GB, UNet PSNR {data['components']['unet']['psnr_db']:.2f} dB;"
            f" benchmarks/results/compile_scale_onnx_unet.json)\n")


@table("compile_scale_notes", "compile_scale_onnx_unet.json", "compile_scale_onnx.json")
def render_compile_scale_notes(results: Path) -> str:
    """The figures quoted around the SD-1.5 compile table: RSS by stage, and the whole pipeline's compile."""
    unet, whole = load(results, "compile_scale_onnx_unet.json"), load(results, "compile_scale_onnx.json")
    by = unet["peak_rss_mb_after_stage"]
    verify = next(v for k, v in by.items() if "verify" in k)
    comps = whole["components"]
    names = [n for n in ("text_encoder", "unet", "vae_decoder") if n in comps]
    sizes = ", ".join(f"{n} {comps[n]['bytes'] / 1e9:.2f} GB" for n in names)
    psnrs = " / ".join(f"{comps[n]['psnr_db']:.1f}" for n in names)
    load_ = whole["load_average_before_after"]
    return (f"UNet only: peak RSS {unet['peak_rss_bytes'] / 1e9:.2f} GB ({verify / 1e3:.2f} GB by the end of "
            f"verification, {by['reference trajectory (torch)'] / 1e3:.2f} GB after the torch reference step); the "
            f"UNet's PSNR against torch is {unet['components']['unet']['psnr_db']:.2f} dB. The whole pipeline ({sizes}) "
            f"compiles in {whole['wall_seconds']:.1f} s at {whole['peak_rss_bytes'] / 1e9:.2f} GB peak RSS (load average "
            f"{load_[0]:.1f} before, {load_[-1]:.1f} after); PSNRs {psnrs} dB "
            "(benchmarks/results/compile_scale_onnx_unet.json, compile_scale_onnx.json).\n")


@table("layout_regression", "layout_regression.json")
def render_layout_regression(results: Path) -> str:
    data = load(results, "layout_regression.json")
    med, ratio = data["median"], data["after_over_before"]
    body = [[f"{side} ({data['revisions'][side][:7]})", f"{med[side]['cpu_seconds']:.1f}",
             f"{med[side]['wall_seconds']:.1f}", f"{med[side]['peak_rss_bytes'] / 1e9:.2f}"]
            for side in ("before", "after")]
    body.append(["after / before", f"{ratio['cpu_seconds']:.3f}", f"{ratio['wall_seconds']:.3f}",
                 f"{ratio['peak_rss_bytes']:.3f}"])
    loads = [r["load_before_after"][0] for side in ("before", "after") for r in data["runs"][side]]
    return (rows(["SD-1.5 UNet onnx compile, median of " + str(len(data["runs"]["after"])), "CPU s", "wall s",
                  "peak RSS GB"], body)
            + f"\n(alternating runs in one session, load average {min(loads):.0f}-{max(loads):.0f}: wall seconds follow"
            " the load, CPU seconds do not; same bytes and PSNR; benchmarks/results/layout_regression.json)\n")


@table("coreml_scale", "coreml_scale.json")
def render_coreml_scale(results: Path) -> str:
    data = load(results, "coreml_scale.json")
    ours, peer, default, executor = data["fusionc"], data["peer"], data["fusionc_ct_default"], data["executor"]
    body = [["fusionc (minimal ct passes)", f"{ours['wall_s']:.1f}", f"{ours['peak_rss_bytes'] / 1e9:.1f}",
             f"{ours['mlpackage_bytes'] / 1e9:.2f}"],
            ["fusionc with ct.convert's default passes", f"{default['wall_s']:.1f}",
             f"{default['peak_rss_bytes'] / 1e9:.1f}", f"{default['mlpackage_bytes'] / 1e9:.2f}"],
            ["coremltools `ct.convert(torch.export.export(unet))` (fp16, iOS17)", f"{peer['wall_s']:.1f}",
             f"{peer['peak_rss_bytes'] / 1e9:.1f}", f"{peer['mlpackage_bytes'] / 1e9:.2f}"]]
    return (rows(["SD-1.5-shaped UNet, random weights, verification excluded", "wall s", "peak RSS GB", ".mlpackage GB"], body)
            + f"\nThe MIL executor runs one batch-{executor['batch']} UNet step in {executor['step_median_s']:.1f} s "
            f"(numpy on 2 cores; a verification tool, not a latency figure), {executor['psnr_vs_torch_fp32_db']:.1f} dB "
            "against torch fp32 (benchmarks/results/coreml_scale.json).\n")


@table("estimate_speed", "estimate_speed.json")
def render_estimate_speed(results: Path) -> str:
    data = load(results, "estimate_speed.json")
    names = {"sd15": "SD-1.5 UNet (860M)", "sdxl": "SDXL UNet (2.6B)"}
    body = []
    for key, run in data.items():
        est = {e["device"]: e for e in run["estimates"]}
        walls = ", ".join(f"{r['wall_s']:.0f}" for r in run["runs"])
        before = run.get("before")
        peer = (f"{before['median_wall_s']:.0f} s, {before['max_rss_gb']:.1f} GB at {before['git_rev']}"
                + ("" if run.get("same_estimates_as_before") else ", other estimates") if before else "-")
        cached = run.get("cache")
        again = (f"{cached['median_wall_s']:.1f} s ({', '.join(f'{w:.1f}' for w in cached['runs'])})"
                 + ("" if cached["same_estimates"] else ", other estimates") if cached else "-")
        if cached and before and before.get("cache"):
            again += f"; {before['cache']['median_wall_s']:.1f} s at {before['git_rev']}"
        body.append([names.get(key, key), f"{run['median_wall_s']:.0f} s ({walls})", f"{run['max_rss_gb']:.1f} GB", peer, again,
                     *(f"{est[d]['latency_ms']:.0f} ms ({est[d]['precision']}, batch {est[d]['batch']})"
                       for d in ("snapdragon-8-gen-3", "iphone-14-pro")), run["git_rev"]])
    return rows(["`fusionc estimate`, config-only folder", "wall, median (runs)", "peak RSS",
                 "same run, previous revision (median)", "again with `--cache`, median (runs)",
                 "Snapdragon 8 Gen 3, one call", "iPhone 14 Pro, one call",
                 "git"], body)


@table("palettize_speed", "palettize_speed.json")
def render_palettize_speed(results: Path) -> str:
    data = load(results, "palettize_speed.json")
    ours, peer = data["fusionc"], data["coremltools"]
    params = data["parameters"] / 1e6
    body = [["coremltools 9.0 `palettize_weights` (kmeans, its exact 1-D DP on np.unique)", f"{peer['seconds']:.1f} s",
             f"{peer['relative_mse']:.5e}"],
            [f"fusionc `passes.lut.palettize` (median of {len(ours['seconds_all'])})",
             f"{ours['seconds_median']:.2f} s ({data['speedup']:.0f}x)",
             f"{ours['relative_mse']:.5e} ({data['mse_ratio']:.4f}x)"],
            ["fusionc, including index packing", f"{ours['seconds_with_packing_median']:.2f} s "
             f"({data['speedup_with_packing']:.0f}x)", ""]]
    if steps := data.get("steps"):  # two steps of the Core ML build, old way -> new way, on the same palettes
        ratios = steps["error_ratio_histogram_to_dense"].values()
        body += [["per-layer error the pass reports: dense decompression + float64 MSE -> the palette's histograms",
                  f"{steps['error_dense_s']:.2f} s -> in `palettize`", f"ratio {min(ratios):.4f}-{max(ratios):.4f}"],
                 ["iOS16 index packing: coremltools `pack_elements_into_bits` -> `lut.packed_indices`",
                  f"{steps['pack_coremltools_s']:.2f} s -> {steps['pack_fusionc_s']:.2f} s", "same bytes"]]
    return rows([f"{len(data['weights'])} largest conv weights of an SD-1.5-shaped UNet ({params:.1f}M params), "
                 f"{data['nbits']} bits, per tensor", "wall time", "relative weight MSE"], body)


@table("compression", "compression.json")
def render_compression(results: Path) -> str:
    data = load(results, "compression.json")
    body = []
    for name, m in data["methods"].items():
        info = m.get("compression") or {}
        bits = info.get("average_bits") or {"int8": 8.0, "int4": 4.0}.get(info.get("dtype"), 16.0)
        calib = m.get("unet_psnr_db_calibration")
        body.append([name, f"{m['unet_bytes'] / 1e6:.2f} MB", f"{bits:.2f}",
                     f"{m['unet_psnr_db']:.1f} dB" + ("" if calib is None else f" ({calib:.1f})"),
                     "-" if m.get("selection_psnr_db") is None else f"{m['selection_psnr_db']:.1f} dB",
                     f"{m['image_psnr_db_median']:.1f} dB"])
    n = len(data["prompts"])
    held_out = "inputs" in data  # measured with the three input sets (else: on the search's own trajectory)
    unet = "UNet PSNR, held out (calibration set)" if held_out else "UNet PSNR (search trajectory, not held out)"
    image = f"image PSNR, {n} held-out prompts (median)" if held_out else f"image PSNR (median of {n})"
    return rows(["method", "UNet bytes", "avg bits", unet, "search's PSNR (selection set)", image], body) + "\n" + \
        source(data, "compression.json")


@table("mixed_bit_heldout", "mixed_bit_heldout.json")
def render_mixed_bit_heldout(results: Path) -> str:
    """Mixed-bit recipes beside uniform 4-bit on held-out prompts: the search's own figure, the compile's held-out
    PSNR, the UNet per row and guided along torch's trajectories (median / worst step), images."""
    data = load(results, "mixed_bit_heldout.json")
    body = []
    for name, r in data["recipes"].items():
        body.append([name, f"{r['unet_average_bits']:.2f}", db(r.get("search_selection_psnr_db")),
                     db(r.get("manifest_psnr_db")), f"{r['row_psnr_db_median']:.1f} / {r['row_psnr_db_min']:.1f}",
                     f"{r['guided_psnr_db_median']:.1f} / {r['guided_psnr_db_min']:.1f}",
                     f"{sum(p['ok'] for p in r['prompts'])} / {len(r['prompts'])}",
                     f"{r['image_psnr_db_median']:.1f} / {r['image_psnr_db_min']:.1f}"])
    head = ["recipe (onnx target)", "avg bits", "search's PSNR (selection set)", "psnr_db (verification set)",
            "UNet per row, median / worst step", "UNet guided, median / worst step", "images agree",
            "image PSNR vs torch, median / min"]
    torch_ok = sum(data["torch"])
    return (rows(head, body) + f"\n({data['n']} held-out prompts and seeds, {data['steps']} steps, guidance "
            f"{data['guidance']:g}; torch agrees on {torch_ok} / {len(data['torch'])}; "
            + source(data, "mixed_bit_heldout.json")[1:])


@table("compression_sd15_mixed", "compression_sd15_mixed.json")
def render_compression_sd15_mixed(results: Path) -> str:
    """The SD-1.5-scale mixed-bit search in one paragraph (time, result, bits per layer, where the time went)."""
    d = load(results, "compression_sd15_mixed.json")
    sec, search = d["seconds"], d["search"]
    per_bits = ", ".join(f"{n} {'left in fp16' if b == '16' else f'at {b}'}" for b, n in d["layers_per_bits"].items())
    rounds = search.get("rounds") or []
    subset = sum(1 for r in rounds if r["inputs"] < d["trajectory_inputs"])
    return (f"The search took {sec['search_s']:.0f} s ({sec['search_s'] / 60:.1f} min; {sec['search_cpu_s']:.0f} s of CPU) "
            f"for auto:{d['target_db']:g} -> {d['measured_psnr_db']:.1f} dB on all {d['trajectory_inputs']} inputs at "
            f"{d['average_bits']:.2f} average bits ({per_bits}). Of that, {search['groups']} module-group probes took "
            f"{search['seconds_probes']:.0f} s at {search['seconds_per_inference']:.1f} s per batch-1 inference, and the "
            f"rest went to {subset} rounds on a 2-input subset plus {len(rounds) - subset} on the whole trajectory. "
            f"Export ({sec['export_s']:.0f} s) and the torch trajectory ({sec['trajectory_s']:.0f} s) come before it. "
            "(Measured with the per-row search on its own trajectory, before the three input sets and the guided "
            "judgement; benchmarks/results/compression_sd15_mixed.json.)\n")


@table("coreml_psnr", "coreml_psnr.json")
def render_coreml_psnr(results: Path) -> str:
    d = load(results, "coreml_psnr.json")
    held_out = "verification" in d  # measured with the three input sets (else: before them)
    out = []
    for palettize in sorted({r.get("palettize") for r in d["rows"]}, key=lambda x: x or ""):
        rows_ = [r for r in d["rows"] if r.get("palettize") == palettize]
        worst = min(rows_, key=lambda r: r["psnr_db"])
        gaps = [r["psnr_db_calibration"] - r["psnr_db"] for r in rows_ if r.get("psnr_db_calibration") is not None]
        out.append(f"{'fp16' if not palettize else f'{palettize}-bit palettized (fp16 compute)'}: every component of "
                   f"{len({r['family'] for r in rows_})} tiny families ({', '.join(sorted({r['family'] for r in rows_}))}), "
                   f"attention {', '.join(sorted({r['attention'] for r in rows_}))}, verifies at >= {worst['psnr_db']:.1f} dB "
                   f"({len(rows_)} components; worst: {worst['family']} {worst['component']}, {worst['attention']})"
                   + (f"; calibration-set minus held-out PSNR {min(gaps):+.1f} to {max(gaps):+.1f} dB" if gaps else "")
                   + ".")
    when = (f"held out: {d['verification']['prompts']} prompt x {d['verification']['steps']} steps per build"
            if held_out else "measured before the three input sets")
    return (" ".join(out) + f" The gate is {d['gate_db']:g} dB ({when}; " + source(d, "coreml_psnr.json")[1:])


@table("qnn_scale", "qnn_scale_w8a16.json")
def render_qnn_scale(results: Path) -> str:
    """The SD-1.5-shaped QNN W8A16 compile in one paragraph; its PSNR is labelled for what it is."""
    d = load(results, "qnn_scale_w8a16.json")
    q, load_ = d["qnn_seconds"], d["load_average_before_after"]
    rem = d.get("remedies") or {}
    psnr = rem.get("final_db")
    return (f"whole compile {d['wall_seconds']:.0f} s wall (load, torch trajectory and export included; load average "
            f"{load_[0]:.1f} before, {load_[-1]:.1f} after), of which calibration with {d['calibration_samples']} inputs "
            f"{q['calibrate_s']:.0f} s, one fake-quant check {q['remedies_s']:.0f} s, quantization {q['quantize_s']:.0f} s, "
            f"HTP context build {q['context_build_s']:.0f} s; peak RSS {d['peak_rss_bytes'] / 1e9:.1f} GB; context binary "
            f"{d['context_bin_bytes'] / 1e9:.2f} GB (goal: <= {d['goal']['seconds'] / 60:.0f} min, <= "
            f"{d['goal']['peak_rss_bytes'] / 2 ** 30:.0f} GiB). Its only PSNR, {psnr:.1f} dB, is CPU fake-quant on the "
            f"{d['calibration_samples']} calibration inputs themselves (the build ran with --no-verify, before the three "
            "input sets): not a held-out figure, and not the HTP's.\n")


@table("qnn_accuracy", "qnn_accuracy.json")
def render_qnn_accuracy(results: Path) -> str:
    data = load(results, "qnn_accuracy.json")
    ours, stock = data["fusionc"], data.get("stock_onnxruntime", {})

    def cell(precision: str, name: str) -> str:
        entry = ours.get(precision, {}).get(name) or {}
        held, calib = entry.get("htp_db"), entry.get("calibration_db")
        return db(held) + ("" if calib is None else f" ({db(calib)})")

    def stock_cell(precision: str, name: str, cpu: bool) -> str:
        entry = stock.get(precision, {}).get(name) or {}
        return db(entry.get("htp_db")) + (f" ({db(entry.get('cpu_fake_quant_db'))})" if cpu else "")

    names = [n for n in ("text_encoder", "unet", "vae_decoder") if n in ours.get("w8a16", {})]
    body = [[n, stock_cell("w8a16", n, True), cell("w8a16", n), stock_cell("w8a8", n, False), cell("w8a8", n),
             cell("fp16", n)] for n in names]
    held_out = "inputs" in data
    suffix = ", held out (calibration set)" if held_out else " (not held out)"
    stock = ", held out (CPU fake-quant)" if held_out else " (CPU fake-quant)"
    sets = ""
    if held_out:
        sets = "; ".join(f"{role}: {len(s['prompts'])} prompts x {s['steps']} steps, seeds {', '.join(map(str, s['seeds']))}"
                         for role, s in data["inputs"].items()) + "\n"
    return rows(["component", "stock w8a16" + stock, "fusionc w8a16" + suffix, "stock w8a8" + (", held out" if held_out else ""),
                 "fusionc w8a8" + suffix, "fusionc fp16" + suffix], body) + "\n" + (f"({sets.strip()})\n" if sets else "") \
        + source(data, "qnn_accuracy.json")


@table("qnn_families", "qnn_families.json")
def render_qnn_families(results: Path) -> str:
    data = load(results, "qnn_families.json")
    short = {"text_encoder": "TE", "text_encoder_2": "TE2", "unet": "UNet", "vae_decoder": "VAE"}
    precisions = ["w8a16", "w8a8", "fp16"]
    body = []
    for family, by_precision in data["results"].items():
        row = [family]
        for precision in precisions:
            result = by_precision.get(precision)
            if result is None or result.get("error"):
                row.append("error" if result else "-")
                continue
            comps = {n: c for n, c in result["components"].items() if c.get("htp_db") is not None}
            worst = min(comps, key=lambda n: comps[n]["htp_db"])
            gap = [c["calibration_db"] - c["htp_db"] for c in comps.values() if c.get("calibration_db") is not None]
            row.append(f"{comps[worst]['htp_db']:.1f} ({short.get(worst, worst)})"
                       + (f", gap {max(gap):+.1f}" if gap else ""))
        body.append(row)
    note = ("worst component on the held-out verification set; gap: the largest calibration-set minus held-out PSNR "
            "of the row's components; " if "inputs" in data
            else "measured before the held-out input sets: calibration inputs were verified on; ")
    return rows(["family"] + precisions, body) + "\n" + (f"({note.rstrip('; ')})\n" if note else "") + \
        source(data, "qnn_families.json")


@table("qnn_accuracy_summary", "qnn_accuracy.json")
def render_qnn_accuracy_summary(results: Path) -> str:
    """The prose under the QNN accuracy table: stock's CPU -> HTP gaps, fusionc's HTP vs CPU fake-quant."""
    data = load(results, "qnn_accuracy.json")
    stock = data.get("stock_onnxruntime", {}).get("w8a16", {})
    gaps = [f"{n} {e['cpu_fake_quant_db']:.1f} -> {e['htp_db']:.1f}" for n, e in stock.items()
            if e.get("cpu_fake_quant_db") is not None and e["cpu_fake_quant_db"] - e["htp_db"] > 3]
    diffs = [(abs(e["cpu_fake_quant_db"] - e["htp_db"]), p, n, e) for p, by in data["fusionc"].items()
             if isinstance(by, dict) for n, e in by.items()
             if isinstance(e, dict) and e.get("cpu_fake_quant_db") is not None and e.get("htp_db") is not None]
    worst = max(diffs, key=lambda d: d[0])
    where = " (both on the held-out verification set)" if "inputs" in data else ""
    return (f"Stock w8a16 on the CPU vs the HTP (dB): {', '.join(gaps) or 'no gap over 3 dB'}. fusionc's graphs run on "
            f"the HTP within {worst[0]:.1f} dB of their CPU fake-quant{where}; largest: {worst[2]} {worst[1]}, "
            f"{worst[3]['cpu_fake_quant_db']:.1f} on the CPU, {worst[3]['htp_db']:.1f} on the HTP.\n")


@table("qnn_families_summary", "qnn_families.json")
def render_qnn_families_summary(results: Path) -> str:
    """The prose under the QNN families table: how many builds clear the gate, ranges per precision, HTP vs CPU."""
    data = load(results, "qnn_families.json")
    gate = data.get("gate_db", 35.0)
    comps = [(p, n, c, r) for by in data["results"].values() for p, r in by.items() if not r.get("error")
             for n, c in r["components"].items() if c.get("htp_db") is not None]
    clear = sum(c["htp_db"] >= gate for _, _, c, _ in comps)

    def span(precision: str) -> str:
        vals = [c["htp_db"] for p, n, c, _ in comps if p == precision and n in ("unet", "vae_decoder")]
        return f"{min(vals):.1f}-{max(vals):.1f} dB" if vals else "-"

    diff = [c["htp_db"] - c["cpu_fake_quant_db"] for _, _, c, _ in comps if c.get("cpu_fake_quant_db") is not None]
    seconds = {p: [r["compile_s"] for by in data["results"].values() for q, r in by.items() if q == p and r.get("compile_s")]
               for p in ("w8a16", "w8a8", "fp16")}
    times = ", ".join(f"{p} {min(v):.0f}-{max(v):.0f} s" for p, v in seconds.items() if v)
    where = " on the held-out verification set" if "inputs" in data else ""
    return (f"{clear} of {len(comps)} component builds clear {gate:.0f} dB{where}. UNets and VAE decoders measure {span('w8a8')} in "
            f"w8a8 and {span('w8a16')} in w8a16; HTP and CPU fake-quant agree within {max(abs(d) for d in diff):.1f} dB "
            f"(HTP minus CPU from {min(diff):+.1f} to {max(diff):+.1f} dB). Compiles took {times} each, "
            f"{data.get('threads', '?')} thread(s).\n")


@table("qnn_cpu_check", "qnn_cpu_check.json")
def render_qnn_cpu_check(results: Path) -> str:
    """The CPU QDQ check against the HTP emulator on the same builds: per pipeline and precision, the largest gap."""
    data = load(results, "qnn_cpu_check.json")
    precisions = list(data["results"])
    body = []
    for name in dict.fromkeys(n for by in data["results"].values() for n in by):
        cells = [name]
        for precision in precisions:
            row = data["results"][precision].get(name)
            if row is None or "error" in row:
                cells.append("not run" if row is None else "failed")
                continue
            worst = max(row["components"].items(), key=lambda kv: abs(kv[1]["gap_db"]))
            cells.append(f"{worst[1]['gap_db']:+.2f} ({worst[0]}: {worst[1]['htp_db']:.1f} HTP)")
        body.append(cells)
    lines = [rows(["pipeline", *(f"{p}: largest CPU - HTP gap, dB" for p in precisions)], body)]
    for precision, summary in data.get("summary", {}).items():
        gaps = [c["gap_db"] for r in data["results"][precision].values() for c in r.get("components", {}).values()]
        lines.append(f"{precision}: {summary['components']} components, CPU minus HTP median {summary['median_gap_db']:+.2f} dB, "
                     f"from {summary['min_gap_db']:+.2f} to {summary['max_gap_db']:+.2f} dB; "
                     f"{sum(abs(g) <= 0.3 for g in gaps)} within 0.3 dB, {summary['within_1db']} within 1 dB, "
                     f"{summary['cpu_higher_by_over_0_5db']} where the CPU figure is over 0.5 dB higher.\n")
    return "\n".join(lines) + "\n" + source(data, "qnn_cpu_check.json")


@table("costmodel", "backends.json")
def render_costmodel(results: Path) -> str:
    data = load(results, "backends.json")
    body = []
    for point in data["cost_model"]["calibration"]:
        what = f"{point['graph']} (batch {point['batch']}" + (f", {point['weight_bits']}-bit" if point.get("weight_bits")
                                                              else "") + ")"
        body.append([point["device"], point["role"], what, point["source"], ms(point["latency_ms"]),
                     ms(point["estimate_ms"]), f"{round(point['error'] * 100):+d}%"])
    return rows(["device", "role", "figure", "source", "published", "estimate", "error"], body, right={4, 5, 6}) + \
        "\n" + source(data, "backends.json")


@table("prompt_check", "prompt_check.json")
def render_prompt_check(results: Path) -> str:
    """Agreement per recipe beside torch's; image PSNR against torch; the build's component PSNRs (held out)."""
    from prompt_check import RECIPES

    return _render_prompt_check(results, "prompt_check.json", tuple(RECIPES))


@table("prompt_check_sd3", "prompt_check_sd3.json")
def render_prompt_check_sd3(results: Path) -> str:
    """The same check of the built-in diffusion transformer (`builtin:sd3`), on the recipes its transformer takes."""
    from prompt_check import DIT_RECIPES, RECIPES

    return _render_prompt_check(results, "prompt_check_sd3.json", tuple(r for r in RECIPES if r in DIT_RECIPES))


def _render_prompt_check(results: Path, filename: str, recipe_names: tuple[str, ...]) -> str:
    data = load(results, filename)
    torch = data["torch"]

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x * 100:.0f}%"

    body = [["torch (fp32 reference)", pct(torch["accuracy"]), pct(torch["colour"]), pct(torch["shape"]),
             pct(torch["position"]), "", "", ""]]
    recipes = data.get("recipes")
    if recipes is None and "build" in data:  # the format before every recipe was checked: one onnx build
        recipes = {data["build"].get("target", "onnx"): data["build"]}
    short = {"text_encoder": "TE", "text_encoder_2": "TE2", "unet": "UNet", "transformer": "DiT", "vae_decoder": "VAE"}
    if "recipes" in data:  # every recipe of the check, measured or not
        recipes = {**{name: recipes[name] for name in recipe_names if name in recipes},
                   **{name: {"not_run": True} for name in recipe_names if name not in recipes}}
    for name, r in (recipes or {}).items():
        if r.get("not_run"):
            body.append([name, "not run in this measurement", "", "", "", "", "", ""])
            continue
        if r.get("error"):
            body.append([name, "error: " + r["error"][:60], "", "", "", "", "", ""])
            continue
        relative = r.get("relative_agreement")
        comps = r.get("component_psnr_db") or {}
        worst = min(comps, key=lambda n: comps[n] if comps[n] is not None else 1e9) if comps else None
        if r.get("partial"):  # a run cut short: the prompts it reached, agreement relative to torch's on those
            name = f"{name} (first {r['measured_prompts']} of {data['n']} prompts)"
        body.append([name, pct(r["accuracy"]), pct(r["colour"]), pct(r["shape"]), pct(r["position"]),
                     pct(relative), f"{r['image_psnr_db_median']:.1f} / {r['image_psnr_db_min']:.1f}",
                     f"{comps[worst]:.1f} ({short.get(worst, worst)})" if worst else "-"])
    head = ["run", "all three agree", "colour", "shape", "position", "of torch's agreement",
            "image PSNR vs torch, median / min (dB)", "worst component PSNR, held out (dB)"]
    held_out = "" if "recipes" in data else "training's check prompts, not held out; "
    revisions = sorted({r["git_revision"][:10] for r in (recipes or {}).values() if r.get("git_revision")})
    if len(revisions) > 1:  # recipes kept from earlier runs: each was measured at its own revision
        held_out += f"recipes measured at git {', '.join(revisions)}; "
    goal = data.get("relative_goal", 0.95)
    below = []
    for name, r in (recipes or {}).items():  # the recipes under the goal, and the prompts they lost
        if r.get("relative_agreement") is not None and r["relative_agreement"] < goal:
            lost = [p["prompt"] for p in r.get("prompts", []) if not p["ok"]]
            below.append(f"{name} ({len(lost)} lost: {'; '.join(lost[:6])}{'; ...' if len(lost) > 6 else ''})")
    verdict = (f"Under the goal ({goal:.0%} of torch's agreement): {', '.join(below)}.\n" if below
               else f"Every measured recipe keeps >= {goal:.0%} of torch's agreement.\n")
    return (rows(head, body, right=set(range(1, 8)))
            + f"\n({data['n']} prompts, {data['steps']} steps, guidance {data['guidance']:g}; {held_out}"
            + source(data, filename)[1:] + "\n" + verdict)


# the cost model fitted on AI Hub's published latencies (benchmarks/costmodel_fit.py): held-out errors per chipset
CHIP_NAMES = {"snapdragon-8-gen-2": "Snapdragon 8 Gen 2", "snapdragon-8-gen-3": "Snapdragon 8 Gen 3",
              "snapdragon-8-elite": "Snapdragon 8 Elite (for Galaxy)", "snapdragon-8-elite-gen-5": "Snapdragon 8 Elite Gen 5",
              "snapdragon-7-gen-4": "Snapdragon 7 Gen 4", "snapdragon-x-elite": "Snapdragon X Elite"}
GOAL_MEDIAN, GOAL_P90 = 0.15, 0.40  # issue 17: per chipset, on held-out models
ENOUGH_ROWS = 20  # fewer held-out rows than this on a chipset: its percentiles are not judged against the goal
SPEED_TEXT = {"chipset": "one speed per chipset", "group": "one speed per chipset x precision x runtime",
              "class": "one speed per chipset x precision x runtime, split per op class"}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _goal(e: dict[str, Any]) -> str:
    if e["n"] < ENOUGH_ROWS:
        return f"too few rows to judge (< {ENOUGH_ROWS})"
    met = [e["median_abs"] <= GOAL_MEDIAN, e["p90_abs"] <= GOAL_P90]
    return "met" if all(met) else "median met, p90 not" if met[0] else "p90 met, median not" if met[1] else "not met"


def _toolchain_gap(gap: dict | None, widened: float = 1.1) -> str:
    """The cost-model JSON's toolchain_gap as sentences: same-release vs fitted 8 Gen 2 / 8 Gen 3 ratios."""
    if not gap or not gap.get("pairs"):
        return ""
    moved = lambda factor: f"{round(100 * (factor - 1)):+d}%"  # noqa: E731 - no "-0%"
    kinds = "; ".join(f"{k}-dominated {v['median_same_release_ratio']:.2f}x at one release vs {v['median_fitted_ratio']:.2f}x "
                      f"fitted, the 8 Gen 3's own figure moving {moved(v['median_gen_3_change'])} and the 8 Gen 2's "
                      f"{moved(v['median_gen_2_change'])} since ({v['n']} keys)"
                      for k, v in gap["by_dominant_mac_kind"].items())
    wide = [e for e in gap["held_out"] if e["fitted_ratio"] > widened * e["same_release_ratio"]]
    listed = ", ".join(f"{e['key'].split('/')[0]} {e['precision']} {e['same_release_ratio']:.2f}x -> "
                       f"{e['fitted_ratio']:.2f}x (8 Gen 3 {moved(e['gen_3_change'])}, 8 Gen 2 "
                       f"{moved(e['gen_2_change'])})" for e in wide)
    return (f" The toolchain is part of the gap: the fitted rows time the 8 Gen 2 at v0.37.1 (QAIRT 2.37) and the 8 Gen 3"
            f" at v0.46.1 (2.42); on the {gap['pairs']} model x precision x runtime keys an older release timed on both "
            f"chipsets (median: {kinds}). Held-out keys whose fitted ratio is more than {widened:.1f}x the same-release "
            f"one: {listed or 'none'}.")


def _release_control(control: dict | None) -> str:
    """The cost-model JSON's same_release_control as a sentence: the 8 Elite at the 8 Gen 2's release, same keys."""
    if not control or not control.get("rows"):
        return ""
    same = control["held_out_qnn_same_keys"]
    cell = lambda e: f"{_pct(e['median_abs'])} / {_pct(e['p90_abs'])}, median signed {e['median_signed']:+.0%}" \
        if e.get("n") else "-"  # noqa: E731
    releases = ", ".join(label.removesuffix(" ?") for label in control["releases"])
    return (f" A control separates the release from the chipset: AI Hub timed the 8 Elite (its QRD) at the 8 Gen 2's "
            f"releases too ({releases}; {control['rows']} rows). Fitted as a chipset of its own on its training rows "
            f"there, the chosen model misses the 8 Gen 2's held-out keys about as it misses the 8 Gen 2's "
            f"({same['8_elite_at_8_gen_2_release']['n']} rows, median / p90 |error|: 8 Elite at those releases "
            f"{cell(same['8_elite_at_8_gen_2_release'])}; 8 Gen 2 {cell(same['8_gen_2'])}; 8 Elite at the current "
            f"release {cell(same['8_elite_current_release'])}).")


def _sd_tables(title: str, predictions: list[dict], compared: Any, compared_how: str = "Compared only afterwards") -> str:
    """A set of SD-1.5 W8A16 predictions per chipset, and their comparison with the published figures."""
    out = [title + ":\n\n"]
    body = []
    for chip, name in CHIP_NAMES.items():
        got = {p["component"]: p for p in predictions if p["chipset"] == chip and p["precision"] == "w8a16"}
        if got:
            body.append([name] + [f"{ms(got[c]['predicted_ms'])} ({got[c]['bound']})" if c in got else "-"
                                  for c in ("text_encoder", "unet", "vae_decoder")])
    out.append(rows(["chipset", "text encoder (bound)", "UNet (bound)", "VAE decoder (bound)"], body))
    if isinstance(compared, list) and compared:
        out.append(f"\n{compared_how} with AI Hub's published SD-1.5 W8A16 figures (8 Elite: AI Hub's 8 Elite QRD "
                   "figure against our 8 Elite for Galaxy coefficients):\n\n")
        out.append(rows(["chipset", "component", "published", "predicted", "error"],
                        [[CHIP_NAMES.get(c["chipset"], c["chipset"]), c["component"], ms(c["published_ms"]),
                          ms(c["predicted_ms"]), f"{c['error']:+.0%}"] for c in compared]))
    beyond = {p["component"]: p["outside_training"] for p in predictions if p.get("outside_training")}
    if beyond:  # the same graph on every chipset: the range is per precision
        out.append("\nBeyond every training graph (W8A16; `fusionc estimate` prints the same line): "
                   + "; ".join(f"{c}: {', '.join(why)}" for c, why in beyond.items()) + ".\n")
    return "".join(out)


def _sd_same_release(same: Any) -> str:
    """The pre-registered and this fit's SD predictions against AI Hub's figures at the fitted rows' release."""
    if not isinstance(same, dict) or not same.get("this_fit"):
        return ""
    pre = {(p["component"], p["chipset"]): p for p in same["preregistered"]}
    body = [[CHIP_NAMES.get(p["chipset"], p["chipset"]), p["component"], ms(p["published_ms"]),
             (f"{ms(pre[k]['predicted_ms'])} ({pre[k]['error']:+.0%})" if (k := (p["component"], p["chipset"])) in pre
              else "-"), f"{ms(p['predicted_ms'])} ({p['error']:+.0%})"] for p in same["this_fit"]]
    layers = "; ".join(f"{c.replace('_', ' ')} {v['aihub_qnn_layers']:,} layers against our graph's {v['our_ops']:,} ops"
                       for c, v in same["layers"].items() if v.get("our_ops"))
    return (f"\nThe figures above are from an older AI Hub release than the fitted rows. At the fitted rows' own release "
            f"({same['source']}; every chipset above but the 8 Gen 2, which that release no longer has), read only "
            f"after both sets of predictions were committed:\n\n"
            + rows(["chipset", "component", "published", f"pre-registered ({(same['preregistered_commit'] or '?')[:7]})",
                    "this fit"], body)
            + f"\nAI Hub's QNN layer counts for these graphs: {layers} (the UNet in AI Hub's form: "
              f"{same['our_ops_unet_aihub_form']:,} ops).\n")


def _sd_aihub_form(form: dict) -> str:
    """The SD UNet in AI Hub's form, predicted after the comparison: does the graph's form explain the miss?"""
    if not form.get("predictions"):
        return ""
    compared = [p for p in form["predictions"] if "published_ms" in p]
    if not compared:  # a fit run with --no-compare-sd
        return ""
    ref = next((p for p in compared if p["chipset"] == "snapdragon-8-gen-3"), compared[0])
    beyond = form["training_graphs_scores_beyond_local_memory"]
    trained = ", ".join(f"{k.split('/')[1]} ({v['largest_scores_mib']:.0f} MiB, cross-validated "
                        f"{v['cv_qnn']['median_signed']:+.0%})" if v["cv_qnn"].get("n") else
                        f"{k.split('/')[1]} ({v['largest_scores_mib']:.0f} MiB, no QNN row)" for k, v in beyond.items())
    fastest = max((v["cv_qnn"]["median_signed"] for v in beyond.values() if v["cv_qnn"].get("n")), default=0.0)
    body = [[CHIP_NAMES.get(p["chipset"], p["chipset"]), ms(p["fusionc_graph_predicted_ms"]), ms(p["predicted_ms"]),
             ms(p["spill_ms"]), ms(p["published_ms"]), f"{p['error']:+.0%}"] for p in compared]
    return ("\nDoes the UNet's miss come from the graph AI Hub timed? (Asked after the comparison above was known; "
            "nothing is fitted or chosen on it.) AI Hub times its adaptation of the diffusers UNet, not the module itself: "
            "split-head attention, NCHW transformer blocks, 1x1 convolutions (`benchmarks/aihub_adapted.py`, "
            "`adapt_sd_unet`, the same function to 2e-6). Rebuilt that way (`latency_graphs.py`) and predicted by the "
            "shipped model, W8A16:\n\n"
            + rows(["chipset", "fusionc's UNet graph", "AI Hub's form", "of which spilled activations", "published",
                    "error (AI Hub's form)"], body)
            + f"\nThe form does not explain it: AI Hub's form is predicted slower still. The model charges it for "
              f"{form['spill_mb'] / 1e3:.1f} GB of activations beyond the local memory ({form['spill_mb_fusionc_graph'] / 1e3:.1f} GB "
              f"in fusionc's graph), mostly the 64x64 latent's per-head [4096, 4096] score tensors (32 MiB each, through a MatMul, the scale's Mul "
              f"and the Softmax); written "
              f"and read back once at the {CHIP_NAMES.get(ref['chipset'], ref['chipset'])}'s DRAM bandwidth that alone "
              f"takes {ref['spill_at_dram_bandwidth_ms']:.0f} ms, more than the {ms(ref['published_ms'])} AI Hub "
              f"publishes for the whole UNet. So on the device most of these scores cannot go through DRAM (the NPU "
              f"presumably keeps each head's QK^T, softmax and V product in local memory, tile by tile), and no "
              f"training graph "
              f"shows that: the only ones whose attention scores exceed the local memory are multi-head ({trained}), "
              f"and none runs more than {max(fastest, 0):.0%} faster than the model predicts.\n")


def _runtime_factors(factors: dict) -> str:
    """The sentence on each runtime estimated as another runtime's figure times a measured factor."""
    cv = factors.get("cv_score_training", {})
    out = []
    for rt, f in factors.items():
        if not isinstance(f, dict) or "factor" not in f:
            continue
        span = f"; {f['ratio_range'][0]:.2f}-{f['ratio_range'][1]:.2f}x" if f.get("ratio_range") else ""
        held, without = f["held_out"], f["held_out_without_factor"]
        published, converted = cv.get("rows as published (shipped)"), cv.get("rows converted by the factor")
        out.append(f"\n{rt} rows are estimated as {f['relative_to']} x {f['factor']:.2f}: the median ratio of the "
                   f"{f['pairs']} training pairs that time one graph both ways on one chipset with the same layer count "
                   f"({', '.join(f['models']) or 'none'}{span}). Held out, {rt}: median / p90 |error| "
                   f"{_pct(held.get('median_abs'))} / {_pct(held.get('p90_abs'))} with the factor, "
                   f"{_pct(without.get('median_abs'))} / {_pct(without.get('p90_abs'))} without it ({held['n']} rows of "
                   f"{held.get('models', '?')} models, the same coefficients). Every {rt} row in the data, training "
                   f"and held out, is of {', '.join(f.get('models_timed', [])) or '?'}: the factor is checked on "
                   "those only, and any other graph (a diffusion UNet) gets it untested. Cross-validation grouped by "
                   "model family cannot test it either (a fold that holds out the pairs' family has no pair to measure "
                   "it on); it only shows what dividing those training rows by the factor does to the other models' fit"
                   + (f": {converted:.2f} vs {published:.2f} with the rows as published (shipped; lower is better)"
                      if published is not None and converted is not None else "") + ".\n")
    return "".join(out)


@table("costmodel_fit", "costmodel_fit.json")
def render_costmodel_fit(results: Path) -> str:
    data = load(results, "costmodel_fit.json")
    split, held, sel = data["split"], data["held_out"], data["selection"]
    chosen = sel["chosen"]
    terms = ", ".join(data["model"]["features"])
    out = [f"Held out: {len(split['held_out_models'])} models ({', '.join(split['held_out_models'])}), "
           f"{split['rows_held_out']} published rows; fitted on {len(split['train_models'])} models "
           f"({split['rows_train']} rows). |error| = |estimate / published - 1|. Model chosen by cross-validation over "
           f"the training models only ({sel['rule']}): terms {terms}; local memory {chosen['vtcm_mb']} MB; per-chipset "
           f"refit {'none (pooled fit x chipset speed)' if chosen.get('ridge_to_pooled', 0.05) is None else 'ridge ' + str(chosen.get('ridge_to_pooled', 0.05))}; "
           f"weight bytes {'floored at the DRAM bandwidth' if chosen.get('floor_weights') else 'fitted freely (the DRAM-bandwidth floor scored worse)'}; "
           + (f"per-kind extra MAC costs {'pulled towards 0 in the pooled fit (ridge ' + str(chosen['extra_ridge']) + ' ms/GMAC)' if chosen['extra_ridge'] else 'fitted freely in the pooled fit (no pull towards 0)'}; "
              if "extra_ridge" in chosen else "") +
           f"generation scaling {SPEED_TEXT.get(chosen.get('speed_mode', 'chipset'), chosen.get('speed_mode'))} "
           f"({len(sel['candidates'])} candidates compared)"
           + (f"; then, per chipset, its own coefficients or the 8 Gen 3's scaled by its speed (cross-validated the "
              f"same way): {', '.join(CHIP_NAMES.get(c, c) for c in anc['anchored']) or 'none'} "
              f"{'takes' if len(anc['anchored']) == 1 else 'take'} the 8 Gen 3's ("
              + "; ".join(f"{CHIP_NAMES.get(c, c)} {v['score_own']:.2f} own vs {v['score_anchored']:.2f} anchored"
                          for c, v in anc["by_chipset"].items()) + ")"
              if (anc := sel.get("anchoring")) else "") + ".\n\n"]
    body = []
    cv = {}
    for c in sel["candidates"]:
        if all(c[k] == chosen[k] for k in chosen if k != "score"):
            cv = c["by_chipset_qnn"]
    in_sample = data["train"].get("in_sample_by_chipset_qnn", {})
    interval = data["model"].get("interval")
    coverage = held.get("interval_coverage_qnn", {})
    resampled = held.get("bootstrap_by_chipset_qnn", {})
    earlier = held.get("by_chipset_qnn_earlier_models", {})
    spread = lambda b: (f"{_pct(b['median_abs_5_95'][0])}-{_pct(b['median_abs_5_95'][1])} / "  # noqa: E731
                        f"{_pct(b['p90_abs_5_95'][0])}-{_pct(b['p90_abs_5_95'][1])}" if "resamples" in b else "-")
    for chip, name in CHIP_NAMES.items():
        e = held["by_chipset_qnn"].get(chip, {"n": 0})
        if not e["n"]:
            continue
        c, fitted = cv.get(chip, {}), in_sample.get(chip, {})
        factors = interval["by_chipset"].get(chip, interval["pooled"]) if interval else None
        band = (f"{factors[0]:.2f}-{factors[1]:.2f}x, holds {coverage[chip]['inside']:.0%}"
                if factors and coverage.get(chip, {}).get("n") else "-")
        before = earlier.get(chip, {"n": 0})
        body.append([name, e["n"], e["models"], _pct(e["median_abs"]), _pct(e["p90_abs"]), _goal(e),
                     *([f"{_pct(before['median_abs'])} / {_pct(before['p90_abs'])} ({before['n']} rows)"
                        if before["n"] else "-"] if earlier else []),
                     *([spread(resampled.get(chip, {}))] if resampled else []),
                     f"{_pct(c.get('median_abs'))} / {_pct(c.get('p90_abs'))}",
                     f"{_pct(fitted.get('median_abs'))} / {_pct(fitted.get('p90_abs'))}" if fitted.get("n") else "-",
                     band])
    out.append(rows(["chipset (QNN: context binary + DLC)", "held-out rows", "models", "median abs error",
                     "p90 abs error", "goal (<= 15% / <= 40%)",
                     *(["the 24 models held out before 2026-12-08 only (median / p90)"] if earlier else []),
                     *(["had other models been held out: median / p90, 5th-95th percentile (held-out models "
                        "resampled)"] if resampled else []),
                     "cross-validated on training models (median / p90)",
                     "fitted, on its own training rows (median / p90)",
                     f"{interval['coverage']:.0%} range of an estimate, share of held-out rows inside" if interval
                     else "range"],
                    body, right={1, 2, 3, 4}))
    judged = [c for c in CHIP_NAMES if in_sample.get(c, {}).get("n", 0) >= ENOUGH_ROWS]
    missed = [CHIP_NAMES[c] for c in judged if in_sample[c]["p90_abs"] > GOAL_P90]
    if judged:
        out.append(f"\nFitted on its own rows, the model's p90 still misses {GOAL_P90:.0%} on "
                   f"{', '.join(missed) or 'no chipset'} ({len(missed)} of {len(judged)} chipsets with {ENOUGH_ROWS}+ "
                   "training rows): these terms cannot follow even the rows they were fitted on to the goal's p90, "
                   "so what is missing is in the terms (what the graphs tell the model), not in how they are fitted.")
    if resampled:
        n = next(iter(resampled.values())).get("resamples")
        out.append(f" The resampled column draws the held-out models with replacement ({n} draws, each model with all its "
                   f"rows) and re-takes the median and p90: with ~{len(data['split']['held_out_models'])} held-out "
                   "models a chipset's figures move this much "
                   "with which models happened to be held out, so two fits whose figures differ by less are not told "
                   "apart by this split.")
    if interval:
        out.append(f" `fusionc estimate` and `bench` give each Hexagon estimate a range: published / estimated "
                   f"between the {100 * (1 - interval['coverage']) / 2:g}th and "
                   f"{100 * (1 + interval['coverage']) / 2:g}th percentiles of the cross-validated training rows "
                   f"(the last column checks it on the held-out models).")
    out.append("\n")
    runtimes = [rt for rt in ("QNN_CONTEXT_BINARY", "QNN_DLC", "QNN", "PRECOMPILED_QNN_ONNX", "ONNX", "TFLITE")
                if any(held["by_chipset_runtime"].get(f"{c}|{rt}", {"n": 0})["n"] for c in CHIP_NAMES)]
    body = []
    for chip, name in CHIP_NAMES.items():
        cells = []
        for rt in runtimes:
            e = held["by_chipset_runtime"].get(f"{chip}|{rt}", {"n": 0})
            cells.append("-" if not e["n"] else f"{_pct(e['median_abs'])} / {_pct(e['p90_abs'])} ({e['n']}"
                         + (", met" if _goal(e) == "met" else ", too few" if e["n"] < ENOUGH_ROWS else ", not met")
                         + ")")
        body.append([name] + cells)
    out.append("\nPer chipset and runtime (held out: median / p90 |error| (rows, goal)):\n\n")
    out.append(rows(["chipset"] + runtimes, body))
    others = [[chip, e["n"], e["models"], _pct(e["median_abs"]), _pct(e["p90_abs"])]
              for chip, e in held["by_chipset_qnn"].items() if chip not in CHIP_NAMES and e["n"]]
    out.append("\nAutomotive and IoT chipsets (no phone or laptop ships them):\n\n")
    out.append(rows(["chipset (QNN)", "held-out rows", "models", "median abs error", "p90 abs error"], others))
    body = [[rt, e["n"], e["models"], _pct(e["median_abs"]), _pct(e["p90_abs"])]
            for rt, e in held["by_runtime"].items() if e["n"]]
    out.append("\n")
    out.append(rows(["runtime (all chipsets)", "held-out rows", "models", "median abs error", "p90 abs error"], body))
    out.append(_runtime_factors(data.get("runtime_factors") or {}))
    t = data["train"]["all"]
    off = data["excluded"]["rows_off_npu"]
    out.append(f"\nOn its own training rows (all runtimes): median {t['median_abs']:.0%}, p90 {t['p90_abs']:.0%}. Not "
               f"modelled: {off['n']} rows that ran wholly on the CPU or GPU ({', '.join(f'{k} {v}' for k, v in off['by_runtime'].items())}). "
               + (f"Left out: {', '.join(data['excluded']['graphs'])} (rebuilt graph is not the published model). "
                  if data["excluded"]["graphs"] else "")
               + (f"Left out: {mixed['n']} rows with a mixed precision label ({', '.join(f'{k} {v}' for k, v in mixed['by_label'].items())}: "
                  "some layers at another precision, which ones is not in the data). "
                  if (mixed := data["excluded"].get("rows_mixed_precision", {})).get("n") else "") + "Worst held-out models (QNN, median signed error): "
               + ", ".join(f"{w['model']} {w['median_signed']:+.0%}" for w in data["held_out_worst_models_qnn"][:5]) + ".\n")
    diag = data.get("diagnostics_cv_training") or {}
    if diag:
        def cut(group: str) -> str:
            return "; ".join(f"{k} {e['median_signed']:+.0%} signed, {_pct(e['median_abs'])} / {_pct(e['p90_abs'])} "
                             f"({e['n']} rows)" for k, e in diag.get(group, {}).items() if e.get("n"))
        out.append("\nWhere it misses, cross-validated on the training models (median signed error, median / p90 "
                   f"|error|): by dominant MAC kind: {cut('dominant_mac_kind')}. By size: {cut('size')}. "
                   f"ONNX / TFLite rows by fallback: {cut('fallback (ONNX, TFLite rows)')}. Worst models: "
                   + ", ".join(f"{w['model']} {w['median_signed']:+.0%}" for w in diag.get("worst_models", [])[:6])
                   + ".\n")
    g2 = data.get("snapdragon_8_gen_2")
    if g2:
        rel = lambda chip: ", ".join(f"{k} ({v})" for k, v in g2["mix_held_out"][chip]["release_qairt"].items())  # noqa: E731
        same, fitted = g2["ratio_to_8_gen_3_same_release"], g2["ratio_to_8_gen_3_rows_fitted_training_qnn"]
        on = g2["held_out_qnn_on_the_8_gen_2_keys"]
        cell = lambda e: f"{_pct(e['median_abs'])} / {_pct(e['p90_abs'])} ({e['n']} rows)" if e.get("n") else "-"  # noqa: E731
        out.append(f"\nSnapdragon 8 Gen 2: its held-out QNN rows are AI Hub release (QAIRT) {rel('snapdragon-8-gen-2')}, "
                   f"the 8 Gen 3's {rel('snapdragon-8-gen-3')} (AI Hub dropped the 8 Gen 2 after v0.37.1, so it has "
                   f"fewer models), in the same runtime / precision mix. Its published latency is a near-constant "
                   f"multiple of the 8 Gen 3's: {same['median']:.2f}x within one release (5-95%: "
                   f"{same['p5_p95'][0]:.2f}-{same['p5_p95'][1]:.2f}x, {same['n']} training pairs), {fitted['median']:.2f}x "
                   f"across the releases fitted ({fitted['p5_p95'][0]:.2f}-{fitted['p5_p95'][1]:.2f}x). On exactly the "
                   f"8 Gen 2's held-out keys (median / p90 |error|): 8 Gen 2 {cell(on['snapdragon-8-gen-2'])}, "
                   f"8 Gen 3 {cell(on['snapdragon-8-gen-3'])}, 8 Elite {cell(on['snapdragon-8-elite'])}."
                   + _toolchain_gap(g2.get("toolchain_gap")) + _release_control(g2.get("same_release_control"))
                   + "\n")
    pre = data.get("stable_diffusion_preregistered") or {}
    if pre and data.get("sd_predictions_published", "").startswith("NOT a pre-registered"):
        out.append(_sd_tables(f"\nPre-registered: Stable Diffusion 1.5, W8A16, QNN, batch 1, one call, as first "
                              f"committed in {pre['commit'][:7]} before any comparison (an earlier fit of this model; "
                              f"benchmarks/results/costmodel_sd_preregistered.json, never overwritten)",
                              pre["predictions"], pre.get("vs_published")))
    sd = [p for p in data["stable_diffusion_predictions"] if p["precision"] == "w8a16"]
    if sd:
        provenance = data.get("sd_predictions_published", "predictions published in this JSON")
        out.append(_sd_tables(f"\nStable Diffusion 1.5, W8A16, QNN, batch 1, one call, predicted by this model (it never "
                              f"saw a diffusion model; {provenance})", sd, data.get("stable_diffusion_vs_published"),
                              "Compared" if provenance.startswith("NOT a pre-registered") else "Compared only afterwards"))
    out.append(_sd_aihub_form(data.get("stable_diffusion_unet_aihub_form") or {}))
    out.append(_sd_same_release(data.get("stable_diffusion_vs_published_same_release")))
    ane = data["apple_neural_engine"]
    out.append(f"\nApple Neural Engine: the data holds {ane['n_matched']} figures on chips fusionc profiles whose graph we "
               "rebuild, too few to fit more than one ANE speed scale. Each figure's error: the roofline (calibrated on "
               "4 SD-scale figures, never on these), and the scale fitted on the other figures (leave-one-out). "
               f"The scale {'ships' if ane['ships'] else 'does not ship: it does worse than the plain roofline'}.\n\n")
    body = []
    for a in ane["figures"]:
        if a.get("error") is None:
            body.append([a["model"], a["chip"], f"{a['published_ms']:g} ms", "not rebuilt", "-", "-"])
        else:
            body.append([a["model"], a["chip"], f"{a['published_ms']:g} ms", f"{a['estimated_ms']:.2f} ms",
                         f"{a['error']:+.0%}", f"{a['loo_error']:+.0%}" if "loo_error" in a else "-"])
    out.append(rows(["model", "chip", "published", "roofline", "error", "leave-one-out scaled error"], body))
    return "".join(out) + f"\n(benchmarks/results/costmodel_fit.json; fit at git {short_rev(data['git_rev'])})\n"

@table("costmodel_variants", "costmodel_variants.json")
def render_costmodel_variants(results: Path) -> str:
    """benchmarks/costmodel_variants.py: each variant's cross-validated score beside the shipped model's."""
    data = load(results, "costmodel_variants.json")
    shipped, margin = data["shipped"]["score"], data["margin"]
    body = [["shipped", "the model in costmodel_params.json", f"{shipped:.2f}", ""]]
    body += [[v["variant"], v["what"], f"{v['score']:.2f}", f"{-v['gain']:+.2f}"] for v in data["variants"]]
    beyond = [v for v in data["variants"] if v["beats_margin"] and not v["oracle"]]
    kept = [v["variant"] for v in beyond if not v.get("tried_in_model")]
    tried = [f"{v['variant']} ({v['tried_in_model']})" for v in beyond if v.get("tried_in_model")]
    oracles = [v["variant"] for v in data["variants"] if v["beats_margin"] and v["oracle"]]
    note = (f"Cross-validated on the training models (lower is better; a variant ships only if it beats the shipped "
            f"model by more than {margin}, the spread over shufflings). "
            + (f"Beyond the margin: {', '.join(kept)}: refit the model with it. " if kept else
               "No variant that a new graph can have and the model has not tried beats the margin. ")
            + (f"Beyond it and tried in the model: {'; '.join(tried)}. " if tried else "")
            + (f"{', '.join(oracles)} does, but it reads AI Hub's published layer count, which no new graph has. "
               if oracles else "")
            + f"(benchmarks/results/costmodel_variants.json, git {short_rev(data['git_rev'])}; "
              f"`python benchmarks/costmodel_variants.py`, about a minute)\n\n")
    release = data.get("release_ratios")
    tail = ""
    if release and release.get("keys"):
        tail = (f"\nWhat the release_era variants could learn from ({release['what']}): median "
                f"{release['median']:.2f}x over {release['keys']} keys; matmul-dominated: "
                + ", ".join(f"{k.split('/')[0]} {k.split(' ')[1]} {v:.2f}x" for k, v in release["matmul_dominated"].items())
                + ".\n")
    return note + rows(["variant", "what changes", "CV score", "vs shipped"], body, right={2, 3}) + tail


MIB_GB = (1 << 20) / 1e9  # the profiles record MiB; the tables print GB (1e9 bytes), as sdxl_scale's do


def _gb(value: Any) -> str:
    return "-" if not value else f"{value / 1e9:.1f}"


@table("sdxl_scale", "sdxl_scale.json")
def render_sdxl_scale(results: Path) -> str:
    """fusionc's SDXL UNet builds beside the peer's: outcome, wall time, memory, bytes, PSNR."""
    data = load(results, "sdxl_scale.json")
    labels = {"fusionc_coreml": "fusionc coreml, 4-bit palettized, chunked (`--palettize 4 --chunk auto`)",
              "peer": "peer: `ct.convert(torch.export.export(unet))` + `cto.palettize_weights` 4-bit",
              "fusionc_qnn": "fusionc qnn W8A16 (`--precision w8a16`)"}
    body = []
    for key, label in labels.items():
        part = data.get(key)
        if part is None:
            body.append([label, "not run: " + data.get("not_run", {}).get(key, "-"), "", "", "", "", "", ""])
            continue
        if part.get("outcome"):  # the run's one-line summary, written with its figures
            outcome = part["outcome"]
        elif part.get("exit_code") == 0:
            outcome = "finished"
        elif part.get("killed_at_memory_limit"):
            outcome = f"killed at the memory limit in `{part.get('last_stage')}`"
        else:
            outcome = f"exit {part.get('exit_code')} in `{part.get('last_stage')}`"
        compile_s = part.get("compile_s_without_trajectory_and_verification", part["wall_s"] if key == "peer" else None)
        files = part.get("chunk_bytes") or []
        size = _gb(part.get("bytes"))
        if len(files) > 1:
            size += " (" + " + ".join(f"{b / 1e9:.2f}" for b in files) + ")"
        body.append([label, outcome, f"{part['wall_s']:.0f}", "-" if compile_s is None else f"{compile_s:.0f}",
                     _gb(part.get("peak_rss_bytes")), _gb(part.get("peak_rss_anon_bytes")), size, psnr_cell(part)])
    revs = data.get("parts_git_rev", {})
    when = ", ".join(f"{k} {v}" + (f" (git {revs[k]})" if k in revs else "") for k, v in data.get("parts_run_at", {}).items())
    return (rows(["SDXL UNet (2.6B, fp32 10.3 GB), this machine", "outcome", "wall s",
                  "s without trajectory/verify", "peak RSS GB", "peak anon GB", "GB", "PSNR dB"], body)
            + f"\n(benchmarks/results/sdxl_scale.json; last run at git {data.get('git_rev')}; parts run at {when})\n")


DIT_PARTS = {"sd3_transformer_coreml": "SD3 transformer, coreml 6-bit palettized (`--palettize 6 --chunk auto`)",
             "sd3_transformer_qnn": "SD3 transformer, qnn W8A16",
             "t5xxl_coreml": "T5-XXL encoder, coreml 6-bit palettized (`--palettize 6 --chunk N`)",
             "t5xxl_qnn": "T5-XXL encoder, qnn W8A16"}
DIT_SCALES = {"full": "full size", "layers2": "full width, 2 of 24 layers", "small": "small (2 layers, narrow)"}


def _part_outcome(part: dict[str, Any], limit: int | None = None) -> str:
    if part.get("exit_code") == 0:
        return "finished" + ("" if part.get("psnr_db") is not None else " (not verified)")
    if part.get("killed_at_deadline"):
        return f"cut at the session deadline in `{part.get('last_stage')}`"
    if part.get("killed_at_memory_floor"):
        return (f"killed: the machine's free memory fell under {part['memory_floor_bytes'] / 1e9:.1f} GB "
                f"in `{part.get('last_stage')}`")
    if part.get("killed_at_memory_limit"):
        limit = part.get("memory_limit_bytes", limit)
        return (f"killed at the memory limit ({limit / (1 << 30):.0f} GiB) in `{part.get('last_stage')}`" if limit else
                f"killed at the memory limit in `{part.get('last_stage')}`")
    return f"exit {part.get('exit_code')} in `{part.get('last_stage')}`" + (f": {part['error']}" if part.get("error") else "")


@table("dit_scale", "dit_scale.json")
def render_dit_scale(results: Path) -> str:
    """SD3-medium's transformer and T5-XXL's encoder at full size (and the reduced scales): outcome, time, memory."""
    data = load(results, "dit_scale.json")
    body = []
    for scale, scale_label in DIT_SCALES.items():
        section = data.get(scale)
        if section is None:
            continue
        for key, label in DIT_PARTS.items():
            kind = "sd3" if key.startswith("sd3") else "t5"
            ckpt = section.get("checkpoints", {}).get(kind)
            what = f"{label}, {scale_label}" + (f" ({ckpt['parameters'] / 1e6:,.0f}M parameters, fp32 "
                                                 f"{ckpt['bytes'] / 1e9:.2f} GB)" if ckpt else "")
            part = section.get(key)
            if part is None:
                reason = section.get("not_run", {}).get(key)
                if reason:
                    body.append([what, "not run: " + reason, "", "", "", "", "", ""])
                continue
            asked = part.get("asked", {})
            if "image" in asked:
                what += f", {asked['image'][0]}x{asked['image'][1]} ({asked['patches']} patches + {asked['joint_tokens']} tokens)"
            else:
                what += f", {asked.get('t5_tokens')} tokens"
            files = part.get("chunk_bytes") or []
            size = "-" if part.get("bytes") is None else (
                f"{part['bytes'] / 1e9:.2f}" if part["bytes"] >= 1e8 else f"{part['bytes'] / 1e9:.4f}")
            if len(files) > 1:
                size += " (" + " + ".join(f"{b / 1e9:.2f}" for b in files) + ")"
            compile_s = part.get("compile_s_without_trajectory_and_verification")
            body.append([what, _part_outcome(part, section.get("memory_limit_bytes")), f"{part['wall_s']:.0f}", "-" if compile_s is None else f"{compile_s:.0f}",
                         _gb(part.get("peak_rss_bytes")), _gb(part.get("peak_rss_anon_bytes")), size, psnr_cell(part)])
    def run(section: dict, part: str, at: str) -> str:
        rev = section.get("parts_git_rev", {}).get(part)
        return f"{part} {at}" + (f" (git {rev})" if rev else "")

    when = "; ".join(f"{scale} at git {data[scale].get('git_rev')}: " + ", ".join(
        run(data[scale], k, v) for k, v in data[scale].get("parts_run_at", {}).items())
        for scale in DIT_SCALES if scale in data)
    return (rows(["component, target, scale, input", "outcome", "wall s", "s without torch reference/verify",
                  "peak RSS GB", "peak anon GB", "GB", "PSNR dB (held out)"], body)
            + f"\n(benchmarks/results/dit_scale.json; {when})\n")


@table("compile_memory", "compile_memory_sd15_coreml_before.json", "compile_memory_sd15_coreml_after.json",
       "compile_memory_sdxl_coreml.json")
def render_compile_memory(results: Path) -> str:
    """Peak RSS per stage/pass of the Core ML UNet compile: SD-1.5 before and after the memory fixes, SDXL after."""
    runs = {"SD-1.5 before": "compile_memory_sd15_coreml_before.json", "SD-1.5 after": "compile_memory_sd15_coreml_after.json",
            "SDXL after": "compile_memory_sdxl_coreml.json"}
    data = {k: load(results, f) for k, f in runs.items()}
    names: list[str] = []
    for run in data.values():
        for r in run["rows"]:
            key = r["name"] if r["kind"] == "stage" else f"pass {r['name']}"
            if key not in names and (r["kind"] == "stage" or r["name"] in ("KeepFp16InRangePass", "CompressWeightsPass")):
                names.append(key)

    def cell(run: dict[str, Any], key: str) -> str:
        found = [r for r in run["rows"] if (r["name"] if r["kind"] == "stage" else f"pass {r['name']}") == key]
        if not found:
            return "-"
        r = max(found, key=lambda r: r["peak_mb"])
        anon = r.get("peak_anon_mb")
        return f"{r['peak_mb'] * MIB_GB:.1f}" + (f" ({anon * MIB_GB:.1f})" if anon is not None else "") + f", {r['seconds']:.0f} s"

    body = [[key] + [cell(run, key) for run in data.values()] for key in names]
    body.append(["**whole compile: peak, wall**"] + [
        f"**{run['peak_rss_mb'] * MIB_GB:.1f}" + (f" ({run['peak_anon_mb'] * MIB_GB:.1f})" if "peak_anon_mb" in run else "")
        + f", {run['wall_s']:.0f} s**" + ("" if run.get("exit") == 0 else f" exit {run.get('exit')}") for run in data.values()])
    return (rows(["stage or pass", *[f"{k}: peak GB (anon), time" for k in runs]], body, right=set())
            + "\n(" + "; ".join(f"benchmarks/results/{f} git {data[k].get('git_rev')}" for k, f in runs.items()) + ")\n")


@table("mixed_bit_sdxl", "mixed_bit_sdxl_estimate.json")
def render_mixed_bit_sdxl(results: Path) -> str:
    data = load(results, "mixed_bit_sdxl_estimate.json")
    measured, sd15, layers = data["measured"], data["sd15_search"], data["layers"]
    sample = measured["weight_errors_sample"]
    body = [["compressible layers (Linear/Conv >= 2048 elements)", f"{layers['sd15']}", f"{layers['sdxl']}", "counted"],
            ["weight errors (all candidate widths)", f"{sd15['seconds_weight_errors']:.0f} s",
             f"{measured['weight_errors_whole_unet_cpu_s']:.0f} CPU s",
             f"measured on {sample['tensors']} SDXL tensors ({sample['elements'] / 1e6:.0f}M elements), scaled by elements"],
            ["one batch-1 UNet inference (onnxruntime)", f"{sd15['seconds_per_inference']:.1f} s",
             "-" if measured["batch1_inference_s"] is None else f"{measured['batch1_inference_s']:.0f} s",
             measured.get("batch1_inference_source") or "not measured"]]
    extra = data.get("extrapolated")
    if extra:
        body += [["sensitivity probes, one per layer", f"{sd15['seconds_probes']:.0f} s ({sd15['groups']} groups)",
                  f"{extra['probes_s']:.0f} s", "extrapolated: layers x inference"],
                 ["whole per-layer search", f"{sd15['seconds']:.0f} s (measured)",
                  f"{extra['per_layer_search_s']:.0f} s ({extra['per_layer_search_h']:.1f} h)", "extrapolated"],
                 ["what fits 30 minutes here", "the whole search", f"{extra['groups_that_fit_30_min_here']} probe groups",
                  f"per-layer probes in 30 min need ~{extra['machines_for_per_layer_probes_in_30_min']} machines like this one"]]
    return (rows(["mixed-bit search (`--palettize auto:DB`)", "SD-1.5 (measured)", "SDXL", "how"], body, right=set())
            + f"\n(benchmarks/results/mixed_bit_sdxl_estimate.json, git {data['git_rev']}; SD-1.5: compression_sd15_mixed.json)\n")


# ---- the driver ---------------------------------------------------------------------------------------------------

def render_readme(text: str, results: Path = RESULTS) -> tuple[str, list[str]]:
    """(the README with every marked block re-rendered, names of the blocks whose content changed)."""
    changed: list[str] = []

    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in TABLES:
            raise KeyError(f"README block '{name}' has no renderer in benchmarks/render_readme.py")
        body = TABLES[name].render(results)
        if body != match["body"]:
            changed.append(name)
        return match.group(1) + body + match.group(4)

    return BLOCK.sub(replace, text), changed


def blocks(text: str) -> list[str]:
    return [m["name"] for m in BLOCK.finditer(text)]



def render_fleet(results: Path, file: str) -> str:
    """benchmarks/fleet.py's JSON: each way's wall time, ratio and peak RSS; then each variant's times."""
    data = load(results, file)
    ways = data["ways"]
    separate = ways.get("separate", {})
    names = [v["name"] for v in data["variants"]]
    body = []
    labels = {"separate": f"{len(names)} separate `fusionc compile` (no cache)", "local": "fleet, `--executor local`",
              "ray": "fleet, `--executor ray` (local Ray, 2 CPUs)"}
    for way, entry in ways.items():
        if "wall_s" not in entry:
            continue
        done = entry.get("complete", True)
        label = labels.get(way, f"fleet, `--jobs {way.partition(':')[2]}`" if way.startswith("local:") else way)
        ratio = data.get("ratio_to_separate", {}).get(way)
        disk = entry.get("min_disk_free_gb", min((r.get("min_disk_free_gb", 1e9) for r in entry.get(
            "per_variant", {}).values()), default=None))
        body.append([label + ("" if done else " (incomplete)"), f"{entry['wall_s']:.1f}",
                     "-" if ratio is None else f"{ratio:.2f}", f"{entry['peak_rss_gb']:.2f} GB",
                     "-" if disk is None or disk >= 1e9 else f"{disk:.1f} GB",
                     "ok" if entry.get("exit_code") == 0 else f"exit {entry.get('exit_code')}"])
    out = rows(["way", "wall s", "vs separate", "peak RSS (process tree)", "least free disk", "result"], body,
               {1, 2, 3, 4})
    per = separate.get("per_variant", {})
    fleet = ways.get("local", {}).get("per_variant_s", {})
    if per or fleet:
        shared = ways.get("local", {}).get("shared_s", {})
        shared_s = shared.get("fleet: load checkpoint", 0) + shared.get(
            "fleet: shared work (trajectory, export, generic passes)", 0)
        lines = [[n, "-" if n not in per else f"{per[n]['wall_s']:.1f}",
                  "-" if n not in fleet else f"{fleet[n]:.1f}"] for n in names]
        lines.append(["shared work of the fleet (load, torch input sets, export, generic passes)", "-",
                      f"{shared_s:.1f}"])
        out += "\n" + rows(["variant", "separate compile s", "its lowering in the local fleet s"], lines)
    return out + "\n" + source(data, file) + "\n"


table_per_file(render_fleet, fleet_builtin="fleet_builtin.json", fleet_sd15="fleet_sd15.json")


@table("fleet_scaling", "fleet_scaling.json")
def render_fleet_scaling(results: Path) -> str:
    """benchmarks/fleet_scaling.py's JSON: the warm-cache fleet per way and per number of Ray worker nodes."""
    data = load(results, "fleet_scaling.json")
    body = []
    for name, run in data["runs"].items():
        if run.get("exit_code") != 0:
            body.append([name, f"exit {run.get('exit_code')}", "-", "-", "-", "-"])
            continue
        model = run.get("model_makespan_on_k_real_cpus_s")
        body.append([name, f"{run['wall_s']:.1f}", "-" if run.get("variants_phase_s") is None else
                     f"{run['variants_phase_s']:.1f}", f"{run['longest_variant_s']:.1f}", run["nodes_used"],
                     "-" if model is None else f"{model:.1f}"])
    out = rows(["run (6 variants)", "wall s", "variants phase s", "longest variant s", "nodes used",
                "model: K real 1-CPU nodes s"], body)
    return out + "\n" + source(data, "fleet_scaling.json") + "\n"


@table("fleet_builtin_notes", "fleet_builtin.json")
def render_fleet_builtin_notes(results: Path) -> str:
    """The prose under the built-in fleet table: its inputs, the separate compiles' spread, the shared work."""
    d = load(results, "fleet_builtin.json")
    ways, shared_opts = d["ways"], d["shared"]
    walls = {n: e["wall_s"] for n, e in ways["separate"]["per_variant"].items()}
    slowest = max(walls, key=walls.get)
    others = [w for n, w in walls.items() if n != slowest]
    typical = sum(others) / len(others)
    adjusted = sum(others) + typical
    local = ways["local"]
    shared = local["shared_s"]
    load_s = shared["fleet: load checkpoint"]
    work_s = shared["fleet: shared work (trajectory, export, generic passes)"]
    trajectories = sum(v for k, v in shared.items() if k.startswith("reference trajectories"))
    export = sum(v for k, v in shared.items() if k.endswith(": export"))
    per = list(local["per_variant_s"].values())
    qnn = next((v for v in d["variants"] if v.get("target") == "qnn"), {})
    text = (f"Inputs, the same for every way: {', '.join(shared_opts['components'])} only, verification off (no PSNR is "
            f"measured), a calibration set of {shared_opts['calibration_prompts']} prompt x "
            f"{shared_opts['calibration_steps']} steps and a selection set of {shared_opts['selection_prompts']} x "
            f"{shared_opts['selection_steps']}")
    if qnn:
        text += (f"; the QNN variants draw {qnn.get('calibration_samples')} calibration and "
                 f"{qnn.get('selection_samples')} selection samples and run {qnn.get('qnn_remedy_rounds')} remedy rounds")
    text += (f". The separate compiles took {min(others):.1f}-{max(others):.1f} s each but {slowest}, "
             f"{walls[slowest]:.1f} s; with that one at the mean of the other {len(others)} ({typical:.1f} s) the separate "
             f"total would be {adjusted:.0f} s, and the local fleet ({local['wall_s']:.1f} s) costs "
             f"{local['wall_s'] / adjusted:.2f}x of it ({local['wall_s'] / ways['separate']['wall_s']:.2f}x of the measured "
             f"{ways['separate']['wall_s']:.1f} s; goal: <= 0.5x). The local fleet spent {load_s + work_s:.0f} s on the "
             f"shared work (load {load_s:.0f} s, the torch calibration and selection trajectories {trajectories:.0f} s, "
             f"one export {export:.0f} s) and {min(per):.0f}-{max(per):.0f} s per variant.")
    if "ray" in ways:
        text += f" The Ray fleet's process tree peaked at {ways['ray']['peak_rss_gb']:.1f} GB."
    return text + "\n"


@table("controlnet_follow", "controlnet_follow.json")
def render_controlnet_follow(results: Path) -> str:
    """Where the shape went, with the ControlNet and without: counted from the cases in the JSON."""
    d = load(results, "controlnet_follow.json")

    def counts(cases: list[dict[str, Any]]) -> tuple[str, str]:
        outline = sum(c["detected"] == c["outline"].split()[1] for c in cases)
        prompt = sum(c["detected"] in c["prompt"].split() for c in cases)
        return f"{outline} / {len(cases)}", f"{prompt} / {len(cases)}"

    body = [["`builtin:controlnet` with the outline", *counts(d["controlnet_pipeline"]["cases"])],
            ["built-in pipeline, same prompts and seeds", *counts(d["plain_pipeline"]["cases"])]]
    cases = d["controlnet_pipeline"]["cases"]
    prompts = len({c["prompt"] for c in cases})
    seeds = sorted({c["seed"] for c in cases})
    load_ = d.get("load_average_before_after") or []
    return (rows(["pipeline", "shape at the outline's position", "shape at the prompt's position"], body)
            + f"\n(torch, {prompts} prompts x seeds {', '.join(map(str, seeds))}, {d['steps']} steps, guidance "
            f"{d['guidance']:g}: the cases of fusionc.models.train_controlnet.EVAL_CASES, which training's own "
            "end-of-training check also uses; not a held-out set: captions of this form are in the ControlNet's training "
            "data, whose outlines lie anywhere, here at the named anchors. benchmarks/results/controlnet_follow.json; "
            f"git {d['git_rev']}" + (f"; load {load_[0]:.1f} before, {load_[-1]:.1f} after" if len(load_) == 2 else "")
            + ")\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a block differs from its JSON")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args()
    text = args.readme.read_text()
    new, changed = render_readme(text)
    if args.check:
        for name in changed:
            print(f"README block '{name}' differs from {', '.join(TABLES[name].files)}: run benchmarks/render_readme.py",
                  file=sys.stderr)
        return 1 if changed else 0
    args.readme.write_text(new)
    print(f"rendered {len(blocks(text))} blocks, {len(changed)} changed: {', '.join(changed) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
