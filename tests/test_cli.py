"""The command line contract: exit codes, one-line errors, and builds that are never left half-written."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def fusionc(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fusionc.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, fragment: str) -> None:
    assert result.returncode == code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("fusionc: error")]
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_missing_checkpoint_exit_2_and_nothing_written(tmp_path: Path) -> None:
    result = fusionc("compile", str(tmp_path / "missing"), "--out", str(tmp_path / "out"))
    assert_one_line_error(result, 2, "does not exist")
    assert not (tmp_path / "out").exists()


def test_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    result = fusionc("compile", str(tmp_path / "ckpt"), "--out", str(tmp_path / "out"))
    assert_one_line_error(result, 2, "not a diffusers checkpoint")
    assert not (tmp_path / "out").exists()


def test_failed_compile_keeps_the_existing_build(sd15_onnx_build: Path, tiny_pipeline, tmp_path: Path) -> None:
    out = Path(shutil.copytree(sd15_onnx_build, tmp_path / "good"))
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    broken = Path(shutil.copytree(tiny_pipeline("sd15"), tmp_path / "broken"))
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    result = fusionc("compile", str(broken), "--out", str(out))
    assert_one_line_error(result, 2, "truncated or corrupt")
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert not list(tmp_path.glob(".good.tmp-*"))


def test_out_holding_other_files_is_refused(tiny_pipeline, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    result = fusionc("compile", str(tiny_pipeline("sd15")), "--out", str(tmp_path / "out"))
    assert_one_line_error(result, 2, "not a fusionc build")
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_unknown_component_is_usage_error(tiny_pipeline, tmp_path: Path) -> None:
    result = fusionc("compile", str(tiny_pipeline("sd15")), "--components", "unet,refiner", "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "refiner" in result.stderr


def test_verify_and_gate(sd15_onnx_build: Path, tmp_path: Path) -> None:
    build = Path(shutil.copytree(sd15_onnx_build, tmp_path / "b"))
    ok = fusionc("verify", str(build), "--min-psnr", "60")
    assert ok.returncode == 0, ok.stderr
    assert "unet" in ok.stdout and "on the build's held-out verification set" in ok.stdout
    failed = fusionc("verify", str(build), "--min-psnr", "1000")
    assert_one_line_error(failed, 1, "< 1000 dB")
    assert json.loads((build / "manifest.json").read_text())["components"]["unet"]["psnr_db"] >= 60


def test_verify_a_folder_that_is_not_a_build(tmp_path: Path) -> None:
    assert_one_line_error(fusionc("verify", str(tmp_path)), 2, "not a fusionc build")


def test_inspect_build_and_model(sd15_onnx_build: Path) -> None:
    result = fusionc("inspect", str(sd15_onnx_build))
    assert result.returncode == 0, result.stderr
    assert "unet" in result.stdout and "GMACs" in result.stdout
    assert "unknown shape" not in result.stdout  # ORT's contrib ops (onnx target) keep their shapes
    result = fusionc("inspect", str(sd15_onnx_build / "unet" / "model.onnx"))
    assert result.returncode == 0 and "Conv" in result.stdout


def test_inspect_of_a_palettized_coreml_build_shows_the_models_ops(tmp_path: Path) -> None:
    """A Core ML build's inspect reads its cost-model graph, where palettized weights are LUT decompression
    functions (fusionc::LutToDense: Gather, Round, Pow, ... once inlined). Those are stored weights on the device
    (constexpr_lut_to_dense), not compute: the op mix, op count and MACs are the dense model's, and the
    palettization is reported as weights."""
    import numpy as np
    import onnx
    import onnx_ir as ir
    from click.testing import CliRunner

    from fusionc.cli import main
    from fusionc.inspect_model import model_summary
    from fusionc.passes.compression.palettize import PalettizeWeightsPass

    rng = np.random.default_rng(0)
    proto = onnx.parser.parse_model("""<ir_version: 10, opset_import: ["" : 18]>
