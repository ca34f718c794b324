"""A small CLIP BPE tokenizer written from a word list, for the built-in and test pipelines.

CLIPTokenizer needs a vocab.json and merges.txt; a real CLIP vocabulary is 49,408 tokens (1.6 MB), far
more than a tiny model needs. This writes the 256 byte symbols (alone and word-final), the special tokens,
and one merge chain per given word, so every given word is a single token and any other text still
tokenizes (into characters).
"""

from __future__ import annotations

import json
from pathlib import Path



def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode symbols."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(keep, (chr(c) for c in codes)))


def write_clip_tokenizer(out_dir: Path, words: list[str], max_length: int = 77) -> None:
    """Write vocab.json, merges.txt and tokenizer_config.json for a CLIPTokenizer into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    symbols = list(bytes_to_unicode().values())
    vocab: list[str] = symbols + [s + "</w>" for s in symbols]
    merges: list[str] = []
    seen = set(vocab)
    for word in sorted(set(w.lower() for w in words)):
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merged = pieces[0] + pieces[1]
            merge = f"{pieces[0]} {pieces[1]}"
            if merged not in seen:
                seen.add(merged)
                vocab.append(merged)
                merges.append(merge)
            pieces = [merged] + pieces[2:]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (out_dir / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False),
                                        encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def vocab_size(out_dir: Path) -> int:
    return len(json.loads((out_dir / "vocab.json").read_text(encoding="utf-8")))


def write_sd_model_index(out_dir: Path) -> None:
    """model_index.json of a Stable-Diffusion-1.x pipeline folder (CLIP tokenizer and text encoder, UNet, KL VAE,
    DPM-Solver++), as the built-in and the SD-1.5-scale reference pipelines are written."""
    index = {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
        "safety_checker": [None, None], "feature_extractor": [None, None], "requires_safety_checker": False,
    }
    (out_dir / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
