"""ONNX Runtime CPU step time of an SD-1.5-shaped UNet: naive export vs fusionc fp32, w8a8 and int4 weight-only.

Same run, same threads: every model is timed in its own child process (so peak RSS is its own) with
`intra_op_num_threads=THREADS`, one warm-up step then RUNS timed steps at batch 1 (median reported), ORT's
default graph optimizations (what an app gets), and ORT's profiler on, whose per-node records say which kernels
ran (QLinearConv, QLinearMatMul, MatMulNBits, ...) and where the time went. Random weights, public config
(fusionc.models.reference); PSNR per build from its manifest (verification against torch on held-out inputs).
Also the built-in model's whole 8-step generation (`fusionc generate`) per fusionc precision.

    python benchmarks/ort_cpu.py --scale small          # SD-1.5 topology at 1/5 width, 32x32 latents
    /work/tools/heavy python benchmarks/ort_cpu.py --scale mid        # 2/5 width: minutes
    /work/tools/heavy python benchmarks/ort_cpu.py --scale sd15 --checkpoint /work/ckpt/sd15   # ~6 GB, ~4 s/step

Every compile shares one --cache (work/ort_cache_SCALE), so the naive export's PSNR is measured on the very
verification inputs (and torch outputs) the fusionc builds were verified on. Writes
benchmarks/results/ort_cpu_SCALE.json incrementally (after every model).
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
LATENT = {"sd15": 64, "mid": 32, "small": 32}  # latent side: SD-1.5 at 512x512; the mid UNet at 256x256
PROMPT = "a red circle on the left"
VARIANTS = {  # name -> extra `fusionc compile` flags (w8a8 last: the longest compile)
    "fusionc_fp32": ["--precision", "fp32"],
    "fusionc_int4": ["--precision", "fp32", "--quantize-weights", "int4"],
    "fusionc_w8a8": ["--precision", "w8a8"],
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


VERIFY = {"verify_steps": 2, "verify_prompts": 1}
REMEDY_FIELDS = ("initial_db", "final_db", "nodes_16bit_activations", "nodes_float", "ranges", "evaluation_s", "target_db")


def compile_variant(checkpoint: Path, flags: list[str], out: Path, height: int, cache: Path) -> dict[str, Any]:
    if not (out / "manifest.json").exists():
        command = [sys.executable, "-m", "fusionc.cli", "compile", str(checkpoint), "--target", "onnx", "--components",
                   "unet", "--height", str(height), "--width", str(height), "--verify-steps", str(VERIFY["verify_steps"]),
                   "--verify-prompts", str(VERIFY["verify_prompts"]), "--cache", str(cache), "--out", str(out), *flags]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        (out / "compile_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}")
    manifest = json.loads((out / "manifest.json").read_text())
    unet = manifest["components"]["unet"]
    evaluator = unet.get("remedies", {}).get("evaluator")
    return {"flags": flags, "remedies_s": unet.get("quantize_timings", {}).get("remedies_s"), "evaluator": evaluator, "compile_seconds": float((out / "compile_seconds.txt").read_text()),
            "psnr_db": unet.get("psnr_db"), "bytes": unet["bytes"],
            "remedies": {k: unet.get("remedies", {}).get(k) for k in REMEDY_FIELDS}
            if "remedies" in unet else None}


def peak_rss_bytes() -> int:
    """This process's own peak RSS (VmHWM). Not getrusage's ru_maxrss: a forked child starts from its parent's
    high-water mark (the driver holds ~0.8 GB after the naive export), so every model reported the same 771 MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def random_feeds(session: Any) -> dict[str, Any]:
    """Seeded inputs for every input of `session` (dynamic dimensions as 1; the timestep at 500)."""
    import numpy as np

    rng = np.random.default_rng(0)
    feeds = {}
    for spec in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in spec.shape]
        if spec.name == "timestep":
            feeds[spec.name] = np.full(shape, 500, np.int64 if "int64" in spec.type else np.float32)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


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
    feeds = random_feeds(session)
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
            "peak_rss_bytes": peak_rss_bytes(),
            "kernel_s_per_step_by_op": {k: round(v / steps, 4) for k, v in sorted(by_op.items(), key=lambda x: -x[1])}}


