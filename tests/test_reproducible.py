"""Deterministic builds and the --cache: same inputs, same bytes, whichever path produced them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import fusionc
from fusionc import cache
from fusionc.core.options import CompileOptions
from fusionc.pipeline import compile_checkpoint
from fusionc.core.reproducible import ALIGNMENT, canonical_ort, canonical_ort_bytes
from fusionc.targets.onnx import save_raw_ort

COMPONENTS = ("text_encoder", "vae_decoder")


def options(**kwargs: object) -> CompileOptions:
    return CompileOptions(components=COMPONENTS, verify=False, verify_steps=1, verify_prompts=1, **kwargs)


def artifacts(build: Path) -> dict[str, str]:
    """Every file of a build but the manifest (which holds timings and the cache status) with its hash."""
    return {str(p.relative_to(build)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(build.rglob("*")) if p.is_file() and p.name != "manifest.json"}


@pytest.fixture()
def stable_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    """Other sessions edit the shared tree while tests run: pin the source hash the cache keys include."""
    monkeypatch.setattr(cache, "source_hash", lambda modules: "pinned-" + ",".join(modules))


@pytest.fixture(scope="module")
def two_builds(tiny_pipeline, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two fresh compiles: no FUSIONC_CACHE (the test session's export cache would make the second a cache hit)."""
    root = tmp_path_factory.mktemp("det")
    saved = os.environ.pop("FUSIONC_CACHE", None)
    try:
        for name in ("a", "b"):
            compile_checkpoint(tiny_pipeline("sd15"), options(), root / name)
    finally:
        if saved is not None:
            os.environ["FUSIONC_CACHE"] = saved
    return root / "a", root / "b"


def test_same_checkpoint_twice_gives_byte_identical_artifacts(two_builds: tuple[Path, Path]) -> None:
    a, b = two_builds
    files = artifacts(a)
    assert any(f.endswith(".onnx") for f in files) and any(f.endswith(".ort") for f in files)
    assert files == artifacts(b)


def test_artifacts_hold_no_host_paths_or_times(two_builds: tuple[Path, Path]) -> None:
    package = str(Path(fusionc.__file__).resolve().parent.parent).encode()
    for path in two_builds[0].rglob("*.onnx"):
        data = path.read_bytes()
        assert package not in data and b"site-packages" not in data and b"stack_trace" not in data, path


def test_cache_hits_give_the_same_bytes(tiny_pipeline, two_builds: tuple[Path, Path], tmp_path: Path,
                                        stable_sources: None) -> None:
    ckpt, store = tiny_pipeline("sd15"), tmp_path / "cache"
    first = compile_checkpoint(ckpt, options(), tmp_path / "miss", cache_dir=store)
    second = compile_checkpoint(ckpt, options(), tmp_path / "hit", cache_dir=store)
    assert {c["cache"] for c in first["components"].values()} == {"miss"}
    assert {c["cache"] for c in second["components"].values()} == {"hit: optimized"}
    assert [p["name"] for p in second["passes"]] == [p["name"] for p in first["passes"]]
    # gate-only options do not change what is cached
    gated = compile_checkpoint(ckpt, options(max_size={"total": 100.0}), tmp_path / "gated", cache_dir=store)
    assert {c["cache"] for c in gated["components"].values()} == {"hit: optimized"}
    for meta in list(store.rglob("meta.json")):  # drop the optimized stage: the generic graph is reused
        if json.loads(meta.read_text())["stage"] == "optimized":
            shutil.rmtree(meta.parent)
    generic = compile_checkpoint(ckpt, options(), tmp_path / "generic-hit", cache_dir=store)
    assert {c["cache"] for c in generic["components"].values()} == {"hit: generic"}
    assert [p["name"] for p in generic["passes"]] == [p["name"] for p in first["passes"]]
    for meta in list(store.rglob("meta.json")):  # drop both pass stages: the export is reused, the passes rerun
        if json.loads(meta.read_text())["stage"] in ("optimized", "generic"):
            shutil.rmtree(meta.parent)
    third = compile_checkpoint(ckpt, options(), tmp_path / "export-hit", cache_dir=store)
    assert {c["cache"] for c in third["components"].values()} == {"hit: export"}
    reference = artifacts(two_builds[0])
    for name in ("miss", "hit", "generic-hit", "export-hit"):
        assert artifacts(tmp_path / name) == reference, name


