"""ONNX Runtime CPU step time of an SD-1.5-shaped UNet: naive export vs fusionc fp32, w8a8 and int4 weight-only.

Same run, same threads: every model is timed in its own child process (so peak RSS is its own) with
`intra_op_num_threads=THREADS`, one warm-up step then RUNS timed steps at batch 1 (median reported), ORT's
default graph optimizations (what an app gets), and ORT's profiler on, whose per-node records say which kernels
ran (QLinearConv, QLinearMatMul, MatMulNBits, ...) and where the time went. Random weights, public config
(fusionc.models.reference); PSNR per build from its manifest (verification against torch on held-out inputs).
Also the built-in model's whole 8-step generation (`fusionc generate`) per fusionc precision.

    python benchmarks/ort_cpu.py --scale mid            # SD-1.5 topology at 2/5 width, 32x32 latents: minutes
    flock /tmp/fusionc-heavy.lock nice -n 10 python benchmarks/ort_cpu.py --scale sd15   # ~6 GB, ~4 s/step

Writes benchmarks/results/ort_cpu_SCALE.json incrementally (after every model).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
LATENT = {"sd15": 64, "mid": 32}  # latent side: SD-1.5 at 512x512; the mid UNet at 256x256
PROMPT = "a red circle on the left"
VARIANTS = {  # name -> extra `fusionc compile` flags
    "fusionc_fp32": ["--precision", "fp32"],
    "fusionc_w8a8": ["--precision", "w8a8"],
    "fusionc_int4": ["--precision", "fp32", "--quantize-weights", "int4"],
}


def git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def naive_export(checkpoint: Path, latent: int, out: Path) -> dict[str, Any]:
    """What a user does by hand: torch.onnx.export(unet, ..., dynamo=True), static batch-1 shapes."""
    if (out / "model.onnx").exists():
        return json.loads((out / "export.json").read_text())
    import torch
    from diffusers import UNet2DConditionModel

    class Unet(torch.nn.Module):
        def __init__(self, unet: torch.nn.Module) -> None:
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, encoder_hidden_states):
            return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]

    unet = UNet2DConditionModel.from_pretrained(checkpoint / "unet").eval()
    args = (torch.randn(1, 4, latent, latent), torch.tensor([500.0]),
            torch.randn(1, 77, unet.config.cross_attention_dim))
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with torch.no_grad():
        program = torch.onnx.export(Unet(unet), args, dynamo=True,
                                    input_names=["sample", "timestep", "encoder_hidden_states"],
                                    output_names=["out_sample"])
        program.save(str(out / "model.onnx"), external_data=True)
    info = {"seconds": round(time.perf_counter() - start, 1), "how": "torch.onnx.export(unet, dynamo=True)"}
    (out / "export.json").write_text(json.dumps(info))
    return info


def compile_variant(checkpoint: Path, flags: list[str], out: Path, height: int) -> dict[str, Any]:
    if not (out / "manifest.json").exists():
        command = [sys.executable, "-m", "fusionc.cli", "compile", str(checkpoint), "--target", "onnx", "--components",
                   "unet", "--height", str(height), "--width", str(height), "--verify-steps", "2",
                   "--verify-prompts", "1", "--out", str(out), *flags]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        (out / "compile_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}")
    manifest = json.loads((out / "manifest.json").read_text())
    unet = manifest["components"]["unet"]
    return {"flags": flags, "compile_seconds": float((out / "compile_seconds.txt").read_text()),
            "psnr_db": unet.get("psnr_db"), "bytes": unet["bytes"],
            "remedies": {k: unet.get("remedies", {}).get(k) for k in ("initial_db", "final_db", "nodes_16bit_activations")}
            if "remedies" in unet else None}


def measure(model: Path, threads: int, runs: int) -> dict[str, Any]:
    """Child process: one session, a warm-up, `runs` timed steps; its own peak RSS and the profiler's op times."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(model.parent / "ort_profile")
    start = time.perf_counter()
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in spec.shape]
        if spec.name == "timestep":
            feeds[spec.name] = np.full(shape, 500, np.int64 if "int64" in spec.type else np.float32)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(np.float32)
    session.run(None, feeds)  # warm-up: pre-packing, arena growth
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    profile = Path(session.end_profiling())
    by_op: dict[str, float] = {}
    for event in json.loads(profile.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + event["dur"] / 1e6
    profile.unlink()
    steps = runs + 1
    return {"step_s": times, "median_s": float(np.median(times)), "session_load_s": round(load_s, 2),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "kernel_s_per_step_by_op": {k: round(v / steps, 4) for k, v in sorted(by_op.items(), key=lambda x: -x[1])}}


def time_model(model: Path, threads: int, runs: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--measure", str(model), "--threads", str(threads), "--runs", str(runs)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def generation(work: Path, threads: int) -> dict[str, Any]:
    """The built-in model's whole 8-step generation per fusionc precision (`fusionc generate`, wall time)."""
    out: dict[str, Any] = {}
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    for name, flags in VARIANTS.items():
        build = work / f"builtin_{name}"
        if not (build / "manifest.json").exists():
            subprocess.run([sys.executable, "-m", "fusionc.cli", "compile", "--target", "onnx", "--out", str(build),
                            "--components", "text_encoder,unet,vae_decoder", *flags], check=True, env=env)
        manifest = json.loads((build / "manifest.json").read_text())
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "fusionc.cli", "generate", PROMPT, "--build", str(build),
                               "--steps", "8", "--out", str(build / "image.png")], check=True, capture_output=True,
                              text=True, env=env)
        text = done.stdout + done.stderr
        seconds = re.search(r"([0-9.]+) s on", text)
        psnr = re.search(r"PSNR vs torch ([0-9.]+) dB", text)
        out[name] = {"process_wall_s": round(time.perf_counter() - start, 2),
                     "generate_s": float(seconds.group(1)) if seconds else None,
                     "image_psnr_vs_torch_db": float(psnr.group(1)) if psnr else None,
                     "component_psnr_db": {n: c.get("psnr_db") for n, c in manifest["components"].items()},
                     "unet_bytes": manifest["components"]["unet"]["bytes"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(LATENT), default="mid")
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--remedy-seconds", type=float, default=600.0, help="w8a8 remedies' time budget")
    parser.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.threads, args.runs)))
        return
    from fusionc.models.reference import write_reference_pipeline

    latent = LATENT[args.scale]
    checkpoint = args.work / f"ort_{args.scale}"
    if not (checkpoint / "model_index.json").exists():
        write_reference_pipeline(checkpoint, args.scale)
    path = RESULTS / f"ort_cpu_{args.scale}.json"
    result: dict[str, Any] = {
        "benchmark": "ort_cpu", "git_rev": git_rev(), "scale": args.scale,
        "model": f"{args.scale} UNet (fusionc.models.reference, random weights), batch 1, {latent}x{latent} latents",
        "threads": args.threads, "runs": args.runs,
        "machine": {"cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                    "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")},
        "load_average_before": [round(x, 2) for x in os.getloadavg()], "models": {},
    }
    import onnxruntime

    result["onnxruntime"] = onnxruntime.__version__

    def save() -> None:
        RESULTS.mkdir(exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")

    builds = {"naive_dynamo_export": (args.work / f"ort_{args.scale}_naive" / "model.onnx",
                                      naive_export(checkpoint, latent, args.work / f"ort_{args.scale}_naive"))}
    for name, flags in VARIANTS.items():
        out = args.work / f"ort_{args.scale}_{name}"
        flags = flags + (["--qnn-remedy-seconds", str(args.remedy_seconds)] if "w8a8" in flags else [])
        builds[name] = (out / "unet" / "model.onnx", compile_variant(checkpoint, flags, out, latent * 8))
    for name, (model, info) in builds.items():
        result["models"][name] = {"build": info, **time_model(model, args.threads, args.runs)}
        save()
    naive = result["models"]["naive_dynamo_export"]["median_s"]
    for entry in result["models"].values():
        entry["vs_naive"] = round(entry["median_s"] / naive, 3)
    if not args.skip_generation:
        result["builtin_generation_8_steps"] = generation(args.work, args.threads)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    save()
    print(json.dumps({n: (m["median_s"], m["vs_naive"], m["build"].get("psnr_db")) for n, m in result["models"].items()},
                     indent=1))


if __name__ == "__main__":
    main()
