"""UseOrtGeluPass: fusionc::Gelu -> ORT's contrib Gelu / FastGelu, which have CPU kernels (and BiasGelu fusion).

onnxruntime inlines a fusionc::Gelu function back into Div/Erf/Add/Mul/Mul, and its own GeluFusion does not
match the inlined body, so every feed-forward GELU ran as five elementwise kernels over the [B,S,4C] tensor
(mid UNet: Erf+Div+Mul+Add ~0.08 s per step where the naive export's fused Gelu took 0.014 s,
benchmarks/results/ort_cpu_mid.json). com.microsoft::Gelu (erf form) and com.microsoft::FastGelu (tanh form)
compute the same function in one kernel; ORT then folds the preceding bias Add into BiasGelu / FastGelu's bias:

    h ─MatMul(W)─Add(b)─ fusionc::Gelu ─      =>   h ─MatMul(W)─Add(b)─ com.microsoft::Gelu ─
                                                   (ORT at load: MatMul ─ BiasGelu(b))

The ops are ORT's own: graphs with them run on onnxruntime only, which is what the onnx target ships for.
"""

from __future__ import annotations

import onnx_ir as ir

from fusionc.passes.generic import fused_ops

MS_DOMAIN = "com.microsoft"


class UseOrtGeluPass(ir.passes.InPlacePass):
    """Replace fusionc::Gelu calls by com.microsoft::Gelu (erf) or FastGelu (tanh) (module docstring)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        count = 0
        for node in list(graph):
            if node.domain != fused_ops.DOMAIN or node.op_type != fused_ops.GELU or len(node.inputs) != 1:
                continue
            op_type = "FastGelu" if node.overload == fused_ops.TANH else "Gelu"
            gelu = ir.Node(MS_DOMAIN, op_type, [node.inputs[0]], name=f"{node.name}_ort")
            out = node.outputs[0]
            gelu.outputs[0].shape, gelu.outputs[0].dtype = out.shape, out.dtype
            graph.insert_before(node, gelu)
            is_output = any(v is out for v in graph.outputs)
            out.replace_all_uses_with(gelu.outputs[0], replace_graph_outputs=True)
            if is_output:
                name = out.name
                out.name, gelu.outputs[0].name = f"{name}_fused", name
            graph.remove(node, safe=True)
            count += 1
        if count:
            model.opset_imports.setdefault(MS_DOMAIN, 1)
            fused_ops.drop_unused_functions(model)
        return ir.passes.PassResult(model, count > 0)
