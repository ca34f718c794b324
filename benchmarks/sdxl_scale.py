"""SDXL at full size on this machine: the 2.6B UNet to Core ML (4-bit palettized, chunked) and to QNN W8A16,
against coremltools' own `ct.convert(torch.export.export(unet))`, every part under a memory limit.

Random weights from the public config (../shared/reference-models.md: SDXL UNet, text_time conditioning,
128x128 latents, 77 tokens of 2048 channels). Each part runs in its own process group, watched every 0.5 s:
peak RSS is the whole process tree's, and a part that crosses --limit-gb is killed (recorded as
"killed_at_memory_limit" with the last stage it reached), so no part can take the 24 GB machine down.

  fusionc_coreml  `fusionc compile SDXL_UNET --target coreml --palettize 4 --chunk auto` (verified: PSNR of
                  the palettized chunks in the MIL executor against the fp32 torch UNet on one guidance batch)
  fusionc_qnn     `fusionc compile SDXL_UNET --target qnn --precision w8a16 --qnn-verify-runtime cpu
                  --qnn-remedy-rounds 0`, verified on its QDQ graphs on ORT's CPU EP (HTP emulator verification
                  at this size is hours: one SD-1.5 evaluation takes ~12 minutes); the 2 GB context limit of the
                  device profile splits the UNet into several context binaries
  peer            ct.convert(torch.export.export(unet)), fp16, iOS17, then 4-bit palettization with
                  coremltools.optimize (the peer's own way to the same artifact); stages reached are recorded

Results are written to benchmarks/results/sdxl_scale.json after every part (a long run that is cut keeps
what finished). Heavy: run as

    /work/tools/heavy python benchmarks/sdxl_scale.py --checkpoint /work/ckpt/sdxl_unet [--parts ...] [--work DIR]

Peak memory is recorded twice: RSS, and RSS without memory-mapped file pages ("anon"): fusionc keeps the weights
in a memory-mapped scratch file during the compile, pages the kernel can drop, so the anon figure is what can
run the machine out of memory. fusionc's parts also write a per-stage, per-pass profile
(compile_memory_sdxl_<target>.json, benchmarks/compile_memory_profile.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "sdxl_scale.json"
BATCH, TOKENS = 2, 77

SDXL_UNET: dict[str, Any] = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(5, 10, 20),
    transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048, use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
    norm_num_groups=32,
)


def git_rev() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent)
    return done.stdout.strip()


def write_checkpoint(folder: Path) -> Path:
    """The SDXL UNet alone (a component folder) with seeded random weights, stored in fp32 (10.3 GB: fp16 on
    disk would cost both copies at load, 15 GB, when the loader makes it fp32)."""
    import torch
    from diffusers import UNet2DConditionModel

    if (folder / "config.json").exists():
        return folder
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SDXL_UNET)
    unet.save_pretrained(folder, safe_serialization=True, max_shard_size="20GB")
    return folder


def mem_available() -> int:
    """The machine's MemAvailable in bytes (what other processes can still get without swapping)."""
    with open("/proc/meminfo") as handle:
        return next(int(x.split()[1]) << 10 for x in handle if x.startswith("MemAvailable:"))


class TreeWatch:
    """Peak RSS of a process and its children, sampled every 0.5 s; kills the group over `limit` bytes, or (with
    `floor`) when the machine's MemAvailable falls under `floor` bytes (the machine is shared: a part must not
    starve the others even under its own limit)."""

    def __init__(self, pid: int, limit: int, floor: int = 0, deadline: float | None = None,
                 disk: Path | None = None) -> None:
        self.pid, self.limit, self.peak, self.killed = pid, limit, 0, False
        self.disk = disk  # a folder on the disk the part writes to: its least free space is recorded
        self.disk_free_before = self.min_disk_free = shutil.disk_usage(disk).free if disk is not None else None
        self.floor, self.killed_at_floor, self.min_available = floor, False, mem_available()
        self.deadline, self.killed_at_deadline = deadline, False  # deadline: time.time() past which the group is killed
        self.peak_anon = 0  # RSS minus memory-mapped file pages (which the kernel can drop): what can OOM the machine
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _rss(self) -> tuple[int, int]:
        import psutil

        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0, 0
        total = anon = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
                with open(f"/proc/{proc.pid}/status") as handle:
                    anon += next(int(x.split()[1]) << 10 for x in handle if x.startswith("RssAnon:"))
            except (psutil.Error, OSError, StopIteration):
                pass
        return total, anon

    def _run(self) -> None:
        while True:
            try:
                os.kill(self.pid, 0)
            except OSError:
                return
            rss, anon = self._rss()
            self.peak, self.peak_anon = max(self.peak, rss), max(self.peak_anon, anon)
            available = mem_available()
            self.min_available = min(self.min_available, available)
            if self.disk is not None:
                self.min_disk_free = min(self.min_disk_free, shutil.disk_usage(self.disk).free)
            late = self.deadline is not None and time.time() > self.deadline
            if (rss > self.limit or available < self.floor or late) and not self.killed:
                self.killed, self.killed_at_floor = True, rss <= self.limit and available < self.floor
                self.killed_at_deadline = rss <= self.limit and not self.killed_at_floor
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.5)


