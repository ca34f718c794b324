"""Rebuild the graphs of the AI Hub models that public libraries can express, and store their per-op features.

The cost model (fusionc.analysis.costmodel) is fitted on Qualcomm AI Hub's published latencies
(/work/shared/latency/aihub_perf.csv). To compare a published figure with a graph we need that graph: each model here
is rebuilt from its public configuration (aihub_models.csv: library, class, key configuration, AI Hub's input
shapes) with random weights, exported through fusionc's own export (fusionc.export.export_component, torch.onnx
dynamo) and run through the QNN target's pass pipeline (what a `fusionc compile --target qnn` build sees before
lowering), then reduced to per-op rows by fusionc.analysis.graph_stats. Only the features are committed
(benchmarks/results/latency_features.json.gz), never the graphs. The encoders AI Hub deploys in a Qualcomm-adapted
form (Whisper, TrOCR, Opus-MT: their decoder's cross-attention K/V computed in the encoder; Whisper's split-head
attention) are rebuilt in that form (aihub_adapted.py), not from the library's module. Models AI Hub loads from their
authors' repositories (a segmentation UNet, ESRGAN and other super-resolution networks: `--libraries custom`) are
re-stated layer for layer in aihub_custom.py, and so are Swin in AI Hub's inference form (aihub_swin.py, also under
`custom`: torchvision's Swin with split Q/K/V linears, which torchvision cannot build beside the pinned torch), SwinV2
(aihub_swinv2.py) and MobileSAM's image encoder (aihub_mobilesam.py, whose package imports timm). AI Hub's
Ultralytics detectors and segmentors (`--libraries ultralytics`) are built by Ultralytics from its own model
configurations and exported in AI Hub's wrapper (aihub_ultralytics.py). Stable Diffusion's components
(`--libraries diffusers`) are predicted, never fitted on; its UNet is stored twice, as a fusionc build sees it and in AI
Hub's adapted form (`unet_aihub_form`).

Two virtual environments, because torchvision does not import beside the torch 2.13.0 that fusionc pins:
    # transformers models and the re-stated custom ones (the project's own venv)
    flock /tmp/fusionc-heavy.lock nice -n 10 python benchmarks/latency_graphs.py --libraries transformers custom
    # torchvision / timm models: a separate venv OUTSIDE the repo (benchmark-only dependencies)
    python -m venv /work/venv-bench
    /work/venv-bench/bin/pip install torch==2.14.1 torchvision==0.29.1 timm ultralytics==8.3.253
    /work/venv-bench/bin/pip install -e . --no-deps && /work/venv-bench/bin/pip install onnx==1.23.2 \
        onnx-ir==1.1.0 onnxscript==0.7.2 onnxruntime==1.32.0 onnxruntime-qnn==2.7.0 flatbuffers scipy \
        diffusers transformers safetensors numpy rich click
    flock /tmp/fusionc-heavy.lock nice -n 10 /work/venv-bench/bin/python benchmarks/latency_graphs.py \
        --libraries torchvision timm ultralytics
Modules are built on the meta device and exported from their structure (fusionc.export.export_structure, as
`fusionc estimate` does): the features need shapes only, so no export holds weights (the SD-1.5 UNet included);
a model whose code cannot trace on meta tensors is exported with random weights instead (recorded as "export").
Each model is cached (--cache, one JSON per model component) and merged into the features file as it finishes, so
a run that is stopped keeps what it did (a model that failed is cached as its error: delete those files to retry).
The two runs may go side by side (each merges atomically); the first 67 graphs took about 10 minutes that way. Models
whose library is not importable in the running venv are skipped.
`--refresh-recurrent` only recomputes the LSTM/GRU/RNN rows of stored features extracted before graph_stats counted
them (MACs, timesteps), from the module's own recurrent calls on the meta device: seconds instead of a re-export
(Sequencer2D's export alone is ~450 s of CPU).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from fusionc.analysis import costfit

sys.path.insert(0, str(Path(__file__).resolve().parent))
RESULTS = Path(__file__).resolve().parent / "results"
FEATURES = RESULTS / "latency_features.json.gz"
OP_FIELDS = list(costfit.OP_FIELDS)  # the columns the cost model's features are computed from


class FirstOutput(torch.nn.Module):
    """Wraps a transformers model: positional tensor inputs by name, the first output tensor (logits/hidden)."""

    def __init__(self, model: torch.nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, first, second=None):  # noqa: ANN001 - fixed arity: torch.export matches dynamic_shapes to it
        out = self.model(**dict(zip(self.names, (first, second))))
        if isinstance(out, (tuple, list)):
            return out[0]
        values = [v for v in out.values() if isinstance(v, torch.Tensor)]
        return values[0]


class MaskedTokenPrediction(torch.nn.Module):
    """AI Hub's BaseBertModel (qai_hub_models/models/_shared/bert_hf/model.py) around a transformers masked LM: the
    logits of every position, the one at `mask_indices` picked, softmax, argmax. The graph computes the whole [1, 384,
    vocab] head and hands the caller one token id, not the logits."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, mask_indices):  # noqa: ANN001 - AI Hub's three inputs
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        picked = logits[torch.arange(logits.shape[0], device=logits.device), mask_indices]
        return torch.softmax(picked, dim=-1).argmax(dim=-1)