def test_cache_keys(stable_sources: None) -> None:
    base = options()
    export = cache.export_key("sha", "unet", (64, 64), base)
    assert export == cache.export_key("sha", "unet", (64, 64), options(min_psnr=40, palettize="6"))
    assert export != cache.export_key("other", "unet", (64, 64), base)
    assert export != cache.export_key("sha", "unet", (128, 64), base)
    assert export != cache.export_key("sha", "vae_decoder", (64, 64), base)
    assert export != cache.export_key("sha", "unet", (64, 64), options(text_length=8))  # T5's token count
    optimized = cache.optimized_key(export, base, None)
    assert optimized == cache.optimized_key(export, options(min_psnr=40, max_latency_ms={"unet": 1.0}), None)
    assert optimized != cache.optimized_key(export, options(palettize="6"), None)
    assert optimized != cache.optimized_key(export, options(target="coreml"), None)
    assert optimized != cache.optimized_key(export, base, "iphone-14-pro")



def _driver_imports(module: str) -> set[str]:
    """The fusionc driver modules (compiler/*.py, not the core, passes or targets) `module` imports, transitively."""
    import ast
    import importlib.util

    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse(Path(importlib.util.find_spec(name).origin).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fusionc."):
                parts = node.module.split(".")
                if len(parts) == 2 and parts[1] not in ("core", "passes", "targets", "analysis", "models"):
                    todo.append(node.module)
    return seen


def test_cache_keys_hash_every_module_their_stage_runs() -> None:
    """Before: the export key hashed fusionc.export and fusionc.checkpoint only, and the input sets' key left out
    fusionc.dit_trajectory and fusionc.dit, so a change to SD3's / PixArt's loop, T5's or PixArt's export wrappers
    or the ControlNet wrappers reused the stale exports and trajectories of the code before."""
    from fusionc.estimate_cache import SOURCES as ESTIMATE_SOURCES  # `fusionc estimate --cache`'s key

    for entry, hashed in (("fusionc.export", cache.EXPORT_SOURCES), ("fusionc.inputs", cache.TRAJECTORY_SOURCES),
                          ("fusionc.export", ESTIMATE_SOURCES)):
        assert _driver_imports(entry) <= set(hashed), (entry, sorted(_driver_imports(entry) - set(hashed)))

def test_cache_key_follows_the_recipe_content(tmp_path: Path, stable_sources: None) -> None:
    recipe = tmp_path / "recipe.json"
    recipe.write_text('{"unet": {"layers": {}}}')
    first = cache.optimized_key("e", options(recipe=recipe), None)
    recipe.write_text('{"unet": {"layers": {"conv": 4}}}')
    assert cache.optimized_key("e", options(recipe=recipe), None) != first


def test_a_damaged_cache_entry_is_a_miss(tmp_path: Path, two_builds: tuple[Path, Path]) -> None:
    import onnx_ir as ir

    store = cache.ComponentCache(tmp_path / "c")
    model = ir.load(two_builds[0] / "text_encoder" / "model.onnx")
    store.store("ab" * 32, model, {"stage": "export"})
    assert store.load("ab" * 32) is not None
    (store.root / "ab" / ("ab" * 32) / "model.onnx").write_bytes(b"garbage")
    assert store.load("ab" * 32) is None


def test_unwritable_cache_is_bad_input(tmp_path: Path) -> None:
    from fusionc.core.errors import BadInputError

    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInputError, match="--cache"):
        cache.ComponentCache(tmp_path / "file" / "cache")


def test_canonical_ort_is_stable_and_runs(two_builds: tuple[Path, Path], tmp_path: Path) -> None:
    """onnxruntime writes the same .ort content in a different byte order each time; we canonicalize it."""
    source = two_builds[0] / "text_encoder" / "model.onnx"
    raw = []
    for i in range(3):
        save_raw_ort(source, tmp_path / f"m{i}.ort")
        raw.append((tmp_path / f"m{i}.ort").read_bytes())
    canonical = {canonical_ort_bytes(data) for data in raw}
    assert len(canonical) == 1
    canonical_ort(tmp_path / "m0.ort")
    assert canonical_ort_bytes((tmp_path / "m0.ort").read_bytes()) == (tmp_path / "m0.ort").read_bytes()  # idempotent
    session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": np.zeros([2 if not isinstance(d, int) else d for d in session.get_inputs()[0].shape],
                                   np.int32)}
    expected = session.run(None, feeds)
    got = ort.InferenceSession(str(tmp_path / "m0.ort"), providers=["CPUExecutionProvider"]).run(None, feeds)
    for a, b in zip(expected, got):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target", ["coreml", "qnn"])
