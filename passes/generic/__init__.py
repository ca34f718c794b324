"""fusionc.passes.generic: the target-neutral cleanup and fusion passes every pipeline starts with.

Generic passes (owned here): cleanup (CleanUpGraphPass and its parts), fusions into fusionc
local functions (FuseAttentionPass, FuseGroupNormPass, FuseLayerNormPass, FuseGeluPass and the
opt-in FuseGeGLUPass); the fused units themselves are defined in `fused_ops`.
`default_pipeline()` is the ordered list every target starts with.
"""

from fusionc.passes.generic.activation import FuseGeGLUPass, FuseGeluPass
from fusionc.passes.generic.attention import FuseAttentionPass
from fusionc.passes.generic.cleanup import (
    CleanUpGraphPass,
    EliminateCommonSubexpressionsPass,
    FoldConstantsPass,
    InferShapesPass,
    RemoveDeadCodePass,
    RemoveNoOpsPass,
)
from fusionc.passes.generic.normalization import FuseGroupNormPass, FuseLayerNormPass
from fusionc.passes.generic.standard import default_pipeline

__all__ = [
    "CleanUpGraphPass",
    "EliminateCommonSubexpressionsPass",
    "FoldConstantsPass",
    "FuseAttentionPass",
    "FuseGeGLUPass",
    "FuseGeluPass",
    "FuseGroupNormPass",
    "FuseLayerNormPass",
    "InferShapesPass",
    "RemoveDeadCodePass",
    "RemoveNoOpsPass",
    "default_pipeline",
]
