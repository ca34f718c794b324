"""Streamed weights (fusionc.streaming): a component built on the meta device and read from its safetensors files
tensor by tensor compiles to the same bytes as the loaded one, and holds a fraction of its weights at a time."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fusionc import streaming
from fusionc.checkpoint import load_checkpoint
from fusionc.core.errors import BadInputError
from fusionc.core.options import CompileOptions
from fusionc.pipeline import compile_checkpoint
from fusionc.streaming import STREAM_ENV, streamed_weights

LOADED, STREAMED = str(1 << 50), "0"  # FUSIONC_STREAM_WEIGHTS_BYTES that loads / streams every component


def write_t5(folder: Path, seed: int = 0, **config: int) -> Path:
    """A random T5 encoder folder (tied embedding saved once, as transformers saves it)."""
    from transformers import T5Config, T5EncoderModel

    shape = {"d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 4, "num_layers": 2, "vocab_size": 100, **config}
    torch.manual_seed(seed)
    T5EncoderModel(T5Config(**shape, feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False,
                            architectures=["T5EncoderModel"])).save_pretrained(folder)
    return folder


def build_files(out: Path) -> dict[str, str]:
    return {str(f.relative_to(out)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(out.rglob("*")) if f.is_file() and f.name != "manifest.json"}


@pytest.mark.parametrize("target, extra", [("onnx", {}), ("coreml", {"palettize": "6"})])
def test_a_streamed_t5_builds_the_same_bytes_as_the_loaded_one(tmp_path: Path, monkeypatch, target: str,
                                                               extra: dict) -> None:
    folder = write_t5(tmp_path / "t5")
    monkeypatch.setattr(streaming, "BLOCK_BYTES", 4096)  # several blocks per forward, as at full size
    monkeypatch.delenv("FUSIONC_CACHE", raising=False)  # each compile exports: no cache hit may stand in for one
    runs = {"loaded": (LOADED, None), "streamed": (STREAMED, None)}
    if target == "onnx":  # the export stored to and reloaded from the --cache (its weights written from the files)
        runs["streamed, cached"] = (STREAMED, tmp_path / "cache")
    builds, psnr = {}, {}
    for label, (threshold, cache) in runs.items():
        monkeypatch.setenv(STREAM_ENV, threshold)
        manifest = compile_checkpoint(folder, CompileOptions(target=target, text_length=12, **extra),
                                      tmp_path / label.replace(", ", "_"), cache_dir=cache)
        builds[label] = build_files(tmp_path / label.replace(", ", "_"))
        psnr[label] = manifest["components"]["text_encoder"]["psnr_db"]
    assert builds["loaded"] and all(files == builds["loaded"] for files in builds.values())
    assert len(set(psnr.values())) == 1 and psnr["loaded"] > 35


def test_a_streamed_sd3_transformer_builds_the_same_bytes_as_the_loaded_one(tmp_path: Path, monkeypatch) -> None:
    """SD3-medium's transformer (8.3 GB) is past the threshold too: its tiny form, streamed block by block."""
    from fusionc.models.tiny_dit import write_dit_pipeline

    folder = write_dit_pipeline(tmp_path / "sd3", "sd3") / "transformer"
    monkeypatch.setattr(streaming, "BLOCK_BYTES", 4096)
    monkeypatch.delenv("FUSIONC_CACHE", raising=False)
    builds = {}
    for label, threshold in (("loaded", LOADED), ("streamed", STREAMED)):
        monkeypatch.setenv(STREAM_ENV, threshold)
        manifest = compile_checkpoint(folder, CompileOptions(target="onnx"), tmp_path / label, cache_dir=None)
        builds[label] = (build_files(tmp_path / label), manifest["components"]["transformer"]["psnr_db"])
    assert builds["loaded"][0] and builds["streamed"] == builds["loaded"] and builds["loaded"][1] > 60


def test_a_streamed_sdxl_pipeline_builds_the_same_bytes_as_the_loaded_one(tiny_pipeline, tmp_path: Path,
                                                                          monkeypatch) -> None:
    """SDXL's UNet (10 GB fp32) is past the threshold too: both CLIPs, the UNet and the VAE streamed in small blocks.
    The loaded build goes through the run's cache (its exports are test_compile_onnx's SDXL ones: built once in the
    run); the streamed one is built from scratch, so the bytes compared are its own."""
    folder = tiny_pipeline("sdxl")
    monkeypatch.setattr(streaming, "BLOCK_BYTES", 1 << 16)
    builds, cache_status = {}, {}
    for label, threshold in (("loaded", LOADED), ("streamed", STREAMED)):
        monkeypatch.setenv(STREAM_ENV, threshold)
        if label == "streamed":
            monkeypatch.delenv("FUSIONC_CACHE", raising=False)
        manifest = compile_checkpoint(folder, CompileOptions(target="onnx"), tmp_path / label, cache_dir=None)
        builds[label] = (build_files(tmp_path / label), {k: v["psnr_db"] for k, v in manifest["components"].items()})
        cache_status[label] = {c.get("cache") for c in manifest["components"].values()}
    assert None not in cache_status["loaded"] and cache_status["streamed"] == {None}  # streamed: read no cache
    assert len(builds["loaded"][1]) == 5 and min(builds["loaded"][1].values()) > 60
    assert builds["streamed"] == builds["loaded"]