def run_watched(command: list[str], limit: int, log: Path, floor: int = 0, deadline: float | None = None,
                disk: Path | None = None) -> dict[str, Any]:
    """Run `command` in its own process group under the memory watch; returns wall, peak, exit, last lines
    (with a `floor`, also whether the machine's MemAvailable fell under it and its lowest value; with a `deadline`,
    whether the part was cut there; with `disk`, that disk's free bytes before and at their lowest)."""
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    with log.open("w") as handle:
        proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        watch = TreeWatch(proc.pid, limit, floor, deadline, disk)
        code = proc.wait()
    watch.thread.join(timeout=2)
    lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip() and "Failed to load" not in x]
    stages = [x for x in lines if x.startswith("[fusionc]") or x.startswith("[peer]")]
    floor_fields = ({"killed_at_memory_floor": watch.killed_at_floor, "memory_floor_bytes": floor,
                     "min_mem_available_bytes": watch.min_available} if floor else {})
    return {"command": " ".join(command[1:]) if command[0] == sys.executable else " ".join(command),
            "exit_code": code, "wall_s": round(time.perf_counter() - start, 1), "peak_rss_bytes": watch.peak,
            "peak_rss_anon_bytes": watch.peak_anon,
            "killed_at_memory_limit": watch.killed and not (watch.killed_at_floor or watch.killed_at_deadline),
            **floor_fields, **({"killed_at_deadline": watch.killed_at_deadline} if deadline is not None else {}),
            **({"disk_free_before_bytes": watch.disk_free_before, "min_disk_free_bytes": watch.min_disk_free}
               if disk is not None else {}),
            "last_stage": stages[-1] if stages else None,
            "log_tail": lines[-6:], "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


JUDGING = ("trajectory", "reference", "verify", "PSNR")  # fusionc's own measurements: the peer has no counterpart


def summarize_profile(profile: Path, log: Path) -> dict[str, Any]:
    """Stage seconds from the per-stage profile (also when the compile failed and wrote no manifest), the compile
    time without fusionc's torch reference and verification stages, and the one-line error if there was one."""
    if not profile.exists():
        return {}
    rows = [r for r in json.loads(profile.read_text())["rows"] if r["kind"] == "stage"]
    stages = {r["name"]: r["seconds"] for r in rows}
    summary: dict[str, Any] = {"stage_seconds_from_profile": stages, "compile_s_without_trajectory_and_verification":
                               round(sum(v for k, v in stages.items() if not any(j in k for j in JUDGING)), 1)}
    errors = [x for x in log.read_text(errors="replace").splitlines() if x.startswith("fusionc: ")] if log.exists() else []
    if errors:
        summary["error"] = errors[-1]
    return summary


def part_fusionc(kind: str, checkpoint: Path, work: Path, limit: int) -> dict[str, Any]:
    """The compile runs under benchmarks/compile_memory_profile.py: RSS per stage and per pass beside the totals."""
    out = work / f"sdxl_{kind}"
    profile = RESULTS / f"compile_memory_sdxl_{kind}.json"
    # one verification call (batch 2) and two calibration calls: at 128x128 each torch UNet call takes minutes
    common = [sys.executable, str(Path(__file__).parent / "compile_memory_profile.py"), "--checkpoint", str(checkpoint),
              "--out", str(out), "--json", str(profile), "--", "--components", "unet",
              "--verify-steps", "1", "--verify-prompts", "1", "--calibration-steps", "1", "--calibration-prompts", "2"]
    if kind == "coreml":  # the default device (iPhone 14 Pro, 1 GB per model) makes --chunk auto split the UNet
        command = common + ["--target", "coreml", "--palettize", "4", "--chunk", "auto"]
    else:
        # no remedy rounds (each is a QDQ evaluation of the whole UNet: minutes here), one selection call
        # and verified on the QDQ graphs on ORT's CPU EP (the HTP emulator at this size takes hours per call)
        command = common + ["--target", "qnn", "--precision", "w8a16", "--calibration-samples", "2",
                            "--qnn-verify-runtime", "cpu", "--qnn-remedy-rounds", "0", "--selection-steps", "1",
                            "--selection-prompts", "1"]
    shutil.rmtree(out, ignore_errors=True)
    result = run_watched(command, limit, work / f"sdxl_{kind}.log", disk=work)
    result["memory_profile"] = str(profile.relative_to(Path(__file__).parent.parent))
    result.update(summarize_profile(profile, work / f"sdxl_{kind}.log"))
    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        unet = manifest["components"]["unet"]
        result.update({"bytes": unet["bytes"], "files": unet["files"], "psnr_db": unet.get("psnr_db"),
                       "psnr_db_calibration": unet.get("psnr_db_calibration"), "verified_on": unet.get("verified_on"),
                       "stage_seconds": manifest.get("timings"),
                       "pass_seconds": {p["name"]: p["seconds"] for p in unet.get("passes", [])},
                       "peak_rss_mb_after_stage": manifest.get("peak_rss_mb_after_stage")})
        if kind == "coreml":
            result["chunk_bytes"] = [_bytes(out / f) for f in unet["files"]]
            result["compression"] = {k: v for k, v in unet.get("compression", {}).items() if k != "recipe"}
        else:
            result.update({"context_bin_bytes": unet.get("context_bytes"), "qnn_seconds": unet.get("qnn_timings")})
    return result


def peer_child(checkpoint: Path, out: Path) -> None:
    """In the child: ct.convert(torch.export.export(unet)) then coremltools' own 4-bit palettization."""
    import warnings

    warnings.filterwarnings("ignore")
    import coremltools as ct
    import torch
    from diffusers import UNet2DConditionModel

    def mark(name: str, start: float) -> None:
        print(f"[peer] {name} done in {time.perf_counter() - start:.1f} s", flush=True)

    class Wrapper(torch.nn.Module):
        def __init__(self, unet: torch.nn.Module) -> None:
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, encoder_hidden_states, text_embeds, time_ids):  # noqa: ANN001
            added = {"text_embeds": text_embeds, "time_ids": time_ids}
            return self.unet(sample, timestep, encoder_hidden_states, added_cond_kwargs=added, return_dict=False)[0]

    t = time.perf_counter()
    unet = UNet2DConditionModel.from_pretrained(checkpoint, torch_dtype=torch.float32).eval()
    mark("load", t)
    gen = torch.Generator().manual_seed(0)
    example = (torch.randn(BATCH, 4, 128, 128, generator=gen), torch.tensor([500.0] * BATCH),
               torch.randn(BATCH, TOKENS, 2048, generator=gen), torch.randn(BATCH, 1280, generator=gen),
               torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]] * BATCH))
    t = time.perf_counter()
    with torch.no_grad():
        exported = torch.export.export(Wrapper(unet).eval(), example)
    exported = exported.run_decompositions({})
    mark("torch.export", t)
    t = time.perf_counter()
    model = ct.convert(exported, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
                       compute_precision=ct.precision.FLOAT16, skip_model_load=True)
    mark("ct.convert", t)
    del exported, unet
    t = time.perf_counter()
    import coremltools.optimize.coreml as cto

    config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(mode="kmeans", nbits=4))
    model = cto.palettize_weights(model, config)
    mark("palettize 4-bit", t)
    t = time.perf_counter()
    model.save(str(out))
    mark("save", t)


