"""Train the built-in ControlNet: the shape's outline moves the built-in pipeline's shape (CPU, one thread).

    python -m fusionc.models.train_controlnet --out compiler/models/tiny_controlnet

The ControlNet starts as a copy of the shipped tiny UNet's down path (diffusers `ControlNetModel.from_unet`,
zero convolutions at zero) and learns, with the UNet, VAE and text encoder frozen, to reproduce the shapes
dataset (fusionc.models.shapes_dataset) from its outline: the conditioning image is the white 1.5-pixel
outline of the drawn shape on black (fusionc.controlnet.outline_from_sdf), exactly where it was drawn. Half of
the captions name a wrong position (and 10% are empty), so where the shape goes must come from the outline,
not from the words. Loss and noise schedule are the UNet's (train_tiny.py): v-prediction, min-SNR weighting,
30% of each batch at the zero-SNR timestep 999, where the layout is decided. Weights are saved in fp16
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
from fusionc.models.shapes_dataset import COLOURS, POSITIONS, SIZE, Scene, random_scene, shape_sdf

BUILTIN = Path(__file__).parent / "tiny_sd"


def log(msg: str) -> None:
    print(f"[train_controlnet {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def render_with_outline(scene: Scene, rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """shapes_dataset.render's picture (same jitter ranges) and the outline of the shape as drawn:
    (uint8 [size, size, 3], float32 [3, size, size] in [0, 1])."""
    grey = rng.uniform(25, 85)
    image = np.full((size, size, 3), grey, np.float32)
    if scene.background == "striped":
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
        period, phase = rng.uniform(10, 16), rng.uniform(0, 2 * np.pi)
        angle = rng.choice([0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4])
        wave = np.sin(2 * np.pi * (xs * np.cos(angle) + ys * np.sin(angle)) / period + phase)
        image += (np.where(wave > 0, 1.0, -1.0) * rng.uniform(12, 20))[..., None]
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
    noise_sched = DDPMScheduler.from_config(json.loads((BUILTIN / "scheduler" / "scheduler_config.json").read_text()))
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
        t = torch.randint(0, 1000, (args.batch,), generator=gen)
        t[torch.rand(args.batch, generator=gen) < 0.3] = 999
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
    summary = {"steps": args.steps, "batch": args.batch, "lr": args.lr, "images": args.images, "seed": args.seed,
               "minutes": round((time.time() - start) / 60, 1), "final_loss": round(float(np.mean(losses[-100:])), 4)}
    (args.out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"done: {summary}")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "tiny_controlnet")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    train(args)


if __name__ == "__main__":
    main()
