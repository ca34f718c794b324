"""Device profiles: every issue-listed device, sane figures, get_device contract, `fusionc devices`."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fusionc.cli import main
from fusionc.core.devices import DEVICES, get_device
from fusionc.core.errors import BadInputError

EXPECTED = {"iphone-14-pro", "iphone-15-pro", "iphone-16-pro", "mac-m2", "snapdragon-8-gen-2",
            "snapdragon-8-gen-3", "snapdragon-8-elite", "snapdragon-8-elite-gen-5", "snapdragon-7-gen-4",
            "snapdragon-x-elite"}


def test_profiles_cover_the_issue_and_are_consistent() -> None:
    assert EXPECTED <= set(DEVICES)
    for device in DEVICES.values():
        assert device.peak_tops and all(v > 0 for v in device.peak_tops.values())
        assert device.memory_bandwidth_gbs > 0
        assert device.npu in device.compute_units
        assert device.family in ("ane", "htp", "cpu")
        if device.family == "cpu":  # ORT CPU profiles: a phone's big cores (or the x86-64 host class)
            assert device.target == "onnx" and device.cpu_arch in ("arm64", "x86_64") and device.big_cores
            assert "fp32" in device.peak_tops and device.peak_tops["int8"] > device.peak_tops["fp32"]
            assert 30e9 < device.npu_macs_per_s("fp32") < 300e9
            continue
        if device.vendor == "qualcomm":
            assert device.hexagon_arch in ("v73", "v75", "v79", "v81")
            # soc_model only where a public table gives it (7 Gen 4, X Elite: the arch alone)
            assert device.soc_model or device.name in ("snapdragon-7-gen-4", "snapdragon-x-elite")
            assert device.max_model_bytes == 2 << 30
        else:
            assert device.hexagon_arch is None and "fp16" in device.peak_tops
        assert device.npu_macs_per_s(next(iter(device.peak_tops))) > 1e12


def test_cpu_profiles_give_estimates_for_phones_without_an_npu_path() -> None:
    from fusionc.analysis.costmodel import estimate
    from fusionc.analysis.graph_stats import GraphStats, OpStat

    conv = OpStat("conv", "Conv", "", "conv", macs=10**9, params=10**5, float_weight_elems=10**5)
    stats = GraphStats([conv], "none")
    fp32 = estimate(stats, DEVICES["pixel-8-cpu"])
    int8 = estimate(stats, DEVICES["pixel-8-cpu"], "w8a8")
    assert fp32.precision == "fp32" and fp32.latency_s > int8.latency_s > 0
    assert estimate(stats, DEVICES["galaxy-a54-cpu"]).latency_s > fp32.latency_s  # 4 A78s < X3 + 4 A715s


def test_get_device_defaults_and_errors() -> None:
    assert get_device(None, "coreml").name == "iphone-14-pro"
    assert get_device(None, "qnn").name == "snapdragon-8-gen-2"
    assert get_device(None, "onnx") is None
    assert get_device("snapdragon-8-elite", "onnx").name == "snapdragon-8-elite"
    with pytest.raises(BadInputError):
        get_device("nokia-3310", "coreml")
    with pytest.raises(BadInputError):
        get_device("mac-m2", "qnn")
    with pytest.raises(BadInputError):
        DEVICES["iphone-14-pro"].npu_macs_per_s("int4")


def test_devices_command_lists_every_profile() -> None:
    result = CliRunner().invoke(main, ["devices"])
    assert result.exit_code == 0, result.output
    for name in EXPECTED:
        assert name in result.output
    as_json = json.loads(CliRunner().invoke(main, ["devices", "--json"]).output)
    assert as_json["snapdragon-8-gen-2"]["hexagon_arch"] == "v73"


@pytest.mark.parametrize("said, slug", [
    ("iPhone 14 Pro", "iphone-14-pro"), ("iphone14pro", "iphone-14-pro"), ("IPHONE-14-PRO", "iphone-14-pro"),
    ("  iPhone  15 pro ", "iphone-15-pro"), ("Snapdragon 8 Gen 2", "snapdragon-8-gen-2"),
    ("snapdragon 8 gen 3", "snapdragon-8-gen-3"), ("Snapdragon 8 Elite", "snapdragon-8-elite"),
    ("SM8550", "snapdragon-8-gen-2"), ("sm 8650", "snapdragon-8-gen-3"), ("A16 Bionic", "iphone-14-pro"),
    ("a17 pro", "iphone-15-pro"), ("Mac (M2)", "mac-m2"), ("M2", "mac-m2"), ("snapdragon-8-gen-2", "snapdragon-8-gen-2"),
])
def test_device_names_as_people_say_them(said: str, slug: str) -> None:
    from fusionc.core.devices import find_device

    assert find_device(said).name == slug
    assert get_device(said, DEVICES[slug].target).name == slug


def test_every_profile_is_found_by_its_title_and_slug() -> None:
    from fusionc.core.devices import find_device

    for device in DEVICES.values():
        assert find_device(device.display_name) is device and find_device(device.name.upper()) is device
        assert device.display_name != device.name  # a title people say, not the slug again


def test_device_flag_takes_titles_and_refuses_unknown_names(tmp_path) -> None:
    """`--device "iPhone 14 Pro"` resolves to the slug the manifest records; unknown or foreign devices exit 2."""
    from fusionc.cli import compile_command
    from fusionc.config import resolve

    ctx = compile_command.make_context("compile", ["--target", "coreml", "--device", "iPhone 14 Pro"])
    assert get_device(resolve(ctx, ctx.params).options.device, "coreml").name == "iphone-14-pro"
    for args, message in ((["--target", "qnn", "--device", "Nokia 3310"], "unknown device 'Nokia 3310'"),
                          (["--target", "qnn", "--device", "iPhone 14 Pro"], "'iPhone 14 Pro' is a coreml device")):
        result = CliRunner().invoke(main, ["compile", "--no-verify", "--out", str(tmp_path / "o"), *args])
        assert result.exit_code == 2 and message in result.stderr, result.stderr
        assert not (tmp_path / "o").exists()


def test_a_near_miss_names_the_profile_it_resembles() -> None:
    from fusionc.core.devices import find_device

    with pytest.raises(BadInputError, match="did you mean 'pixel-8-cpu'"):
        find_device("Pixel 8")  # the profile is the phone's CPU
    with pytest.raises(BadInputError, match="did you mean 'iphone-15-pro'"):
        find_device("iphone 15")
    with pytest.raises(BadInputError, match=r"unknown device 'Nokia 3310': run `fusionc devices`"):
        find_device("Nokia 3310")  # nothing close: no guess


def test_devices_command_shows_titles() -> None:
    output = CliRunner().invoke(main, ["devices"]).output
    for device in DEVICES.values():
        assert device.display_name in output


def test_devices_command_shows_every_figure_whole_in_a_pipe() -> None:
    """Off a terminal the table was cut to 170 columns: "targ…", "int8…", "v73 (soc_…" (the figures lost in a
    CI log or `fusionc devices | less`)."""
    from fusionc.core.devices import devices_table

    output = CliRunner().invoke(main, ["devices"]).output
    assert "…" not in output
    for row in devices_table():
        assert all(value in output for value in row.values()), row