def part_peer(checkpoint: Path, work: Path, limit: int) -> dict[str, Any]:
    out = work / "sdxl_peer" / "Unet.mlpackage"
    shutil.rmtree(out.parent, ignore_errors=True)
    out.parent.mkdir(parents=True)
    result = run_watched([sys.executable, __file__, "--peer-child", str(checkpoint), str(out)], limit,
                         work / "sdxl_peer.log")
    result["stages_reached"] = [x for x in (work / "sdxl_peer.log").read_text(errors="replace").splitlines()
                                if x.startswith("[peer]")]
    result["bytes"] = _bytes(out)
    return result


def save(record: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(record, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work"))
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="an SDXL UNet folder to use (e.g. /work/ckpt/sdxl_unet); default: write one under --work")
    parser.add_argument("--parts", default="fusionc_coreml,peer,fusionc_qnn")
    parser.add_argument("--limit-gb", type=float, default=21.0, help="kill a part whose process tree passes this")
    parser.add_argument("--peer-child", nargs=2, type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_child:
        peer_child(*args.peer_child)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    limit = int(args.limit_gb * (1 << 30))
    record: dict[str, Any] = json.loads(OUT.read_text()) if OUT.exists() else {}
    record.update({
        "benchmark": "sdxl_scale", "git_rev": git_rev(),
        "model": "SDXL UNet2DConditionModel (2.6B), random weights from the public config, batch 2, 128x128 latents, "
                 f"{TOKENS} tokens x 2048, text_time conditioning",
        "memory_limit_bytes": limit,
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")},
    })
    t = time.perf_counter()
    checkpoint = args.checkpoint or write_checkpoint(args.work / "sdxl_unet")
    record["checkpoint"] = {"path": str(checkpoint), "bytes": _bytes(checkpoint),
                            **({} if args.checkpoint else {"write_s": round(time.perf_counter() - t, 1)})}
    save(record)
    for part in args.parts.split(","):
        print(f"[sdxl_scale] {part} ...", flush=True)
        if part == "peer":
            record["peer"] = part_peer(checkpoint, args.work, limit)
        else:
            record[part] = part_fusionc(part.split("_")[1], checkpoint, args.work, limit)
        record.setdefault("parts_run_at", {})[part] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        record.setdefault("parts_git_rev", {})[part] = record["git_rev"]
        record.get("not_run", {}).pop(part, None)  # a part that ran is no longer "not run"
        if not record.get("not_run", True):
            record.pop("not_run")
        save(record)
        print(f"[sdxl_scale] {part}: {json.dumps(record[part])[:400]}", flush=True)


if __name__ == "__main__":
    main()