def test_device_targets_are_byte_identical_across_runs(target: str, tiny_pipeline, tmp_path: Path) -> None:
    """Fresh processes, as CI runs them (each QNN context is built in a process of its own, so an in-process
    second build gives the same bytes too: tests/targets/qnn/test_qnn_ep.py)."""
    import subprocess
    import sys

    builds = []
    for name in ("a", "b"):
        out = tmp_path / name
        result = subprocess.run([sys.executable, "-m", "fusionc.cli", "compile", str(tiny_pipeline("sd15")), "--target",
                                 target, "--components", "text_encoder", "--no-verify", "--verify-steps", "1",
                                 "--verify-prompts", "1", "--out", str(out)], capture_output=True, text=True,
                                env={k: v for k, v in os.environ.items() if k != "FUSIONC_CACHE"}, timeout=900)
        assert result.returncode == 0, result.stderr[-2000:]
        builds.append(artifacts(out))
    assert builds[0] == builds[1]
    suffixes = {Path(f).suffix for f in builds[0]}
    assert (".mlmodel" in suffixes and ".json" in suffixes) if target == "coreml" else {".onnx", ".bin"} <= suffixes


def padded_flatbuffer(data: bytes, padding: int) -> bytes:
    """The same flatbuffer with `padding` zero bytes after its header: every offset is relative but the root's."""
    root = int.from_bytes(data[:4], "little")
    return (root + padding).to_bytes(4, "little") + data[4:8] + bytes(padding) + data[8:]


def test_canonical_ort_does_not_depend_on_the_raw_file_size(two_builds: tuple[Path, Path], tmp_path: Path) -> None:
    """The raw layout's size varies from run to run (by 8 bytes, say): the canonical bytes must not follow it."""
    save_raw_ort(two_builds[0] / "text_encoder" / "model.onnx", tmp_path / "m.ort")
    data = (tmp_path / "m.ort").read_bytes()
    canonical = canonical_ort_bytes(data)
    assert len(canonical) % ALIGNMENT == 0
    for padding in (8, 16, 24):
        assert canonical_ort_bytes(padded_flatbuffer(data, padding)) == canonical


def test_second_compile_in_one_process_matches_a_fresh_process(tiny_pipeline, tmp_path: Path) -> None:
    """Nothing a compile leaves behind in the process (name counters of the ANE passes, matcher state) may change
    the next compile's bytes: a Core ML build made after another one equals the same build from a fresh process."""
    import subprocess
    import sys

    args = ["--target", "coreml", "--components", "text_encoder", "--no-verify", "--verify-steps", "1",
            "--verify-prompts", "1"]
    fresh = tmp_path / "fresh"
    result = subprocess.run([sys.executable, "-m", "fusionc.cli", "compile", str(tiny_pipeline("sd15")), *args,
                             "--out", str(fresh)], capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if k != "FUSIONC_CACHE"}, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    coreml = CompileOptions(target="coreml", components=("text_encoder",), verify=False, verify_steps=1,
                            verify_prompts=1)
    saved = os.environ.pop("FUSIONC_CACHE", None)
    try:
        compile_checkpoint(tiny_pipeline("sd21"), coreml, tmp_path / "before")  # another compile first
        compile_checkpoint(tiny_pipeline("sd15"), coreml, tmp_path / "second")
    finally:
        if saved is not None:
            os.environ["FUSIONC_CACHE"] = saved
    assert artifacts(tmp_path / "second") == artifacts(fresh)


def test_a_cache_entry_never_takes_the_last_free_space(tmp_path: Path, monkeypatch) -> None:
    import collections
    import shutil

    from fusionc.core.store import RESERVE_BYTES, EntryStore

    store = EntryStore(tmp_path / "s")
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(0, 0, RESERVE_BYTES + 100))
    assert not store.put("ab" * 32, {}, lambda tmp: (tmp / "x").write_bytes(b"x" * 200), size=200)
    assert store.meta("ab" * 32) is None and not list(store.root.iterdir())
    assert store.put("ab" * 32, {}, lambda tmp: (tmp / "x").write_bytes(b"x" * 50), size=50)
    assert store.meta("ab" * 32) == {"key": "ab" * 32}