def _masked_lm(model_class: str, config_class: str, **config: Any):
    """A BERT-family masked LM as AI Hub times it (MaskedTokenPrediction), at its 384 tokens."""
    import transformers

    def build() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
        cfg = getattr(transformers, config_class)(**config)
        feeds = _tokens(384) | {"mask_indices": torch.zeros(1, dtype=torch.int64)}
        return MaskedTokenPrediction(getattr(transformers, model_class)(cfg).eval()), feeds
    return build


def _tokens(n: int, mask: bool = True) -> dict[str, torch.Tensor]:
    feeds = {"input_ids": torch.randint(5, 1000, (1, n))}
    if mask:
        feeds["attention_mask"] = torch.ones(1, n, dtype=torch.int64)
    return feeds


def _image(size: int, key: str = "pixel_values") -> dict[str, torch.Tensor]:
    return {key: torch.randn(1, 3, size, size)}


# ---- transformers ---------------------------------------------------------------------------------------------

def _hf(model_class: str, config_class: str, feeds: dict[str, torch.Tensor], **config: Any):
    import transformers

    def build() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
        cfg = getattr(transformers, config_class)(**config)
        model = getattr(transformers, model_class)(cfg).eval()
        return FirstOutput(model, list(feeds)), feeds
    return build


def _whisper(d_model: int, layers: int, heads: int, decoder_layers: int, mels: int = 80):
    """AI Hub's Qualcomm-adapted Whisper encoder (aihub_adapted.py): split-head attention, 1x1 convolutions, and
    every decoder layer's cross-attention K/V as outputs."""
    def build() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
        from aihub_adapted import AdaptedWhisperEncoder

        feeds = {"input_features": torch.randn(1, mels, 3000)}
        return AdaptedWhisperEncoder(d_model, layers, heads, decoder_layers, mels).eval(), feeds
    return build


def _detr(backbone_depth: str, dilation: bool, conditional: bool = False):
    def build() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
        import transformers

        backbone = transformers.ResNetConfig(depths={"50": [3, 4, 6, 3], "101": [3, 4, 23, 3]}[backbone_depth],
                                             layer_type="bottleneck", hidden_sizes=[256, 512, 1024, 2048],
                                             out_features=["stage4"])
        name = "ConditionalDetr" if conditional else "Detr"
        cfg = getattr(transformers, f"{name}Config")(use_timm_backbone=False, backbone_config=backbone,
                                                      use_pretrained_backbone=False, dilation=dilation)
        model = getattr(transformers, f"{name}ForObjectDetection")(cfg).eval()
        feeds = {"pixel_values": torch.randn(1, 3, 640, 640)}
        return FirstOutput(model, list(feeds)), feeds
    return build


def _detr_dilated(backbone: str):
    """DETR-DC5: transformers applies `dilation` only to a timm backbone (with its own ResNet the flag is ignored
    and the graph is plain DETR's), so the DC5 models are built on timm's ResNet (benchmark venv: timm)."""
    def build() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
        import transformers

        cfg = transformers.DetrConfig(use_timm_backbone=True, backbone=backbone, use_pretrained_backbone=False,
                                      dilation=True)
        model = transformers.DetrForObjectDetection(cfg).eval()
        feeds = {"pixel_values": torch.randn(1, 3, 640, 640)}
        return FirstOutput(model, list(feeds)), feeds
    return build


