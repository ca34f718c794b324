"""Bad input on the command line: one line, exit 2, before any work, nothing written.

Each case below was once accepted (and recorded, or crashed after the work): an out-of-range number, an option
that has no effect with the others, a gate that cannot be evaluated, an output path that cannot be written, a
reference checkpoint that is not the build's. They read as examples of what `fusionc` refuses and what it says.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fusionc.cli import compile_command, main
from fusionc.config import resolve


def refused(*args: str) -> str:
    """Run `fusionc ARGS`; assert exit 2 with no traceback; return the output."""
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output and "internal error" not in result.output
    return result.output


def one_error(*args: str) -> str:
    """Run `fusionc ARGS`; assert exit 2 and exactly one `fusionc: error:` line; return it."""
    output = refused(*args)
    errors = [line for line in output.splitlines() if line.startswith("fusionc: error:")]
    assert len(errors) == 1, output
    return errors[0]


# --- numbers out of range: refused by click, like --calibration-steps ---

@pytest.mark.parametrize("args, message", [
    (["compile", "--verify-steps", "0"], "'--verify-steps': 0 is not in the range x>=1"),  # was ZeroDivisionError
    (["compile", "--verify-steps", "-3"], "'--verify-steps': -3 is not in the range x>=1"),  # was KeyError
    (["compile", "--height", "0"], "'--height': 0 is not in the range x>=1"),  # was built at the default, "height 0"
    (["compile", "--width", "0"], "'--width': 0 is not in the range x>=1"),
    (["estimate", "--height", "0"], "'--height': 0 is not in the range x>=1"),
    (["estimate", "--width", "0"], "'--width': 0 is not in the range x>=1"),
    (["bench", "--runs", "0", "build/onnx"], "'--runs': 0 is not in the range x>=1"),  # was max() of an empty list
    (["bench", "--warmup", "-1", "build/onnx"], "'--warmup': -1 is not in the range x>=0"),
])
def test_numbers_out_of_range_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "o"
    assert message in refused(*args, *(["--out", str(out)] if args[0] == "compile" else []))
    assert not out.exists()


def test_bench_warmup_zero_is_accepted() -> None:
    ctx = main.commands["bench"].make_context("bench", ["--warmup", "0", "--runs", "1", "b"])
    assert (ctx.params["warmup"], ctx.params["runs"]) == (0, 1)


def test_a_zero_height_in_the_config_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "fusionc.toml"
    config.write_text("[compile]\nheight = 0\n")
    error = one_error("compile", "--config", str(config), "--out", str(tmp_path / "o"))
    assert "height = 0" in error and "not in the range x>=1" in error


def test_a_zero_height_through_the_api_is_refused_not_defaulted(tiny_pipeline) -> None:
    from fusionc.checkpoint import load_structure
    from fusionc.core.errors import BadInputError
    from fusionc.core.options import CompileOptions
    from fusionc.export import image_size

    with pytest.raises(BadInputError, match="--height/--width 0x64 must be positive multiples"):
        image_size(load_structure(tiny_pipeline("sd15")), CompileOptions(height=0, width=64))


# --- the summary ---

def test_the_summary_names_no_device_when_there_is_none(capsys: pytest.CaptureFixture) -> None:
    """A plain `fusionc compile` (onnx) printed "(target onnx, device None)"."""
    from fusionc.cli import _print_summary

    manifest = {"target": "onnx", "device": None, "components": {}, "gates": []}
    printed = lambda: " ".join(capsys.readouterr().out.split())  # noqa: E731 - rich wraps the title
    _print_summary(manifest, Path("build/onnx"))
    assert "fusionc build: build/onnx (target onnx)" in printed()
    _print_summary({**manifest, "device": "iphone-14-pro"}, Path("build/onnx"))
    assert "(target onnx, device iphone-14-pro)" in printed()
