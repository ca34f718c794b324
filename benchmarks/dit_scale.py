"""Diffusion transformers at real scale on this machine: SD3-medium's MMDiT transformer (2.0B) and the T5-XXL encoder
(4.7B) to Core ML (6-bit palettized, chunked) and QNN W8A16, every part under a memory limit.

Random weights from the public configs (../shared/reference-models.md, which is outside this repository):

  SD3Transformer2DModel (SD3 medium): sample_size 128, patch_size 2, in_channels 16, out_channels 16, num_layers 24,
      num_attention_heads 24, attention_head_dim 64 (width 1536), joint_attention_dim 4096, caption_projection_dim
      1536, pooled_projection_dim 2048, pos_embed_max_size 192. 2.03B parameters, 8.1 GB in fp32.
  T5EncoderModel (T5 v1.1 XXL): d_model 4096, d_ff 10240, d_kv 64, num_heads 64, num_layers 24, feed_forward_proj
      gated-gelu, vocab_size 32128, relative_attention_num_buckets 32, relative_attention_max_distance 128.
      4.76B parameters, 19.0 GB in fp32 (9.5 GB in fp16).

`--scale small` keeps both configs but cuts depth and width (SD3: 2 layers, 4 heads x 64 = width 256; T5: 2 layers,
d_model 512, d_ff 1280, 8 heads): the same code path, cheap enough to run outside the heavy slot. `--scale layers2`
keeps the full width and 2 of the 24 layers (per-layer costs to scale from). The scale is recorded, and each scale
has its own section of the JSON.

Each part compiles one component folder (a lone SD3Transformer2DModel or T5EncoderModel folder): fusionc then has no
pipeline to run, so every input set (verification, calibration) is the component's example inputs drawn from that
role's own seed (fusionc.inputs), one guidance batch of 2: the transformer's at --height x --width with SD3's joint
sequence (77 CLIP + 256 T5 tokens of 4096 channels, pooled projections of 2048), the T5's 256 random token ids. The
PSNR is thus on random inputs of random weights, held out from calibration; it checks the compile, not a model.

  sd3_transformer_coreml  `--target coreml --palettize 6 --chunk auto` (1 GB per-model limit of the default
                          iPhone profile: 2 chunks at full size), verified in the MIL executor
  sd3_transformer_qnn     `--target qnn --precision w8a16`, one calibration batch, no remedy rounds; at full size
                          verified with `--qnn-verify-runtime cpu` (the QDQ graphs on ORT's CPU EP: the HTP emulator
                          at this size is hours per call), on the HTP emulator at --scale small
  t5xxl_coreml            `--target coreml --palettize 6 --compress-components text_encoder --chunk N` (auto splits
                          UNets and transformers only; N from the 6-bit size against 1 GB)
  t5xxl_qnn               as sd3_transformer_qnn

The checkpoints are written block by block (never the whole model in memory: T5-XXL in fp32 would take 19 GB just
to write): the module is built on the meta device, then each block is materialized, initialized the way its class
initializes it (SD3: every submodule's `reset_parameters`, the constructor's own init; T5: T5PreTrainedModel's
`_init_weights`), seeded per block, written as its own safetensors shard, and dropped. SD3's embedders and output
head come from a real 1-layer instance of the same config (its sin-cos position table is a computed buffer). Stored
in fp32: fusionc's loader makes every model fp32, so fp16 files would hold both copies at load.

Each part runs in its own process group under benchmarks/sdxl_scale.py's memory watch (peak RSS of the process
tree and its anonymous part); it is killed past --limit-gb, or when the machine's MemAvailable falls under
--floor-gb (the machine is shared: no part may push the others into the OOM killer), and the JSON records the last
stage it reached and its peak. fusionc's parts run under benchmarks/compile_memory_profile.py (peak per stage and per
pass: compile_memory_dit_<scale>_<part>.json). Results: benchmarks/results/dit_scale.json, rewritten after every part.

    python benchmarks/dit_scale.py --scale small
    /work/tools/heavy python benchmarks/dit_scale.py --scale full --checkpoints /work/ckpt --height 512 --width 512 \
        --parts sd3_transformer_coreml,t5xxl_coreml --deadline 06:55
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from sdxl_scale import RESULTS, _bytes, git_rev, run_watched, summarize_profile  # noqa: E402

OUT = RESULTS / "dit_scale.json"
PARTS = ("sd3_transformer_coreml", "sd3_transformer_qnn", "t5xxl_coreml", "t5xxl_qnn")
T5_TOKENS = 256  # SD3's T5 sequence (max_sequence_length)

SD3_MEDIUM: dict[str, Any] = dict(
    sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, num_attention_heads=24,
    attention_head_dim=64, joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048,
    pos_embed_max_size=192)
T5_XXL: dict[str, Any] = dict(
    d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, feed_forward_proj="gated-gelu", vocab_size=32128,
    relative_attention_num_buckets=32, relative_attention_max_distance=128)
REDUCED = {"small": {"sd3": dict(num_layers=2, num_attention_heads=4, caption_projection_dim=256),
                     "t5": dict(d_model=512, d_ff=1280, num_heads=8, num_layers=2)},
           "layers2": {"sd3": dict(num_layers=2), "t5": dict(num_layers=2)}}  # full width, 2 of 24 layers
CHECKPOINT_NAMES = {"sd3": "sd3_medium_transformer", "t5": "t5_xxl_encoder"}  # folders under --checkpoints
COREML_LIMIT = 1 << 30  # the default device's (iPhone 14 Pro) per-model limit


def configs(scale: str) -> dict[str, dict[str, Any]]:
    cut = REDUCED.get(scale, {})
    return {"sd3": {**SD3_MEDIUM, **cut.get("sd3", {})}, "t5": {**T5_XXL, **cut.get("t5", {})}}


def _save_shards(folder: Path, stem: str, units: list[tuple[str, Any]], init: Any, head: dict[str, Any]) -> None:
    """Materialize, initialize, save and drop each unit in turn; `head` (already real tensors) is the first shard."""
    import torch
    from safetensors.torch import save_file

    total = len(units) + 1
    weight_map: dict[str, str] = {}
    size = 0

    def write(index: int, tensors: dict[str, Any]) -> None:
        nonlocal size
        name = f"{stem}-{index:05d}-of-{total:05d}.safetensors"
        tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
        save_file(tensors, str(folder / name), metadata={"format": "pt"})
        for key, value in tensors.items():
            weight_map[key] = name
            size += value.numel() * value.element_size()

    write(1, head)
    for index, (prefix, unit) in enumerate(units, start=2):
        unit.to_empty(device="cpu")
        with torch.no_grad():
            for tensor in [*unit.parameters(), *unit.buffers()]:
                if tensor.is_floating_point():
                    tensor.fill_(float("nan"))  # what no initializer touches stays NaN: caught below
        torch.manual_seed(index)
        init(unit)
        state = unit.state_dict()
        untouched = [k for k, v in state.items() if v.is_floating_point() and bool(torch.isnan(v).any())]
        if untouched:
            raise RuntimeError(f"{prefix}: no initializer set {untouched[:3]}")
        write(index, {f"{prefix}.{k}": v for k, v in state.items()})
        unit.to_empty(device="meta")
    (folder / f"{stem}.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": size}, "weight_map": weight_map}, indent=1) + "\n")


def write_sd3(folder: Path, config: dict[str, Any]) -> None:
    import torch
    from diffusers import SD3Transformer2DModel

    with torch.device("meta"):
        skeleton = SD3Transformer2DModel(**config)
    torch.manual_seed(0)
    one_layer = SD3Transformer2DModel(**{**config, "num_layers": 1})  # embedders, position table, output head
    head = {k: v for k, v in one_layer.state_dict().items() if not k.startswith("transformer_blocks.")}
    del one_layer

    def init(unit: torch.nn.Module) -> None:  # what the constructor does: every submodule's default init
        for sub in unit.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()

    skeleton.save_config(folder)
    _save_shards(folder, "diffusion_pytorch_model", [(f"transformer_blocks.{i}", b)
                                                     for i, b in enumerate(skeleton.transformer_blocks)], init, head)


def write_t5(folder: Path, config_kwargs: dict[str, Any]) -> None:
    import torch
    from transformers import T5Config, T5EncoderModel

    config = T5Config(**config_kwargs, is_encoder_decoder=False, use_cache=False, architectures=["T5EncoderModel"])
    with torch.device("meta"):
        skeleton = T5EncoderModel(config)

    def init(unit: torch.nn.Module) -> None:  # T5's own init, children before parents (a parent's rule wins)
        for sub in reversed(list(unit.modules())):
            skeleton._init_weights(sub)

    torch.manual_seed(0)
    skeleton.shared.to_empty(device="cpu")
    skeleton.encoder.final_layer_norm.to_empty(device="cpu")
    skeleton._init_weights(skeleton)  # shared: normal(0, initializer_factor)
    skeleton._init_weights(skeleton.encoder.final_layer_norm)
    head = {"shared.weight": skeleton.shared.weight, "encoder.final_layer_norm.weight": skeleton.encoder.final_layer_norm.weight}
    config.save_pretrained(folder)
    _save_shards(folder, "model", [(f"encoder.block.{i}", b) for i, b in enumerate(skeleton.encoder.block)], init, head)


def write_checkpoint(kind: str, folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The component folder (written once: kept if its config matches), with the time and bytes it took."""
    saved = folder / "config.json"
    if saved.exists():
        have = json.loads(saved.read_text())
        if all(have.get(k) == (list(v) if isinstance(v, tuple) else v) for k, v in config.items()):
            return {"path": str(folder), "bytes": _bytes(folder), "reused": True}
    start = time.perf_counter()
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)
    partial.mkdir(parents=True)
    (write_sd3 if kind == "sd3" else write_t5)(partial, config)
    partial.rename(folder)  # no half-written checkpoint is ever taken for a whole one
    return {"path": str(folder), "bytes": _bytes(folder), "write_s": round(time.perf_counter() - start, 1)}