class ClipLogits(torch.nn.Module):
    """AI Hub's OpenAI-Clip: image and text towers in one graph, image-text logits out."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image, text):  # noqa: ANN001
        return self.model(input_ids=text, pixel_values=image).logits_per_image


def _openai_clip():
    """openai/clip-vit-base-patch16's configuration (AI Hub: clip.load("ViT-B/16"), image 224, text 77 tokens)."""
    def build() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
        import transformers

        cfg = transformers.CLIPConfig(
            text_config=dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_hidden_layers=12,
                             max_position_embeddings=77, vocab_size=49408),
            vision_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                               image_size=224, patch_size=16), projection_dim=512)
        feeds = {"image": torch.randn(1, 3, 224, 224), "text": torch.randint(5, 1000, (1, 77))}
        return ClipLogits(transformers.CLIPModel(cfg).eval()), feeds
    return build


def _depth_anything():
    def build() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
        from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

        backbone = Dinov2Config(hidden_size=384, num_attention_heads=6, num_hidden_layers=12, image_size=518,
                                patch_size=14, out_indices=[9, 10, 11, 12], reshape_hidden_states=False)
        cfg = DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=[48, 96, 192, 384],
                                  fusion_hidden_size=64, reassemble_hidden_size=384, head_hidden_size=32)
        model = DepthAnythingForDepthEstimation(cfg).eval()
        feeds = {"pixel_values": torch.randn(1, 3, 518, 518)}
        return FirstOutput(model, list(feeds)), feeds
    return build


def _trocr_encoder():
    """microsoft/trocr-small-stage1's vision encoder (DeiT-S shape, 384x384) with the 6 decoder layers'
    cross-attention K/V (384 -> 256, 8 heads) as outputs, as AI Hub's TrOCREncoder."""
    def build() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
        from aihub_adapted import CrossKVEncoder
        from transformers import ViTConfig, ViTModel

        cfg = ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                        image_size=384, patch_size=16)
        feeds = {"pixel_values": torch.randn(1, 3, 384, 384)}
        encoder = ViTModel(cfg, add_pooling_layer=False)
        return CrossKVEncoder(encoder, list(feeds), 384, 256, 8, 6).eval(), feeds
    return build


def _opus_encoder(vocab: int):
    """Helsinki-NLP/opus-mt-*'s Marian encoder (256 tokens) with the 6 decoder layers' cross-attention K
    ([B, H, d, S]) and V as outputs, as AI Hub's QcMarianEncoder."""
    def build() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
        from aihub_adapted import CrossKVEncoder
        from transformers import MarianConfig, MarianMTModel

        cfg = MarianConfig(vocab_size=vocab, d_model=512, encoder_layers=6, decoder_layers=6,
                           encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=2048,
                           decoder_ffn_dim=2048, pad_token_id=vocab - 1, decoder_start_token_id=vocab - 1)
        feeds = _tokens(256)
        encoder = MarianMTModel(cfg).get_encoder()
        return CrossKVEncoder(encoder, list(feeds), 512, 512, 8, 6, transpose_key=True).eval(), feeds
    return build


BERT = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)

