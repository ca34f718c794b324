"""fusionc.toml: every compile option from a file, flags override it, bad files are one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusionc.cli import compile_command
from fusionc.config import CompileSettings, resolve
from fusionc.core.errors import BadInputError


def settings(*args: str) -> CompileSettings:
    ctx = compile_command.make_context("compile", list(args))
    return resolve(ctx, ctx.params)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "repo" / "fusionc.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


FULL = """
[compile]
checkpoint = "models/tiny"
target = "coreml"
device = "iphone-15-pro"
out = "build/ios"
components = ["text_encoder", "unet", "vae_decoder"]
height = 256
width = 320
allow-pickle = true
cache = ".cache"
seed = 7
[verify]
verify = false
verify_steps = 2
verify_prompts = 1
[coreml]
attention = "split_einsum_v2"
compute_units = "all"
deployment_target = "iOS18"
chunk = "2"
[compression]
palettize = 6
granularity = "per_grouped_channel"
group_size = 32
[gates]
max_size = { total = 900, unet = 700 }
max_latency_ms = 2000
latency_steps = 4
[report]
json = "reports/c.json"
junit = "reports/c.xml"
"""


def test_every_option_from_the_file(tmp_path: Path) -> None:
    config = write(tmp_path, FULL)
    s = settings("--config", str(config))
    repo = config.parent
    o = s.options
    assert (o.target, o.device, o.components, o.height, o.width) == (
        "coreml", "iphone-15-pro", ("text_encoder", "unet", "vae_decoder"), 256, 320)
    assert o.allow_pickle and not o.verify and (o.verify_steps, o.verify_prompts, o.seed) == (2, 1, 7)
    assert (o.attention, o.compute_units, o.deployment_target, o.chunk) == ("split_einsum_v2", "all", "iOS18", "2")
    assert (o.palettize, o.granularity, o.group_size) == ("6", "per_grouped_channel", 32)
    qnn = settings("--config", str(write(tmp_path / "q", '[compile]\ntarget = "qnn"\n[qnn]\nprecision = "w8a8"\n'
                                                         'calibration_samples = 8\n'))).options
    assert (qnn.precision, qnn.calibration_samples) == ("w8a8", 8)
    assert o.min_psnr is None and o.max_size == {"total": 900, "unet": 700} and o.max_latency_ms == {"total": 2000}
    assert o.latency_steps == 4
    # relative paths are relative to the file, not to the working directory
    assert s.checkpoint == repo / "models" / "tiny" and s.out == repo / "build" / "ios"
    assert s.cache == repo / ".cache" and s.report == repo / "reports" / "c.json" and s.junit == repo / "reports" / "c.xml"


def test_flags_override_the_file_even_when_they_repeat_the_default(tmp_path: Path) -> None:
    config = write(tmp_path, FULL.replace('attention = "split_einsum_v2"\ncompute_units = "all"\n'
                                          'deployment_target = "iOS18"\nchunk = "2"\n', ""))
    s = settings("--config", str(config), "--target", "onnx", "--granularity", "per_tensor", "--max-size", "unet=5",
                 "--out", "elsewhere")
    assert s.options.target == "onnx"  # "onnx" is the flag's default: given explicitly, it still wins
    assert s.options.granularity == "per_tensor"  # the flag's default too, and it still wins
    assert s.options.max_size == {"unet": 5}  # the flag replaces the file's table
    assert s.out == Path("elsewhere")
    assert s.options.palettize == "6"  # untouched options still come from the file
    entry = s.manifest_entry()
    assert {"target", "granularity", "max_size", "out"} <= set(entry["from_command_line"])
    assert "palettize" in entry["from_config_file"] and "target" not in entry["from_config_file"]
    assert entry["file"] == str(config) and len(entry["sha256"]) == 64


def test_a_files_option_the_target_cannot_honour_is_refused(tmp_path: Path) -> None:
    config = write(tmp_path, FULL)  # Core ML options: not for --target onnx
    with pytest.raises(BadInputError, match=r"--attention \(from config file '.*fusionc.toml'\) is not an option "
                                            r"of --target onnx: only the coreml target honours it"):
        settings("--config", str(config), "--target", "onnx")


def test_without_a_file_the_defaults_and_flags(tmp_path: Path) -> None:
    s = settings("--max-size", "25", "--max-size", "vae_decoder=3,unet=20", "--max-latency-ms", "unet=120",
                 "--device", "iphone-14-pro")  # an onnx build has no device of its own to estimate latency on
    assert s.options.max_size == {"total": 25, "vae_decoder": 3, "unet": 20}
    assert s.options.max_latency_ms == {"unet": 120}
    assert s.out == Path("build") / "onnx" and s.checkpoint is None and s.options.verify


@pytest.mark.parametrize("text, message", [
    ("[compile]\ntarget = \"tpu\"\n", "target = 'tpu'"),
    ("[compile]\nheight = \"tall\"\n", "height"),
    ("[compile]\nturbo = true\n", "unknown option 'turbo'"),
    ("[compile]\ntarget = \"onnx\"\n[qnn]\ntarget = \"qnn\"\n", "'target' is set twice"),
    ("[compile\ntarget = 1\n", "is not valid TOML"),
    ("[compile]\ncomponents = [\"unet\", \"refiner\"]\n", "unknown component 'refiner'"),
    ("[gates]\nmax_size = { unet = -1 }\n", "must be a positive number"),
    ("[gates]\nmax_size = { refiner = 5 }\n", "unknown component 'refiner'"),
    ("[gates]\nmax_latency_ms = \"fast\"\n", "is not a number"),
    ("[verify]\nverify = \"yes\"\n", "verify must be true or false"),
    ("seed = \"x\"\n", "seed = 'x': 'x' is not a valid integer"),
    ("[compile]\nopset = 17\n", "opset = 17: 17 is not in the range 18<=x<=21"),
    ("[qnn]\nqnn_remedy_rounds = -1\n", "qnn_remedy_rounds = -1"),
])
def test_bad_config_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(BadInputError, match=message.replace("[", r"\[")):
        settings("--config", str(write(tmp_path, text)))


@pytest.mark.parametrize("text, verify", [
    ("[verify]\nverify = false\n", False), ("[verify]\nverify = true\n", True),
    ("[verify]\nno_verify = true\n", False),  # the flag's own name: was negated like verify, and verified
    ("[compile]\nno-verify = false\n", True),
])
def test_verify_and_no_verify_keys_mean_what_they_say(tmp_path: Path, text: str, verify: bool) -> None:
    assert settings("--config", str(write(tmp_path, text))).options.verify is verify


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="does not exist"):
        settings("--config", str(tmp_path / "nope.toml"))


def test_bad_flags_are_one_line_errors(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from fusionc.cli import main

    for args, message in ((["--max-size", "big"], "is not a number"), (["--components", "unet,refiner"], "refiner"),
                          (["--config", str(tmp_path / "nope.toml")], "does not exist")):
        result = CliRunner().invoke(main, ["compile", "--out", str(tmp_path / "o"), *args])
        assert result.exit_code == 2 and message in result.stderr, result.stderr
        assert len([line for line in result.stderr.splitlines() if line.startswith("fusionc: error")]) == 1
        assert not (tmp_path / "o").exists()


def test_config_file_compile_end_to_end(tiny_pipeline, tmp_path: Path) -> None:
    """The file drives a real compile; the manifest records the effective configuration and where it came from."""
    from click.testing import CliRunner

    from fusionc.cli import main

    config = write(tmp_path, f"""
