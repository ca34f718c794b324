"""fusionc.passes: onnx_ir passes over the exported ONNX of each component, grouped by concern.

    entry.py       PassEntry: one step of a target's pass list (factory, reason, when it is on)
    generic/       cleanup and fusions every target starts with (attention, GroupNorm, LayerNorm, GELU)
    compression/   palettization, linear weight quantization, the mixed-bit search, the compression dispatch
    ane/           Core ML / Apple Neural Engine rewrites: (B, C, 1, S) layout, split-einsum attention
    qnn/           QNN HTP rewrites and Q/DQ insertion
    precision/     fp16 safety: activations that would overflow fp16

Passes import only fusionc.core and fusionc.passes; what a pass needs (options, the component's verification
inputs) arrives as arguments through `fusionc.core.context.ComponentContext`, never from a driver global.
"""