# (AI Hub model, component) -> (library, builder); input shapes from aihub_models.csv
TRANSFORMERS: dict[tuple[str, str], Callable] = {
    ("albert_base_v2_hf", "Albert-Base-V2-Hf"): _masked_lm("AlbertForMaskedLM", "AlbertConfig", embedding_size=128,
                                                           **BERT),
    ("bert_base_uncased_hf", "Bert-Base-Uncased-Hf"): _masked_lm("BertForMaskedLM", "BertConfig", **BERT),
    ("distil_bert_base_uncased_hf", "Distil-Bert-Base-Uncased-Hf"): _masked_lm("DistilBertForMaskedLM",
                                                                               "DistilBertConfig"),
    ("electra_bert_base_discrim_google", "Electra-Bert-Base-Discrim-Google"): _hf(
        "ElectraForPreTraining", "ElectraConfig", _tokens(384), embedding_size=768, **BERT),
    ("mobile_bert_uncased_google", "Mobile-Bert-Uncased-Google"): _masked_lm("MobileBertForMaskedLM",
                                                                             "MobileBertConfig"),
    ("beit", "Beit"): _hf("BeitForImageClassification", "BeitConfig", _image(224), use_relative_position_bias=True,
                          use_mean_pooling=True, layer_scale_init_value=0.1, num_labels=1000),
    ("levit", "LeViT"): _hf("LevitForImageClassification", "LevitConfig", _image(224), num_labels=1000),
    ("mobile_vit", "Mobile-VIT"): _hf("MobileViTForImageClassification", "MobileViTConfig", _image(256),
                                     num_labels=1000),
    ("segformer_base", "Segformer-Base"): _hf("SegformerForSemanticSegmentation", "SegformerConfig", _image(512),
                                              num_labels=150),
    ("video_mae", "Video-MAE"): _hf("VideoMAEForVideoClassification", "VideoMAEConfig",
                                    {"pixel_values": torch.randn(1, 16, 3, 224, 224)}, num_labels=400),
    ("huggingface_wavlm_base_plus", "HuggingFace-WavLM-Base-Plus"): _hf(
        "WavLMForCTC", "WavLMConfig", {"input_values": torch.randn(1, 160000)}, vocab_size=32),
    ("depth_anything", "Depth-Anything"): _depth_anything(),
    ("depth_anything_v2", "Depth-Anything-V2"): _depth_anything(),
    ("detr_resnet50", "DETR-ResNet50"): _detr("50", False),
    ("detr_resnet101", "DETR-ResNet101"): _detr("101", False),
    ("conditional_detr_resnet50", "Conditional-DETR-ResNet50"): _detr("50", False, conditional=True),
    ("trocr", "TrOCREncoder"): _trocr_encoder(),
    ("opus_mt_en_es", "OpusMTEncoder"): _opus_encoder(65001),
    ("opus_mt_en_zh", "OpusMTEncoder"): _opus_encoder(65001),
    ("opus_mt_es_en", "OpusMTEncoder"): _opus_encoder(65001),
    ("opus_mt_zh_en", "OpusMTEncoder"): _opus_encoder(65001),
    ("whisper_tiny", "HfWhisperEncoder"): _whisper(384, 4, 6, decoder_layers=4),
    ("whisper_base", "HfWhisperEncoder"): _whisper(512, 6, 8, decoder_layers=6),
    ("whisper_small", "HfWhisperEncoder"): _whisper(768, 12, 12, decoder_layers=12),
    ("whisper_small_quantized", "WhisperSmallEncoderQuantizable"): _whisper(768, 12, 12, decoder_layers=12),
    ("whisper_large_v3_turbo", "HfWhisperEncoder"): _whisper(1280, 32, 20, decoder_layers=4, mels=128),
    # "approx" in aihub_models.csv: AI Hub runs the openai clip package's ViT-B/16; this is transformers' equivalent
    ("openai_clip", "OpenAI-Clip"): _openai_clip(),
}


# ---- torchvision / timm (benchmark venv only) ------------------------------------------------------------------

def _tv(fn: str, size: int = 224, video: bool = False, **kwargs: Any):
    def build() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
        import torchvision

        module = torchvision.models
        for part in fn.split(".")[:-1]:
            module = getattr(module, part)
        model = getattr(module, fn.split(".")[-1])(weights=None, **kwargs).eval()
        x = torch.randn(1, 3, 16, 112, 112) if video else torch.randn(1, 3, size, size)
        if fn.startswith("segmentation."):
            return FirstOutput(model, ["x"]), {"image": x}
        return model, {"image": x}
    return build


def _timm(name: str, size: int = 224):
    def build() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
        import timm

        return timm.create_model(name, pretrained=False).eval(), {"image": torch.randn(1, 3, size, size)}
    return build


