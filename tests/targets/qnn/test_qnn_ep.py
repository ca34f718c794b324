"""The QNN plugin EP on this machine: a QDQ model becomes an EP-context model + .bin for v73 and runs on
the HTP emulator; a node the HTP cannot run fails the compile, naming the node and the reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from fusionc.core.errors import UnsupportedError
from fusionc.targets.qnn.ep import HtpConfig, compile_context, load_context, parse_fallback_log


def _conv_model(path: Path) -> Path:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((8, 4, 3, 3)) * 0.3).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1], name="conv"),
         helper.make_node("Sigmoid", ["c"], ["s"], name="sigmoid"), helper.make_node("Mul", ["c", "s"], ["y"], name="mul")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("arch,soc", [("73", 43), ("75", 57)])
def test_float_model_compiles_to_context_and_runs_on_emulator(tmp_path: Path, arch: str, soc: int) -> None:
    src = _conv_model(tmp_path / "f.onnx")
    files = compile_context(src, tmp_path / "ctx.onnx", HtpConfig(arch=arch, soc_model=soc, fp16=True))
    assert files[0].name == "ctx.onnx" and any(f.suffix == ".bin" and f.stat().st_size > 0 for f in files)
    ctx = onnx.load(files[0])
    assert [n.op_type for n in ctx.graph.node] == ["EPContext"]  # .bin kept outside (embed_mode 0)
    x = np.random.default_rng(1).standard_normal((1, 4, 8, 8)).astype(np.float32)
    want = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = load_context(files[0]).run(None, {"x": x})[0]
    assert np.abs(got - want).max() < 1e-2 * np.abs(want).max()  # fp16 on the HTP


def test_unsupported_op_fails_listing_the_node(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu0"), helper.make_node("Det", ["r"], ["y"], name="det0")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.save(model, tmp_path / "bad.onnx")
    with pytest.raises(UnsupportedError, match=r"det0 \(Det\).*not supported") as err:
        compile_context(tmp_path / "bad.onnx", tmp_path / "bad_ctx.onnx", HtpConfig(fp16=True))
    assert "relu0" not in str(err.value) and "CPU fallback is disabled" in str(err.value)


def test_parse_fallback_log() -> None:
    log = """[V:onnxruntime:, qnn_execution_provider.cc:1713 LogNodeSupport] Validation FAILED for 1 nodes in OrtNodeUnit (Det) :
\tOperator type: Det Node name: det0 Node index: 1
\tREASON : Operators of type `Det` are not supported by QNN EP.
2026 [V:onnxruntime:, x] Validation PASSED for 1 nodes in OrtNodeUnit (Relu) :
\tOperator type: Relu Node name: relu0 Node index: 0
[E:onnxruntime:, qnn_execution_provider.cc:2453 GetCapabilityImpl] Unsupported nodes in QNN EP: { name: det0, type: Det }{ name: other, type: Foo }
"""
    nodes = {n.name: n for n in parse_fallback_log(log)}
    assert set(nodes) == {"det0", "other"}
    assert nodes["det0"].op_type == "Det" and "not supported" in nodes["det0"].reason


def test_contexts_of_one_model_are_the_same_bytes_within_a_process(tmp_path: Path) -> None:
    """The QNN backend numbers its objects per process and writes uninitialized heap memory into the .bin: a
    second in-process build used to differ from the first. Each build runs in a fresh process (heap zeroed)."""
    src = _conv_model(tmp_path / "f.onnx")
    builds = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        files = compile_context(src, tmp_path / name / "ctx.onnx", HtpConfig(fp16=True))
        builds.append({f.name: f.read_bytes() for f in files})
    assert builds[0] == builds[1] and any(name.endswith(".bin") for name in builds[0])


def test_a_context_build_that_finds_the_disk_full_says_so(tmp_path: Path, monkeypatch) -> None:
    """The QNN EP only says it could not write its file; with the disk full, the error names the disk."""
    import collections
    import shutil

    from fusionc.targets.qnn import ep

    model = _conv_model(tmp_path / "m.onnx")
    stderr = "FUSIONC-ERROR: [ONNXRuntimeError] : 11 : EP_FAIL : Failed to write context cache file."
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9, 100))
    with pytest.raises(UnsupportedError, match=r"disk holding .* is full \(0 MB free.*Failed to write context"):
        ep._built_files(model, tmp_path / "m_ctx.onnx", HtpConfig(), 1, stderr, set())
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 0, 10**9))
    with pytest.raises(UnsupportedError, match="rejected m.onnx for v73: .*Failed to write context cache file"):
        ep._built_files(model, tmp_path / "m_ctx.onnx", HtpConfig(), 1, stderr, set())


def test_contexts_for_two_archs_built_side_by_side_equal_one_at_a_time(tmp_path: Path) -> None:
    """compile_contexts runs one fresh process per device; in parallel or not, the bytes are the same."""
    from fusionc.targets.qnn.ep import compile_contexts
    from fusionc.targets.qnn.quantize import calibrate, quantize, save_model
    from fusionc.targets.qnn.rules import QuantConfig

    float_path = _conv_model(tmp_path / "float.onnx")
    feeds = [{"x": np.random.default_rng(1).standard_normal((1, 4, 8, 8)).astype(np.float32)}]
    qdq = save_model(quantize(float_path, calibrate(float_path, feeds), QuantConfig.for_precision("w8a16")),
                     tmp_path / "m.qdq.onnx")[0]
    configs = [HtpConfig("73", 43), HtpConfig("75", 57)]
    built = {}
    for parallel in (1, 2):
        folders = [tmp_path / f"p{parallel}-{c.arch}" for c in configs]
        for folder in folders:
            folder.mkdir()
        runs = compile_contexts(qdq, [(f / "m_ctx.onnx", c) for f, c in zip(folders, configs)], parallel=parallel)
        built[parallel] = [[p.read_bytes() for p in files] for files in runs]
        assert [len(files) for files in runs] == [2, 2]  # the EP-context model and its .bin
    assert built[1] == built[2] and built[1][0][1] != built[1][1][1]  # v73 and v75 differ


def test_captured_stderr_leaves_no_log_behind() -> None:
    import os

    from fusionc.targets.qnn.ep import captured_stderr

    with captured_stderr() as log:
        os.write(2, b"from the EP\n")
        assert log.read_text() == "from the EP\n"
    assert not log.exists()


def test_native_stdout_drops_the_libnative_banner_and_forwards_the_rest(capfd: pytest.CaptureFixture) -> None:
    """What native code prints on fd 1 around a QNN session stays off stdout: the HTP libraries' LIBNATIVE banner
    is dropped, anything else (an error) still reaches the user, on stderr."""
    import os

    from fusionc.targets.qnn.ep import native_stdout_to_stderr

    print("before", flush=True)
    with native_stdout_to_stderr():
        os.write(1, b" # LIBNATIVE: No alternate configuration present in libnative_tls.conf or from LIBNATIVE_CONFIG "
                    b"environment variable - using default thread-local behavior.\n")
        os.write(1, b"QnnDsp <E> something failed\n")
    print("after", flush=True)
    out, err = capfd.readouterr()
    assert out == "before\nafter\n"
    assert "QnnDsp <E> something failed\n" in err and "LIBNATIVE" not in err