def naive_psnr(checkpoint: Path, model: Path, height: int, cache: Path) -> dict[str, Any]:
    """Child process: the naive export on the compile's verification set (from the --cache) against torch."""
    import numpy as np
    import onnxruntime as ort

    from fusionc.cache import ComponentCache
    from fusionc.checkpoint import load_checkpoint
    from fusionc.core.numerics import outputs_psnr
    from fusionc.core.options import CompileOptions
    from fusionc.input_cache import cached_input_sets
    from fusionc.targets.qnn.quantize import split_batch

    options = CompileOptions(target="onnx", height=height, width=height, **VERIFY)
    sets = cached_input_sets(load_checkpoint(checkpoint), options, ["unet"], ("verification",), ComponentCache(cache), {})
    feeds, outputs = sets["verification"].feeds["unet"], sets["verification"].outputs["unet"]
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    specs = session.get_inputs()
    reference, got = [], []
    for call, out in zip(feeds, outputs):
        for row, ref in zip(split_batch(call), split_batch(out)):
            run = {}
            for spec in specs:
                value = np.asarray(row[spec.name])
                shape = [d if isinstance(d, int) else -1 for d in spec.shape]
                run[spec.name] = value.astype(np.int64 if "int64" in spec.type else np.float32).reshape(shape)
            reference.append({"out": np.asarray(next(iter(ref.values())))})
            got.append({"out": session.run(None, run)[0]})
    return {"psnr_db": round(outputs_psnr(reference, got), 2), "rows": len(got)}


def interleaved(models: list[Path], threads: int, rounds: int) -> dict[str, Any]:
    """Child process: every model's session loaded at once, one step of each in turn for `rounds` rounds.

    On a shared machine the load drifts within seconds; models timed one after another see different loads
    (three runs of the small scale ordered fp32/naive differently). Alternating steps gives each model the same
    load on average, so the ratios hold; the per-model processes still give peak RSS and the kernel profile."""
    import numpy as np
    import onnxruntime as ort

    sessions, feeds = [], []
    for model in models:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        feed = random_feeds(session)
        session.run(None, feed)
        sessions.append(session)
        feeds.append(feed)
    times: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for index, (session, feed) in enumerate(zip(sessions, feeds)):
            start = time.perf_counter()
            session.run(None, feed)
            times[index].append(time.perf_counter() - start)
    return {"rounds": rounds, "step_s": {str(m): t for m, t in zip(models, times)},
            "median_s": {str(m): float(np.median(t)) for m, t in zip(models, times)}}