TORCHVISION: dict[tuple[str, str], Callable] = {
    (key, name): _tv(fn, **kw) for key, name, fn, kw in [
        ("convnext_base", "ConvNext-Base", "convnext_base", {}),
        ("convnext_tiny", "ConvNext-Tiny", "convnext_tiny", {}),
        ("densenet121", "DenseNet-121", "densenet121", {}),
        ("efficientnet_b0", "EfficientNet-B0", "efficientnet_b0", {}),
        ("efficientnet_b4", "EfficientNet-B4", "efficientnet_b4", {}),
        ("efficientnet_v2_s", "EfficientNet-V2-s", "efficientnet_v2_s", {}),
        ("fcn_resnet50", "FCN-ResNet50", "segmentation.fcn_resnet50", {"size": 520, "num_classes": 21,
                                                                       "weights_backbone": None, "aux_loss": False}),
        ("googlenet", "GoogLeNet", "googlenet", {"aux_logits": False, "init_weights": True}),
        ("inception_v3", "Inception-v3", "inception_v3", {"aux_logits": False, "init_weights": True,
                                                          "transform_input": False}),
        ("mnasnet05", "MNASNet05", "mnasnet0_5", {}),
        ("mobilenet_v3_large", "MobileNet-v3-Large", "mobilenet_v3_large", {}),
        ("mobilenet_v3_small", "MobileNet-v3-Small", "mobilenet_v3_small", {}),
        ("regnet", "RegNet", "regnet_x_3_2gf", {}),
        ("regnet_y_800mf", "RegNet-Y-800MF", "regnet_y_800mf", {}),
        ("resnet101", "ResNet101", "resnet101", {}),
        ("resnet18", "ResNet18", "resnet18", {}),
        ("resnet50", "ResNet50", "resnet50", {}),
        ("resnet_2plus1d", "ResNet-2Plus1D", "video.r2plus1d_18", {"video": True}),
        ("resnet_3d", "ResNet-3D", "video.r3d_18", {"video": True}),
        ("resnet_mixed", "ResNet-Mixed-Convolution", "video.mc3_18", {"video": True}),
        ("resnext101", "ResNeXt101", "resnext101_32x8d", {}),
        ("resnext50", "ResNeXt50", "resnext50_32x4d", {}),
        ("shufflenet_v2", "Shufflenet-v2", "shufflenet_v2_x0_5", {}),
        ("squeezenet1_1", "SqueezeNet-1.1", "squeezenet1_1", {}),
        ("vit", "VIT", "vit_b_16", {}),
        ("wideresnet50", "WideResNet50", "wide_resnet50_2", {}),
        # Apple Neural Engine figures (other_perf.csv), not AI Hub rows: MobileNet v2 on an M2 (ORT CoreML EP)
        ("apple_mobilenet_v2", "MobileNet-v2", "mobilenet_v2", {}),
    ]
}
TIMM: dict[tuple[str, str], Callable] = {
    ("dla102x", "DLA-102-X"): _timm("dla102x"),
    ("sequencer2d", "Sequencer2D"): _timm("sequencer2d_s"),
    ("nasnet", "NASNet"): _timm("nasnetalarge"),
    # Apple's FastViT-T8 (other_perf.csv: iPhone 16 Pro, 0.52 ms), 256x256 as in Apple's Core ML release
    ("apple_fastvit_t8", "FastViT-T8"): _timm("fastvit_t8", 256),
    # "approx" in aihub_models.csv (AI Hub runs the authors' code; timm carries the same architectures)
    ("efficientformer", "EfficientFormer"): _timm("efficientformer_l1"),
    ("efficientvit_b2_cls", "EfficientViT-b2-cls"): _timm("efficientvit_b2"),
    ("efficientvit_l2_cls", "EfficientViT-l2-cls"): _timm("efficientvit_l2"),
    # transformers' DETR with timm's dilated ResNet (needs both libraries: the benchmark venv)
    ("detr_resnet50_dc5", "DETR-ResNet50-DC5"): _detr_dilated("resnet50"),
    ("detr_resnet101_dc5", "DETR-ResNet101-DC5"): _detr_dilated("resnet101"),
}


def _stable_diffusion(component: str):
    """Stable Diffusion 1.5's components at AI Hub's shapes (batch 1, 512x512): predicted, never fitted on."""
    def build() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
        import reference_models

        module, args, _, names, _ = reference_models.build(component)
        return module, {name: (arg[:1] if arg.dim() and arg.shape[0] == 2 else arg) for name, arg in zip(names, args)}
    return build


