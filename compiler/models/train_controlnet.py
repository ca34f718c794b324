"""Train the built-in ControlNet: the shape's outline moves the built-in pipeline's shape (CPU, one thread).

    python -m fusionc.models.train_controlnet --out compiler/models/tiny_controlnet

The ControlNet starts as a copy of the shipped tiny UNet's down path (diffusers `ControlNetModel.from_unet`,
zero convolutions at zero) and learns, with the UNet, VAE and text encoder frozen, to reproduce the shapes
dataset (fusionc.models.shapes_dataset) from its outline: the conditioning image is the white 1.5-pixel
outline of the drawn shape on black (fusionc.controlnet.outline_from_sdf), exactly where it was drawn. Half of
the captions name a wrong position (and 10% are empty), so where the shape goes must come from the outline,
not from the words. Loss and noise schedule are the UNet's (train_tiny.py): v-prediction, min-SNR weighting;
timesteps from the noisy half only (--min-t) with 40% at the zero-SNR timestep 999, where the layout is decided
(the frozen UNet draws the details). Weights are saved in fp16
(a few MB); the folder beside the built-in pipeline makes a StableDiffusionControlNetPipeline with it
(`fusionc compile builtin:controlnet`, fusionc.checkpoint).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fusionc.controlnet import outline_from_sdf
from fusionc.models.shapes_dataset import COLOURS, POSITIONS, SIZE, Scene, background, random_scene, shape_sdf

BUILTIN = Path(__file__).parent / "tiny_sd"


def log(msg: str) -> None:
    print(f"[train_controlnet {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def render_with_outline(scene: Scene, rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """shapes_dataset.render's picture (same jitter ranges) and the outline of the shape as drawn:
    (uint8 [size, size, 3], float32 [3, size, size] in [0, 1])."""
    image = background(scene, rng, size)
    # anywhere, not only at the five anchors: the outline, not the caption, says where
    cx, cy = rng.uniform(12, size - 12), rng.uniform(12, size - 12)
    r = rng.uniform(9.5, 12.5)
    colour = np.clip(np.array(COLOURS[scene.colour], np.float32) + rng.uniform(-12, 12, 3), 0, 255)
    sdf = shape_sdf(scene.shape, cx, cy, r, size)
    cover = np.clip(0.5 - sdf, 0.0, 1.0)[..., None]
    image = image * (1 - cover) + colour * cover
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), outline_from_sdf(sdf)[0]


def make_controlnet_dataset(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """n images, their outlines and captions; half of the captions name a wrong position."""
    rng = np.random.default_rng(seed)
    images, outlines, captions = [], [], []
    for _ in range(n):
        scene = random_scene(rng)
        image, outline = render_with_outline(scene, rng)
        if rng.random() < 0.5:
            scene = Scene(scene.colour, scene.shape, str(rng.choice(list(POSITIONS))), scene.background)
        images.append(image), outlines.append(outline), captions.append(scene.caption)
    return np.stack(images), np.stack(outlines), captions


def outline_at(shape: str, position: str, size: int = SIZE) -> np.ndarray:
    """[1, 3, size, size]: the outline of `shape` at a named anchor, at the dataset's mean size."""
    x, y = POSITIONS[position]
    return outline_from_sdf(shape_sdf(shape, x * size / SIZE, y * size / SIZE, 11.0 * size / SIZE, size))


def control_follow_rate(rs, cases: list[tuple[str, str, str]], seeds: int = 1, steps: int = 8) -> dict:
    """For (prompt, shape, position) cases, on a ControlNet pipeline's runners (fusionc.generate.RunnerSet): how
    often the generated shape sits where the control outline is (fusionc.models.shapes_check.detect), whatever
    position the prompt names."""
    import copy

    from fusionc.generate import generate
    from fusionc.models.shapes_check import detect

    hits, results = 0, []
    for prompt, shape, position in cases:
        for seed in range(seeds):
            image, _ = generate(prompt, rs.runners, rs.tokenizer, copy.deepcopy(rs.scheduler), steps, seed, 4.0,
                                rs.height, rs.width, scaling_factor=rs.scaling_factor,
                                latent_channels=rs.latent_channels, text_length=rs.text_length,
                                control_image=outline_at(shape, position, rs.height))
            got = detect(image).position
            hits += got == position
            results.append({"prompt": prompt, "outline": f"{shape} {position}", "seed": seed, "detected": got})
    return {"rate": hits / max(len(results), 1), "cases": results}


