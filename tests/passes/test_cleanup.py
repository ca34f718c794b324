"""Cleanup passes on golden graphs: folding, no-op removal, CSE, dead code, shape inference."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from _passes_helpers import check_pass, parse

from fusionc.passes.generic import (
    CleanUpGraphPass,
    EliminateCommonSubexpressionsPass,
    FoldConstantsPass,
    InferShapesPass,
    RemoveDeadCodePass,
    RemoveNoOpsPass,
)

INT64_MAX = 9223372036854775807
INT64_MIN = -9223372036854775808


def test_no_ops_removed():
    model = check_pass(CleanUpGraphPass, """
    g (float[2,3,4] x) => (float[2,3,4] y) {
        a = Identity(x)
        b = Dropout(a)
        c = Cast <to = 1> (b)
        s = Constant <value = int64[3] {2, 3, 4}> ()
        d = Reshape(c, s)
        one = Constant <value = float {1.0}> ()
        e = Mul(d, one)
        zero = Constant <value = float {0.0}> ()
        f = Add(e, zero)
        y = Relu(f)
    }""", ["Relu"])
    assert model.graph.node(0).inputs[0] is model.graph.inputs[0]


def test_reshape_to_own_dynamic_shape_removed():
    check_pass(CleanUpGraphPass, """
    g (float[N,3,4] x) => (float[N,3,4] y) {
        s = Shape(x)
        r = Reshape(x, s)
        y = Sigmoid(r)
    }""", ["Sigmoid"])


def test_constants_folded_and_cse_and_dead_code():
    model = check_pass(CleanUpGraphPass, """
    g (float[2,3] x) => (float[2,3] y) {
        two = Constant <value = float {2.0}> ()
        three = Constant <value = float {3.0}> ()
        six = Mul(two, three)
        a = Sigmoid(x)
        b = Sigmoid(x)
        unused = Tanh(x)
        s = Add(a, b)
        y = Mul(s, six)
    }""", ["Sigmoid", "Add", "Mul"])
    six = model.graph.node(2).inputs[1]
    assert six.const_value is not None and float(six.const_value.numpy()) == 6.0


def test_static_batched_key_transpose_collapses():
    check_pass(CleanUpGraphPass, """
    g (float[2,4,5,8] k) => (float[2,4,8,5] y) {
        s3 = Constant <value = int64[3] {-1, 5, 8}> ()
        s4 = Constant <value = int64[4] {2, 4, 8, 5}> ()
        flat = Reshape(k, s3)
        flat_t = Transpose <perm = [0, 2, 1]> (flat)
        y = Reshape(flat_t, s4)
    }""", ["Transpose"])


def test_dynamic_batched_key_transpose_collapses():
    """The exporter's form with a dynamic batch axis: both targets come from Shape/Slice/Concat."""
    model = check_pass(CleanUpGraphPass, f"""
    g (float[N,4,5,8] k) => (float[N,4,8,5] y) {{
        shape = Shape(k)
        m1 = Constant <value = int64[1] {{-1}}> ()
        m2 = Constant <value = int64[1] {{-2}}> ()
        big = Constant <value = int64[1] {{{INT64_MAX}}}> ()
        small = Constant <value = int64[1] {{{INT64_MIN}}}> ()
        last = Slice(shape, m1, big)
        mid = Slice(shape, m2, m1)
        lead = Slice(shape, small, m2)
        s3 = Concat <axis = 0> (m1, mid, last)
        flat = Reshape(k, s3)
        flat_t = Transpose <perm = [0, 2, 1]> (flat)
        s4 = Concat <axis = 0> (lead, last, mid)
        y = Reshape(flat_t, s4)
    }}""", ["Transpose"])
    assert list(model.graph.node(0).attributes["perm"].value) == [0, 1, 3, 2]


def test_batched_transpose_of_merged_reshape_keeps_one_reshape():
    """The exporter merged view(B,H,S,D) into the 3-D reshape: k^T = Transpose(Reshape(x, [B,H,S,D]))."""
    check_pass(CleanUpGraphPass, """
    g (float[2,20,8] x) => (float[2,4,8,5] y) {
        s3 = Constant <value = int64[3] {8, 5, 8}> ()
        s4 = Constant <value = int64[4] {2, 4, 8, 5}> ()
        flat = Reshape(x, s3)
        flat_t = Transpose <perm = [0, 2, 1]> (flat)
        y = Reshape(flat_t, s4)
    }""", ["Reshape", "Transpose"])


def test_near_miss_not_rewritten():
    """A Reshape that changes the shape, a real Cast, and a Reshape/Transpose/Reshape that is not a transpose."""
    check_pass(CleanUpGraphPass, """
    g (float[2,4,5,8] k) => (float16[2,4,5,8] y) {
        s3 = Constant <value = int64[3] {-1, 5, 8}> ()
        s4 = Constant <value = int64[4] {2, 4, 5, 8}> ()
        flat = Reshape(k, s3)
        flat_t = Transpose <perm = [0, 2, 1]> (flat)
        r = Reshape(flat_t, s4)
        y = Cast <to = 10> (r)
    }""", ["Reshape", "Transpose", "Reshape", "Cast"], modified=True)  # only constants lifted


def test_clean_graph_reports_unmodified():
    model = parse("""
    g (float[2,3] x, float[2,3] z) => (float[2,3] y) {
        a = Sigmoid(x)
        y = Add(a, z)
    }""")
    assert CleanUpGraphPass()(model).modified is False
    for cls in (FoldConstantsPass, RemoveNoOpsPass, EliminateCommonSubexpressionsPass, RemoveDeadCodePass, InferShapesPass):
        assert cls()(model).modified is False, cls.__name__


def test_shape_inference_fills_and_never_loosens():
    model = parse("""
    g (float[batch,3,4] x) => (float[batch,12] y) {
        a = Sigmoid(x)
        s = Constant <value = int64[2] {0, 12}> ()
        y = Reshape(a, s)
    }""")
    sigmoid_out = model.graph.node(0).outputs[0]
    sigmoid_out.shape = None
    assert InferShapesPass()(model).modified is True
    assert sigmoid_out.shape == ir.Shape(["batch", 3, 4])
    # a dim that is more specific than what onnx infers survives
    sigmoid_out.shape = ir.Shape([2, 3, 4])
    InferShapesPass()(model)
    assert sigmoid_out.shape == ir.Shape([2, 3, 4])


def test_fold_never_reads_big_inputs():
    """onnxscript folds a single-use Transpose of a big weight by default; ours must not."""
    big = ir.tensor(np.zeros((128, 128), np.float32), name="w")
    model = parse("""
    g (float[2,128] x) => (float[2,128] y) {
        y = MatMul(x, wt)
    }""")
    w = ir.Value(name="w", shape=ir.Shape([128, 128]), type=ir.TensorType(ir.DataType.FLOAT), const_value=big)
    model.graph.register_initializer(w)
    transpose = ir.node("Transpose", [w], {"perm": [1, 0]})
    model.graph.insert_before(model.graph.node(0), transpose)
    model.graph.node(1).replace_input_with(1, transpose.outputs[0])
    assert FoldConstantsPass(input_size_limit=1000)(model).modified is False
    assert [n.op_type for n in model.graph] == ["Transpose", "MatMul"]
