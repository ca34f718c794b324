"""The task executor passes receive: the mixed-bit probes and the QNN remedies' group tests go through it, with
the same results when their shared state is pickled to another worker (as Ray does) as when run in place."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import onnx
import pytest

from fusionc.core.executor import SERIAL
from fusionc.core.options import CompileOptions


class PicklingExecutor:
    """What a distributed executor does to the passes' work: shared state and items cross a pickle, in chunks."""

    name = "pickling"

    def __init__(self, chunks: int = 2) -> None:
        self.chunks = chunks
        self.calls: list[int] = []

    def map(self, setup, work, shared, items, label=None):
        self.calls.append(len(items))
        copies = [pickle.loads(pickle.dumps((setup, work, shared))) for _ in range(self.chunks)]
        bounds = [round(i * len(items) / self.chunks) for i in range(self.chunks + 1)]
        out = []
        for (setup_, work_, shared_), lo, hi in zip(copies, bounds, bounds[1:]):
            state = setup_(shared_)
            out += [work_(state, pickle.loads(pickle.dumps(item))) for item in items[lo:hi]]
        return out


def test_mixed_bit_probes_run_through_the_executor() -> None:
    from tests.test_mixed_bit import calibration, mlp_model

    from fusionc.passes.compression.mixed_bit import search

    serial = search(mlp_model(), calibration(mlp_model()), 35.0, min_elements=1024)
    executor = PicklingExecutor()
    spread = search(mlp_model(), calibration(mlp_model()), 35.0, min_elements=1024, executor=executor)
    assert executor.calls == [6]  # one probe per layer, all in one map
    assert spread.layers == serial.layers and spread.psnr_db == serial.psnr_db
    assert spread.search["rounds"] == serial.search["rounds"]


def _mlp_file(path: Path) -> Path:
    rng = np.random.default_rng(0)
    lines, prev = [], "x"
    for i in range(6):
        lines.append(f" m{i} = MatMul({prev}, w{i})")
        lines.append(f" h{i} = Relu(m{i})" if i < 5 else f" y = Identity(m{i})")
        prev = f"h{i}"
    proto = onnx.parser.parse_model('<ir_version: 10, opset_import: ["" : 21]>\n'
                                    f'mlp (float[1,32] x) => (float[1,32] y) {{\n{chr(10).join(lines)}\n}}')
    for i in range(6):
        w = rng.standard_normal((32, 32)) / np.sqrt(32) * (4.0 if i == 2 else 1.0)
        proto.graph.initializer.append(onnx.numpy_helper.from_array(w.astype(np.float32), f"w{i}"))
    for node in proto.graph.node:
        node.name = node.output[0]
    onnx.save(onnx.shape_inference.infer_shapes(proto), path)  # value types: what the QNN rules read
    return path


def test_qnn_remedy_group_tests_run_through_the_executor(tmp_path: Path) -> None:
    from fusionc.targets.qnn.quantize import calibrate
    from fusionc.targets.qnn.remedies import choose_config
    from fusionc.targets.qnn.rules import QuantConfig

    path = _mlp_file(tmp_path / "mlp.onnx")
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, 32)).astype(np.float32)} for _ in range(4)]
    stats = calibrate(path, feeds, histograms=True)
    # a target between the 8-bit graph (42 dB) and 16-bit weights (85 dB): group tests choose the weights
    options = CompileOptions(target="qnn", precision="w8a8", qnn_target_db=50.0, qnn_remedy_rounds=20)
    base = QuantConfig.for_precision("w8a8", 3.0)
    serial_config, serial_report = choose_config(path, stats, feeds, base, "mlp", options, SERIAL)
    executor = PicklingExecutor()
    config, report = choose_config(path, stats, feeds, base, "mlp", options, executor)
    assert executor.calls and max(executor.calls) > 1, report
    timeless = lambda r: {k: v for k, v in r.items() if k != "evaluation_s"}  # noqa: E731
    assert timeless(report) == timeless(serial_report) and report["search"][-1]["groups"]
    assert config.node_bits == serial_config.node_bits and config.weight_bits_by_node == serial_config.weight_bits_by_node


def test_serial_executor_runs_setup_once() -> None:
    setups = []
    out = SERIAL.map(lambda s: setups.append(s) or s * 10, lambda state, i: state + i, 1, [1, 2, 3])
    assert out == [11, 12, 13] and setups == [1]
    assert SERIAL.map(lambda s: pytest.fail("no items: no setup"), lambda s, i: i, 0, []) == []