def _stable_diffusion_unet_aihub_form():
    """SD-1.5's UNet as AI Hub adapts it before timing it (aihub_adapted.adapt_sd_unet): predicted after the
    comparison of the fusionc graph with AI Hub's figure was known, to ask how much of the miss is the graph's form."""
    def build() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
        import aihub_adapted

        module, feeds = _stable_diffusion("sd15_unet")()
        aihub_adapted.adapt_sd_unet(module.unet)
        return module, feeds
    return build


# The held-out test: never in the fit (aihub_perf.csv has no diffusion rows on purpose)
DIFFUSERS: dict[tuple[str, str], Callable] = {
    ("stable_diffusion_v1_5", "text_encoder"): _stable_diffusion("clip_text_encoder"),
    ("stable_diffusion_v1_5", "vae_decoder"): _stable_diffusion("sd_vae_decoder"),
    ("stable_diffusion_v1_5", "unet"): _stable_diffusion("sd15_unet"),
    ("stable_diffusion_v1_5", "unet_aihub_form"): _stable_diffusion_unet_aihub_form(),
}
SAME_GRAPH = {
    ("opus_mt_en_zh", "OpusMTEncoder"): ("opus_mt_en_es", "OpusMTEncoder"),
    ("opus_mt_es_en", "OpusMTEncoder"): ("opus_mt_en_es", "OpusMTEncoder"),
    ("opus_mt_zh_en", "OpusMTEncoder"): ("opus_mt_en_es", "OpusMTEncoder"),
    ("depth_anything_v2", "Depth-Anything-V2"): ("depth_anything", "Depth-Anything"),
    ("whisper_small_quantized", "WhisperSmallEncoderQuantizable"): ("whisper_small", "HfWhisperEncoder"),
    # "approx" in aihub_models.csv: AI Hub's MobileNet-v2 (tonylins' code, width 1.0, 224) is torchvision's
    ("mobilenet_v2", "MobileNet-v2"): ("apple_mobilenet_v2", "MobileNet-v2"),
    # the gesture pipeline's palm detector is mediapipe_hand's (AI Hub's layer counts equal on every runtime)
    ("mediapipe_hand_gesture", "PalmDetector"): ("mediapipe_hand", "HandDetector"),
}
def _custom() -> dict[tuple[str, str], Callable]:
    """AI Hub models from their authors' code, re-stated in aihub_custom.py (torch only: either venv runs them)."""
    import aihub_custom

    return aihub_custom.CUSTOM


def _ultralytics() -> dict[tuple[str, str], Callable]:
    """AI Hub's Ultralytics YOLOs, v3 to 11, detectors and segmentors (aihub_ultralytics.py: Ultralytics builds
    them)."""
    import aihub_ultralytics

    return aihub_ultralytics.ULTRALYTICS


LIBRARIES = {"transformers": TRANSFORMERS, "torchvision": TORCHVISION, "timm": TIMM, "diffusers": DIFFUSERS,
             "custom": _custom(), "ultralytics": _ultralytics()}


def output_names(module: torch.nn.Module) -> list[str]:
    """One name per output: a module with several (aihub_adapted's KV-cache encoders) says how many."""
    count = getattr(module, "output_count", 1)
    return ["out"] if count == 1 else [f"out{i}" for i in range(count)]


def features_of(build: Callable) -> dict[str, Any]:
    """Export one model through fusionc's export and the QNN pass pipeline; its per-op feature rows."""
    from fusionc.analysis.graph_stats import graph_stats
    from fusionc.core.context import ComponentContext
    from fusionc.core.options import CompileOptions
    from fusionc.export import ComponentSpec, export_component, export_structure
    from fusionc.pipeline import run_passes
    from fusionc.targets import get_target

    torch.manual_seed(0)
    start = time.time()
    try:  # structure only (meta device): no weight memory, no random init; the features need shapes alone
        with torch.device("meta"):
            module, feeds = build()
        feeds = {k: v.to("meta") for k, v in feeds.items()}
        with torch.no_grad():
            model = export_structure(ComponentSpec("model", module, feeds, output_names(module)))
        how = "meta"
    except Exception as err:  # noqa: BLE001 - e.g. a data-dependent branch on a buffer: export with real weights
        print(f"  meta export failed ({type(err).__name__}: {str(err)[:120]}); exporting with random weights",
              file=sys.stderr)
        torch.manual_seed(0)
        module, feeds = build()
        with torch.no_grad():
            model = export_component(ComponentSpec("model", module, feeds, output_names(module)))
        how = "random weights"
    params = sum(p.numel() for p in module.parameters())
    export_s = time.time() - start
    options = CompileOptions(target="qnn")
    records = run_passes(model, get_target("qnn").pipeline(options), ComponentContext.for_options(options, "model"))
    stats = graph_stats(model, {"batch": 1})
    ops = [[getattr(op, f) for f in OP_FIELDS] for op in stats.ops if op.kind != "free"]
    return {"params": params, "export_s": round(export_s, 1), "passes": len(records), "export": how,
            "attention_form": stats.attention_form, "inputs": {k: list(v.shape) for k, v in feeds.items()},
            "torch": torch.__version__, "fields": OP_FIELDS, "ops": ops, "op_counts": stats.op_counts}


