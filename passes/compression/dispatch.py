"""The compression step of a target pipeline, from the compile options (`--palettize`, `--quantize-weights`).

Targets append `compression_entries(options, target)` last: compression sees the final weights (after fusion,
layout and precision passes) and nothing after it has to look through the decompression nodes. The one
entry dispatches, per component, to uniform palettization, mixed-bit palettization (search or `--recipe`),
or linear quantization, and checks up front what the target can store (Core ML: grouped LUTs, 3-bit
indices, int4 and block-wise scales need iOS18), so a bad combination fails before any work is done.

Only the components in `options.compress_components` are compressed (default: the denoising step, the UNet and a
ControlNet beside it or a diffusion transformer, as Apple ships palettized UNets and MMDiTs with fp16 text encoders and
VAE decoders, and as apple/ml-stable-diffusion's `--quantize-nbits` palettizes a ControlNet with its UNet).
"""

from __future__ import annotations

from typing import Any

import onnx_ir as ir

from fusionc.core.errors import BadInputError, UnsupportedError
from fusionc.core.options import CompileOptions
from fusionc.core.context import ComponentContext
from fusionc.passes.entry import PassEntry

IOS18_LEVEL = ("iOS18", "macOS15")
DEFAULT_COMPRESSED = ("unet", "transformer", "controlnet")  # the denoising step: a UNet (and its ControlNet), or SD3's / PixArt's transformer
# Weight-only quantization per target: which consumers' weights it compresses (absent: all). ONNX Runtime's CPU
# provider fuses DequantizeLinear+MatMul into MatMulNBits (int4/int8 weights stay packed); before a Conv or Gemm
# the DequantizeLinear runs at every step (mid UNet, int4 everywhere: DequantizeLinear 0.68 s of a 1.76 s step,
# benchmarks/results/ort_cpu_mid.json), so the onnx target compresses MatMul weights only.
WEIGHT_ONLY_OPS: dict[str, frozenset[str]] = {"onnx": frozenset({"MatMul"})}


def parse_palettize(value: Any) -> tuple[int | None, float | None]:
    """`--palettize` as (bits, None) or (None, target dB) for `auto:DB`; (None, None) when unset."""
    from fusionc.passes.compression.lut import NBITS

    if value is None:
        return None, None
    text = str(value).strip().lower()
    if text.startswith("auto:"):
        try:
            db = float(text[5:])
        except ValueError:
            db = float("nan")
        if not (db > 0 and db < 200):
            raise BadInputError(f"--palettize {value}: auto needs a PSNR target in dB, e.g. auto:35")
        return None, db
    if text.isdigit() and int(text) in NBITS:
        return int(text), None
    raise BadInputError(f"--palettize {value}: give bits ({', '.join(map(str, NBITS))}) or auto:DB, e.g. auto:35")


def wants_compression(options: CompileOptions) -> bool:
    return bool(options.palettize or options.quantize_weights or options.recipe)


def check_options(options: CompileOptions, target: str) -> None:
    """Raise BadInputError/UnsupportedError for compression options that cannot work together or on `target`."""
    bits, db = parse_palettize(options.palettize)
    if options.quantize_weights and (options.palettize or options.recipe):
        raise BadInputError("--quantize-weights and --palettize/--recipe are alternatives: choose one")
    if options.recipe and bits is not None:
        raise BadInputError("--recipe goes with --palettize auto:DB (saved or re-applied) or alone (re-applied)")
    if options.granularity not in ("per_tensor", "per_grouped_channel"):
        raise BadInputError(f"--granularity {options.granularity}: choose per_tensor or per_grouped_channel")
    if options.granularity == "per_grouped_channel" and options.group_size <= 0:
        raise BadInputError(f"--group-size {options.group_size}: give a positive number of channels per LUT")
    if options.quantize_weights and options.quantize_weights not in ("int8", "int4"):
        raise BadInputError(f"--quantize-weights {options.quantize_weights}: choose int8 or int4")
    block = block_size(options)
    if block is not None and block <= 0:
        raise BadInputError(f"--block-size {block}: give a positive block size (input channels per scale)")
    mode = getattr(options, "quantize_mode", "symmetric")
    if mode not in ("symmetric", "affine"):
        raise BadInputError(f"--quantize-mode {mode}: choose symmetric or affine")
    if target != "coreml":
        return
    deployment = options.deployment_target or "iOS17"
    if deployment in IOS18_LEVEL:
        return
    needs = []
    if bits == 3:
        needs.append("3-bit palettes")
    if (bits or db or options.recipe) and options.granularity == "per_grouped_channel":
        needs.append("grouped palettes (--granularity per_grouped_channel)")
    if options.quantize_weights == "int4":
        needs.append("int4 weights")
    elif options.quantize_weights and block is not None:
        needs.append("block-wise scales (--block-size)")
    if needs:
        raise UnsupportedError(f"{' and '.join(needs)} need Core ML iOS18: add --deployment-target iOS18 "
                               f"(now {deployment})")


def block_size(options: CompileOptions) -> int | None:
    """Quantization block size: the option, else per channel for int8 and 32 for int4."""
    value = getattr(options, "block_size", None)
    if value is None and options.quantize_weights == "int4":
        return 32
    return value


def compressed_components(options: CompileOptions) -> tuple[str, ...]:
    value = getattr(options, "compress_components", None) or DEFAULT_COMPRESSED
    names = tuple(v.strip() for v in value.split(",")) if isinstance(value, str) else tuple(value)
    return tuple(n for n in names if n)


class CompressWeightsPass(ir.passes.InPlacePass):
    """Apply the compression the options ask for to one component (see the module docstring)."""

    def __init__(self, ctx: ComponentContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.inner: ir.passes.PassBase | None = None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if self.ctx.name not in compressed_components(self.ctx.options):
            return ir.passes.PassResult(model, modified=False)
        self.inner = make_pass(self.ctx)
        result = self.inner(model)
        return ir.passes.PassResult(model, modified=result.modified)


def make_pass(ctx: ComponentContext) -> ir.passes.PassBase:
    """The compression pass for one component."""
    from fusionc.passes.compression.mixed_bit import MixedBitPalettizePass
    from fusionc.passes.compression.palettize import PalettizeWeightsPass
    from fusionc.passes.compression.quantize_weights import QuantizeWeightsPass

    options = ctx.options
    common = {"min_elements": options.min_weight_elements, "include_embeddings": options.compress_embeddings}
    if options.quantize_weights:
        return QuantizeWeightsPass(options.quantize_weights, block_size=block_size(options),
                                   symmetric=options.quantize_mode != "affine",
                                   op_types=WEIGHT_ONLY_OPS.get(options.target), **common)
    bits, db = parse_palettize(options.palettize)
    if bits is not None:
        return PalettizeWeightsPass(bits, granularity=options.granularity, group_size=options.group_size, **common)
    return MixedBitPalettizePass(db, ctx, recipe_path=options.recipe, granularity=options.granularity,
                                 group_size=options.group_size, **common)


def compression_entries(options: CompileOptions, target: str) -> list[PassEntry]:
    """The one compression entry, on when compression options are given (checked for `target` now)."""
    if wants_compression(options):
        check_options(options, target)
    return [PassEntry("CompressWeightsPass", lambda c: CompressWeightsPass(c),
                      "last: compresses the final weights (after fusion/layout/precision); later passes never see "
                      "through the decompression nodes", when=wants_compression)]