g (float[1,16,6,6] x, float[1,5,64] t) => (float[1,32,6,6] y, float[1,5,48] z) {
 c = Conv<pads=[1,1,1,1]>(x, wc)
 y = Relu(c)
 z = MatMul(t, wl)
}""")
    proto.graph.initializer.extend([onnx.numpy_helper.from_array(rng.standard_normal((32, 16, 3, 3), np.float32), "wc"),
                                    onnx.numpy_helper.from_array(rng.standard_normal((64, 48), np.float32), "wl")])
    onnx.save(proto, tmp_path / "dense.onnx")
    model = ir.serde.deserialize_model(proto)
    assert PalettizeWeightsPass(4, min_elements=64)(model).modified
    (tmp_path / "build" / "unet").mkdir(parents=True)
    ir.save(model, tmp_path / "build" / "unet" / "costmodel.onnx")  # as targets/coreml keeps it
    (tmp_path / "build" / "unet" / "Unet.mlpackage").mkdir()  # every file the manifest lists exists (not tampered)
    (tmp_path / "build" / "manifest.json").write_text(json.dumps({"target": "coreml", "components": {"unet": {
        "files": ["unet/Unet.mlpackage"], "costmodel_graph": "unet/costmodel.onnx"}}}))

    dense, palettized = model_summary(tmp_path / "dense.onnx"), model_summary(tmp_path / "build/unet/costmodel.onnx")
    assert palettized["ops"] == dense["ops"] == {"Conv": 1, "Relu": 1, "MatMul": 1}  # was: + Gather, Round, Pow, ...
    assert palettized["macs"] == dense["macs"] > 0
    assert palettized["weight_bytes"] < dense["weight_bytes"] / 4  # 4-bit indices and the LUTs
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "build")], terminal_width=200)
    assert result.exit_code == 0, result.output
    op_line = next(line for line in result.output.splitlines() if line.startswith("unet ops:"))
    assert op_line == "unet ops: Conv 1, Relu 1, MatMul 1", result.output
    assert "unet weights: palettized 4-bit per_tensor, 2 tensors" in result.output


def test_inspect_of_a_qdq_graph_reports_its_quantization_not_its_pairs_as_ops(tmp_path: Path) -> None:
    """A QNN build's model.qdq.onnx: each activation's QuantizeLinear -> DequantizeLinear pair marks a quantized
    tensor (QNN compiles it into the quantized ops), and a weight stored int8 has its DequantizeLinear. Neither runs
    as an op: the histogram is the float model's, the quantization its own line."""
    import numpy as np
    import onnx
    from click.testing import CliRunner

    from fusionc.cli import main
    from fusionc.inspect_model import model_summary

    proto = onnx.parser.parse_model("""<ir_version: 10, opset_import: ["" : 21]>
g (float[1,5,64] t) => (float[1,5,48] z) {
 tq = QuantizeLinear(t, s, zp)
 td = DequantizeLinear(tq, s, zp)
 w = DequantizeLinear(wq, ws)
 m = MatMul(td, w)
 mq = QuantizeLinear(m, s, zp)
 md = DequantizeLinear(mq, s, zp)
 z = Relu(md)
}""")
    rng = np.random.default_rng(0)
    proto.graph.initializer.extend([
        onnx.numpy_helper.from_array(np.array(0.01, np.float32), "s"),
        onnx.numpy_helper.from_array(np.array(32768, np.uint16), "zp"),
        onnx.numpy_helper.from_array(rng.integers(-127, 127, (64, 48)).astype(np.int8), "wq"),
        onnx.numpy_helper.from_array(np.array(0.02, np.float32), "ws")])
    onnx.save(proto, tmp_path / "model.qdq.onnx")

    summary = model_summary(tmp_path / "model.qdq.onnx")
    assert summary["ops"] == {"MatMul": 1, "Relu": 1}
    assert summary["quantization"] == {"activations": {"uint16": 2}, "weights": {"int8": 1}, "pairs": 2}
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "model.qdq.onnx")], terminal_width=300)
    assert result.exit_code == 0, result.output
    assert "model.qdq quantized: activations uint16 at 2 tensors" in result.output
    assert "weights int8 in 1 tensors" in result.output