def merge(cache: Path, path: Path = FEATURES) -> int:
    """Merge every cached model into the committed features file (keeps entries already there)."""
    data: dict[str, Any] = {}
    if path.exists():
        try:
            with gzip.open(path, "rt") as f:
                data = json.load(f)
        except (OSError, EOFError, json.JSONDecodeError):  # another venv's run replacing it: the cache has all
            data = {}
    for item in sorted(cache.glob("*.json")):
        entry = json.loads(item.read_text())
        if "ops" in entry:
            data[entry["key"]] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    with gzip.open(partial, "wt", compresslevel=9) as f:
        json.dump(data, f, separators=(",", ":"), sort_keys=True)
    os.replace(partial, path)  # atomic: two venvs' runs may merge at the same time
    return len(data)


RECURRENT = {"LSTM": (torch.nn.LSTM, 4), "GRU": (torch.nn.GRU, 3), "RNN": (torch.nn.RNN, 1)}


def refresh_recurrent(entry: dict[str, Any], build: Callable) -> int:
    """Recompute an entry's recurrent rows (LSTM / GRU / RNN) with graph_stats' current rule, without a new export:
    features from before that rule have them as 'vector' ops with no MACs and no timesteps. The module runs once on
    the meta device (no weights) and forward hooks record every recurrent layer's call (sequence, batch, input,
    hidden, directions); its ONNX nodes are in the same order. MACs = seq * batch * directions * gates * hidden *
    (input + hidden) (graph_stats: X[0] * X[1] * (|W| + |R|)), timesteps = seq * directions. Returns the rows set."""
    with torch.device("meta"):
        module, feeds = build()
    feeds = {k: v.to("meta") for k, v in feeds.items()}
    calls: list[tuple[int, int, int, int, int, int]] = []

    def hook(mod: torch.nn.Module, args: tuple, _out: Any) -> None:  # noqa: ANN401
        x = args[0]
        seq, batch = (x.shape[1], x.shape[0]) if mod.batch_first else (x.shape[0], x.shape[1])
        gates = next(g for cls, g in RECURRENT.values() if isinstance(mod, cls))
        for layer in range(mod.num_layers):  # the ONNX export has one node per layer
            width = mod.input_size if layer == 0 else mod.hidden_size * (2 if mod.bidirectional else 1)
            calls.append((seq, batch, width, mod.hidden_size, 2 if mod.bidirectional else 1, gates))

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if isinstance(m, tuple(cls for cls, _ in RECURRENT.values()))]
    with torch.no_grad():
        module(*feeds.values())
    for h in handles:
        h.remove()
    fields = entry["fields"]
    if "timesteps" not in fields:
        fields.append("timesteps")
        for op in entry["ops"]:
            op.append(1)
    col = {f: i for i, f in enumerate(fields)}
    rows = [op for op in entry["ops"] if op[col["op_type"]] in RECURRENT]
    if len(rows) != len(calls):
        raise ValueError(f"{entry.get('key')}: {len(rows)} recurrent nodes in the graph, {len(calls)} recurrent calls")
    for op, (seq, batch, width, hidden, dirs, gates) in zip(rows, calls):
        op[col["kind"]] = "linear"
        op[col["macs"]] = seq * batch * dirs * gates * hidden * (width + hidden)
        op[col["vector_elems"]] = 0
        op[col["timesteps"]] = seq * dirs
    entry["recurrent_refreshed"] = "refresh_recurrent (meta-device forward hooks; graph_stats' recurrent rule)"
    return len(rows)


