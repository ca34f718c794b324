"""`--bundle swift`: a Resources folder that apple/ml-stable-diffusion's Swift package loads as-is.

The package looks for TextEncoder, (TextEncoder2 for SDXL), Unet or UnetChunk1+UnetChunk2, VAEDecoder
(+ VAEEncoder) as compiled .mlmodelc, plus the tokenizer's vocab.json and merges.txt (SD3: TextEncoder,
TextEncoder2, TextEncoderT5 with T5's tokenizer.json and tokenizer_config.json, MultiModalDiffusionTransformer); a ControlNet pipeline
gives ControlledUnet (the UNet with `additional_residual_*` inputs) and controlnet/<Name>.mlmodelc, the
layout its StableDiffusionPipeline(resourcesAt:controlNet:) reads. The models already
speak its contract (passes/ane/interface.py): float32 `input_ids` [1,77] -> `last_hidden_state` (SDXL:
`hidden_embeds`, `pooled_outputs`); `sample` [2,4,h,w], `timestep` [2], `encoder_hidden_states` [2,C,1,77]
(+ SDXL `text_embeds`, `time_ids`) -> `noise_pred`; `z` -> `image`. We place the .mlpackages (hard links
when the file system allows, so no second copy of the UNet) and compile them to .mlmodelc when
`xcrun coremlcompiler` exists (macOS); elsewhere `compile-mlmodelc.sh` in the folder does it on a Mac.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

RESOURCES = "Resources"
CONTROLNET_DIR = "controlnet"  # ResourceURLs.controlNetDirURL in swift/StableDiffusion/pipeline/*+Resources.swift
SCRIPT = "compile-mlmodelc.sh"


def _link_tree(source: Path, dest: Path) -> None:
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, dest, copy_function=link)


def controlnet_resource_name(checkpoint_path: Path) -> str:
    """The ControlNet's resource name, made as torch2coreml makes it from a model id: split on '_' and '-',
    each word title-cased ("sd-controlnet-canny" -> "SdControlnetCanny")."""
    words = re.split(r"[_\-\s.]+", Path(checkpoint_path).resolve().name)
    return "".join(w.title() for w in words if w) or "ControlNet"


def _coremlcompiler() -> bool:
    if shutil.which("xcrun") is None:
        return False
    probe = subprocess.run(["xcrun", "--find", "coremlcompiler"], capture_output=True, text=True)
    return probe.returncode == 0


def write_swift_resources(build_dir: Path, checkpoint: Any, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write build_dir/Resources; returns what was written (for the manifest)."""
    out = build_dir / RESOURCES
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    packages, controlnets = [], []
    for name, component in manifest["components"].items():
        for rel in component.get("coreml", {}).get("packages", []):
            src = build_dir / rel
            if name == "controlnet":  # Resources/controlnet/<Name>.mlmodelc, Name as the app passes it
                controlnets.append(controlnet_resource_name(getattr(checkpoint, "path", None) or Path(build_dir)))
                (out / CONTROLNET_DIR).mkdir(exist_ok=True)
                dest = f"{CONTROLNET_DIR}/{controlnets[-1]}.mlpackage"
            else:
                dest = src.name
            _link_tree(src, out / dest)
            packages.append(dest)
    tokenizer = getattr(checkpoint, "tokenizer_dirs", {}).get("tokenizer") or build_dir / "tokenizer"
    for fname in ("vocab.json", "merges.txt"):
        if (Path(tokenizer) / fname).exists():
            shutil.copy2(Path(tokenizer) / fname, out / fname)
    t5_tokenizer = getattr(checkpoint, "tokenizer_dirs", {}).get("tokenizer_3") or build_dir / "tokenizer_3"
    if "text_encoder_3" in manifest["components"]:  # SD3's T5: StableDiffusion3Pipeline+Resources.swift
        for fname in ("tokenizer.json", "tokenizer_config.json"):
            if (Path(t5_tokenizer) / fname).exists():
                shutil.copy2(Path(t5_tokenizer) / fname, out / fname)
    unet_chunks = manifest["components"].get("unet", {}).get("coreml", {}).get("chunks", 1)
    notes = []
    if unet_chunks > 2:
        notes.append(f"the UNet has {unet_chunks} chunks; the Swift package loads Unet or UnetChunk1+UnetChunk2 only")
    mmdit_chunks = manifest["components"].get("transformer", {}).get("coreml", {}).get("chunks", 1)
    if mmdit_chunks > 1:
        notes.append(f"the transformer has {mmdit_chunks} chunks; the Swift StableDiffusion3Pipeline loads one "
                     "MultiModalDiffusionTransformer (run the chunks in turn, as fusionc's runner does)")
    script = ["#!/bin/sh", "# Compile the .mlpackages to the .mlmodelc folders the Swift package loads (needs Xcode).",
              'cd "$(dirname "$0")"', "set -e"]
    script += [f'xcrun coremlcompiler compile "{p}" "{Path(p).parent}"' for p in packages]
    (out / SCRIPT).write_text("\n".join(script) + "\n", encoding="utf-8")
    (out / SCRIPT).chmod(0o755)
    compiled = []
    if _coremlcompiler():
        for p in packages:
            subprocess.run(["xcrun", "coremlcompiler", "compile", str(out / p), str((out / p).parent)], check=True,
                           capture_output=True)
            compiled.append(p.replace(".mlpackage", ".mlmodelc"))
    if controlnets:
        notes.append(f"ControlNet pipeline: pass controlNet: {json.dumps(controlnets)} to StableDiffusionPipeline(resourcesAt:"
                     "controlNet:...); the Swift package then loads ControlledUnet (the UNet with residual inputs)")
    return {"format": "swift", "folder": RESOURCES, "packages": packages, "mlmodelc": compiled, "controlnet": controlnets,
            "vocab": (out / "vocab.json").exists(), "merges": (out / "merges.txt").exists(), "notes": notes}