[compile]
checkpoint = "{tiny_pipeline('sd15')}"
out = "build"
components = ["text_encoder"]
[verify]
verify_steps = 1
verify_prompts = 1
[gates]
min_psnr = 40
[report]
json = "report.json"
""")
    result = CliRunner().invoke(main, ["compile", "--config", str(config), "--min-psnr", "50"])
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((config.parent / "build" / "manifest.json").read_text())
    assert manifest["options"]["min_psnr"] == 50 and manifest["options"]["verify_steps"] == 1
    assert "attention" not in manifest["options"] and "qnn_range_margin" not in manifest["options"]  # not onnx options
    assert manifest["options"]["precision"] == "fp32"  # the onnx target's default precision, recorded
    assert list(manifest["components"]) == ["text_encoder"]
    assert manifest["config"]["file"] == str(config)
    assert manifest["config"]["from_command_line"] == ["min_psnr"]
    assert "components" in manifest["config"]["from_config_file"]
    report = json.loads((config.parent / "report.json").read_text())
    assert report["status"] == "passed" and report["gates"][0]["gate"] == "min_psnr"


def test_every_compile_option_has_a_key() -> None:
    """Fields added to CompileOptions later are in the file too (as flags or as file-only keys)."""
    import dataclasses

    from fusionc.config import MAPPED, file_only_fields
    from fusionc.core.options import CompileOptions

    flags = {p.name for p in compile_command.params}
    for field in dataclasses.fields(CompileOptions):
        assert field.name in flags or field.name in MAPPED or field.name in file_only_fields(compile_command)


def test_file_only_keys(tmp_path: Path) -> None:
    s = settings("--config", str(write(tmp_path, "[compile]\nopset = 20\nseed = 3\n")))
    assert (s.options.opset, s.options.seed) == (20, 3)


def test_the_cache_is_the_flag_else_the_environment_else_none(tmp_path: Path, monkeypatch) -> None:
    from fusionc.core.store import cache_root

    monkeypatch.delenv("FUSIONC_CACHE", raising=False)
    assert cache_root(None) is None
    monkeypatch.setenv("FUSIONC_CACHE", str(tmp_path / "env"))
    assert cache_root(None) == tmp_path / "env"
    assert cache_root(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.setenv("FUSIONC_CACHE", "")
    assert cache_root(None) is None
