"""`fusionc bench` on a Core ML build: estimates on Linux (from the graph the build keeps), measured `predict` on
macOS. The macOS branch also runs here, against a stand-in MLModel whose predict checks the package's declared
names, dtypes and shapes and runs it through our MIL executor (so chunk chaining is exercised too)."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fusionc.cli import main
from fusionc.core.devices import DEVICES

COREML_DEVICES = {d.name for d in DEVICES.values() if d.target == "coreml"}


def test_bench_estimates_a_coreml_build_off_macos(coreml_text_encoder_build: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", str(coreml_text_encoder_build), "--json", str(out)])
    assert result.exit_code == 0, result.stderr
    (build,) = json.loads(out.read_text())["builds"]
    figures = build["figures"]
    assert all(f["kind"] == "estimated" and f["median_ms"] > 0 for f in figures)
    assert {(f["component"], f["device"]) for f in figures} == {(c, d) for c in ("text_encoder", "unet")
                                                                for d in COREML_DEVICES}
    assert {f["component"]: f["batch"] for f in figures} == {"text_encoder": 1, "unet": 2}  # what the package runs
    assert build["graphs"]["unet"]["macs"] > 0 and build["graphs"]["unet"]["nodes"] > 100
    assert "[E] estimated" in result.stdout


def test_the_kept_graph_is_small_matches_the_lowered_one_and_is_not_shipped(coreml_text_encoder_build: Path) -> None:
    import onnx

    manifest = json.loads((coreml_text_encoder_build / "manifest.json").read_text())
    for name, comp in manifest["components"].items():
        kept = coreml_text_encoder_build / comp["costmodel_graph"]
        assert kept.stat().st_size < comp["bytes"] / 10 and comp["costmodel_graph"] not in comp["files"]
        proto = onnx.load(str(kept), load_external_data=False)
        assert proto.graph.initializer and all(t.data_location == onnx.TensorProto.EXTERNAL and not t.raw_data
                                               for t in proto.graph.initializer)
        # the kept graph's interface is the package's (Apple's names, static batch)
        assert [i.name for i in proto.graph.input] == list(comp["inputs"])


class StandInMLModel:
    """coremltools.models.MLModel as on macOS, with predict run by our MIL executor.

    Like Core ML, predict refuses feeds whose names, dtypes or shapes differ from the package's declared inputs,
    and returns exactly the declared outputs. Every call is recorded for the test."""

    calls: list[dict] = []
    real = None  # coremltools' own MLModel: loading a package for the executor (skip_model_load) goes to it
    DTYPES = {65568: np.float32, 65552: np.float16, 131104: np.int32}  # ArrayFeatureType.ArrayDataType values

    def __new__(cls, path: str, *args, **kwargs):
        if kwargs.get("skip_model_load"):
            return cls.real(path, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, path: str, compute_units=None) -> None:
        import coremltools as ct

        from fusionc.targets.coreml.executor import MILExecutor

        self.path = path
        self.spec = ct.utils.load_spec(path)
        self.executor = MILExecutor.from_mlpackage(Path(path))
        self.compute_units = compute_units

    def get_spec(self):
        return self.spec

    def predict(self, feeds: dict) -> dict:
        declared = {i.name: i.type.multiArrayType for i in self.spec.description.input}
        assert set(feeds) == set(declared), (set(feeds), set(declared))
        for name, array in declared.items():
            value = feeds[name]
            assert isinstance(value, np.ndarray) and value.dtype == self.DTYPES[array.dataType], (name, value.dtype)
            assert tuple(value.shape) == tuple(array.shape), (name, value.shape, tuple(array.shape))
        out = self.executor(feeds)
        names = [o.name for o in self.spec.description.output]
        StandInMLModel.calls.append({"package": Path(self.path).name, "inputs": sorted(feeds), "outputs": names})
        return {name: out[name] for name in names}


@pytest.fixture
def stand_in_macos(monkeypatch: pytest.MonkeyPatch):
    import coremltools as ct

    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    StandInMLModel.real = ct.models.MLModel
    monkeypatch.setattr(ct.models, "MLModel", StandInMLModel)
    StandInMLModel.calls = []
    return StandInMLModel.calls


def test_macos_branch_runs_predict_on_each_chunk_in_turn(coreml_text_encoder_build: Path, stand_in_macos) -> None:
    """The runner's macOS branch (what verify and generate use there) equals the executor branch used on Linux."""
    from fusionc.bench import synthetic_feeds
    from fusionc.targets import get_target
    from fusionc.targets.coreml.runner import CoreMLRunner

    manifest = json.loads((coreml_text_encoder_build / "manifest.json").read_text())
    runner = get_target("coreml").runner(coreml_text_encoder_build, "unet", manifest)
    assert all(type(part).__name__ == "_CoreMLPart" for part in runner.parts) and len(runner.parts) == 2
    info = manifest["components"]["unet"]["coreml"]
    executor = CoreMLRunner([coreml_text_encoder_build / p for p in info["packages"]], info["interface"],
                            info.get("outputs"), "executor")
    rng = np.random.default_rng(0)
    canonical = {}  # the canonical interface, from the artifact's: (B,C,1,S) inputs are (B,S,C) canonically
    for name, spec in manifest["components"]["unet"]["inputs"].items():
        shape = spec["shape"]
        if name in info["interface"]["bc1s_inputs"]:
            shape = [shape[0], shape[3], shape[1]]
        canonical[name] = (np.full(shape, 500.0, np.float32) if name == "timestep"
                           else rng.standard_normal(shape).astype(np.float32))
    got, want = runner(canonical), executor(canonical)
    assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in got)
    # chunk 2 received chunk 1's outputs: two predicts per call, in order
    assert [c["package"] for c in stand_in_macos] == ["UnetChunk1.mlpackage", "UnetChunk2.mlpackage"]
    assert set(stand_in_macos[0]["outputs"]) & set(stand_in_macos[1]["inputs"])
    # and bench times predict with the artifact's own feeds
    feeds = synthetic_feeds(manifest["components"]["unet"]["inputs"], 2)
    assert set(runner.run_artifact(feeds)) >= set(info["outputs"])