def child(*args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
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
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="pipeline folder (default: write the scale's random-weight reference pipeline)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated fusionc variants to build")
    parser.add_argument("--w8a8-flags", default="", help="extra compile flags for w8a8, e.g. '--selection-samples 2'")
    parser.add_argument("--extra-builds", nargs="*", default=[], metavar="NAME=BUILD_DIR",
                        help="more onnx builds of the same UNet to time in the same run (e.g. w8a8 at other remedy "
                             "targets: points of the speed/accuracy frontier)")
    parser.add_argument("--interleaved-rounds", type=int, default=0,
                        help="also time every model round-robin in one process for this many rounds (ratios robust "
                             "to load drift on a shared machine; needs all models in memory at once)")
    parser.add_argument("--interleave", nargs="*", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--naive-psnr", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    latent = LATENT[args.scale]
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.threads, args.runs)))
        return
    if args.interleave is not None:
        print(json.dumps(interleaved(args.interleave, args.threads, args.runs)))
        return
    if args.naive_psnr is not None:
        print(json.dumps(naive_psnr(args.checkpoint, args.naive_psnr, latent * 8, args.cache)))
        return
    from fusionc.models.reference import write_reference_pipeline

    checkpoint = args.checkpoint or args.work / f"ort_{args.scale}"
    if not (checkpoint / "model_index.json").exists():
        write_reference_pipeline(checkpoint, args.scale)
    cache = args.work / f"ort_cache_{args.scale}"
    path = RESULTS / f"ort_cpu_{args.scale}.json"
    result: dict[str, Any] = {
        "benchmark": "ort_cpu", "git_rev": git_rev(), "scale": args.scale, "checkpoint": str(checkpoint),
        "model": f"{args.scale} UNet (random weights), batch 1, {latent}x{latent} latents",
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

    common = ["--scale", args.scale, "--threads", str(args.threads), "--runs", str(args.runs)]

    def timed(entry: dict[str, Any], model: Path) -> None:  # each model alone in its own process, back to back
        entry.update(load_average=[round(x, 2) for x in os.getloadavg()], model_path=str(model),
                     **child(*common, "--measure", str(model)))
        save()

    naive_dir = args.work / f"ort_{args.scale}_naive"
    naive_entry: dict[str, Any] = {"build": naive_export(checkpoint, latent, naive_dir)}
    result["models"]["naive_dynamo_export"] = naive_entry
    timed(naive_entry, naive_dir / "model.onnx")
    for name in [n for n in args.variants.split(",") if n]:
        out = args.work / f"ort_{args.scale}_{name}"
        flags = VARIANTS[name] + (["--qnn-remedy-seconds", str(args.remedy_seconds), *args.w8a8_flags.split()]
                                  if name == "fusionc_w8a8" else [])
        try:
            entry: dict[str, Any] = {"build": compile_variant(checkpoint, flags, out, latent * 8, cache)}
        except subprocess.CalledProcessError as error:  # keep what the other models measured
            result["models"][name] = {"build": {"flags": flags, "failed": f"exit {error.returncode}"}}
            save()
            continue
        result["models"][name] = entry
        save()
        if "psnr_db" not in naive_entry["build"]:  # the verification set is in the cache from now on
            try:
                naive_entry["build"].update(child(*common, "--naive-psnr", str(naive_dir / "model.onnx"),
                                                  "--checkpoint", str(checkpoint), "--cache", str(cache)))
            except subprocess.CalledProcessError as error:
                naive_entry["build"]["psnr_db"] = None
                naive_entry["build"]["psnr_error"] = (error.stderr or "")[-500:]
        timed(entry, out / "unet" / "model.onnx")
    for item in args.extra_builds:
        name, build = item.split("=", 1)
        unet = json.loads((Path(build) / "manifest.json").read_text())["components"]["unet"]
        remedies = unet.get("remedies") or {}
        entry = {"build": {"dir": build, "psnr_db": unet.get("psnr_db"), "bytes": unet["bytes"],
                           "quantization": {k: v for k, v in unet.get("quantization", {}).items() if k != "node_bits"},
                           "remedies": {k: remedies.get(k) for k in REMEDY_FIELDS} if remedies else None}}
        result["models"][name] = entry
        timed(entry, Path(build) / "unet" / "model.onnx")
    paths = {name: entry["model_path"] for name, entry in result["models"].items() if "model_path" in entry}
    if args.interleaved_rounds and paths:
        together = child("--scale", args.scale, "--threads", str(args.threads), "--runs", str(args.interleaved_rounds),
                         "--interleave", *paths.values())
        for name, model in paths.items():
            entry = result["models"][name]
            entry["sequential_median_s"] = entry["median_s"]
            entry["median_s"] = together["median_s"][model]
            entry["interleaved_step_s"] = together["step_s"][model]
        result["timing"] = f"median_s: interleaved, {args.interleaved_rounds} rounds round-robin in one process"
    naive = result["models"]["naive_dynamo_export"]["median_s"]
    for entry in result["models"].values():
        if "median_s" in entry:
            entry["vs_naive"] = round(entry["median_s"] / naive, 3)
    if not args.skip_generation:
        result["builtin_generation_8_steps"] = generation(args.work, args.threads)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    save()
    print(json.dumps({n: (m.get("median_s"), m.get("vs_naive"), m["build"].get("psnr_db"))
                      for n, m in result["models"].items()}, indent=1))


if __name__ == "__main__":
    main()
