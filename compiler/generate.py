"""`fusionc generate`: one image from a prompt, on a compiled build's runtime or on the torch checkpoint.

The loop itself is `fusionc.trajectory.denoise` (the one verification uses): tokenizer -> text encoder ->
N diffusers-scheduler steps (DPM-Solver++ by default) with classifier-free guidance as a batch of 2 ->
VAE decoder. Initial noise comes from numpy's seeded generator, so a build and its torch reference start
from identical noise and their images can be compared by PSNR.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fusionc.controlnet import is_residual, read_control_image
from fusionc.core.errors import BadInputError
from fusionc.trajectory import Feeds, Runner, denoise, load_scheduler, load_tokenizer, to_uint8

DEFAULT_GUIDANCE = 4.0
DEFAULT_SCALING_FACTOR = 0.18215  # SD-1.x's, when neither the build nor its checkpoint says otherwise
COMPONENTS = ("text_encoder", "unet", "vae_decoder")


@dataclass
class RunnerSet:
    """Everything generate needs besides the prompt: runners, tokenizer, scheduler and image geometry."""

    runners: dict[str, Runner]
    tokenizer: Any
    scheduler: Any
    height: int
    width: int
    scaling_factor: float
    latent_channels: int = 4
    text_length: int = 77
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def generate(prompt: str, runners: dict[str, Runner], tokenizer: Any, scheduler: Any, steps: int = 8, seed: int = 0,
             guidance: float = DEFAULT_GUIDANCE, height: int = 64, width: int = 64, *,
             scaling_factor: float = DEFAULT_SCALING_FACTOR, latent_channels: int = 4,
             text_length: int = 77, control_image: np.ndarray | None = None,
             control_scale: float = 1.0) -> tuple[np.ndarray, dict[str, Any]]:
    """Run the text-to-image loop; returns (uint8 HxWx3 image, info with timings per component).

    Classifier-free guidance runs the UNet on a batch of 2 (empty prompt, prompt) when guidance > 1.
    A prompt longer than the text encoder's length is truncated like CLIP, with a warning."""
    if steps < 1:
        raise BadInputError(f"--steps {steps} must be at least 1")
    if height % 8 or width % 8:
        raise BadInputError(f"image size {height}x{width} must be a multiple of 8 (the VAE's downsampling)")
    seconds: dict[str, float] = {name: 0.0 for name in runners}
    calls: dict[str, int] = {name: 0 for name in runners}

    def timed(name: str, runner: Runner) -> Runner:
        def run(feeds: Feeds) -> Feeds:
            start = time.perf_counter()
            out = runner(feeds)
            seconds[name] += time.perf_counter() - start
            calls[name] += 1
            return out
        return run

    start = time.perf_counter()
    image = denoise({k: timed(k, v) for k, v in runners.items()}, {"tokenizer": tokenizer}, copy.deepcopy(scheduler),
                    prompt, steps=steps, seed=seed, guidance=guidance,
                    latent_shape=(latent_channels, height // 8, width // 8), scaling_factor=scaling_factor,
                    text_length=text_length, control_image=control_image, control_scale=control_scale)
    info = {"prompt": prompt, "steps": steps, "seed": seed, "guidance": guidance, "height": height, "width": width,
            "scheduler": type(scheduler).__name__, "seconds": round(time.perf_counter() - start, 4),
            "component_seconds": {k: round(v, 4) for k, v in seconds.items()}, "calls": calls}
    return to_uint8(image), info


def torch_runners(checkpoint: Path | str | None = None) -> RunnerSet:
    """The fp32 torch reference of a diffusers checkpoint folder (default: the built-in pipeline)."""
    from fusionc.checkpoint import load_checkpoint
    from fusionc.export import component_spec, image_size, text_length
    from fusionc.core.options import CompileOptions

    ckpt = load_checkpoint(checkpoint)
    if ckpt.dit_family is not None:  # SD3 / PixArt: fusionc.dit_generate
        from fusionc.dit_generate import dit_torch_runners

        return dit_torch_runners(ckpt)
    missing = [c for c in COMPONENTS if c not in ckpt.component_names()]
    if missing or "tokenizer" not in ckpt.tokenizer_dirs:
        raise BadInputError(f"'{ckpt.path}' is not a text-to-image pipeline (missing {', '.join(missing) or 'tokenizer'}): "
                            "pass a diffusers pipeline folder")
    if ckpt.is_sdxl:
        raise BadInputError("generate supports SD-1.x/2.x pipelines (one text encoder); this checkpoint is SDXL")
    options = CompileOptions()
    height, width = image_size(ckpt, options)
    names = COMPONENTS + (("controlnet",) if ckpt.has_controlnet else ())
    runners = {name: component_spec(ckpt, name, options).reference for name in names}
    vae = ckpt.models["vae"].config
    return RunnerSet(runners, load_tokenizer(ckpt.tokenizer_dirs["tokenizer"]), load_scheduler(ckpt.scheduler_dir),
                     height, width, float(getattr(vae, "scaling_factor", None) or DEFAULT_SCALING_FACTOR),
                     int(ckpt.models["unet"].config.in_channels), text_length(ckpt), str(ckpt.path))


def build_runners(build: Path) -> RunnerSet:
    """The runners of a compiled build folder, on its target's runtime (exit 2 if it is not a build)."""
    from fusionc import buildfs
    from fusionc.targets import get_target

    build = Path(build)
    manifest = buildfs.read_manifest(build)
    if "dit" in manifest:  # SD3 / PixArt: fusionc.dit_generate
        from fusionc.dit_generate import dit_build_runners

        return dit_build_runners(build, manifest)
    missing = [c for c in COMPONENTS if c not in manifest["components"]]
    if missing:
        raise BadInputError(f"build '{build}' lacks {', '.join(missing)}: compile it with the default components")
    if not (build / "tokenizer").is_dir():
        raise BadInputError(f"build '{build}' has no tokenizer/ folder: recompile it with `fusionc compile`")
    target = get_target(manifest["target"], f"generating with a {manifest['target']} build")
    names = COMPONENTS + (("controlnet",) if "controlnet" in manifest["components"] else ())
    if "controlnet" not in names and any(is_residual(k) for k in manifest["components"]["unet"]["inputs"]):
        raise BadInputError(f"build '{build}' has a UNet that takes ControlNet residuals but no controlnet: "
                            "compile it with the default components")
    runners = {name: target.runner(build, name, manifest) for name in names}
    unet_in = manifest["components"]["unet"]["inputs"]
    sample_shape = unet_in["sample"]["shape"]
    height, width = (manifest.get("image") or {}).get("height"), (manifest.get("image") or {}).get("width")
    height, width = height or sample_shape[2] * 8, width or sample_shape[3] * 8
    text = manifest["components"]["text_encoder"]["inputs"]["input_ids"]["shape"][1]
    return RunnerSet(runners, load_tokenizer(build / "tokenizer"),
                     load_scheduler(build / "scheduler" if (build / "scheduler").is_dir() else None),
                     int(height), int(width), build_scaling_factor(build, manifest), int(sample_shape[1]),
                     int(text), str(build), {"target": manifest["target"], "checkpoint": manifest.get("checkpoint")})


def build_scaling_factor(build: Path, manifest: dict[str, Any]) -> float:
    """The VAE latent scaling factor: the manifest's, else the source checkpoint's vae/config.json, else SD's."""
    if manifest.get("scaling_factor"):
        return float(manifest["scaling_factor"])
    for config in (build / "vae_decoder" / "config.json",
                   Path((manifest.get("checkpoint") or {}).get("path", "")) / "vae" / "config.json"):
        if config.is_file():
            value = json.loads(config.read_text(encoding="utf-8")).get("scaling_factor")
            if value:
                return float(value)
    return DEFAULT_SCALING_FACTOR


def run(prompt: str, rs: RunnerSet, steps: int = 8, seed: int = 0, guidance: float = DEFAULT_GUIDANCE,
        control_image: Path | None = None, control_scale: float | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """generate() with a RunnerSet's geometry; `control_image` (a file) conditions a ControlNet build, its
    residuals times `control_scale` (None: 1). A DiT pipeline's (SD3, PixArt) runs fusionc.dit_generate.run_dit."""
    given = "--control-image" if control_image is not None else "--control-scale" if control_scale is not None else None
    if hasattr(rs, "geo"):
        from fusionc.dit_generate import run_dit

        if given:
            raise BadInputError(f"{given} given, but '{rs.source}' is a diffusion-transformer pipeline "
                                f"without a controlnet: leave out {given}")
        return run_dit(prompt, rs, steps, seed, guidance)
    image = None
    if "controlnet" in rs.runners:
        if control_image is None:
            raise BadInputError(f"'{rs.source}' is a ControlNet pipeline: pass --control-image IMAGE "
                                "(for example the outline of the shape to draw)")
        image = read_control_image(control_image, rs.height, rs.width)
    elif given:
        raise BadInputError(f"{given} given, but '{rs.source}' has no controlnet: compile a "
                            f"StableDiffusionControlNetPipeline folder, or leave out {given}")
    control_scale = 1.0 if control_scale is None else control_scale
    result, info = generate(prompt, rs.runners, rs.tokenizer, rs.scheduler, steps, seed, guidance, rs.height, rs.width,
                            scaling_factor=rs.scaling_factor, latent_channels=rs.latent_channels,
                            text_length=rs.text_length, control_image=image, control_scale=control_scale)
    if image is not None:
        info.update(control_image=str(control_image), control_scale=control_scale)
    return result, info


def image_psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB of two uint8 images on the 0..255 scale (peak 255)."""
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    return 200.0 if mse == 0 else min(200.0, 10 * np.log10(255.0 ** 2 / mse))


def save_png(image: np.ndarray, path: Path) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def check_image_out(out: Path) -> None:
    """--out: a writable path whose extension names an image format Pillow writes (before any work)."""
    from PIL import Image

    from fusionc.buildfs import check_output_file

    Image.init()
    suffix = Path(out).suffix.lower()
    if Image.registered_extensions().get(suffix) not in Image.SAVE:
        raise BadInputError(f"--out '{out}' has {'no' if not suffix else f'the unknown'} image extension"
                            f"{' ' + suffix if suffix else ''}: end it in .png (or .jpg, .webp)")
    check_output_file(Path(out), "--out")


def check_reference(build: Path, checkpoint: Path | str) -> None:
    """--checkpoint with --build is the torch reference of the build's PSNR: refuse one that is not the checkpoint
    the build was compiled from (its manifest's sha256), which would score the build against another model."""
    from fusionc import buildfs
    from fusionc.checkpoint import checkpoint_path, checkpoint_sha256

    recorded = buildfs.read_manifest(Path(build)).get("checkpoint") or {}
    path = checkpoint_path(checkpoint)
    if not path.is_dir():
        raise BadInputError(f"checkpoint '{path}' does not exist: pass a diffusers pipeline folder")
    if not recorded.get("sha256") or (recorded.get("path") and Path(recorded["path"]) == path.resolve()):
        return  # no hash recorded to compare with, or the very folder the build came from
    if checkpoint_sha256(path) != recorded["sha256"]:
        raise BadInputError(f"--checkpoint '{checkpoint}' is not the checkpoint build '{build}' was compiled from "
                            f"({recorded.get('path', '?')}, sha256 {recorded['sha256'][:12]}): its PSNR would compare "
                            "different models; pass that checkpoint (or a copy of it), or leave out --checkpoint")


def reference_like(ref: Any, rs: Any) -> Any:
    """The torch reference set up as the build was compiled: its image size and, for a diffusion transformer, its
    geometry (the T5 token count of --text-length) and its text encoders (a build without its T5 runs SD3 without
    one), so that the image PSNR compares the same pipeline on two runtimes, not two pipelines."""
    ref.height, ref.width = rs.height, rs.width
    if hasattr(rs, "geo"):
        ref.geo = rs.geo
        ref.runners = {name: run for name, run in ref.runners.items() if name in rs.runners}
    return ref


def generate_command(prompt: str, build: Path | None, checkpoint: Path | None, out: Path, steps: int = 8,
                     seed: int = 0, guidance: float = DEFAULT_GUIDANCE, min_psnr: float | None = None,
                     echo: Any = print, control_image: Path | None = None,
                     control_scale: float | None = None) -> dict[str, Any]:
    """`fusionc generate`: the build's image (or the torch checkpoint's without --build) written to out.

    With --build, the same prompt and seed also run on the torch checkpoint the build came from (or
    --checkpoint), and the PSNR of the build's image against it is reported (exit 1 under --min-psnr)."""
    import warnings

    from fusionc.checkpoint import recorded_checkpoint
    from fusionc.core.errors import CheckFailedError

    check_image_out(out)  # a bad --out fails now, not after the images
    if min_psnr is not None and build is None:  # torch alone: no build image to score against it
        raise BadInputError("--min-psnr gates a build's image against torch: add --build BUILD or drop --min-psnr")
    if build is not None and checkpoint is not None:
        check_reference(build, checkpoint)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if build is not None:
            rs = build_runners(build)
            source = checkpoint or recorded_checkpoint(rs.extra.get("checkpoint") or {})
            gone = checkpoint is None and not (source / "model_index.json").is_file()
            if gone and min_psnr is not None:  # a gate that cannot be evaluated: refused before the image
                raise BadInputError(f"--min-psnr needs the torch reference, and the build's checkpoint '{source}' "
                                    "is gone: pass --checkpoint (the same model), or drop --min-psnr")
            image, info = run(prompt, rs, steps, seed, guidance, control_image, control_scale)
            info["target"] = rs.extra["target"]
            if gone:
                info["psnr_db"] = None
                echo(f"note: the build's checkpoint '{source}' is gone; no torch reference to compare with")
            else:
                ref_rs = reference_like(torch_runners(source), rs)
                reference, ref_info = run(prompt, ref_rs, steps, seed, guidance, control_image, control_scale)
                info["psnr_db"] = round(image_psnr(reference, image), 2)
                info["torch_seconds"] = ref_info["seconds"]
        else:
            rs = torch_runners(checkpoint)
            image, info = run(prompt, rs, steps, seed, guidance, control_image, control_scale)
            info["target"] = "torch"
    for warning in caught:
        if "truncated" in str(warning.message):
            echo(f"warning: {warning.message}")
    save_png(image, out)
    psnr = info.get("psnr_db")
    echo(f"wrote {out} ({image.shape[1]}x{image.shape[0]}, {steps} steps, seed {seed}, guidance {guidance:g}, "
         f"{info['seconds']:.2f} s on {info['target']})" + (f"; PSNR vs torch {psnr:.1f} dB" if psnr is not None else ""))
    if min_psnr is not None and psnr is not None and psnr < min_psnr:
        raise CheckFailedError(f"image PSNR {psnr:.1f} dB vs torch is under --min-psnr {min_psnr:g} dB")
    return info
