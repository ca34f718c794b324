"""Train the built-in diffusion transformer (`builtin:sd3`): an SD3-shaped MMDiT on the shapes data set (CPU).

    python -m fusionc.models.train_dit --out compiler/models/tiny_sd3

The text encoders and the VAE are the built-in pipeline's (tiny_sd), frozen (fusionc.models.dit_arch); only the
SD3Transformer2DModel learns. The data set's images are encoded once by tiny_sd's VAE (posterior mean, times its
scaling factor) and each distinct caption once by its CLIP (penultimate states of both "encoders" side by side,
and the projected pooled output), so a training step runs the transformer alone.

Objective: rectified flow as SD3 (x_t = (1 - s) x0 + s noise, the transformer predicts noise - x0 at timestep
s x 1000), s from a logit-normal shifted like the sampler's schedule, and a share of every batch at s = 1, pure
noise, where the layout can come only from the prompt (the lesson of train_tiny: without it positions follow the
seed); 10% empty captions for classifier-free guidance; EMA weights, saved in fp16. Every --eval-every steps a
20-prompt check (fusionc.models.shapes_check, 8 steps, guidance 4) on the EMA weights is logged.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fusionc.models.dit_arch import CLIP_LENGTH, SHIFT, TINY_SD, clip_with_projection, new_transformer, save_dit_pipeline, scheduler
from fusionc.models.shapes_check import check
from fusionc.models.shapes_dataset import check_prompts, make_dataset

CHECK_GUIDANCE = 4.0


def log(msg: str) -> None:
    print(f"[train_dit {time.strftime('%H:%M:%S')}] {msg}", flush=True)


@torch.no_grad()
def encode_images(vae: torch.nn.Module, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    latents = torch.cat([vae.encode(x[i:i + batch]).latent_dist.mean for i in range(0, len(x), batch)])
    return latents * vae.config.scaling_factor


@torch.no_grad()
def encode_captions(clip: torch.nn.Module, tokenizer, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(states [N, 24, 128], pooled [N, 128]) as SD3's pipeline builds them from two CLIPs (here the same one)."""
    ids = torch.tensor(tokenizer(captions, padding="max_length", max_length=CLIP_LENGTH, truncation=True).input_ids)
    out = clip(ids, output_hidden_states=True)
    states = out.hidden_states[-2]
    return torch.cat([states, states], -1), torch.cat([out.text_embeds, out.text_embeds], -1)


def sample_sigmas(batch: int, gen: torch.Generator, terminal_fraction: float) -> torch.Tensor:
    """Logit-normal sigmas (SD3), shifted like FlowMatchEuler's schedule, a share set to 1 (pure noise)."""
    s = torch.sigmoid(torch.randn(batch, generator=gen))
    s = SHIFT * s / (1 + (SHIFT - 1) * s)
    s[torch.rand(batch, generator=gen) < terminal_fraction] = 1.0
    return s


@torch.no_grad()
def prompt_accuracy(transformer: torch.nn.Module, clip: torch.nn.Module, vae: torch.nn.Module, tokenizer,
                    n: int = 20, seed_base: int = 0) -> float:
    """Fraction of training's n check prompts whose 8-step image passes the shapes check (torch, in memory)."""
    from fusionc.dit import DitGeometry
    from fusionc.dit_trajectory import denoise_dit
    from fusionc.trajectory import to_uint8

    def encode(feeds):
        out = clip(torch.from_numpy(feeds["input_ids"]).long(), output_hidden_states=True)
        return {"hidden_states_penultimate": out.hidden_states[-2].numpy(), "text_embeds": out.text_embeds.numpy()}

    runners = {
        "text_encoder": encode, "text_encoder_2": encode,
        "transformer": lambda f: {"out_hidden_states": transformer(
            hidden_states=torch.from_numpy(f["hidden_states"]),
            timestep=torch.from_numpy(f["timestep"]).expand(f["hidden_states"].shape[0]),
            encoder_hidden_states=torch.from_numpy(f["encoder_hidden_states"]),
            pooled_projections=torch.from_numpy(f["pooled_projections"]), return_dict=False)[0].numpy()},
        "vae_decoder": lambda f: {"sample": vae.decode(torch.from_numpy(f["latent_sample"])).sample.numpy()},
    }
    geo = DitGeometry("sd3", 4, 4, CLIP_LENGTH, 0, 128, float(vae.config.scaling_factor), 0.0, 8)
    tokenizers = {"tokenizer": tokenizer, "tokenizer_2": tokenizer}
    ok = 0
    for i, scene in enumerate(check_prompts(n)):
        image = denoise_dit(runners, tokenizers, scheduler(), scene.caption, geo, steps=8, seed=seed_base + i,
                            guidance=CHECK_GUIDANCE, latent_hw=(8, 8))
        ok += bool(check(scene.caption, to_uint8(image))["ok"])
    return ok / n