def test_bench_measures_predict_on_macos(coreml_text_encoder_build: Path, stand_in_macos, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", str(coreml_text_encoder_build), "--runs", "2", "--warmup", "0",
                                       "--json", str(out)])
    assert result.exit_code == 0, result.stderr
    figures = json.loads(out.read_text())["builds"][0]["figures"]
    measured = [f for f in figures if f["kind"] == "measured"]
    assert {f["component"] for f in measured} == {"text_encoder", "unet"}
    for f in measured:
        assert f["backend"] == "coreml" and f["device"] == "host" and f["median_ms"] > 0 and f["runs"] == 2
        assert f["detail"]["runtime"] == "MLModel.predict" and f["detail"]["chunks"] == 2
    assert {f["component"]: f["batch"] for f in measured} == {"text_encoder": 1, "unet": 2}
    assert any(f["kind"] == "estimated" for f in figures)  # both kinds, labelled
    assert "[M] measured" in result.stdout and "[E] estimated" in result.stdout


@pytest.mark.parametrize("host", ["Darwin", "Linux"])
def test_the_host_alone_picks_the_runtime(coreml_text_encoder_build: Path, monkeypatch: pytest.MonkeyPatch,
                                          host: str) -> None:
    """predict on macOS, the MIL executor elsewhere, whatever the manifest's options hold: a manifest written before
    the `options.extra` knob was removed (`coreml_backend: executor`) made the runner read a field no build has
    any more, and on macOS silently ran the executor instead of Core ML."""
    import coremltools as ct

    from fusionc.targets import get_target

    manifest = json.loads((coreml_text_encoder_build / "manifest.json").read_text())
    manifest["options"]["extra"] = {"coreml_backend": "executor"}
    monkeypatch.setattr(platform, "system", lambda: host)
    if host == "Darwin":  # MLModel without Core ML (the executor elsewhere loads packages with skip_model_load)
        monkeypatch.setattr(ct.models, "MLModel", lambda path, compute_units=None: _Loaded(path))
    runner = get_target("coreml").runner(coreml_text_encoder_build, "text_encoder", manifest)
    want = "_CoreMLPart" if host == "Darwin" else "_ExecutorPart"
    assert [type(part).__name__ for part in runner.parts] == [want, want]


class _Loaded:
    """MLModel as far as the runner's constructor reads it (its spec), without loading Core ML."""

    def __init__(self, path: str) -> None:
        import coremltools as ct

        self.spec = ct.utils.load_spec(path)

    def get_spec(self):
        return self.spec


def package_weight_bytes(build: Path, comp: dict) -> int:
    """Bytes of the weights a component's packages store (each .mlpackage's weight.bin)."""
    return sum(p.stat().st_size for rel in comp["coreml"]["packages"] for p in (build / rel).rglob("weight.bin"))


def test_estimates_charge_the_weight_bytes_the_package_stores(coreml_text_encoder_build: Path) -> None:
    """The kept graph holds fp32 ONNX weights; the ANE reads the package's fp16 (or palettized) ones, and the memory
    term of the estimate must charge those: counted at fp32 it would double (tests/test_readme_commands.py checks a
    palettized build the same way)."""
    from fusionc.bench import estimate_build

    manifest = json.loads((coreml_text_encoder_build / "manifest.json").read_text())
    figures, _ = estimate_build(coreml_text_encoder_build, manifest, guidance=True, qnn_runtime="context-binary")
    unet = manifest["components"]["unet"]
    stored = package_weight_bytes(coreml_text_encoder_build, unet)
    charged = {f.detail["weight_bytes"] for f in figures if f.component == "unet"}
    assert len(charged) == 1  # one storage, whatever the device
    assert abs(charged.pop() / stored - 1) < 0.1, stored
