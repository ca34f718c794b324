"""QNN rewrites: make the fused float graph one the HTP runs whole and quantizes well.

Run after the generic passes (which fuse attention/GroupNorm/GELU into fusionc:: functions) and before
calibration, so calibration sees exactly the tensors that get Q/DQ pairs.

- StaticBatchPass: the HTP compiles static shapes; every context is built for batch 1 (the runner splits
  classifier-free-guidance batches), then shape chains fold away.
- UpgradeOpsetPass: 16-bit Q/DQ and the per-channel GroupNormalization need opset 21 (onnxscript's IR
  version converter: no protobuf round trip, so it works past 2 GB where onnx.version_converter fails).
- LowerFusedOpsPass: fusionc::GroupNorm -> GroupNormalization-21 (one QNN GroupNorm op; its decomposition
  E[x^2]-E[x]^2 in 16-bit fixed point cancels catastrophically), fusionc::Gelu -> Gelu-20 (QNN Gelu),
  GeGLU -> Split/Gelu/Mul, ScaledDotProductAttention -> MatMul/Softmax/MatMul with the scale folded on q.
- ClampAttentionMaskPass: additive masks of -3.4e38 (CLIP's causal mask) would stretch the quantized range
  of the scores to 1e38; -100 masks just as well after the softmax (exp(-100) ~ 4e-44).
- DropNanGuardPass: Where(IsNaN(softmax), 0, softmax) guards fully masked rows; with finite masks there are
  none, and the HTP would otherwise carry a bool branch through the quantized graph.
- InferStaticShapesPass: the QNN EP rejects any node whose tensor shapes it cannot read ("Cannot get
  shape"), and ONNX shape inference stops at GroupNormalization-21 (a function op) and at fusionc calls;
  shape-preserving ops get their input's shape, then inference resumes, until every shape is static.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from fusionc.passes.generic import fused_ops

FUSED_DOMAIN = "fusionc"
MASK_FLOOR = -100.0
QNN_OPSET = 21


def _attr(node: ir.Node, name: str, default):
    attr = node.attributes.get(name)
    return default if attr is None else attr.value


class StaticBatchPass(ir.passes.InPlacePass):
    """Set a symbolic leading (batch) dim of every graph input and output to `batch`.

        sample [batch,4,8,8] -> ... -> out_sample [batch,4,8,8]   =>   sample [1,4,8,8] -> ... [1,4,8,8]
    """

    def __init__(self, batch: int = 1) -> None:
        super().__init__()
        self.batch = batch

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for value in list(model.graph.inputs) + list(model.graph.outputs):
            if value.shape is not None and len(value.shape) and not isinstance(value.shape[0], int):
                value.shape = ir.Shape([self.batch, *value.shape[1:]])
                modified = True
        if modified:  # intermediate shapes were symbolic in the batch dim: let inference redo them
            for node in model.graph:
                for out in node.outputs:
                    if out.shape is not None and any(not isinstance(d, int) for d in out.shape):
                        out.shape = None
        return ir.passes.PassResult(model, modified)


class UpgradeOpsetPass(ir.passes.InPlacePass):
    """Convert the default-domain opset to 21 (onnxscript's IR version converter).

        opset_import {"": 18}   =>   opset_import {"": 21}
    """

    def __init__(self, version: int = QNN_OPSET) -> None:
        super().__init__()
        self.version = version

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if model.opset_imports.get("", 0) >= self.version:
            return ir.passes.PassResult(model, modified=False)
        from onnxscript import version_converter

        # the converter inlines every function: hide the fused units (their bodies are opset-18 ONNX,
        # the calls are domain "fusionc" and need no conversion)
        hidden = {k: f for k, f in model.functions.items() if k[0] == FUSED_DOMAIN}
        for key in hidden:
            del model.functions[key]
        try:
            version_converter.convert_version(model, self.version)
        finally:
            model.functions.update(hidden)
        model.opset_imports[""] = self.version
        return ir.passes.PassResult(model, modified=True)


class LowerFusedOpsPass(ir.passes.InPlacePass):
    """Replace fusionc:: calls by the ONNX ops the QNN EP maps one to one.

        fusionc::GroupNorm(x, g, b)        =>  GroupNormalization-21(x, g, b)
        fusionc::Gelu(x)                   =>  Gelu-20(x)
        fusionc::GeGLU(x)                  =>  a, h = Split(x); Mul(a, Gelu(h))
        fusionc::SDPA(q, k, v[, mask])     =>  Softmax(MatMul(q*scale, Transpose(k)) [+ mask]) @ v
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        count = 0
        for node in list(graph):
            if node.domain != FUSED_DOMAIN:
                continue
            lower = {"GroupNorm": _group_norm, "Gelu": _gelu, "GeGLU": _geglu,
                     "ScaledDotProductAttention": _sdpa}.get(node.op_type)
            if lower is None:
                continue
            new_nodes = lower(node)
            for new in new_nodes:  # constants the lowering made (scales) become initializers
                for value in new.inputs:
                    if value is not None and value.const_value is not None and value.producer() is None \
                            and value.name not in graph.initializers:
                        graph.register_initializer(value)
            graph.insert_before(node, new_nodes)
            old, new = node.outputs[0], new_nodes[-1].outputs[0]
            if old.shape is not None:
                new.shape = old.shape
            if old.dtype is not None:
                new.dtype = old.dtype
            is_output = any(v is old for v in graph.outputs)
            old.replace_all_uses_with(new, replace_graph_outputs=True)
            if is_output:  # the interface name moves to the lowered value
                name = old.name
                old.name, new.name = f"{name}_fused", name
            graph.remove(node, safe=True)
            count += 1
        if count:
            fused_ops.drop_unused_functions(model)
        return ir.passes.PassResult(model, count > 0)


def _const(name: str, array: np.ndarray) -> ir.Value:
    return ir.Value(name=name, const_value=ir.tensor(array, name=name), shape=ir.Shape(array.shape),
                    type=ir.TensorType(ir.DataType.from_numpy(array.dtype)))


def _group_norm(node: ir.Node) -> list[ir.Node]:
    x, gamma, beta = node.inputs[:3]
    return [ir.Node("", "GroupNormalization", [x, gamma, beta], name=f"{node.name}_gn", attributes=[
        ir.AttrInt64("num_groups", int(_attr(node, "num_groups", 32))),
        ir.AttrFloat32("epsilon", float(_attr(node, "epsilon", 1e-5)))])]


def _gelu(node: ir.Node) -> list[ir.Node]:
    approx = _attr(node, "approximate", "none")
    return [ir.Node("", "Gelu", [node.inputs[0]], name=f"{node.name}_gelu",
                    attributes=[ir.AttrString("approximate", "tanh" if approx == "tanh" else "none")])]


def _geglu(node: ir.Node) -> list[ir.Node]:
    split = ir.Node("", "Split", [node.inputs[0]], num_outputs=2, name=f"{node.name}_split",
                    attributes=[ir.AttrInt64("axis", -1), ir.AttrInt64("num_outputs", 2)])
    gelu = ir.Node("", "Gelu", [split.outputs[1]], name=f"{node.name}_gelu",
                   attributes=[ir.AttrString("approximate", "tanh" if _attr(node, "approximate", "none") == "tanh" else "none")])
    mul = ir.Node("", "Mul", [split.outputs[0], gelu.outputs[0]], name=f"{node.name}_mul")
    return [split, gelu, mul]


def _sdpa(node: ir.Node) -> list[ir.Node]:
    q, k, v = node.inputs[:3]
    mask = node.inputs[3] if len(node.inputs) > 3 else None
    scale = float(_attr(node, "scale", 1.0 / np.sqrt(q.shape[-1] if q.shape is not None else 64)))
    name = node.name
    scale_c = _const(f"{name}_scale", np.array(scale, np.float32))
    mul = ir.Node("", "Mul", [q, scale_c], name=f"{name}_qscale")
    rank = len(k.shape) if k.shape is not None else 4
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    kt = ir.Node("", "Transpose", [k], name=f"{name}_kT", attributes=[ir.AttrInt64s("perm", perm)])
    scores = ir.Node("", "MatMul", [mul.outputs[0], kt.outputs[0]], name=f"{name}_scores")
    nodes = [mul, kt, scores]
    logits = scores.outputs[0]
    if mask is not None:
        add = ir.Node("", "Add", [logits, mask], name=f"{name}_mask")
        nodes.append(add)
        logits = add.outputs[0]
    softmax = ir.Node("", "Softmax", [logits], name=f"{name}_softmax", attributes=[ir.AttrInt64("axis", -1)])
    out = ir.Node("", "MatMul", [softmax.outputs[0], v], name=f"{name}_out")
    return nodes + [softmax, out]


class ClampAttentionMaskPass(ir.passes.InPlacePass):
    """Clip constant additive masks in front of a Softmax to MASK_FLOOR.

        Softmax(Add(scores, mask[-3.4e38 | 0]))   =>   Softmax(Add(scores, mask[-100 | 0]))
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for node in model.graph:
            if node.op_type != "Add" or not any(u.node.op_type == "Softmax" for u in node.outputs[0].uses()):
                continue
            for index, value in enumerate(node.inputs):
                if value is None or value.const_value is None:
                    continue
                array = value.const_value.numpy()
                if array.dtype.kind == "f" and array.size and float(array.min()) < MASK_FLOOR:
                    name = f"{value.name}_clamped"
                    new = model.graph.initializers.get(name)
                    if new is None:  # one clamped copy per mask, shared by its Adds
                        new = _const(name, np.maximum(array, MASK_FLOOR).astype(array.dtype))
                        model.graph.register_initializer(new)
                    node.replace_input_with(index, new)
                    modified = True
        return ir.passes.PassResult(model, modified)


class DropNanGuardPass(ir.passes.InPlacePass):
    """Remove the NaN guard after a softmax (valid once masks are finite: no row is fully -inf).

        w = Softmax(s); Where(IsNaN(w), 0, w)   =>   w
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for node in list(model.graph):
            if node.op_type != "Where" or node.inputs[0] is None:
                continue
            cond = node.inputs[0].producer()
            if cond is None or cond.op_type != "IsNaN" or cond.inputs[0] is not node.inputs[2]:
                continue
            source = node.inputs[2].producer()
            if source is None or source.op_type != "Softmax":
                continue
            if node.outputs[0] in model.graph.outputs:
                continue
            ir.convenience.replace_all_uses_with(node.outputs[0], node.inputs[2])
            model.graph.remove(node, safe=True)
            if not cond.outputs[0].uses():
                model.graph.remove(cond, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified)


SHAPE_PRESERVING = {("", "GroupNormalization"), ("", "Gelu"), ("", "InstanceNormalization"),
                    ("", "LayerNormalization"), (FUSED_DOMAIN, "GroupNorm"), (FUSED_DOMAIN, "Gelu")}


class InferStaticShapesPass(ir.passes.InPlacePass):
    """ONNX shape inference with the shape-preserving ops it cannot see through shown to it as Identity.

        x[1,32,8,8] -> GroupNormalization -> y[?] -> Sigmoid -> z[?]   =>   y[1,32,8,8], z[1,32,8,8]
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        from fusionc.passes.generic.cleanup import InferShapesPass

        saved = []
        for node in model.graph:
            if (node.domain, node.op_type) in SHAPE_PRESERVING and node.inputs and node.inputs[0] is not None:
                saved.append((node, node.domain, node.op_type, list(node.inputs), dict(node.attributes)))
                node.domain, node.op_type = "", "Identity"
                node.resize_inputs(1)
                node.attributes.clear()
        try:
            result = InferShapesPass()(model)
        finally:
            for node, domain, op_type, inputs, attributes in saved:
                node.domain, node.op_type = domain, op_type
                node.resize_inputs(len(inputs))
                for index, value in enumerate(inputs):
                    node.replace_input_with(index, value)
                node.attributes.update(attributes)
        return ir.passes.PassResult(model, result.modified)


class GiveLayerNormABiasPass(ir.passes.InPlacePass):
    """LayerNormalization without a bias (a LayerNorm with elementwise_affine=False: SD3's AdaLN-Zero and PixArt's
    norms) gets an explicit zero bias: the QNN HTP builder refuses the two-input form ("Failed to add node").

        y = LayerNormalization(x, scale)   =>   y = LayerNormalization(x, scale, zeros)
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = 0
        for node in list(model.graph.all_nodes()):
            if node.op_type != "LayerNormalization" or node.domain not in ("", "ai.onnx"):
                continue
            if len(node.inputs) > 2 and node.inputs[2] is not None:
                continue
            scale = node.inputs[1]
            tensor = ir.convenience.get_const_tensor(scale) if scale is not None else None
            array = tensor.numpy() if tensor is not None else None
            if array is None:
                continue
            bias = _const(f"{node.name}_zero_bias", np.zeros_like(array))
            node.graph.register_initializer(bias)
            if len(node.inputs) > 2:
                node.replace_input_with(2, bias)
            else:
                node.resize_inputs(3)
                node.replace_input_with(2, bias)
            count += 1
        return ir.passes.PassResult(model, count > 0)


class ConstantOperandsLastPass(ir.passes.InPlacePass):
    """Elementwise Mul/Add with a constant first operand: the activation goes first and the constant is given the
    activation's rank (leading 1s). The fp16 HTP fails to finalize T5's RMSNorm `weight * x` with a rank-1
    constant first (QNN_COMMON_ERROR_MEM_ALLOC); the quantized path takes either order.

        y = Mul(w[64], x[1,16,64])   =>   y = Mul(x[1,16,64], w[1,1,64])
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = 0
        for node in list(model.graph):
            if node.op_type not in ("Mul", "Add") or node.domain not in ("", "ai.onnx") or len(node.inputs) != 2:
                continue
            first, second = node.inputs
            if first is None or second is None or first.const_value is None or second.const_value is not None:
                continue
            if second.shape is None:
                continue
            array = first.const_value.numpy()
            rank = len(second.shape)
            if array.ndim < rank:
                array = array.reshape((1,) * (rank - array.ndim) + array.shape)
            constant = _const(f"{node.name}_operand", np.ascontiguousarray(array))
            model.graph.register_initializer(constant)
            node.replace_input_with(0, second)
            node.replace_input_with(1, constant)
            count += 1
        return ir.passes.PassResult(model, count > 0)
