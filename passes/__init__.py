"""fusionc.passes: onnx_ir passes over the exported ONNX of each component.

Generic passes (owned here): cleanup (CleanUpGraphPass and its parts), fusions into fusionc
local functions (FuseAttentionPass, FuseGroupNormPass, FuseLayerNormPass, FuseGeluPass and the
opt-in FuseGeGLUPass); the fused units themselves are defined in `fused_ops`.
`default_pipeline()` is the ordered list every target starts with.
"""

from fusionc.passes.activation import FuseGeGLUPass, FuseGeluPass
from fusionc.passes.attention import FuseAttentionPass
from fusionc.passes.cleanup import (
    CleanUpGraphPass,
    EliminateCommonSubexpressionsPass,
    FoldConstantsPass,
    InferShapesPass,
    RemoveDeadCodePass,
    RemoveNoOpsPass,
)
from fusionc.passes.normalization import FuseGroupNormPass, FuseLayerNormPass
from fusionc.passes.standard import default_pipeline

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