def pipeline_with(controlnet_folder: Path, work: Path) -> Path:
    """A ControlNet pipeline folder: the built-in pipeline's folders (linked) + `controlnet_folder`."""
    work.mkdir(parents=True, exist_ok=True)
    for name in ("text_encoder", "unet", "vae", "tokenizer", "scheduler"):
        if not (work / name).exists():
            (work / name).symlink_to((BUILTIN / name).resolve())
    if not (work / "controlnet").exists():
        (work / "controlnet").symlink_to(Path(controlnet_folder).resolve())
    index = json.loads((BUILTIN / "model_index.json").read_text(encoding="utf-8"))
    index.update(_class_name="StableDiffusionControlNetPipeline", controlnet=["diffusers", "ControlNetModel"])
    (work / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return work


EVAL_CASES = [("a red circle on the left", "circle", "right"), ("a blue square at the top", "square", "bottom"),
              ("a green triangle at the bottom", "triangle", "top"), ("a yellow cross on the right", "cross", "left"),
              ("a purple circle in the center", "circle", "left"), ("a cyan square on the left", "square", "center")]


def load_builtin(folder: Path = BUILTIN):
    from transformers import CLIPTokenizer

    from fusionc.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(folder)
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    return checkpoint, tokenizer


def train(args: argparse.Namespace) -> dict:
    from diffusers import ControlNetModel, DDPMScheduler

    from fusionc.models.train_tiny import cosine_lr, encode_latents, tokenize

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    checkpoint, tokenizer = load_builtin()
    unet, vae, text = checkpoint.models["unet"], checkpoint.models["vae"], checkpoint.models["text_encoder"]
    for module in (unet, vae, text):
        module.eval().requires_grad_(False)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 64, 64))
    controlnet.train()
    images, outlines, captions = make_controlnet_dataset(args.images, args.seed)
    with torch.no_grad():
        latents = encode_latents(vae, images) * vae.config.scaling_factor
        hidden = torch.cat([text(ids).last_hidden_state for ids in tokenize(tokenizer, captions).split(512)])
        empty = text(tokenize(tokenizer, [""])).last_hidden_state[0]
    cond = torch.from_numpy(outlines)
    scheduler_config = (BUILTIN / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8")
    noise_sched = DDPMScheduler.from_config(json.loads(scheduler_config))
    alphas = noise_sched.alphas_cumprod
    opt = torch.optim.AdamW(controlnet.parameters(), lr=args.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed + 1)
    start, losses = time.time(), []
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, args.steps, args.lr, 50)
        index = torch.randint(0, len(latents), (args.batch,), generator=gen)
        x0, states = latents[index], hidden[index].clone()
        states[torch.rand(args.batch, generator=gen) < 0.1] = empty
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(args.min_t, 1000, (args.batch,), generator=gen)
        t[torch.rand(args.batch, generator=gen) < args.terminal_fraction] = 999
        noisy = noise_sched.add_noise(x0, noise, t)
        down, mid = controlnet(noisy, t, states, cond[index], return_dict=False)
        pred = unet(noisy, t, states, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        snr = alphas[t] / (1 - alphas[t])
        target, weight = noise_sched.get_velocity(x0, noise, t), torch.clamp(snr + 1, max=5.0) / (snr + 1)
        loss = (weight * F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 50 == 0:
            log(f"step {step}/{args.steps} loss {np.mean(losses[-50:]):.4f} ({time.time() - start:.0f} s)")
    controlnet.eval().half().save_pretrained(args.out / "controlnet")
    from fusionc.generate import torch_runners

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        follow = control_follow_rate(torch_runners(pipeline_with(args.out / "controlnet", Path(tmp) / "pipe")),
                                     EVAL_CASES, seeds=2)
    log(f"the shape follows the outline in {follow['rate']:.0%} of {len(follow['cases'])} images")
    summary = {"follows_outline": follow,"min_t": args.min_t, "terminal_fraction": args.terminal_fraction, "steps": args.steps, "batch": args.batch, "lr": args.lr, "images": args.images, "seed": args.seed,
               "minutes": round((time.time() - start) / 60, 1), "final_loss": round(float(np.mean(losses[-100:])), 4)}
    (args.out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    log(f"done: {summary}")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "tiny_controlnet")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    # where the shape goes is decided in the first, noisiest steps: train there (the UNet draws the rest)
    parser.add_argument("--min-t", type=int, default=400)
    parser.add_argument("--terminal-fraction", type=float, default=0.4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    train(args)


if __name__ == "__main__":
    main()
