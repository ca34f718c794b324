"""graph_stats MACs on tiny graphs counted by hand, and the cost model's arithmetic and calibration."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx.helper as oh
import pytest
from onnx import TensorProto

from fusionc.analysis import costfit, costmodel
from fusionc.analysis.costmodel import FamilyParams, estimate
from fusionc.core.devices import DEVICES, Device
from fusionc.analysis.graph_stats import GraphStats, OpStat, graph_stats


def _model(nodes: list, inputs: list, outputs: list, inits: list = (), functions: list = ()) -> onnx.ModelProto:
    graph = oh.make_graph(nodes, "g", inputs, outputs, list(inits))
    opsets = [oh.make_opsetid("", 21)] + ([oh.make_opsetid("fusionc", 1)] if functions else [])
    return oh.make_model(graph, opset_imports=opsets, functions=list(functions))


def _vi(name: str, shape: list, dtype: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return oh.make_tensor_value_info(name, dtype, shape)


def _init(name: str, shape: list, dtype: int = TensorProto.FLOAT) -> onnx.TensorProto:
    np_type = onnx.helper.tensor_dtype_to_np_dtype(dtype)
    return onnx.numpy_helper.from_array(np.ones(shape, dtype=np_type), name)


def test_conv_macs_and_weights() -> None:
    # 1x3x8x8 input, 4 filters 3x3, pad 1: 4*8*8 outputs x 3*3*3 MACs each
    model = _model([oh.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                   [_vi("x", [1, 3, 8, 8])], [_vi("y", [1, 4, 8, 8])], [_init("w", [4, 3, 3, 3])])
    stats = graph_stats(model)
    (op,) = stats.ops
    assert (op.kind, op.macs, op.params, op.weight_bytes) == ("conv", 4 * 8 * 8 * 27, 108, 108 * 4)
    assert op.act_in_elems == 3 * 64 and op.act_out_elems == 4 * 64


def test_a_calls_inputs_are_counted_at_the_batch_and_its_weights_are_not() -> None:
    """input_mb, the per-call copy of the inputs (as fp32): the graph's inputs at the pinned batch, no initializer;
    a stored graph carries them (test_stored_reference_graphs_keep_each_transposes_form for reference graphs)."""
    model = _model([oh.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                   [_vi("x", ["B", 3, 8, 8])], [_vi("y", ["B", 4, 8, 8])], [_init("w", [4, 3, 3, 3])])
    assert graph_stats(model, {"B": 2}).input_elems == 2 * 3 * 64
    assert GraphStats.from_json(graph_stats(model, {"B": 2}).to_json()).input_elems == 384  # as --cache keeps it
    assert costfit.features_from_stats(graph_stats(model, {"B": 1}), "w8a8")["input_mb"] == pytest.approx(768 / 1e6)
    entry = {"fields": list(costfit.OP_FIELDS), "ops": [], "inputs": {"x": [1, 3, 8, 8]}}
    assert costmodel.stats_of(entry).input_elems == 192  # a latency_features entry: from its input shapes


def test_stats_of_an_ir_model_never_read_its_large_weights() -> None:
    """`fusionc estimate` exports on the meta device: every weight is a lazy stand-in, and an SD-1.5 UNet's would
    pass protobuf's 2 GB limit if the stats materialized them. Large ones keep their dims and dtype only."""
    import onnx_ir as ir

    def unreadable():
        raise AssertionError("graph_stats read a weight")

    weight = ir.LazyTensor(unreadable, dtype=ir.DataType.FLOAT, shape=ir.Shape([64, 3, 3, 3]), name="w")
    model = ir.from_proto(_model([oh.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                                 [_vi("x", [1, 3, 8, 8])], [_vi("y", [1, 64, 8, 8])], [_init("w", [64, 3, 3, 3])]))
    model.graph.initializers["w"].const_value = weight
    (op,) = graph_stats(model).ops
    assert (op.macs, op.params) == (64 * 8 * 8 * 27, 64 * 27)
    assert model.graph.initializers["w"].const_value is weight  # the model is left as it was


def test_path_depth_and_parallel_siblings() -> None:
    """A fire module (SqueezeNet): a 1x1 and a 3x3 conv read the squeeze's output side by side. `level` counts the
    ops on the longest path (a Reshape passes it on without adding one), `siblings` the same-type ops sharing an input."""
    conv = lambda x, w, y, k: oh.make_node("Conv", [x, w], [y], pads=[k // 2] * 4)  # noqa: E731
    model = _model([conv("x", "ws", "s", 1), oh.make_node("Relu", ["s"], ["r"]),
                    oh.make_node("Reshape", ["r", "shape"], ["r2"]),
                    conv("r2", "w1", "a", 1), conv("r2", "w3", "b", 3), oh.make_node("Relu", ["b"], ["b2"]),
                    oh.make_node("Concat", ["a", "b2"], ["y"], axis=1)],
                   [_vi("x", [1, 8, 4, 4])], [_vi("y", [1, 16, 4, 4])],
                   [_init("ws", [4, 8, 1, 1]), _init("w1", [8, 4, 1, 1]), _init("w3", [8, 4, 3, 3]),
                    onnx.numpy_helper.from_array(np.array([1, 4, 4, 4], dtype=np.int64), "shape")])
    ops = [(op.op_type, op.level, op.siblings) for op in graph_stats(model).ops if op.kind != "free"]
    assert ops == [("Conv", 1, 1), ("Relu", 2, 1), ("Conv", 3, 2), ("Conv", 3, 2), ("Relu", 4, 1),
                   ("Concat", 5, 1)]


def test_a_transposes_form_says_what_its_permutation_moves() -> None:
    """NCHW -> NHWC of a convolution's output is a layout change; a head split keeps each row's innermost axis; K^T
    moves it."""
    perms = {"to_nhwc": [0, 2, 3, 1], "heads": [0, 2, 1, 3], "k_t": [0, 1, 3, 2], "reversed": None}
    nodes = [oh.make_node("Conv", ["x", "w"], ["fm"])] + [
        oh.make_node("Transpose", ["fm"], [name], **({"perm": perm} if perm else {})) for name, perm in perms.items()]
    shapes = {"to_nhwc": [1, 4, 4, 8], "heads": [1, 4, 8, 4], "k_t": [1, 8, 4, 4], "reversed": [4, 4, 8, 1]}
    model = _model(nodes, [_vi("x", [1, 8, 4, 4])], [_vi(name, shape) for name, shape in shapes.items()],
                   [_init("w", [8, 8, 1, 1])])
    assert [op.transpose_form for op in graph_stats(model).ops[1:]] == ["nchw_nhwc", "keeps_last", "moves_last",
                                                                       "moves_last"]


def test_a_permutes_rank_counts_the_blocks_it_reorders_and_its_run_their_size() -> None:
    """Size-1 axes drop out and axes that stay side by side move as one block: a head split reorders 3 blocks, K^T
    2 (heads and dim stay together), Swin's window partition 4, fused QKV's (B, N, 3, H, D) -> (3, B, H, N, D) 3 (5
    with a batch of windows). The run is the innermost block's elements: a head's dim (64), one element for K^T (its
    last axis moves), a window row (7 x 96 channels), Swin's 32-wide head."""
    cases = {"head_split": ([0, 2, 1, 3], [1, 384, 12, 64], 3, 64), "k_t": ([0, 2, 3, 1], [1, 384, 12, 64], 2, 1),
             "window": ([0, 1, 3, 2, 4, 5], [1, 8, 7, 8, 7, 96], 4, 7 * 96),
             "qkv": ([2, 0, 3, 1, 4], [1, 196, 3, 12, 64], 3, 64),
             "swin_qkv": ([2, 0, 3, 1, 4], [64, 49, 3, 3, 32], 5, 32)}
    for name, (perm, shape, blocks, run) in cases.items():
        model = _model([oh.make_node("Transpose", ["x"], ["y"], perm=perm)], [_vi("x", shape)],
                       [_vi("y", [shape[axis] for axis in perm])])
        op = graph_stats(model).ops[0]
        assert (op.permute_rank, op.permute_run) == (blocks, run), name


def test_a_rank4_permute_is_a_layout_change_only_next_to_a_feature_map() -> None:
    """A transformer's keys (batch, tokens, heads, dim) -> (batch, heads, dim, tokens) use the NCHW -> NHWC
    permutation, but no convolution is near: a K^T. A UNet's NHWC -> NCHW before its output convolution, seen through a
    residual Add, is a layout change."""
    keys = [oh.make_node("MatMul", ["tokens", "wk"], ["k"]), oh.make_node("Reshape", ["k", "heads"], ["k4"]),
            oh.make_node("Transpose", ["k4"], ["k_t"], perm=[0, 2, 3, 1])]
    unet = [oh.make_node("Transpose", ["hidden"], ["nchw"], perm=[0, 3, 1, 2]),
            oh.make_node("Add", ["nchw", "residual"], ["sum"]), oh.make_node("Conv", ["sum", "wc"], ["out"])]
    inputs = [_vi("tokens", [1, 16, 32]), _vi("hidden", [1, 4, 4, 8]), _vi("residual", [1, 8, 4, 4])]
    model = _model(keys + unet, inputs, [_vi("k_t", [1, 4, 8, 16]), _vi("out", [1, 8, 4, 4])],
                   [_init("wk", [32, 32]), _init("wc", [8, 8, 1, 1]),
                    onnx.numpy_helper.from_array(np.array([1, 16, 4, 8], dtype=np.int64), "heads")])
    first, second = [op for op in graph_stats(model).ops if op.op_type == "Transpose"]
    assert (first.transpose_form, second.transpose_form) == ("moves_last", "nchw_nhwc")


def test_a_transpose_read_only_by_matmuls_is_marked_as_feeding_one() -> None:
    """K^T before QK^T (through a QDQ pair, as in a QNN build) feeds only a MatMul, which can read it transposed: 1;
    scaled by a constant scalar first (torch's SDPA export): 2. The same K^T also returned as an output (a decoder's
    cross-attention cache), scaled by a whole tensor, or a flatten before a residual Add: 0."""
    consts = [onnx.numpy_helper.from_array(np.array(v, dtype=t), n) for v, t, n in (
        (0.1, np.float32, "s"), (0, np.uint16, "z"), (0.125, np.float32, "scale"),
        (np.ones((1, 2, 8, 16)), np.float32, "bias"))]
    kt = lambda out: oh.make_node("Transpose", ["k"], [out], perm=[0, 1, 3, 2])  # noqa: E731
    nodes = [kt("k_t"), oh.make_node("QuantizeLinear", ["k_t", "s", "z"], ["k_q"]),
             oh.make_node("DequantizeLinear", ["k_q", "s", "z"], ["k_dq"]),
             oh.make_node("MatMul", ["q", "k_dq"], ["a"]),
             kt("k_s"), oh.make_node("Mul", ["k_s", "scale"], ["k_ss"]), oh.make_node("MatMul", ["q", "k_ss"], ["b"]),
             kt("k_cache"), oh.make_node("MatMul", ["q", "k_cache"], ["c"]),
             kt("k_b"), oh.make_node("Mul", ["k_b", "bias"], ["k_bb"]), oh.make_node("MatMul", ["q", "k_bb"], ["d"]),
             kt("flat"), oh.make_node("Add", ["flat", "bias"], ["sum"])]
    scores = [_vi(name, [1, 2, 16, 16]) for name in "abcd"]
    model = _model(nodes, [_vi("q", [1, 2, 16, 8]), _vi("k", [1, 2, 16, 8])],
                   scores + [_vi("k_cache", [1, 2, 8, 16]), _vi("sum", [1, 2, 8, 16])], consts)
    marks = [op.feeds_matmul for op in graph_stats(model).ops if op.op_type == "Transpose"]
    assert marks == [1, 2, 0, 0, 0]


def test_a_head_split_regrouped_into_batch_axes_before_its_matmul_is_marked_three() -> None:
    """torchvision's attention splits heads, then reshapes [1, 4, 16, 8] to [4, 16, 8] before QK^T: the Reshape only
    regroups batch axes, so the MatMul still reads the split: 3. A Reshape that merges the last two axes is a new
    layout: 0."""
    consts = [onnx.numpy_helper.from_array(np.array(v, dtype=np.int64), n) for v, n in (
        ([4, 16, 8], "batched"), ([1, 16, 32], "flat"))]
    split = lambda out: oh.make_node("Transpose", ["x"], [out], perm=[0, 2, 1, 3])  # noqa: E731
    nodes = [split("heads"), oh.make_node("Reshape", ["heads", "batched"], ["heads_b"]),
             oh.make_node("MatMul", ["heads_b", "k"], ["scores"]),
             split("heads2"), oh.make_node("Reshape", ["heads2", "flat"], ["merged"]),
             oh.make_node("MatMul", ["merged", "w"], ["out"])]
    model = _model(nodes, [_vi("x", [1, 16, 4, 8]), _vi("k", [4, 8, 16]), _vi("w", [1, 32, 8])],
                   [_vi("scores", [4, 16, 16]), _vi("out", [1, 16, 8])], consts)
    marks = [op.feeds_matmul for op in graph_stats(model).ops if op.op_type == "Transpose"]
    assert marks == [3, 0]


def test_a_transpose_reading_only_a_matmuls_output_is_marked_as_fed_by_one() -> None:
    """A head split after a Q projection (MatMul, bias Add, Reshape, through a QDQ pair) and a head merge after the
    product with V read only a MatMul's output: 1. A projection output also read by a residual Add, a window
    partition after a layer norm, and a split of a graph input: 0."""
    consts = [onnx.numpy_helper.from_array(np.array(v, dtype=t), n) for v, t, n in (
        (0.1, np.float32, "s"), (0, np.uint16, "z"), (np.ones((8, 8)), np.float32, "w"),
        (np.ones(8), np.float32, "b"), (np.array([1, 4, 2, 4]), np.int64, "heads"), (np.ones(8), np.float32, "g"))]
    split = lambda src, out: [oh.make_node("Reshape", [src, "heads"], [out + "_r"]),  # noqa: E731
                              oh.make_node("Transpose", [out + "_r"], [out], perm=[0, 2, 1, 3])]
    nodes = [oh.make_node("MatMul", ["x", "w"], ["q_mm"]), oh.make_node("Add", ["q_mm", "b"], ["q_lin"]),
             oh.make_node("QuantizeLinear", ["q_lin", "s", "z"], ["q_q"]),
             oh.make_node("DequantizeLinear", ["q_q", "s", "z"], ["q_dq"]), *split("q_dq", "q_heads"),
             oh.make_node("MatMul", ["p", "v"], ["pv"]), oh.make_node("Transpose", ["pv"], ["merged"], perm=[0, 2, 1, 3]),
             oh.make_node("MatMul", ["x", "w"], ["k_lin"]), oh.make_node("Add", ["k_lin", "x"], ["residual"]),
             *split("k_lin", "k_heads"),
             oh.make_node("LayerNormalization", ["x", "g", "b"], ["normed"], axis=-1), *split("normed", "windows"),
             *split("x", "x_heads")]
    heads = [_vi(name, [1, 2, 4, 4]) for name in ("q_heads", "k_heads", "windows", "x_heads")] + [
        _vi("merged", [1, 4, 2, 4])]
    model = _model(nodes, [_vi("x", [1, 4, 8]), _vi("p", [1, 2, 4, 4]), _vi("v", [1, 2, 4, 4])],
                   heads + [_vi("residual", [1, 4, 8])], consts)
    fed = [op.fed_by_matmul for op in graph_stats(model).ops if op.op_type == "Transpose"]
    assert fed == [1, 1, 0, 0, 0]


def test_each_op_records_the_graph_output_elements_it_writes() -> None:
    """An encoder handing the decoder its cross-attention K as K^T (a Transpose into a graph output, through a QDQ
    pair and a Reshape) writes 32 output elements; the MatMul before it writes none, the Add its 32 (a graph output
    read by another op too), the Relu its 32 through a Transpose of size-1 axes (a relabel, free)."""
    consts = [onnx.numpy_helper.from_array(np.array(v, dtype=t), n) for v, t, n in (
        (0.1, np.float32, "s"), (0, np.uint16, "z"), (np.ones((8, 8)), np.float32, "w"))]
    nodes = [oh.make_node("MatMul", ["x", "w"], ["k"]), oh.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
             oh.make_node("QuantizeLinear", ["kt", "s", "z"], ["kt_q"]),
             oh.make_node("DequantizeLinear", ["kt_q", "s", "z"], ["kt_dq"]),
             oh.make_node("Reshape", ["kt_dq", "flat"], ["k_cache"]),
             oh.make_node("Add", ["k", "x"], ["hidden"]), oh.make_node("Relu", ["hidden"], ["relu"]),
             oh.make_node("Transpose", ["relu"], ["seq_first"], perm=[1, 0, 2])]
    consts.append(onnx.numpy_helper.from_array(np.array([1, 32], dtype=np.int64), "flat"))
    model = _model(nodes, [_vi("x", [1, 4, 8])], [_vi("k_cache", [1, 32]), _vi("hidden", [1, 4, 8]),
                                                  _vi("seq_first", [4, 1, 8])], consts)
    written = {op.op_type: op.output_elems for op in graph_stats(model).ops if op.kind != "free"}
    assert written == {"MatMul": 0, "Transpose": 32, "Add": 32, "Relu": 32}


def test_the_permutes_around_a_channel_layer_norm_before_a_convolution_are_layout_changes() -> None:
    """ConvNeXt's downsampling: a residual sum goes NHWC for a layer norm over channels, back to NCHW, into a strided
    convolution; both permutes are layout changes (the first sees the convolution through the norm and the second)."""
    nodes = [oh.make_node("Add", ["a", "b"], ["sum"]), oh.make_node("Transpose", ["sum"], ["nhwc"], perm=[0, 2, 3, 1]),
             oh.make_node("LayerNormalization", ["nhwc", "g", "beta"], ["normed"], axis=-1),
             oh.make_node("Transpose", ["normed"], ["nchw"], perm=[0, 3, 1, 2]),
             oh.make_node("Conv", ["nchw", "w"], ["out"], strides=[2, 2])]
    model = _model(nodes, [_vi("a", [1, 8, 4, 4]), _vi("b", [1, 8, 4, 4])], [_vi("out", [1, 8, 2, 2])],
                   [_init("g", [8]), _init("beta", [8]), _init("w", [8, 8, 2, 2])])
    forms = [op.transpose_form for op in graph_stats(model).ops if op.op_type == "Transpose"]
    assert forms == ["nchw_nhwc", "nchw_nhwc"]


def test_a_transpose_that_moves_only_size_one_axes_is_a_free_reshape() -> None:
    """torchvision's batch-first attention swaps [1, 197, 768] to [197, 1, 768]: no element moves, so it costs
    nothing (no layout work, no launch, no permute); the head split after it, [197, 12, 64] -> [12, 197, 64], moves
    every row."""
    nodes = [oh.make_node("Transpose", ["x"], ["seq_first"], perm=[1, 0, 2]),
             oh.make_node("Reshape", ["seq_first", "heads"], ["split"]),
             oh.make_node("Transpose", ["split"], ["per_head"], perm=[1, 0, 2])]
    model = _model(nodes, [_vi("x", [1, 197, 768])], [_vi("per_head", [12, 197, 64])],
                   [onnx.numpy_helper.from_array(np.array([197, 12, 64], dtype=np.int64), "heads")])
    stats = graph_stats(model)
    swap, head_split = [op for op in stats.ops if op.op_type == "Transpose"]
    assert (swap.kind, swap.transpose_form) == ("free", "")
    assert (head_split.kind, head_split.transpose_form) == ("layout", "keeps_last")
    features = costfit.features_from_stats(stats, "float")
    assert features["permute_rows_g"] == pytest.approx(197 * 768 / 1e9) and features["permute_last_g"] == 0
    assert features["kilo_ops"] == pytest.approx(1e-3)


def test_stored_reference_graphs_keep_each_transposes_form(tmp_path) -> None:  # noqa: ANN001
    """The per-op rows stored for calibration carry what each Transpose moves (the permute term reads it)."""
    nodes = [oh.make_node("Transpose", ["x"], ["t"], perm=[0, 1, 3, 2])]
    stats = {"m@b1": graph_stats(_model(nodes, [_vi("x", [1, 2, 3, 4])], [_vi("t", [1, 2, 4, 3])]))}
    costmodel.save_reference_stats(stats, tmp_path / "graphs.json.gz")
    stored = costmodel.load_reference_stats(tmp_path / "graphs.json.gz")["m@b1"]
    (op,) = stored.ops
    assert op.transpose_form == "moves_last" and stored.input_elems == 24  # and the per-call input copy


def test_grouped_conv_and_symbolic_batch() -> None:
    model = _model([oh.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], group=2)],
                   [_vi("x", ["B", 4, 8, 8])], [_vi("y", ["B", 4, 8, 8])], [_init("w", [4, 2, 3, 3])])
    assert graph_stats(model).macs == 4 * 64 * 18
    assert graph_stats(model, {"B": 3}).macs == 3 * 4 * 64 * 18


def test_matmul_gemm_and_embedding_lookup() -> None:
    model = _model([oh.make_node("MatMul", ["x", "w"], ["y"]),
                    oh.make_node("Gemm", ["a", "b"], ["c"], transB=1),
                    oh.make_node("Gather", ["table", "ids"], ["emb"])],
                   [_vi("x", [2, 5, 6]), _vi("a", [3, 4]), _vi("ids", [1, 3], TensorProto.INT64)],
                   [_vi("y", [2, 5, 7]), _vi("c", [3, 5]), _vi("emb", [1, 3, 10])],
                   [_init("w", [6, 7]), _init("b", [5, 4]), _init("table", [100, 10])])
    matmul, gemm, gather = graph_stats(model).ops
    assert (matmul.kind, matmul.macs, matmul.params) == ("linear", 2 * 5 * 7 * 6, 42)
    assert (gemm.kind, gemm.macs) == ("linear", 3 * 5 * 4)  # B is an initializer: a linear layer
    assert gather.params == 1000 and gather.weight_bytes == 30 * 4  # reads only the 3 rows it gathers


def test_lstm_counts_its_weight_matmuls_per_timestep() -> None:
    # seq 7, batch 2, input 5, hidden 3, bidirectional: 7 * 2 * (2*12*5 + 2*12*3) MACs (before the fix: 0, "vector")
    model = _model([oh.make_node("LSTM", ["x", "w", "r"], ["y"], hidden_size=3, direction="bidirectional")],
                   [_vi("x", [7, 2, 5])], [_vi("y", [7, 2, 2, 3])], [_init("w", [2, 12, 5]), _init("r", [2, 12, 3])])
    (op,) = graph_stats(model).ops
    assert (op.kind, op.macs, op.params) == ("linear", 7 * 2 * (2 * 12 * 5 + 2 * 12 * 3), 2 * 12 * 8)
    assert op.timesteps == 7 * 2  # each of 7 steps waits for the previous one, in each direction


def test_recurrent_timesteps_follow_the_layout_and_other_ops_take_one_step() -> None:
    # layout=1: X is [batch, seq, input] (batch 7, seq 4); one direction
    model = _model([oh.make_node("GRU", ["x", "w", "r"], ["y"], hidden_size=3, layout=1),
                    oh.make_node("Relu", ["y"], ["z"])],
                   [_vi("x", [7, 4, 5])], [_vi("z", [7, 4, 1, 3])], [_init("w", [1, 9, 5]), _init("r", [1, 9, 3])])
    gru, relu = graph_stats(model).ops
    assert (gru.timesteps, relu.timesteps) == (4, 1)
    assert gru.macs == 7 * 4 * (9 * 5 + 9 * 3)


def test_attention_forms() -> None:
    s, d = 64, 8
    q, kt, k = _vi("q", [1, 2, s, d]), _vi("kt", [1, 2, d, s]), _vi("k", [1, 2, s, d])
    original = graph_stats(_model([oh.make_node("MatMul", ["q", "kt"], ["scores"])], [q, kt],
                                  [_vi("scores", [1, 2, s, s])]))
    assert original.attention_form == "original"
    (op,) = original.ops
    assert (op.kind, op.macs, op.attention_scores) == ("attention", 2 * s * s * d, True)
    einsum = graph_stats(_model([oh.make_node("Einsum", ["q", "k"], ["scores"], equation="bhqd,bhkd->bhqk")],
                                [q, k], [_vi("scores", [1, 2, s, s])]))
    assert einsum.attention_form == "split_einsum" and einsum.macs == 2 * s * s * d
    # fusionc::ScaledDotProductAttention local function: QK^T and AV, counted as one op
    body = [oh.make_node("Transpose", ["K"], ["Kt"], perm=[0, 1, 3, 2]),
            oh.make_node("MatMul", ["Q", "Kt"], ["S"]), oh.make_node("Softmax", ["S"], ["P"], axis=-1),
            oh.make_node("MatMul", ["P", "V"], ["O"])]
    sdpa = oh.make_function("fusionc", "ScaledDotProductAttention", ["Q", "K", "V"], ["O"], body,
                            [oh.make_opsetid("", 21)], ["scale"])
    fused = graph_stats(_model([oh.make_node("ScaledDotProductAttention", ["q", "k", "v"], ["o"], domain="fusionc",
                                             scale=0.35)],
                               [q, k, _vi("v", [1, 2, s, d])], [_vi("o", [1, 2, s, d])], functions=[sdpa]))
    assert fused.attention_form == "fused"
    assert [op.op_type for op in fused.ops] == ["ScaledDotProductAttention"]
    assert fused.macs == 2 * s * s * (d + d)


def test_compressed_weights_read_fewer_bytes() -> None:
    def dq_model(dtype: int) -> onnx.ModelProto:
        return _model([oh.make_node("DequantizeLinear", ["wq", "scale"], ["w"]),
                       oh.make_node("MatMul", ["x", "w"], ["y"])],
                      [_vi("x", [1, 64])], [_vi("y", [1, 32])],
                      [_init("wq", [64, 32], dtype), _init("scale", [], TensorProto.FLOAT)])
    int8, int4 = graph_stats(dq_model(TensorProto.INT8)), graph_stats(dq_model(TensorProto.INT4))
    assert [op.op_type for op in int8.ops] == ["MatMul"]  # the dequantize is folded into the consumer
    assert int8.weight_bytes == 64 * 32 and int4.weight_bytes == 64 * 32 / 2
    assert int8.ops[0].float_weight_elems == 0 and int8.params == 64 * 32
    device = DEVICES["iphone-14-pro"]
    float_model = _model([oh.make_node("MatMul", ["x", "w"], ["y"])], [_vi("x", [1, 64])], [_vi("y", [1, 32])],
                         [_init("w", [64, 32])])
    assert estimate(int4, device).weight_bytes < estimate(int8, device).weight_bytes < \
        estimate(graph_stats(float_model), device).weight_bytes == 64 * 32 * 2  # fp16 on the ANE


def test_estimate_arithmetic() -> None:
    device = Device("test", "apple", "T1", "coreml", ("ne",), {"fp16": 2.0}, 100.0, npu="ne", family="ane")
    params = FamilyParams(eff_conv=0.5, eff_linear=0.25, eff_attention=0.1, overhead_s=1e-4)
    conv = OpStat("c", "Conv", "", "conv", macs=10**9, float_weight_elems=10**6, params=10**6)
    layout = OpStat("t", "Transpose", "", "layout", act_in_elems=10**6, act_out_elems=10**6)
    est = estimate(GraphStats([conv, layout], "none"), device, params=params)
    rate = 2.0e12 / 2  # MAC/s
    expect_conv = 1e9 / (rate * 0.5)  # 2 ms, compute-bound (weights: 2 MB / 100 GB/s = 0.02 ms)
    expect_layout = 2e6 * 2 * costmodel.ACT_TRAFFIC / 100e9
    assert est.compute_s == pytest.approx(expect_conv)
    assert est.memory_s == pytest.approx(expect_layout)
    assert est.latency_s == pytest.approx(expect_conv + expect_layout + 2e-4)
    assert est.bound == "compute" and est.weight_bytes == 2e6
    # W8A16 on the HTP: int8 weights, half the int8 rate
    htp = dataclasses.replace(device, peak_tops={"int8": 4.0}, family="htp", npu="htp", target="qnn")
    est8 = estimate(GraphStats([conv], "none"), htp, "w8a16", params=params)
    assert est8.compute_s == pytest.approx(1e9 / (4e12 / 2 * 0.5 * 0.5)) and est8.weight_bytes == 1e6
    # a fallback op runs on the CPU with two hand-overs
    nonzero = OpStat("n", "NonZero", "", "vector", vector_elems=10**6)
    fb = estimate(GraphStats([nonzero], "none"), device, params=params)
    assert fb.fallback_ops == {"NonZero": 1}
    assert fb.fallback_s == pytest.approx(1e6 / costmodel.CPU_FALLBACK_MACS_PER_S + 2 * costmodel.SWITCH_S)


def test_calibration_is_reproducible_and_documented() -> None:
    stats = costmodel.load_reference_stats()
    fitted = costmodel.calibrate(stats)
    for family, params in costmodel.FAMILY_PARAMS.items():  # ane refitted here; htp kept (the AI Hub fit replaces it)
        for name, value in params.to_json().items():
            assert getattr(fitted[family], name) == pytest.approx(value, rel=0.02), (family, name)
    rows = costmodel.calibration_report(stats)
    assert {r["role"] for r in rows} == {"C", "H"}
    assert all(r["estimate_ms"] > 0 and r["source"] for r in rows)
    # the fit must explain the big calibration figures (UNet, decoder) within 20%
    for r in rows:
        if r["role"] == "C" and r["latency_ms"] > 50:
            assert abs(r["error"]) < 0.2, r
    assert stats["sd15_unet@b1"].macs == pytest.approx(401.6e9, rel=0.001)  # design.md's reference figure
