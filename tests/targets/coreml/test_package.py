"""Writing an .mlpackage: nothing left behind in the temp folder."""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx_ir as ir
from onnx import TensorProto, helper

from fusionc.targets.coreml.lowering.table import LoweringOptions, lower_model
from fusionc.targets.coreml.package import save_mlpackage


def relu_program():
    """The smallest Core ML program: one Relu, lowered for iOS 17."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    return lower_model(model, LoweringOptions(compute_precision="fp16", deployment_target="iOS17"))


def test_saving_a_package_leaves_no_copy_in_the_temp_folder(tmp_path: Path, monkeypatch) -> None:
    """ct.convert writes the package to a temp folder first and removes it only at interpreter exit: a fleet's
    Ray worker (which exits without atexit) or a long fleet left GBs of SD-scale copies there."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    save_mlpackage(relu_program(), tmp_path / "m.mlpackage", "iOS17")
    assert (tmp_path / "m.mlpackage" / "Manifest.json").is_file()
    assert not list(temp.iterdir())


def test_no_progress_bars_off_a_terminal(tmp_path: Path, capsys) -> None:
    """coremltools draws a tqdm bar over each of its pass pipelines; in a CI log (no terminal) those are
    carriage-return-rewritten lines of noise where docs/ci.md promises plain stage lines. On a terminal they stay."""
    save_mlpackage(relu_program(), tmp_path / "m.mlpackage", "iOS17")
    captured = capsys.readouterr()
    assert "Running MIL" not in captured.err and "\r" not in captured.err, captured.err
