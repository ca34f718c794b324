"""Real-scale reference components with random weights, for the cost model's calibration and the backend comparison.

The published on-device latencies we calibrate on (SnapFusion, Apple ml-stable-diffusion, Qualcomm AI Hub) were
measured on specific architectures; the cost model needs those architectures' graphs (MACs, bytes, op mix) to be
compared with them. No weights can be downloaded, so each is built from its public configuration
(/work/shared/reference-models.md) with random weights and exported once with torch.onnx (dynamo, external data).

SnapFusion's efficient UNet is approximated within what diffusers can express: no transformer blocks at 64x64,
layers_per_block [2, 2, 1, 1] (third down stage 2 -> 1 ResNet, lowest up stage 3 -> 2), two transformer layers per
ResNet at the 16x16 up stage (3 -> 6 cross-attention blocks). Its mid block keeps diffusers' 2 ResNets + 1
transformer (the paper's mid-stage pruning is not expressible). The efficient decoder is the SD VAE decoder at half
the channels.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

REFERENCE_COMPONENTS = (
    "sd15_unet", "snapfusion_unet", "sd21base_unet", "sd_vae_decoder", "snapfusion_vae_decoder", "clip_text_encoder",
)

SD15_UNET: dict[str, Any] = dict(
    sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
    attention_head_dim=8, cross_attention_dim=768, norm_num_groups=32,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
SNAPFUSION_UNET: dict[str, Any] = dict(
    SD15_UNET,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    layers_per_block=(2, 2, 1, 1),
    transformer_layers_per_block=1,
    # per up block, per ResNet (up blocks have layers+1 ResNets): 16x16 stage 2 ResNets x 3 layers = 6 blocks
    reverse_transformer_layers_per_block=((1, 1), (3, 3), (1, 1, 1), (1, 1, 1)),
)
SD21BASE_UNET: dict[str, Any] = dict(
    SD15_UNET, attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True,
)
SD_VAE: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
    block_out_channels=(128, 256, 512, 512), sample_size=512,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
SNAPFUSION_VAE: dict[str, Any] = dict(SD_VAE, block_out_channels=(64, 128, 256, 256))


class _UNetWrapper(torch.nn.Module):
    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):  # noqa: ANN001
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


class _DecoderWrapper(torch.nn.Module):
    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample):  # noqa: ANN001
        return self.vae.decode(latent_sample, return_dict=False)[0]


class _TextWrapper(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids):  # noqa: ANN001
        out = self.model(input_ids.long())
        return out.last_hidden_state, out.pooler_output


def build(name: str) -> tuple[torch.nn.Module, tuple, dict[str, list[str]], list[str], list[str]]:
    """(module, example args, dynamic batch axes, input names, output names) of a reference component."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    if name.endswith("_unet"):
        config = {"sd15_unet": SD15_UNET, "snapfusion_unet": SNAPFUSION_UNET, "sd21base_unet": SD21BASE_UNET}[name]
        unet = UNet2DConditionModel(**config).eval()
        cross = config["cross_attention_dim"]
        args = (torch.randn(2, 4, 64, 64), torch.tensor([500.0]), torch.randn(2, 77, cross))
        names = ["sample", "timestep", "encoder_hidden_states"]
        return _UNetWrapper(unet), args, {"sample": ["batch"], "encoder_hidden_states": ["batch"]}, names, ["out_sample"]
    if name.endswith("vae_decoder"):
        vae = AutoencoderKL(**(SD_VAE if name == "sd_vae_decoder" else SNAPFUSION_VAE)).eval()
        return _DecoderWrapper(vae), (torch.randn(2, 4, 64, 64),), {"latent_sample": ["batch"]}, ["latent_sample"], ["sample"]
    if name == "clip_text_encoder":
        from transformers import CLIPTextConfig, CLIPTextModel

        config = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu")
        model = CLIPTextModel(config).eval()
        return (_TextWrapper(model), (torch.zeros(2, 77, dtype=torch.int32),), {"input_ids": ["batch"]},
                ["input_ids"], ["last_hidden_state", "pooler_output"])
    raise ValueError(f"unknown reference component {name}")


def export(name: str, out_dir: Path) -> Path:
    """Export reference component `name` to out_dir/name/model.onnx (+ external data); cached."""
    path = Path(out_dir) / name / "model.onnx"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    module, args, dynamic, inputs, outputs = build(name)
    params = sum(p.numel() for p in module.parameters())
    start = time.time()
    batch = torch.export.Dim("batch", min=1, max=4)
    with torch.no_grad():
        program = torch.onnx.export(
            module, args, dynamo=True, input_names=inputs, output_names=outputs,
            dynamic_shapes={k: ({0: batch} if k in dynamic else None) for k in inputs},
            opset_version=18, optimize=True, verbose=False,
        )
    program.save(str(path), external_data=True)
    print(f"exported {name}: {params / 1e6:.1f}M params in {time.time() - start:.0f}s -> {path}", file=sys.stderr)
    return path


if __name__ == "__main__":
    target = Path(sys.argv[1])
    for component in sys.argv[2:] or REFERENCE_COMPONENTS:
        export(component, target)