def test_a_streamed_module_reads_its_weights_block_by_block_and_keeps_none(tmp_path: Path, monkeypatch) -> None:
    folder = write_t5(tmp_path / "t5", num_layers=3)
    monkeypatch.setattr(streaming, "BLOCK_BYTES", 4096)
    monkeypatch.setenv(STREAM_ENV, LOADED)
    loaded = load_checkpoint(folder).models["text_encoder"]
    monkeypatch.setenv(STREAM_ENV, STREAMED)
    model = load_checkpoint(folder).models["text_encoder"]
    stream = streamed_weights(model)
    assert stream is not None and streamed_weights(loaded) is None
    assert all(p.device.type == "meta" for p in model.parameters())
    assert len(stream.blocks) > 3  # not the whole model at once
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = loaded(input_ids=ids).last_hidden_state
        got = model(input_ids=ids).last_hidden_state
    assert torch.equal(got, want)
    assert stream.reads >= len({id(p) for p in model.parameters()})
    assert all(p.device.type == "meta" for p in model.parameters())  # every block emptied after its forward


@pytest.mark.parametrize("threshold", [LOADED, STREAMED])
@pytest.mark.parametrize("damage, message", [("nan", "holds NaN or Inf values"), ("shape", "has shape"),
                                             ("missing", "miss tensor")])
def test_damaged_t5_weights_are_refused_the_same_way_loaded_or_streamed(tmp_path: Path, monkeypatch, threshold: str,
                                                                        damage: str, message: str) -> None:
    from safetensors.torch import load_file, save_file

    folder = write_t5(tmp_path / "t5")
    state = load_file(folder / "model.safetensors")
    key = "encoder.block.1.layer.1.DenseReluDense.wo.weight"
    if damage == "nan":
        state[key][3, 4] = float("nan")
    elif damage == "shape":
        state[key] = state[key][:, :-1].contiguous()
    else:
        del state[key]
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    monkeypatch.setenv(STREAM_ENV, threshold)
    with pytest.raises(BadInputError, match=message):
        load_checkpoint(folder)


def test_a_truncated_streamed_file_is_bad_input(tmp_path: Path, monkeypatch) -> None:
    folder = write_t5(tmp_path / "t5")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    monkeypatch.setenv(STREAM_ENV, STREAMED)
    with pytest.raises(BadInputError, match="not a readable safetensors file"):
        load_checkpoint(folder)


MEMORY_CHILD = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    os.environ["FUSIONC_STREAM_WEIGHTS_BYTES"] = sys.argv[2]
    import torch
    import onnxscript.optimizer, torch.onnx._internal.exporter._core, transformers.models.t5.modeling_t5  # imports: not counted
    from fusionc import streaming
    from fusionc.checkpoint import load_checkpoint
    from fusionc.core.memory import offload_weights, release_freed_memory
    from fusionc.core.options import CompileOptions
    from fusionc.export import component_spec, export_component
    streaming.BLOCK_BYTES = 128 << 20  # a T5 layer's attention (67 MB) or feed-forward (101 MB) at a time

    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024

    release_freed_memory()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here on
    base = rss("VmRSS:")
    checkpoint = load_checkpoint(sys.argv[1])
    spec = component_spec(checkpoint, "text_encoder", CompileOptions(target="onnx", text_length=16))
    spec.reference({k: v.numpy() for k, v in spec.example.items()})
    model = export_component(spec)
    offload_weights(model, Path(sys.argv[3]))  # the driver's step after the export: the weights to external data
    print(json.dumps({"peak_growth": rss("VmHWM:") - base}))
""")


def test_streaming_holds_a_fraction_of_the_weights(tmp_path: Path) -> None:
    """Peak RSS growth over load, torch forward, export and the write to external data: a 0.7 GB T5 (vocab 4096,
    width 2048, 4 layers) loaded holds all of its weights (twice, while loading); streamed, one block (0.1 GB) and
    the trace's own memory, which grows with the layer count, not the width."""
    folder = write_t5(tmp_path / "t5", d_model=2048, d_ff=4096, d_kv=128, num_heads=16, num_layers=4, vocab_size=4096)
    weights = (folder / "model.safetensors").stat().st_size
    growth = {}
    for label, threshold in (("loaded", LOADED), ("streamed", STREAMED)):
        done = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(folder), threshold, str(tmp_path / label)],
                              capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
        growth[label] = json.loads(done.stdout.strip().splitlines()[-1])["peak_growth"]
    assert growth["loaded"] > weights, growth
    assert growth["streamed"] < weights / 2, (growth, weights)
