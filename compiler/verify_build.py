"""`fusionc verify BUILD`: re-run verification of a finished build against its torch checkpoint."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from fusionc import buildfs
from fusionc.checkpoint import checkpoint_sha256, load_checkpoint
from fusionc.core.errors import BadInputError
from fusionc.export import component_spec
from fusionc.core.options import CompileOptions
from fusionc.pipeline import gate_psnr
from fusionc.core.progress import stage
from fusionc.targets import get_target
from fusionc.verify import compare, reference_outputs, trajectory_samples


def options_from_manifest(manifest: dict[str, Any]) -> CompileOptions:
    fields = {f.name for f in dataclasses.fields(CompileOptions)}
    saved = {k: v for k, v in manifest.get("options", {}).items() if k in fields}
    if saved.get("components") is not None:
        saved["components"] = tuple(saved["components"])
    if saved.get("recipe") is not None:
        saved["recipe"] = Path(saved["recipe"])
    return CompileOptions(**saved)


def verify_build(build: Path, min_psnr: float | None = None) -> dict[str, Any]:
    """Recompute each component's PSNR, store it in the manifest, print it, apply the gate."""
    manifest = buildfs.read_manifest(build)
    source = Path(manifest["checkpoint"]["path"])
    if not source.exists():
        raise BadInputError(f"the checkpoint this build came from, '{source}', is gone: verification needs it")
    if checkpoint_sha256(source) != manifest["checkpoint"]["sha256"]:
        raise BadInputError(f"checkpoint '{source}' changed since the build was made: recompile before verifying")
    options = options_from_manifest(manifest)
    checkpoint = load_checkpoint(source, options.allow_pickle)
    target = get_target(manifest["target"])
    with stage("reference trajectory (torch)"):
        feeds, expected = trajectory_samples(checkpoint, options, list(manifest["components"]))
    for name, entry in manifest["components"].items():
        for file in entry["files"]:
            if not (build / file).exists():
                raise BadInputError(f"build file '{build / file}' is missing: recompile the build")
        with stage(f"{name}: verify on {manifest['target']}"):
            if name not in expected:
                expected[name] = reference_outputs(component_spec(checkpoint, name, options).reference, feeds[name])
            scores = compare(target.runner(build, name, manifest), expected[name], feeds[name])
        entry["psnr_db"] = scores.pop("psnr_db")
        entry["psnr_by_output"] = scores
        print(f"{name:14s} {entry['psnr_db']:7.2f} dB")
    tmp = build / (buildfs.MANIFEST + ".tmp")
    buildfs.write_json(tmp, manifest)
    tmp.replace(build / buildfs.MANIFEST)
    gate_psnr(manifest, min_psnr)
    return manifest