def test_pickle_checkpoint_via_cli(tiny_pipeline, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    ckpt = Path(shutil.copytree(tiny_pipeline("sd15") / "vae", tmp_path / "vae"))
    torch.save(load_file(ckpt / "diffusion_pytorch_model.safetensors"), ckpt / "diffusion_pytorch_model.bin")
    (ckpt / "diffusion_pytorch_model.safetensors").unlink()
    assert_one_line_error(fusionc("compile", str(ckpt), "--out", str(tmp_path / "o")), 2, "--allow-pickle")
    result = fusionc("compile", str(ckpt), "--allow-pickle", "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    assert set(json.loads((tmp_path / "o" / "manifest.json").read_text())["components"]) == {"vae_decoder", "vae_encoder"}


@pytest.mark.parametrize("args, fragment", [
    (["compile", "--target", "tpu"], "'--target': 'tpu' is not one of 'onnx', 'coreml', 'qnn'"),
    (["generate"], "Missing argument 'PROMPT'"),
    (["bench", "--runs", "x", "build/onnx"], "'--runs': 'x' is not a valid integer"),
    (["devices", "--jsn"], "No such option '--jsn'"),
    (["compiel"], "No such command 'compiel'"),
    (["passes", "--target", "tpu"], "'--target': 'tpu' is not one of"),  # was exit 3, "internal error: BadParameter"
    (["passes", "--bogus"], "No such option '--bogus'"),  # was exit 3
])
def test_usage_errors_are_one_line_and_exit_2(args: list[str], fragment: str) -> None:
    """A mistyped command line is bad input like any other: exit 2 and one `fusionc: error:` line naming it (with
    where to look), not click's three-line usage block, and never an internal error."""
    from click.testing import CliRunner

    from fusionc.cli import main

    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("fusionc: error: "), result.stderr
    assert fragment in result.stderr and "--help" in result.stderr


README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_row(text: str, command: str) -> str:
    """The README commands table's row of `fusionc COMMAND`."""
    rows = [line for line in _section(text, "## Commands").splitlines() if line.startswith(f"| `fusionc {command}")]
    assert len(rows) == 1, f"the README's commands table has {len(rows)} rows for fusionc {command}"
    return rows[0]


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    return text[start:text.index("\n## ", start)]


def test_every_option_of_every_command_is_in_the_readme_with_its_default() -> None:
    """`fusionc CMD --help` and the README agree: each option of a command is in that command's row of the
    commands table (compile's, too many for a row, in "Options of `fusionc compile`"), and a default the row
    shows (`[--steps 8]`) is the one --help shows."""
    import click

    from fusionc.cli import main

    text = README.read_text(encoding="utf-8")
    missing, wrong = [], []
    for opt in (o for p in main.params for o in p.opts):  # fusionc --version, fusionc --debug
        if opt.startswith("--") and opt != "--help" and f"fusionc {opt}" not in text:
            missing.append(f"fusionc {opt}")
    for name, command in sorted(main.commands.items()):
        where = _section(text, "### Options of `fusionc compile`") if name == "compile" else _readme_row(text, name)
        for param in (p for p in command.params if isinstance(p, click.Option) and p.name != "help"):
            flags = [o for o in param.opts + param.secondary_opts if o.startswith("--")]
            for flag in flags:
                if not re.search(re.escape(flag) + r"(?![\w-])", where):
                    missing.append(f"{name} {flag}")
            for shown in re.findall(r"\[(--[\w-]+) ([\w.]+)\]", where):
                if shown[0] in flags and param.default is not None and not isinstance(param.default, bool):
                    default = param.default
                    same = (float(shown[1]) == float(default) if isinstance(default, (int, float))
                            else shown[1] == str(default))
                    if not same:
                        wrong.append(f"{name} {shown[0]}: README {shown[1]}, --help {default}")
    assert not missing, f"options --help lists and the README does not: {', '.join(missing)}"
    assert not wrong, f"defaults that differ: {'; '.join(wrong)}"


def test_the_help_names_the_built_in_checkpoints() -> None:
    """`builtin:sd3` and `builtin:controlnet` were in the README only: neither --help named them."""
    from click.testing import CliRunner

    from fusionc.cli import main

    for command in ("compile", "generate"):
        text = " ".join(CliRunner().invoke(main, [command, "--help"]).output.split())
        assert "builtin:sd3" in text and "builtin:controlnet" in text, (command, text)
