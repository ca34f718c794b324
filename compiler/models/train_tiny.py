"""Train the built-in tiny text-to-image pipeline on this machine's CPU (about 30 minutes on one thread).

    python -m fusionc.models.train_tiny --out compiler/models/tiny_sd

Three stages, each seeded so a rerun reproduces the shipped model's quality:
  1. AutoencoderKL (8x downsampling) on the shapes dataset: L1 + MSE reconstruction, small KL.
  2. Encode the dataset once to latents (posterior mean); the scaling factor makes them unit variance.
  3. UNet + CLIP text encoder jointly, v-prediction with min-SNR weighting, 30% of each batch at the
     zero-SNR timestep 999 (where the layout must come from the prompt), 10% empty captions for
     classifier-free guidance, EMA weights; the saved pipeline holds the EMA weights.
The DDPM noise schedule is the shipped DPM-Solver++ config's (scaled_linear, 1000 steps, zero terminal SNR).
Stages 1 and 3 save resumable state under --work; the diffusers folder is rewritten at every checkpoint,
and every --eval-every steps a prompt check (fusionc.models.shapes_check) on 20 prompts is logged.
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
from diffusers import DDPMScheduler

from fusionc.models.builtin_arch import new_modules, save_pipeline, scheduler, write_tokenizer
from fusionc.models.shapes_check import check
from fusionc.models.shapes_dataset import check_prompts, make_dataset


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))


def shape_weight(images: np.ndarray, gain: float = 15.0) -> torch.Tensor:
    """Per-pixel loss weight 1 + gain on the (dilated) saturated shape pixels: the shape is ~8% of an image
    but all the prompt is about, so the few VAE steps we can afford go to its colour and outline."""
    rgb = images.astype(np.int16)
    mask = torch.from_numpy((rgb.max(-1) - rgb.min(-1)) > 40).float()[:, None]
    return 1.0 + gain * F.max_pool2d(mask, 3, stride=1, padding=1)


def shape_crops(images: np.ndarray, rng: np.random.Generator, crop: int) -> np.ndarray:
    """crop x crop windows on the 8-pixel latent grid, around each image's shape (random offset)."""
    rgb = images.astype(np.int16)
    out = []
    for image, chroma in zip(images, (rgb.max(-1) - rgb.min(-1)) > 40):
        ys, xs = np.nonzero(chroma)
        cy, cx = (ys.mean(), xs.mean()) if len(ys) else (32.0, 32.0)
        y, x = (int(np.clip(c - crop / 2 + rng.uniform(-8, 8), 0, image.shape[0] - crop)) // 8 * 8 for c in (cy, cx))
        out.append(image[y:y + crop, x:x + crop])
    return np.stack(out)


def train_vae(vae: torch.nn.Module, images: np.ndarray, steps: int, batch: int, lr: float, seed: int,
              state_path: Path, crop_steps: int = 0, crop: int = 32, kl_weight: float = 1e-5) -> None:
    """Shape-weighted L1 + MSE reconstruction; the first crop_steps steps see crop x crop windows around the
    shapes at twice the batch (4x cheaper per image: the VAE is convolutional), the rest whole images."""
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    start = 0
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        vae.load_state_dict(state["vae"]), opt.load_state_dict(state["opt"])
        rng.bit_generator.state, start = state["rng"], state["step"]
        log(f"vae: resumed at step {start}")
    vae.train()
    t0 = time.time()
    for step in range(start, steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, 50)
        if step < crop_steps:
            batch_images = shape_crops(images[rng.integers(0, len(images), 2 * batch)], rng, crop)
        else:
            batch_images = images[rng.integers(0, len(images), batch)]
        x, weight = to_tensor(batch_images), shape_weight(batch_images)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        rec = ((recon - x).abs() + (recon - x) ** 2).mul(weight).mean() / weight.mean()
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        loss = rec + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            log(f"vae{' crop' if step < crop_steps else ''} step {step}/{steps} rec {rec.item():.4f} "
                f"kl {kl.item():.2f} ({time.time() - t0:.0f}s)")
        if (step + 1) % 250 == 0 or step == steps - 1:
            torch.save({"vae": vae.state_dict(), "opt": opt.state_dict(), "rng": rng.bit_generator.state,
                        "step": step + 1}, state_path)
    vae.eval()


@torch.no_grad()
def vae_quality(vae: torch.nn.Module, n: int = 100, seed: int = 99) -> tuple[float, float]:
    """(fraction of reconstructions passing the shapes check, reconstruction PSNR dB) on unseen images."""
    images, captions = make_dataset(n, seed=seed)
    recon = vae.decode(vae.encode(to_tensor(images)).latent_dist.mean).sample
    recon = ((recon.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    ok = np.mean([check(c, r)["ok"] for c, r in zip(captions, recon)])
    return float(ok), float(10 * np.log10(255 ** 2 / np.mean((recon.astype(np.float64) - images) ** 2)))


@torch.no_grad()
def encode_latents(vae: torch.nn.Module, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    return torch.cat([vae.encode(to_tensor(images[i:i + batch])).latent_dist.mean
                      for i in range(0, len(images), batch)])


def tokenize(tokenizer, captions: list[str]) -> torch.Tensor:
    return torch.tensor(tokenizer(captions, padding="max_length", max_length=77, truncation=True).input_ids)


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1 - decay)


@torch.no_grad()
def prompt_accuracy(text_encoder, vae, unet, tokenizer, prediction: str, n: int = 20, guidance: float = 4.0) -> float:
    """Fraction of n check prompts whose 8-step image passes the shapes check (torch, in memory)."""
    from fusionc.trajectory import denoise, load_scheduler, to_uint8

    sched_dir = None
    runners = {
        "text_encoder": lambda f: {"last_hidden_state": text_encoder(torch.from_numpy(f["input_ids"]).long())
                                   .last_hidden_state.numpy()},
        "unet": lambda f: {"out_sample": unet(torch.from_numpy(f["sample"]), torch.from_numpy(f["timestep"]),
                                              torch.from_numpy(f["encoder_hidden_states"])).sample.numpy()},
        "vae_decoder": lambda f: {"sample": vae.decode(torch.from_numpy(f["latent_sample"])).sample.numpy()},
    }
    ok = 0
    for i, scene in enumerate(check_prompts(n)):
        sched = scheduler(prediction) if sched_dir is None else load_scheduler(sched_dir)
        image = denoise(runners, {"tokenizer": tokenizer}, sched, scene.caption, steps=8, seed=i, guidance=guidance,
                        latent_shape=(4, 8, 8), scaling_factor=vae.config.scaling_factor, text_length=77)
        ok += bool(check(scene.caption, to_uint8(image))["ok"])
    return ok / n


def train_unet(text_encoder, vae, unet, tokenizer, latents: torch.Tensor, ids: torch.Tensor, args, out: Path,
               state_path: Path) -> None:
    gen = torch.Generator().manual_seed(args.seed + 2)
    rng = np.random.default_rng(args.seed + 3)
    noise_sched = DDPMScheduler.from_config(scheduler(args.prediction).config)
    alphas = noise_sched.alphas_cumprod
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.unet_lr, weight_decay=0.01)
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    empty = tokenize(tokenizer, [""])[0]
    objective = f"{args.prediction}-zero-snr"
    start = ema_start = 0
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        for module, key in ((unet, "unet"), (text_encoder, "text"), (ema_unet, "ema_unet"), (ema_text, "ema_text")):
            module.load_state_dict(state[key])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"]), setattr(rng.bit_generator, "state", state["rng"])
        start, ema_start = state["step"], state.get("ema_start", 0)
        if state.get("objective", "epsilon") != objective:  # the EMA of another objective is no use
            ema_unet.load_state_dict(unet.state_dict()), ema_text.load_state_dict(text_encoder.state_dict())
            ema_start = start
        log(f"unet: resumed at step {start} ({args.prediction}, EMA from step {ema_start})")
    t0 = time.time()
    for step in range(start, args.unet_steps):
        unet.train(), text_encoder.train()
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, args.unet_steps, args.unet_lr, 200)
        index = torch.from_numpy(rng.integers(0, len(latents), args.batch))
        x0 = latents[index] * vae.config.scaling_factor
        tokens = ids[index].clone()
        tokens[torch.rand(args.batch, generator=gen) < 0.1] = empty
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (args.batch,), generator=gen)
        t[torch.rand(args.batch, generator=gen) < args.terminal_fraction] = 999
        noisy = noise_sched.add_noise(x0, noise, t)
        hidden = text_encoder(tokens).last_hidden_state
        pred = unet(noisy, t, hidden).sample
        snr = alphas[t] / (1 - alphas[t])
        if args.prediction == "v_prediction":  # min-SNR-5 weighting (Hang et al. 2023), kept at 1 near SNR 0
            target, weight = noise_sched.get_velocity(x0, noise, t), torch.clamp(snr + 1, max=5.0) / (snr + 1)
        else:
            target, weight = noise, torch.clamp(snr, max=5.0) / snr
        loss = (weight * F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(args.ema, (step - ema_start + 1) / (step - ema_start + 10))
        ema_update(ema_unet, unet, decay), ema_update(ema_text, text_encoder, decay)
        if step % 50 == 0:
            log(f"unet step {step}/{args.unet_steps} loss {loss.item():.4f} ({time.time() - t0:.0f}s)")
        last = step == args.unet_steps - 1
        if (step + 1) % args.save_every == 0 or last:
            torch.save({"unet": unet.state_dict(), "text": text_encoder.state_dict(), "ema_unet": ema_unet.state_dict(),
                        "ema_text": ema_text.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                        "rng": rng.bit_generator.state, "step": step + 1, "objective": objective,
                        "ema_start": ema_start}, state_path)
            save_pipeline(out, ema_text, vae, ema_unet, args.prediction)
            log(f"saved {out} at step {step + 1}")
        if (step + 1) % args.eval_every == 0 or last:
            acc = prompt_accuracy(ema_text, vae, ema_unet, tokenizer, args.prediction)
            log(f"eval step {step + 1}: prompt check {acc:.0%} on 20 prompts (EMA, 8 steps)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "tiny_sd")
    parser.add_argument("--work", type=Path, default=Path("build/train_tiny"), help="cache and resumable state")
    parser.add_argument("--images", type=int, default=12000)
    parser.add_argument("--vae-steps", type=int, default=1250)
    parser.add_argument("--vae-crop-steps", type=int, default=1100)
    parser.add_argument("--vae-batch", type=int, default=8)
    parser.add_argument("--vae-lr", type=float, default=2e-3)
    parser.add_argument("--unet-steps", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--unet-lr", type=float, default=8e-4)
    parser.add_argument("--ema", type=float, default=0.998)
    # v-prediction: at high noise v ~ -x0, so the layout (where the shape goes, from the position words) gets
    # a real gradient; epsilon-prediction learned colours and shapes but ignored positions (eval stuck at 25%).
    parser.add_argument("--prediction", choices=("v_prediction", "epsilon"), default="v_prediction")
    # A share of every batch at t=999 (zero SNR: pure noise, the image can come only from the prompt). Uniform t
    # sees it 0.1% of the time, and at the next-noisiest steps the 8x8 latent still leaks the layout, so the
    # UNet learnt to take positions from the noise (prompt check: position 12%, 100% decided by the seed);
    # 30% here makes the first sampling step place the shape where the prompt says.
    parser.add_argument("--terminal-fraction", type=float, default=0.3)
    parser.add_argument("--save-every", type=int, default=250)
    parser.add_argument("--eval-every", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    # One thread: on a shared, oversubscribed CPU two OpenMP threads spin at every barrier (measured 10x slower).
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.time()

    from transformers import CLIPTokenizer

    vocab = write_tokenizer(args.work)
    tokenizer = CLIPTokenizer.from_pretrained(str(args.work / "tokenizer"))
    text_encoder, vae, unet = new_modules(vocab)
    images, captions = make_dataset(args.images, seed=args.seed)
    log(f"dataset: {len(images)} images {images.shape[1:]}; vae {sum(p.numel() for p in vae.parameters()):,} params, "
        f"unet {sum(p.numel() for p in unet.parameters()):,}, text {sum(p.numel() for p in text_encoder.parameters()):,}")

    latents_path = args.work / "latents.pt"
    vae_state = args.work / "vae_state.pt"
    if latents_path.exists():
        saved = torch.load(latents_path, weights_only=True)
        vae.load_state_dict(saved["vae"])
        latents = saved["latents"]
    else:
        torch.manual_seed(args.seed + 1)
        train_vae(vae, images, args.vae_steps, args.vae_batch, args.vae_lr, args.seed + 1, vae_state,
                  crop_steps=args.vae_crop_steps)
        ok, psnr = vae_quality(vae)
        log(f"vae: {ok:.0%} of reconstructions pass the shapes check, PSNR {psnr:.1f} dB")
        latents = encode_latents(vae, images)
        torch.save({"vae": vae.state_dict(), "latents": latents}, latents_path)
    vae.eval().requires_grad_(False)
    scale = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scale)
    log(f"latents {tuple(latents.shape)} std {latents.std():.3f} -> scaling_factor {scale:.4f} ({time.time() - start:.0f}s)")

    ids = tokenize(tokenizer, captions)
    train_unet(text_encoder, vae, unet, tokenizer, latents, ids, args, args.out, args.work / "unet_state.pt")
    minutes = (time.time() - start) / 60
    (args.work / "train_summary.json").write_text(json.dumps({"minutes": round(minutes, 1), **{
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}, indent=2), encoding="utf-8")
    log(f"done in {minutes:.1f} min -> {args.out}")


if __name__ == "__main__":
    main()
