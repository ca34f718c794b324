"""CompileOptions: every option of `fusionc compile`, shared by the CLI, the config file and the targets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from fusionc.core.errors import BadInputError

# --precision when not given: what each target builds by default (the onnx target is float unless asked)
DEFAULT_PRECISION = {"onnx": "fp32", "qnn": "w8a16", "coreml": None}

ALL_COMPONENTS = ("text_encoder", "text_encoder_2", "text_encoder_3", "controlnet", "unet", "transformer",
                  "vae_decoder", "vae_encoder")
DEFAULT_COMPONENTS = ("text_encoder", "text_encoder_2", "text_encoder_3", "controlnet", "unet", "transformer",
                      "vae_decoder")


@dataclass
class CompileOptions:
    """What to build. Every knob of a build is a field here: a flag or a fusionc.toml key, recorded in the manifest."""

    target: str = "onnx"
    device: str | None = None
    components: tuple[str, ...] | None = None  # None: every default component the checkpoint has
    height: int | None = None  # image pixels; None: the model's sample size
    width: int | None = None
    text_length: int | None = None  # T5 tokens of a diffusion transformer's prompt; None: the tokenizer's maximum
    opset: int = 18
    allow_pickle: bool = False
    verify: bool = True
    min_psnr: float | None = None
    # gates (fusionc.gates): MB (10^6 bytes) and estimated ms, by component name or "total"
    max_size: dict[str, float] | None = None
    max_latency_ms: dict[str, float] | None = None
    latency_steps: int = 8  # denoising steps of the per-image ("total") latency estimate, guidance on
    # Three disjoint input sets (fusionc.inputs): prompts (trajectories, each with its own seed) and steps of each.
    verify_steps: int = 3  # verification: what psnr_db and the gates report
    verify_prompts: int = 2
    calibration_steps: int = 4  # calibration: what QNN ranges, fp16 overflow ranges and mixed-bit probes see
    calibration_prompts: int = 4
    selection_steps: int = 5  # selection: what QNN remedies and the mixed-bit recipe are judged on
    selection_prompts: int = 2
    # --palettize auto:DB measures on a trajectory of the generation's length (generate's default 8 steps): a
    # recipe fitted to 3 verification timesteps hides its error at the others (images 29 dB at a 36 dB UNet)
    mixed_bit_steps: int = 8
    seed: int = 0
    # Core ML
    attention: str = "split_einsum"
    compute_units: str = "cpu_and_ne"
    deployment_target: str = "iOS17"
    chunk: str = "auto"
    bundle: str | None = None
    compute_precision: str = "fp16"  # Core ML program precision: fp16 | fp32
    attention_chunk: int = 512  # split_einsum_v2 query chunk (Apple's CHUNK_SIZE); small values test tiny models
    coreml_ct_passes: str = "minimal"  # coremltools pass pipeline at ct.convert: minimal | default
    # compression
    palettize: str | None = None
    granularity: str = "per_tensor"
    group_size: int = 16
    quantize_weights: str | None = None
    block_size: int | None = None  # input channels per scale; None: per channel for int8, 32 for int4
    quantize_mode: str = "symmetric"  # symmetric | affine
    recipe: Path | None = None
    min_weight_elements: int = 2048
    compress_embeddings: bool = False  # also compress Gather tables (token embeddings)
    compress_components: tuple[str, ...] | None = None  # None: the denoising step (unet, controlnet, transformer; passes.compression.dispatch)
    # ONNX Runtime and QNN: activation/weight precision; None: the target's default (DEFAULT_PRECISION)
    precision: str | None = None
    # QNN
    calibration_samples: int = 8  # batch-1 inputs drawn from the calibration set for activation ranges; 0: all
    selection_samples: int = 8  # batch-1 inputs drawn from the selection set to judge remedies; 0: all
    qnn_range_margin: float = 3.0  # 16-bit activation ranges widened by this factor (unseen inputs stay in range)
    qnn_fp16_attention: bool = True  # activation x activation MatMuls in fp16 islands on the HTP
    qnn_target_db: float | None = None  # remedies stop here; None: the PSNR gate + 5 dB
    qnn_remedy_rounds: int | None = None  # remedy evaluations; 0 disables them; None: the remedies' default
    qnn_remedy_seconds: float = 600.0  # and at most this long
    qnn_max_context_bytes: int | None = None  # split contexts above this; None: the device's limit
    qnn_max_build_bytes: int | None = None  # split where a context build would take more memory; None: 8 GiB
    qnn_verify_runtime: str = "htp"  # htp: the contexts (the emulator on x86-64); cpu: the QDQ graphs on ORT's CPU EP

    def __post_init__(self) -> None:
        if self.precision is None:
            self.precision = DEFAULT_PRECISION.get(self.target)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, Path):
                out[key] = str(value)
            elif isinstance(value, tuple):
                out[key] = list(value)
        return out


# Which targets honour each option: the one definition. A field not listed here is honoured by every target.
# `fusionc compile` refuses a foreign option before any work (check_target_options) and the manifest records
# only the options in effect for its target (options_in_effect). tests/test_target_options.py walks every
# target x foreign field, so a new field must be placed here (or be common) on purpose.
ALL_TARGETS = ("onnx", "coreml", "qnn")
COMPRESSION_TARGETS = ("onnx", "coreml")  # compressed weights stay runnable ONNX; Core ML lowers them to LUTs
OPTION_TARGETS: dict[str, tuple[str, ...]] = {
    # Core ML packaging and lowering
    "attention": ("coreml",),
    "compute_units": ("coreml",),
    "deployment_target": ("coreml",),
    "chunk": ("coreml",),
    "bundle": ("coreml",),
    "compute_precision": ("coreml",),
    "attention_chunk": ("coreml",),
    "coreml_ct_passes": ("coreml",),
    # weight compression (passes/compression): the QNN target quantizes itself (--precision)
    "palettize": COMPRESSION_TARGETS,
    "granularity": COMPRESSION_TARGETS,
    "group_size": COMPRESSION_TARGETS,
    "quantize_weights": COMPRESSION_TARGETS,
    "block_size": COMPRESSION_TARGETS,
    "quantize_mode": COMPRESSION_TARGETS,
    "recipe": COMPRESSION_TARGETS,
    "min_weight_elements": COMPRESSION_TARGETS,
    "compress_embeddings": COMPRESSION_TARGETS,
    "compress_components": COMPRESSION_TARGETS,
    "mixed_bit_steps": COMPRESSION_TARGETS,
    # QNN quantization, remedies and context building
    "precision": ("onnx", "qnn"),  # onnx: fp32 | w8a8 (targets/onnx/quantized.py, the QNN quantizer)
    "calibration_samples": ("onnx", "qnn"),
    "selection_samples": ("onnx", "qnn"),
    "qnn_range_margin": ("qnn",),
    "qnn_fp16_attention": ("qnn",),
    "qnn_target_db": ("onnx", "qnn"),  # the remedies are shared with onnx w8a8
    "qnn_remedy_rounds": ("onnx", "qnn"),
    "qnn_remedy_seconds": ("onnx", "qnn"),
    "qnn_max_context_bytes": ("qnn",),
    "qnn_max_build_bytes": ("qnn",),
    "qnn_verify_runtime": ("qnn",),
}


def targets_of(field_name: str) -> tuple[str, ...]:
    """The targets that honour option `field_name`."""
    return OPTION_TARGETS.get(field_name, ALL_TARGETS)


def flag_of(field_name: str) -> str:
    """The command-line flag of a CompileOptions field (every field but a few has one; see fusionc.config)."""
    return "--" + field_name.replace("_", "-")


def _defaults() -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(CompileOptions)}


def foreign_options(options: CompileOptions, given: Iterable[str] = ()) -> list[str]:
    """Fields set (named in `given`, or away from their default) that `options.target` does not honour."""
    defaults, given = _defaults(), set(given)
    return [name for name, targets in OPTION_TARGETS.items()
            if options.target not in targets and (name in given or getattr(options, name) != defaults[name])]


def check_target_options(options: CompileOptions, given: Iterable[str] = (),
                         where: dict[str, str] | None = None) -> None:
    """Refuse (BadInputError, exit 2) an option the target cannot honour, before any work is done.

    `given`: the fields the user set explicitly (flags, config-file keys); `where`: field -> where it came
    from, for the message ("config file 'x.toml'")."""
    if options.target not in ALL_TARGETS:
        raise BadInputError(f"unknown target '{options.target}': choose one of {', '.join(ALL_TARGETS)}")
    foreign = foreign_options(options, given)
    if not foreign:
        return
    name = foreign[0]
    source = f" (from {where[name]})" if where and name in where else ""
    others = "" if len(foreign) == 1 else f" (also {', '.join(flag_of(n) for n in foreign[1:])})"
    honour = targets_of(name)
    who = f"the {honour[0]} target honours" if len(honour) == 1 else f"the {' and '.join(honour)} targets honour"
    raise BadInputError(f"{flag_of(name)}{source} is not an option of --target {options.target}: only {who} it"
                        f"{others}; drop it or change --target")


def options_in_effect(options: CompileOptions) -> dict[str, Any]:
    """options.to_json() without the fields the target does not honour (what the manifest records)."""
    return {k: v for k, v in options.to_json().items() if options.target in targets_of(k)}


def _names(value: str | Iterable[str]) -> list[str]:
    """A comma list (the flag) or a list (the file, the API) of names."""
    names = value.split(",") if isinstance(value, str) else list(value)
    return [n.strip() for n in names if n.strip()]


def _is_set(options: CompileOptions, name: str, given: set[str], shared: set[str]) -> bool:
    """Whether the user set field `name`: named in `given`, or away from its default (unless it is a fleet's
    shared key, which may be meant for the other variants)."""
    if name in given:
        return True
    return name not in shared and getattr(options, name) != _defaults()[name]


def inert_options(options: CompileOptions, given: Iterable[str] = (),
                  shared: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(field, why) of the options set that have no effect with the others (or cannot be honoured as asked):
    `fusionc compile` refuses them up front (check_option_combinations) rather than ignore them silently.
    `shared`: a fleet's shared config-file keys, counted only when given (a variant may not need them)."""
    given, shared = set(given), set(shared) - set(given)
    is_set = lambda name: _is_set(options, name, given, shared)  # noqa: E731
    found: list[tuple[str, str]] = []
    # without verification --min-psnr still sets the quantization remedies' target (the gate + 5 dB) on QNN and
    # onnx w8a8 builds (targets/qnn/remedies.py); elsewhere it gates nothing
    remedies = options.target == "qnn" or (options.target == "onnx" and options.precision == "w8a8")
    if options.min_psnr is not None and not options.verify and not remedies and is_set("min_psnr"):
        found.append(("min_psnr", "--min-psnr gates the verification that --no-verify skips: drop one of them"))
    if options.max_latency_ms and options.device is None and options.target in ALL_TARGETS:
        from fusionc.core.devices import DEFAULT_DEVICE

        if DEFAULT_DEVICE.get(options.target) is None and is_set("max_latency_ms"):
            found.append(("max_latency_ms", f"--max-latency-ms needs a device to estimate on, and an "
                                            f"{options.target} build has none: pass --device (see `fusionc devices`)"))
    if options.target in COMPRESSION_TARGETS:
        palettize = None if options.palettize is None else str(options.palettize).strip().lower()
        auto = palettize is not None and palettize.startswith("auto:")
        compress = bool(options.palettize or options.quantize_weights or options.recipe)
        needs = {
            "block_size": (options.quantize_weights is not None, "--quantize-weights"),
            "quantize_mode": (options.quantize_weights is not None, "--quantize-weights"),
            "granularity": (bool(options.palettize or options.recipe), "--palettize (or --recipe)"),
            "group_size": (bool(options.palettize or options.recipe), "--palettize (or --recipe)"),
            "min_weight_elements": (compress, "--palettize or --quantize-weights"),
            "compress_embeddings": (compress, "--palettize or --quantize-weights"),
            "compress_components": (compress, "--palettize or --quantize-weights"),
            "mixed_bit_steps": (auto, "--palettize auto:DB (the mixed-bit search)"),
        }
        for name, (ok, what) in needs.items():
            if not ok and is_set(name):
                value = getattr(options, name)
                shown = ",".join(value) if isinstance(value, (tuple, list)) else value
                shown = "" if isinstance(shown, bool) else f" {shown}"
                found.append((name, f"{flag_of(name)}{shown} has no effect without {what}: add it or drop "
                                    f"{flag_of(name)}"))
        # one palette per tensor has no groups to size: --group-size is for --granularity per_grouped_channel
        # (was accepted and ignored, e.g. with a config file's grouped palettization overridden on the command line)
        if ((options.palettize or options.recipe) and options.granularity != "per_grouped_channel"
                and is_set("group_size")):
            found.append(("group_size", f"--group-size {options.group_size} has no effect with --granularity "
                                        f"{options.granularity} (one palette per tensor): add --granularity "
                                        "per_grouped_channel or drop --group-size"))
        if (compress and options.compress_components and options.components is not None
                and is_set("compress_components")):
            missing = [c for c in _names(options.compress_components) if c not in options.components]
            if missing:
                found.append(("compress_components",
                              f"--compress-components names {', '.join(missing)}, which --components does not "
                              f"build ({', '.join(options.components)}): drop it or add it to --components"))
    # split_einsum_v2's query chunk: the other attention forms have no query chunks
    if options.target == "coreml" and options.attention != "split_einsum_v2" and is_set("attention_chunk"):
        found.append(("attention_chunk", f"--attention-chunk {options.attention_chunk} has no effect with --attention "
                                         f"{options.attention}: it chunks split_einsum_v2's queries; add --attention "
                                         "split_einsum_v2 or drop --attention-chunk"))
    # the quantizer's samples and remedies: onnx w8a8 and QNN w8a16 / w8a8 quantize; onnx fp32 and QNN fp16 do not
    quantized = (options.target == "qnn" and options.precision != "fp16") or (
        options.target == "onnx" and options.precision == "w8a8")
    if options.target in ("onnx", "qnn") and not quantized:
        for name in ("calibration_samples", "selection_samples", "qnn_target_db", "qnn_remedy_rounds",
                     "qnn_remedy_seconds", "qnn_fp16_attention"):
            if options.target in targets_of(name) and is_set(name):
                quantizing = "--precision w8a8" if options.target == "onnx" else "--precision w8a16 or w8a8"
                article = "an" if options.target[0] in "aeiou" else "a"
                found.append((name, f"{flag_of(name)} tunes the quantization, and {article} {options.target} "
                                    f"{options.precision} build has none: drop it or choose {quantizing}"))
    if (options.target == "qnn" and options.precision == "fp16" and is_set("qnn_range_margin")):
        found.append(("qnn_range_margin", "--qnn-range-margin widens the ranges of quantized activations and "
                                          "--precision fp16 has none: drop it or choose --precision w8a16 or w8a8"))
    return found


def check_option_combinations(options: CompileOptions, given: Iterable[str] = (),
                              where: dict[str, str] | None = None, shared: Iterable[str] = ()) -> None:
    """Refuse (BadInputError, exit 2) an option that would have no effect, or a gate that could not be
    evaluated, before any work is done (inert_options)."""
    found = inert_options(options, given, shared)
    if not found:
        return
    name, why = found[0]
    source = f" ({flag_of(name)} from {where[name]})" if where and name in where else ""
    also = "" if len(found) == 1 else f" (also {', '.join(flag_of(n) for n, _ in found[1:])})"
    raise BadInputError(f"{why}{source}{also}")
