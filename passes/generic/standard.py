"""The generic pass pipeline every target starts with: cleanup -> fusions -> cleanup.

Targets append their own passes (layout, precision, compression, ...) after these; the order here is
the contract the lowerings rely on: by the end, attention, GroupNorm and GELU are single fusionc
nodes and LayerNorm is ONNX LayerNormalization.
"""

from __future__ import annotations

from fusionc.core.options import CompileOptions
from fusionc.passes.entry import PassEntry
from fusionc.passes.generic.activation import FuseGeluPass
from fusionc.passes.generic.attention import FuseAttentionPass
from fusionc.passes.generic.cleanup import CleanUpGraphPass
from fusionc.passes.generic.normalization import FuseGroupNormPass, FuseLayerNormPass
from fusionc.passes.generic.unpatchify import RankFourUnpatchifyPass


def default_pipeline(options: CompileOptions | None = None) -> list[PassEntry]:
    """The ordered generic passes (always on); `options` is accepted for symmetry with Target.pipeline."""
    del options
    return [
        PassEntry("CleanUpGraphPass", lambda c: CleanUpGraphPass(),
                  "first: fold, infer shapes, collapse the exporter's Reshape/Transpose detours so fusions see one canonical form"),
        PassEntry("FuseAttentionPass", lambda c: FuseAttentionPass(),
                  "SDPA core (UNet, CLIP, T5 + position bias, SD3 joint, PixArt) -> one unit that targets split per head or lower natively; needs cleanup's canonical key transpose"),
        PassEntry("FuseGroupNormPass", lambda c: FuseGroupNormPass(),
                  "Reshape/InstanceNorm/Reshape/Mul/Add -> one unit; needs cleanup's shapes to prove the Reshape pair restores x"),
        PassEntry("FuseLayerNormPass", lambda c: FuseLayerNormPass(),
                  "LayerNorm decompositions -> ONNX LayerNormalization (exporter usually emits it already)"),
        PassEntry("FuseGeluPass", lambda c: FuseGeluPass(),
                  "erf/tanh chains -> one unit; independent of the fusions above (no pattern overlaps another)"),
        PassEntry("RankFourUnpatchifyPass", lambda c: RankFourUnpatchifyPass(),
                  "a transformer's rank-6 unpatchify -> rank-4 reorder + DepthToSpace (Core ML and the HTP stop at rank 5); "
                  "after the fusions, whose patterns it does not touch"),
        PassEntry("CleanUpGraphPass", lambda c: CleanUpGraphPass(),
                  "last: remove what the fusions left dead and re-infer shapes for the target passes"),
    ]