def parameter_count(kind: str, config: dict[str, Any]) -> int:
    import torch

    if kind == "sd3":
        from diffusers import SD3Transformer2DModel

        with torch.device("meta"):
            model = SD3Transformer2DModel(**config)
    else:
        from transformers import T5Config, T5EncoderModel

        with torch.device("meta"):
            model = T5EncoderModel(T5Config(**config, is_encoder_decoder=False, use_cache=False))
    return sum(p.numel() for p in model.parameters())


def part_command(part: str, checkpoint: Path, out: Path, profile: Path, args: argparse.Namespace,
                 params: int) -> tuple[list[str], dict[str, Any]]:
    """The compile command of a part and what it was asked (recorded beside the figures)."""
    kind, target = part.rsplit("_", 1)
    command = [sys.executable, str(Path(__file__).parent / "compile_memory_profile.py"), "--checkpoint", str(checkpoint),
               "--out", str(out), "--json", str(profile), "--", "--target", target, "--text-length", str(T5_TOKENS),
               "--verify-steps", "1", "--verify-prompts", "1", "--calibration-steps", "1", "--calibration-prompts", "1"]
    asked: dict[str, Any] = {"t5_tokens": T5_TOKENS}
    if kind == "sd3_transformer":
        command += ["--height", str(args.height), "--width", str(args.width)]
        asked.update(image=[args.height, args.width], latents=[args.height // 8, args.width // 8],
                     joint_tokens=77 + T5_TOKENS, patches=(args.height // 16) * (args.width // 16))
    if target == "coreml":
        # T5: --chunk auto splits UNets and transformers only; N chunks from the 6-bit weights against 1 GB
        chunk = "auto" if kind == "sd3_transformer" else str(max(1, math.ceil(params * 6 / 8 / COREML_LIMIT)))
        command += ["--palettize", "6", "--chunk", chunk]
        if kind == "t5xxl":  # compression's default is the denoiser: a text encoder is asked for by name
            command += ["--compress-components", "text_encoder"]
        asked["chunk"] = chunk
    else:
        command += ["--precision", "w8a16", "--calibration-samples", "1", "--qnn-remedy-rounds", "0",
                    "--selection-steps", "1", "--selection-prompts", "1"]
        if args.scale != "small":  # the HTP emulator at full width: hours per call; the QDQ graphs on the CPU EP
            command += ["--qnn-verify-runtime", "cpu"]
        asked["verified_on"] = "htp" if args.scale == "small" else "cpu"
    return command, asked


def deadline_time(hh_mm: str | None) -> float | None:
    """--deadline HH:MM (UTC, today) as time.time(): a part still running then is cut (the session's end)."""
    if not hh_mm:
        return None
    hour, minute = (int(x) for x in hh_mm.split(":"))
    now = time.gmtime()
    return time.time() + ((hour * 60 + minute) - (now.tm_hour * 60 + now.tm_min)) * 60 - now.tm_sec


def run_part(part: str, checkpoint: Path, args: argparse.Namespace, params: int) -> dict[str, Any]:
    component = "transformer" if part.startswith("sd3") else "text_encoder"
    out = args.work / f"dit_{args.scale}_{part}"
    profile = RESULTS / f"compile_memory_dit_{args.scale}_{part}.json"
    command, asked = part_command(part, checkpoint, out, profile, args, params)
    shutil.rmtree(out, ignore_errors=True)
    log = args.work / f"dit_{args.scale}_{part}.log"
    deadline = deadline_time(args.deadline)
    result = run_watched(command, int(args.limit_gb * (1 << 30)), log, floor=int(args.floor_gb * (1 << 30)),
                         deadline=deadline, disk=args.work)
    if deadline is not None:
        result["deadline"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(deadline))
    result["asked"] = asked
    result["memory_limit_bytes"] = int(args.limit_gb * (1 << 30))
    result["memory_profile"] = str(profile.relative_to(Path(__file__).parent.parent))
    result.update(summarize_profile(profile, log))
    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        entry = manifest["components"][component]
        result.update({"bytes": entry["bytes"], "files": entry["files"], "psnr_db": entry.get("psnr_db"),
                       "psnr_db_calibration": entry.get("psnr_db_calibration"), "verified_on": entry.get("verified_on"),
                       "inputs": entry.get("inputs"), "stage_seconds": manifest.get("timings"),
                       "pass_seconds": {p["name"]: p["seconds"] for p in entry.get("passes", [])}})
        if part.endswith("coreml"):
            result["chunk_bytes"] = [_bytes(out / f) for f in entry["files"]]
            result["compression"] = {k: v for k, v in entry.get("compression", {}).items() if k != "recipe"}
        else:
            result.update({"context_bin_bytes": entry.get("context_bytes"), "qnn_seconds": entry.get("qnn_timings")})
    if not args.keep_builds:
        shutil.rmtree(out, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=("small", "layers2", "full"), default="small")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work"))
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="where the component folders are written/reused [default: --work]")
    parser.add_argument("--height", type=int, default=1024, help="SD3 image height (latents / 8) [default: 1024]")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--limit-gb", type=float, default=21.0, help="kill a part whose process tree passes this")
    parser.add_argument("--floor-gb", type=float, default=2.0, help="kill a part when MemAvailable falls under this")
    parser.add_argument("--deadline", default=None, help="HH:MM UTC: cut a part still running then (recorded)")
    parser.add_argument("--keep-builds", action="store_true")
    parser.add_argument("--not-run", nargs=2, action="append", default=[], metavar=("PART", "WHY"),
                        help="record that PART was not run at --scale and why (no compile)")
    args = parser.parse_args()
    unknown = [p for p in [*args.parts.split(","), *(n for n, _ in args.not_run)] if p not in PARTS]
    if unknown:
        print(f"dit_scale: unknown part '{unknown[0]}': choose from {', '.join(PARTS)}", file=sys.stderr)
        sys.exit(2)
    args.work.mkdir(parents=True, exist_ok=True)
    where = args.checkpoints or args.work
    record: dict[str, Any] = json.loads(OUT.read_text()) if OUT.exists() else {}
    record.update({"benchmark": "dit_scale",
                   "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                               "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")}})
    section = record.setdefault(args.scale, {})
    cfgs = configs(args.scale)
    section.update({"git_rev": git_rev(), "configs": cfgs, "memory_limit_bytes": int(args.limit_gb * (1 << 30)),
                    "memory_floor_bytes": int(args.floor_gb * (1 << 30)),
                    "inputs": "lone component folders: each input set is the component's example inputs from its "
                              "role's seed (one guidance batch of 2), random weights; PSNR on the held-out "
                              "verification inputs"})

    def save() -> None:
        RESULTS.mkdir(exist_ok=True)
        OUT.write_text(json.dumps(record, indent=2) + "\n")

    if args.not_run:  # the reason, and what the part would have compiled (no weights are written or read)
        for part, why in args.not_run:
            section.setdefault("not_run", {})[part] = why
            section.pop(part, None)
            for runs in (section.get("parts_run_at", {}), section.get("parts_git_rev", {})):  # no stale run dates
                runs.pop(part, None)
            kind = "sd3" if part.startswith("sd3") else "t5"
            folder = where / (CHECKPOINT_NAMES[kind] + ("" if args.scale == "full" else f"_{args.scale}"))
            section.setdefault("checkpoints", {}).setdefault(kind, {
                "parameters": parameter_count(kind, cfgs[kind]), "path": str(folder),
                **({"bytes": _bytes(folder)} if (folder / "config.json").exists() else {})})
        save()
        return
    checkpoints: dict[str, Path] = {}
    for part in args.parts.split(","):
        deadline = deadline_time(args.deadline)
        if deadline is not None and time.time() > deadline:
            section.setdefault("not_run", {})[part] = f"the run's deadline ({args.deadline} UTC) passed before it could start"
            save()
            continue
        section.get("not_run", {}).pop(part, None)
        kind = "sd3" if part.startswith("sd3") else "t5"
        if kind not in checkpoints:
            folder = where / (CHECKPOINT_NAMES[kind] + ("" if args.scale == "full" else f"_{args.scale}"))
            print(f"[dit_scale] writing/reusing {folder} ...", flush=True)
            section.setdefault("checkpoints", {})[kind] = {"parameters": parameter_count(kind, cfgs[kind]),
                                                           **write_checkpoint(kind, folder, cfgs[kind])}
            checkpoints[kind] = folder
            save()
        print(f"[dit_scale] {args.scale} {part} ...", flush=True)
        section[part] = run_part(part, checkpoints[kind], args, section["checkpoints"][kind]["parameters"])
        section.setdefault("parts_run_at", {})[part] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        section.setdefault("parts_git_rev", {})[part] = section["git_rev"]
        save()
        print(f"[dit_scale] {part}: {json.dumps(section[part])[:400]}", flush=True)


if __name__ == "__main__":
    main()
