"""`fusionc generate` for diffusion-transformer pipelines (SD3, PixArt): runners of a build or of the torch checkpoint.

fusionc.generate dispatches here when a build's manifest has a "dit" entry or the checkpoint has a transformer;
the loop is fusionc.dit_trajectory.denoise_dit (the one verification records), on the build's runtime.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fusionc.core.errors import BadInputError
from fusionc.dit import DitGeometry
from fusionc.dit_trajectory import (denoise_dit, load_dit_scheduler, load_dit_tokenizers, required_components,
                                    required_tokenizers)
from fusionc.trajectory import Runner, to_uint8

DIT_DEFAULT_GUIDANCE = 4.5


@dataclass
class DitRunnerSet:
    """Runners, tokenizers, scheduler and geometry of a DiT pipeline (a build's or the torch checkpoint's)."""

    runners: dict[str, Runner]
    tokenizers: dict[str, Any]
    scheduler: Any
    geo: DitGeometry
    height: int
    width: int
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _check_folders(where: str, components: list[str], tokenizer_dirs: dict[str, Path], family: str) -> None:
    missing = [c for c in required_components(family) if c not in components]
    missing += [t for t in required_tokenizers(family) if t not in tokenizer_dirs]
    if family == "sd3" and "text_encoder_3" in components and "tokenizer_3" not in tokenizer_dirs:
        missing.append("tokenizer_3")
    if missing:
        raise BadInputError(f"{where} lacks {', '.join(missing)}: a {family} pipeline needs them to generate")


def dit_build_runners(build: Path, manifest: dict[str, Any]) -> DitRunnerSet:
    """The runners of a compiled DiT build on its target's runtime."""
    from fusionc.targets import get_target

    try:
        geo = DitGeometry(**manifest["dit"])
    except TypeError as err:  # a hand-edited or damaged manifest: bad input, not an error of fusionc
        raise BadInputError(f"'{build / 'manifest.json'}' has a damaged 'dit' entry ({err}): recompile the build") from err
    components = list(manifest["components"])
    tokenizer_dirs = {t: build / t for t in ("tokenizer", "tokenizer_2", "tokenizer_3") if (build / t).is_dir()}
    _check_folders(f"build '{build}'", components, tokenizer_dirs, geo.family)
    target = get_target(manifest["target"])
    names = [c for c in (*required_components(geo.family), "text_encoder_3") if c in components]
    runners = {name: target.runner(build, name, manifest) for name in names}
    image = manifest.get("image") or {}
    if not (image.get("height") and image.get("width")):  # as the UNet path: the latent input's shape says it
        inputs = manifest["components"]["transformer"].get("inputs") or {}
        shape = next((v["shape"] for v in inputs.values() if len(v.get("shape") or []) == 4), None)
        if shape is None or not all(isinstance(n, int) for n in shape[2:]):
            raise BadInputError(f"'{build / 'manifest.json'}' records no image size: recompile the build")
        image = {"height": shape[2] * geo.latent_scale, "width": shape[3] * geo.latent_scale}
    scheduler_dir = build / "scheduler" if (build / "scheduler").is_dir() else None
    return DitRunnerSet(runners, load_dit_tokenizers(tokenizer_dirs), load_dit_scheduler(scheduler_dir), geo,
                        int(image["height"]), int(image["width"]), str(build),
                        {"target": manifest["target"], "checkpoint": manifest.get("checkpoint")})


def dit_torch_runners(ckpt: Any) -> DitRunnerSet:
    """The fp32 torch reference of a loaded DiT checkpoint."""
    from fusionc.core.options import CompileOptions
    from fusionc.dit import geometry
    from fusionc.export import component_spec, image_size

    _check_folders(f"'{ckpt.path}'", ckpt.component_names(), ckpt.tokenizer_dirs, ckpt.dit_family)
    options = CompileOptions()
    height, width = image_size(ckpt, options)
    names = [c for c in ckpt.component_names() if not c.startswith("vae_encoder")]
    runners = {name: component_spec(ckpt, name, options).reference for name in names}
    return DitRunnerSet(runners, load_dit_tokenizers(ckpt.tokenizer_dirs), load_dit_scheduler(ckpt.scheduler_dir),
                        geometry(ckpt, options), height, width, str(ckpt.path))


def run_dit(prompt: str, rs: DitRunnerSet, steps: int = 8, seed: int = 0,
            guidance: float = DIT_DEFAULT_GUIDANCE) -> tuple[np.ndarray, dict[str, Any]]:
    """One image (uint8 HxWx3) and info with timings per component."""
    if steps < 1:
        raise BadInputError(f"--steps {steps} must be at least 1")
    seconds = {name: 0.0 for name in rs.runners}

    def timed(name: str, runner: Runner) -> Runner:
        def call(feeds: dict) -> dict:
            start = time.perf_counter()
            out = runner(feeds)
            seconds[name] += time.perf_counter() - start
            return out
        return call

    scale = rs.geo.latent_scale
    start = time.perf_counter()
    image = denoise_dit({k: timed(k, v) for k, v in rs.runners.items()}, rs.tokenizers, copy.deepcopy(rs.scheduler),
                        prompt, rs.geo, steps=steps, seed=seed, guidance=guidance,
                        latent_hw=(rs.height // scale, rs.width // scale))
    info = {"prompt": prompt, "steps": steps, "seed": seed, "guidance": guidance, "height": rs.height,
            "width": rs.width, "scheduler": type(rs.scheduler).__name__, "family": rs.geo.family,
            "seconds": round(time.perf_counter() - start, 4),
            "component_seconds": {k: round(v, 4) for k, v in seconds.items()}}
    return to_uint8(image), info