def cosine_lr(step: int, total: int, base: float, warmup: int = 200) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "tiny_sd3")
    parser.add_argument("--images", type=int, default=12000)
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--ema", type=float, default=0.998)
    parser.add_argument("--terminal-fraction", type=float, default=0.3)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start, cpu_start = time.time(), time.process_time()

    from diffusers import AutoencoderKL

    from fusionc.trajectory import load_tokenizer

    tokenizer = load_tokenizer(TINY_SD / "tokenizer")
    clip = clip_with_projection()
    vae = AutoencoderKL.from_pretrained(str(TINY_SD / "vae")).eval()
    images, captions = make_dataset(args.images, seed=args.seed)
    latents = encode_images(vae, images)
    distinct = sorted(set(captions)) + [""]
    caption_index = torch.tensor([distinct.index(c) for c in captions])
    states, pooled = encode_captions(clip, tokenizer, distinct)
    empty = len(distinct) - 1
    log(f"{len(images)} images -> latents {tuple(latents.shape)} (std {latents.std():.3f}); {len(distinct)} captions "
        f"encoded ({time.time() - start:.0f}s)")

    transformer = new_transformer().train()
    ema = copy.deepcopy(transformer).eval().requires_grad_(False)
    log(f"transformer {sum(p.numel() for p in transformer.parameters()):,} parameters")
    opt = torch.optim.AdamW(transformer.parameters(), lr=args.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(args.seed + 2)
    rng = np.random.default_rng(args.seed + 3)
    history = []
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, args.steps, args.lr)
        index = torch.from_numpy(rng.integers(0, len(latents), args.batch))
        x0 = latents[index]
        text = caption_index[index].clone()
        text[torch.rand(args.batch, generator=gen) < 0.1] = empty
        noise = torch.randn(x0.shape, generator=gen)
        sigma = sample_sigmas(args.batch, gen, args.terminal_fraction)
        noisy = (1 - sigma[:, None, None, None]) * x0 + sigma[:, None, None, None] * noise
        pred = transformer(hidden_states=noisy, encoder_hidden_states=states[text], pooled_projections=pooled[text],
                           timestep=sigma * 1000, return_dict=False)[0]
        loss = F.mse_loss(pred, noise - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        opt.step()
        decay = min(args.ema, (step + 1) / (step + 10))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), transformer.parameters()):
                e.lerp_(p, 1 - decay)
        if step % 100 == 0:
            log(f"step {step}/{args.steps} loss {loss.item():.4f} ({time.time() - start:.0f}s)")
        if (step + 1) % args.eval_every == 0 or step == args.steps - 1:
            acc = prompt_accuracy(ema, clip, vae, tokenizer)
            history.append({"step": step + 1, "prompt_check": acc, "loss": round(loss.item(), 4)})
            save_dit_pipeline(args.out, ema)
            log(f"eval step {step + 1}: prompt check {acc:.0%} on 20 prompts (EMA, 8 steps); saved {args.out}")
    summary = {"minutes": round((time.time() - start) / 60, 1), "cpu_seconds": round(time.process_time() - cpu_start, 1),
               "command": "python -m fusionc.models.train_dit --out compiler/models/tiny_sd3",
               **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"},
               "parameters": sum(p.numel() for p in ema.parameters()), "eval": history}
    (args.out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    log(f"done in {summary['minutes']} min -> {args.out}")


if __name__ == "__main__":
    main()