def wait_for_memory(gb: float) -> None:
    """Block until MemAvailable >= gb (Linux); a no-op elsewhere."""
    meminfo = Path("/proc/meminfo")
    while meminfo.exists():
        fields = dict(line.split(":", 1) for line in meminfo.read_text().splitlines() if ":" in line)
        if int(fields["MemAvailable"].split()[0]) * 1024 >= gb * (1 << 30):
            return
        time.sleep(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=list(LIBRARIES))
    parser.add_argument("--models", nargs="*", help="AI Hub model keys (default: all of the libraries')")
    parser.add_argument("--min-free-gb", type=float, default=5.0,
                        help="start a model only when this much memory is available (the machine is shared)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/fusionc-latency-graphs"))
    parser.add_argument("--refresh-recurrent", action="store_true",
                        help="only recompute the recurrent (LSTM/GRU/RNN) rows of the stored features (no export)")
    args = parser.parse_args()
    if args.refresh_recurrent:
        builders = {f"{k}/{c}": b for lib, table in LIBRARIES.items() for (k, c), b in table.items()
                    if lib in args.libraries}
        with gzip.open(FEATURES, "rt") as f:
            data = json.load(f)
        for key, entry in sorted(data.items()):
            stale = any(op[entry["fields"].index("op_type")] in RECURRENT for op in entry["ops"]) and (
                "timesteps" not in entry["fields"])
            if stale and key in builders:
                print(f"{key}: {refresh_recurrent(entry, builders[key])} recurrent rows recomputed", file=sys.stderr)
        with gzip.open(FEATURES, "wt", compresslevel=9) as f:
            json.dump(data, f, separators=(",", ":"), sort_keys=True)
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    for library in args.libraries:
        try:
            __import__("aihub_custom" if library == "custom" else library)
        except Exception as err:  # noqa: BLE001 - e.g. torchvision beside the pinned torch
            print(f"skip {library}: not importable here ({type(err).__name__}: {err})", file=sys.stderr)
            continue
        entries = list(LIBRARIES[library].items())
        if args.models:  # in the order asked for (the most informative first when time is short)
            entries = sorted((e for e in entries if e[0][0] in args.models), key=lambda e: args.models.index(e[0][0]))
        for (key, component), build in entries:
            if (key, component) in SAME_GRAPH:
                continue  # copied from its twin below
            out = args.cache / f"{key}__{component}.json"
            if out.exists():
                continue
            wait_for_memory(args.min_free_gb)
            print(f"{library}: {key} / {component} ...", file=sys.stderr, flush=True)
            start = time.time()
            try:
                entry = features_of(build)
            except Exception as err:  # noqa: BLE001 - one model failing must not stop the others
                entry = {"error": f"{type(err).__name__}: {str(err)[:300]}", "trace": traceback.format_exc()[-2000:]}
                print(f"  FAILED: {entry['error']}", file=sys.stderr)
            entry.update(key=f"{key}/{component}", model=key, component=component, library=library,
                         seconds=round(time.time() - start, 1))
            out.write_text(json.dumps(entry))
            if "ops" in entry:
                print(f"  {len(entry['ops'])} ops, {entry['params'] / 1e6:.1f}M params, {entry['seconds']}s; "
                      f"{merge(args.cache)} models in {FEATURES.name}", file=sys.stderr, flush=True)
        copy_twins(args.cache)
    merge(args.cache)


def copy_twins(cache: Path) -> None:
    """Models whose graph is identical to another's (same class and configuration in AI Hub's list) share its
    features: the four Opus-MT encoders (one MarianConfig, 65001 tokens), Depth-Anything v1/v2 (one DPT + DINOv2-S
    configuration), Whisper-Small and its quantizable twin, the hand-gesture pipeline's palm detector."""
    for (key, component), (twin, twin_component) in SAME_GRAPH.items():
        source, out = cache / f"{twin}__{twin_component}.json", cache / f"{key}__{component}.json"
        if source.exists() and not out.exists():
            entry = json.loads(source.read_text())
            entry.update(key=f"{key}/{component}", model=key, component=component, same_graph_as=f"{twin}/{twin_component}")
            out.write_text(json.dumps(entry))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
