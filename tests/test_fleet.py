"""Fleet builds: [[variant]] tables, shared work done once, byte-identical to separate compiles, failures alone."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from fusionc import cache as cache_keys
from fusionc.cli import compile_command, main
from fusionc.config import read_variants

SHARED = """
[compile]
checkpoint = "{ckpt}"
cache = "cache"
components = ["text_encoder", "unet"]
verify_steps = 1
verify_prompts = 1
calibration_steps = 1
calibration_prompts = 1
selection_steps = 1
selection_prompts = 1
[gates]
min_psnr = 30
"""
VARIANTS = """
[[variant]]
name = "onnx"
target = "onnx"
out = "build/onnx"
[[variant]]
name = "iphone-6bit"
target = "coreml"
device = "iphone-15-pro"
palettize = "6"
out = "build/iphone-6bit"
[[variant]]
name = "sd8g2-w8a16"
target = "qnn"
device = "snapdragon-8-gen-2"
calibration_samples = 1
qnn_remedy_rounds = 0
verify = false
out = "build/sd8g2"
[[variant]]
name = "sd8g3-w8a16"
target = "qnn"
device = "snapdragon-8-gen-3"
calibration_samples = 1
qnn_remedy_rounds = 0
verify = false
out = "build/sd8g3"
"""
FAILING = """
[[variant]]
name = "too-strict"
target = "onnx"
min_psnr = 999
out = "build/strict"
[[variant]]
name = "bad-3bit"
target = "coreml"
palettize = "3"
deployment_target = "iOS17"
out = "build/bad"
"""
BUILT = ("onnx", "iphone-6bit", "sd8g2", "sd8g3")
# one xdist worker for the module: the local fleet (the expensive fixture) is built once, not once per worker
pytestmark = pytest.mark.xdist_group("fleet")


def artifacts(build: Path) -> dict[str, bytes]:
    """Every file of a build but the manifest (timings, cache status, config), with its bytes: QNN's context
    binary included (each is built in a fresh process: fusionc.targets.qnn.ep.compile_context)."""
    return {str(p.relative_to(build)): p.read_bytes() for p in sorted(build.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def write_config(folder: Path, ckpt: Path, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fusionc.toml"
    path.write_text(SHARED.format(ckpt=ckpt) + VARIANTS + extra)
    return path


@pytest.fixture(scope="module")
def stable_sources():
    """Other sessions edit the shared tree while tests run: pin the source hash the cache keys include."""
    saved = cache_keys.source_hash
    cache_keys.source_hash = lambda modules: "pinned-" + ",".join(modules)
    yield
    cache_keys.source_hash = saved


@pytest.fixture(scope="module")
def local_fleet(tiny_pipeline, tmp_path_factory, stable_sources) -> tuple[Path, dict, dict[str, int]]:
    """One local fleet of three variants (+ a gate failure and a bad variant), counting torch-side work."""
    import fusionc.inputs as inputs
    import fusionc.pipeline as pipeline

    counts = {"export": 0, "trajectory": 0}
    export, trajectory = pipeline.export_component, inputs.trajectory_samples

    def counting_export(*args, **kwargs):
        counts["export"] += 1
        return export(*args, **kwargs)

    def counting_trajectory(*args, **kwargs):
        counts["trajectory"] += 1
        return trajectory(*args, **kwargs)

    pipeline.export_component, inputs.trajectory_samples = counting_export, counting_trajectory
    folder = tmp_path_factory.mktemp("fleet_local")
    config = write_config(folder, tiny_pipeline("sd15"), FAILING)
    try:
        result = CliRunner().invoke(main, ["compile", "--config", str(config), "--report", str(folder / "r.json"),
                                           "--junit", str(folder / "r.xml"), "--plot", str(folder / "r.png")])
    finally:
        pipeline.export_component, inputs.trajectory_samples = export, trajectory
    assert result.exit_code == 1, result.output
    return folder, json.loads((folder / "r.json").read_text()), counts


def test_variants_share_one_export_and_one_trajectory(local_fleet) -> None:
    folder, report, counts = local_fleet
    # 5 variants over 2 components: one export per component and one torch run per input set (verification for
    # all; calibration and selection for QNN, calibration for Core ML's fp16 ranges), not one per variant
    assert counts == {"export": 2, "trajectory": 3}
    assert report["shared"]["computed"] == {"trajectories": 3, "exports": 2, "generic": 2}
    for variant in report["variants"][:4]:
        assert {c["cache"] for c in variant["components"].values()} == {"hit: generic"}, variant["name"]
        assert variant["timings"]["load checkpoint"] < 1.0  # the shared view: no module is read again


def test_qnn_variants_of_two_devices_share_one_quantization(local_fleet) -> None:
    """sd8g2 and sd8g3 differ only in the device: the first calibrates, quantizes and builds both devices'
    contexts side by side; the second copies the QDQ graph and its v75 contexts from the cache."""
    folder, _, _ = local_fleet
    first, second = (json.loads((folder / "build" / out / "manifest.json").read_text())["components"]
                     for out in ("sd8g2", "sd8g3"))
    for name in ("text_encoder", "unet"):
        assert first[name]["qnn_cache"].startswith("miss") and first[name]["qnn_contexts"] == ["built with 1 sibling(s)"]
        assert second[name]["qnn_cache"] == "hit: quantized graph" and second[name]["qnn_contexts"] == ["hit"]
        assert (first[name]["htp_arch"], second[name]["htp_arch"]) == ("v73", "v75")
        assert second[name]["quantization"] == first[name]["quantization"]
        graph, contexts = (folder / "build" / "sd8g2" / name, folder / "build" / "sd8g3" / name)
        assert (graph / "model.qdq.onnx").read_bytes() == (contexts / "model.qdq.onnx").read_bytes()
        # v75's binary is its own build, not a copy of v73's (the separate compile below has the same bytes)
        assert (graph / "model_ctx_qnn.bin").read_bytes() != (contexts / "model_ctx_qnn.bin").read_bytes()


def test_sibling_devices_group_qnn_variants_that_differ_only_in_the_device() -> None:
    from fusionc.core.options import CompileOptions
    from fusionc.fleet import sibling_devices

    gen2, gen3, elite = (CompileOptions(target="qnn", device=d) for d in
                         ("snapdragon-8-gen-2", "snapdragon-8-gen-3", "snapdragon-8-elite"))
    w8a8 = CompileOptions(target="qnn", device="snapdragon-8-elite", precision="w8a8")
    ios = CompileOptions(target="coreml", device="iphone-15-pro")
    assert sibling_devices([gen2, w8a8, ios, gen3, elite]) == [("snapdragon-8-gen-3", "snapdragon-8-elite"),
                                                                (), (), (), ()]


def test_a_qnn_variant_starts_after_the_sibling_that_builds_its_context() -> None:
    """The pool (--jobs N) and Ray start such a variant when that sibling is done: it then copies its context."""
    from fusionc.core.options import CompileOptions
    from fusionc.variant import VariantJob

    def job(device: str, siblings: tuple[str, ...] = ()) -> VariantJob:
        return VariantJob(device, Path(device), CompileOptions(target="qnn", device=device), {}, Path("c"),
                          sibling_devices=siblings)

    gen2, gen3 = job("snapdragon-8-gen-2", ("snapdragon-8-gen-3",)), job("snapdragon-8-gen-3")
    assert gen3.waits_for(gen2) and not gen2.waits_for(gen3) and not gen2.waits_for(gen2)


def test_a_pool_starts_the_longest_variants_first() -> None:
    from fusionc.core.options import CompileOptions
    from fusionc.fleet_pool import longest_first
    from fusionc.variant import VariantJob

    def job(name: str, target: str, siblings: tuple[str, ...] = ()) -> VariantJob:
        return VariantJob(name, Path(name), CompileOptions(target=target), {}, Path("c"), sibling_devices=siblings)

    jobs = [job("ios-a", "coreml"), job("ort", "onnx"), job("ios-b", "coreml"), job("sd8g3", "qnn"),
            job("sd8g2", "qnn", ("snapdragon-8-gen-3",))]
    assert [j.name for j in longest_first(jobs)] == ["sd8g2", "sd8g3", "ios-a", "ios-b", "ort"]


def test_a_fleets_temporary_cache_keeps_only_what_variants_share(tiny_pipeline, tmp_path: Path) -> None:
    """Without --cache the fleet's cache is removed at the end: the per-variant optimized graphs (SD-1.5: 3.4 GB
    each) are not written to it, the export, the generic passes and the QNN graph (read by other variants) are."""
    from fusionc.core.options import CompileOptions
    from fusionc.core.store import EPHEMERAL, META
    from fusionc.pipeline import compile_checkpoint

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / EPHEMERAL).touch()
    options = CompileOptions(target="qnn", components=("text_encoder",), verify=False, calibration_steps=1,
                             calibration_prompts=1, selection_steps=1, selection_prompts=1, calibration_samples=1,
                             qnn_remedy_rounds=0)
    compile_checkpoint(tiny_pipeline("sd15"), options, tmp_path / "out", cache_dir=cache)
    stages = sorted(json.loads(m.read_text())["stage"] for m in cache.rglob(META))
    assert "optimized" not in stages and {"export", "generic", "qnn-graph"} <= set(stages), stages


def test_a_failed_variant_fails_alone(local_fleet) -> None:
    folder, report, _ = local_fleet
    status = {v["name"]: (v["status"], v["exit_code"]) for v in report["variants"]}
    assert status == {"onnx": ("passed", 0), "iphone-6bit": ("passed", 0), "sd8g2-w8a16": ("passed", 0),
                      "sd8g3-w8a16": ("passed", 0),
                      "too-strict": ("failed", 1), "bad-3bit": ("error", 2)}
    assert report["status"] == "failed" and report["exit_code"] == 1 and report["failed"] == ["too-strict", "bad-3bit"]
    bad = next(v for v in report["variants"] if v["name"] == "bad-3bit")
    assert "iOS18" in bad["error"] and not (folder / "build" / "bad").exists()
    assert (folder / "build" / "strict" / "manifest.json").is_file()  # a gate fails after the build is written
    assert not list((folder / "build").glob(".*tmp*")) and not list(folder.glob(".fusionc-fleet-cache-*"))


def test_fleet_report_has_every_column(local_fleet) -> None:
    folder, report, _ = local_fleet
    ios = next(v for v in report["variants"] if v["name"] == "iphone-6bit")
    assert ios["target"] == "coreml" and ios["device"] == "iphone-15-pro" and ios["executor"] == "local"
    assert ios["bytes"] == sum(c["bytes"] for c in ios["components"].values()) > 0
    assert ios["worst_psnr_db"] > 30 and ios["latency_ms_per_step"] > 0
    assert ios["latency_ms_per_generation"] > ios["latency_ms_per_step"]  # 8 steps + text encoders
    assert ios["gates"] and ios["wall_s"] > 0 and ios["node"]
    xml = (folder / "r.xml").read_text()
    assert xml.count("<testsuite ") == 6 and 'type="exit 2"' in xml and "<failure" in xml
    assert (folder / "r.png").read_bytes()[:4] == b"\x89PNG"


def export_only_cache(fleet_cache: Path, fresh: Path) -> Path:
    """A new cache holding only the fleet's torch exports (meta stage "export"), nothing computed after them."""
    from fusionc.core.store import META

    for meta in fleet_cache.glob(f"*/*/{META}"):
        if json.loads(meta.read_text()).get("stage") == "export":
            shutil.copytree(meta.parent, fresh / meta.parent.relative_to(fleet_cache))
    return fresh


def test_fleet_builds_equal_separate_compiles(local_fleet, tiny_pipeline, tmp_path: Path, stable_sources) -> None:
    """Each variant compiled alone gives the same bytes as the fleet's build: its own load, torch input sets,
    generic and target passes, lowering, calibration and verification. Only the torch export is reused from
    the fleet (its key holds checkpoint, component, shapes, opset, versions and exporter sources, and an
    export is the same bytes from a cache or not: test_reproducible), which halves this test's cost."""
    folder, _, _ = local_fleet
    fresh = export_only_cache(folder / "cache", tmp_path / "exports-only")
    assert len(list(fresh.glob("*/*"))) == 2  # text_encoder and unet
    saved = os.environ.pop("FUSIONC_CACHE", None)
    try:
        for variant, out in (("iphone-6bit", "iphone-6bit"), ("sd8g2-w8a16", "sd8g2"), ("sd8g3-w8a16", "sd8g3")):
            config = write_config(tmp_path / variant, tiny_pipeline("sd15"))
            text = config.read_text().replace('cache = "cache"', f'cache = "{fresh}"')
            config.write_text(text)
            # the single-build path: the variant's options as flags over the shared [compile] table
            table = next(t for t in read_variants(config) if t["name"] == variant)
            flags = []
            for key, value in table.items():
                if key in ("name", "out"):
                    continue
                if key == "no_verify":
                    flags += ["--no-verify"] if value else []
                    continue
                flags += [f"--{key.replace('_', '-')}", str(value)]
            config.write_text(text.split("[[variant]]")[0])
            result = CliRunner().invoke(main, ["compile", "--config", str(config), "--out", str(tmp_path / "separate" / out), *flags])
            assert result.exit_code == 0, result.output
            assert artifacts(tmp_path / "separate" / out) == artifacts(folder / "build" / out), variant
    finally:
        if saved is not None:
            os.environ["FUSIONC_CACHE"] = saved


def test_variant_selects_one(local_fleet, tiny_pipeline, tmp_path: Path, stable_sources) -> None:
    folder, _, _ = local_fleet
    config = write_config(tmp_path, tiny_pipeline("sd15"))
    config.write_text(config.read_text().replace('cache = "cache"', f'cache = "{folder / "cache"}"'))
    result = CliRunner().invoke(main, ["compile", "--config", str(config), "--variant", "onnx",
                                       "--report", str(tmp_path / "one.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "one.json").read_text())
    assert [v["name"] for v in report["variants"]] == ["onnx"] and report["shared"]["computed"]["exports"] == 0
    assert not (tmp_path / "build" / "sd8g2").exists()
    assert artifacts(tmp_path / "build" / "onnx") == artifacts(folder / "build" / "onnx")


@pytest.mark.parametrize("text, args, message", [
    ('[[variant]]\nname = "a"\n[[variant]]\nname = "a"\n', [], "two variants are named 'a'"),
    ('[[variant]]\ntarget = "onnx"\n', [], "needs a name"),
    ('[[variant]]\nname = "a"\ncheckpoint = "x"\n', [], "shared by the fleet"),
    ('[[variant]]\nname = "a"\ntarget = "tpu"\n', [], "target"),
    ('[[variant]]\nname = "a"\nout = "o"\n[[variant]]\nname = "b"\nout = "o"\n', [], "both write"),
    ('[[variant]]\nname = "a"\n', ["--variant", "zz"], "--variant 'zz' is not in"),
    ('[[variant]]\nname = "a"\n', ["--out", "x"], "a fleet writes each variant to its own out"),
    ('[[variant]]\nname = "a"\ndevice = "pixel-9"\n', [], "variant 'a'"),
    ('[[variant]]\nname = "a"\n', ["--jobs", "2", "--executor", "ray"], "--jobs 2 is for --executor local"),
    ('[[variant]]\nname = "a"\njobs = 2\n', [], "shared by the fleet"),
    # was read as click's bool("false") for no_verify, i.e. verify = true: the variant verified
    ('[[variant]]\nname = "a"\nverify = "false"\n', [], "variant 'a': verify must be true or false"),
    # was a plain compile of the shared tables, as if no fleet were written
    ('variant = []\n', [], "variant = [] lists no variants"),
    # a shared option no variant uses was ignored by the whole fleet: foreign to every variant's target, ...
    ('[compression]\npalettize = "6"\n[[variant]]\nname = "a"\ntarget = "qnn"\n', [],
     "--palettize is set for the fleet, and no variant uses it"),
    # ... without effect in every variant, or set by each variant itself
    ('[coreml]\nattention_chunk = 64\n[[variant]]\nname = "a"\ntarget = "coreml"\n', [],
     "--attention-chunk is set for the fleet, and no variant uses it"),
    ('[compile]\nheight = 64\n[[variant]]\nname = "a"\nheight = 32\n', [], "--height is set for the fleet"),
])
def test_bad_fleets_are_exit_2_before_any_work(tmp_path: Path, text: str, args: list[str], message: str) -> None:
    config = tmp_path / "fusionc.toml"
    config.write_text(text)
    result = CliRunner().invoke(main, ["compile", "--config", str(config), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "build").exists()


def test_variant_without_a_config_is_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["compile", "--variant", "a", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "needs a --config file" in result.output


def variant_tables(*names: str) -> str:
    """The [[variant]] tables of VARIANTS and FAILING with these names."""
    blocks = [b for b in (VARIANTS + FAILING).split("[[variant]]") if b.strip()]
    return "".join("[[variant]]" + b for b in blocks if any(f'name = "{n}"' in b for n in names))


def test_pool_fleet_builds_the_same_bytes(local_fleet, tiny_pipeline, tmp_path: Path, stable_sources) -> None:
    """--jobs 2: each variant in a worker process of its own, on the driver's shared work (cache hits), gives
    the in-process fleet's bytes; a failed gate fails that variant alone (a killed worker: the next test)."""
    folder, _, _ = local_fleet
    config = tmp_path / "fusionc.toml"
    config.write_text(SHARED.format(ckpt=tiny_pipeline("sd15")).replace('cache = "cache"', f'cache = "{folder / "cache"}"')
                      + variant_tables("onnx", "too-strict"))
    result = CliRunner().invoke(main, ["compile", "--config", str(config), "--jobs", "2",
                                       "--report", str(tmp_path / "pool.json")])
    assert result.exit_code == 1, result.output
    report = json.loads((tmp_path / "pool.json").read_text())
    assert report["executor"] == {"name": "local", "jobs": 2} and report["failed"] == ["too-strict"]
    assert {v["name"]: v["status"] for v in report["variants"]} == {"onnx": "passed", "too-strict": "failed"}
    assert (tmp_path / "build" / "strict" / "manifest.json").is_file()  # a gate fails after the build is written
    pids = {v["pid"] for v in report["variants"]}
    assert len(pids) == 2 and os.getpid() not in pids  # one worker process per variant
    for variant in report["variants"]:  # the workers keyed the cache as the driver did: no export of their own
        assert all(c["cache"].startswith("hit") for c in variant["components"].values()), variant["name"]
    for out in ("onnx", "strict"):
        assert artifacts(tmp_path / "build" / out) == artifacts(folder / "build" / out), out
    assert not [p for p in (tmp_path / "build").iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")]


def four_onnx_jobs(local_fleet, tmp_path: Path) -> tuple:
    """(checkpoint view, outs, jobs): four onnx variants of the fleet's checkpoint sharing its cache, for the
    executors' failure and interrupt tests."""
    from fusionc.cache import source_hashes
    from fusionc.checkpoint import load_checkpoint
    from fusionc.core.options import CompileOptions
    from fusionc.variant import VariantJob

    folder, _, _ = local_fleet
    ckpt = json.loads((folder / "build" / "onnx" / "manifest.json").read_text())["checkpoint"]["path"]
    view = load_checkpoint(Path(ckpt)).shareable()
    options = CompileOptions(target="onnx", components=("text_encoder", "unet"), verify_steps=1, verify_prompts=1)
    outs = [tmp_path / f"v{i}" for i in range(4)]
    jobs = [VariantJob(f"v{i}", out, options, {}, folder / "cache", source_hashes()) for i, out in enumerate(outs)]
    return view, outs, jobs


def test_pool_worker_death_fails_alone_and_ctrl_c_leaves_no_partial_build(local_fleet, tmp_path: Path,
                                                                           stable_sources) -> None:
    """A worker killed (SIGKILL, as the OOM killer does) fails its variant only, the next one starts; Ctrl-C
    then stops the running workers: every out is a whole build or absent, no temporary folder is left."""
    import multiprocessing
    import signal
    import threading
    import time

    from fusionc.fleet_pool import run_pool

    view, outs, jobs = four_onnx_jobs(local_fleet, tmp_path)

    def kill_v1() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = [p for p in multiprocessing.active_children() if p.name == "fusionc-v1"]
            if found:
                time.sleep(0.5)
                os.kill(found[0].pid, signal.SIGKILL)
                return
            time.sleep(0.05)

    seen = []

    def on_result(result) -> None:
        seen.append(result)
        if len(seen) == 2:  # the killed one and the first to finish: Ctrl-C while v2 runs
            raise KeyboardInterrupt

    killer = threading.Thread(target=kill_v1)
    killer.start()
    with pytest.raises(KeyboardInterrupt):
        run_pool(jobs, view, 2, on_result)
    killer.join()
    assert seen[0].name == "v1" and seen[0].status == "error" and "killed by signal 9" in seen[0].error
    assert seen[1].status == "passed" and seen[1].pid != os.getpid()
    assert not outs[1].exists() and not outs[3].exists()  # killed; never started
    assert (Path(seen[1].out) / "manifest.json").is_file()
    for out in outs:
        assert not out.exists() or (out / "manifest.json").is_file(), out
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".work-" in p.name]
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("fusionc-")]


def test_jobs_without_a_fleet_is_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["compile", "--jobs", "2", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "needs a --config file" in result.output and not (tmp_path / "o").exists()


try:  # only the Ray tests need the extra (a module-level importorskip skipped every fleet test without it)
    import ray
except ImportError:
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason='the Ray executor needs the ray extra: pip install -e ".[test,ray]"')


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module's Ray tests, started and stopped by fusionc's own ray_session (2 CPUs)."""
    from fusionc.ray_executor import ray_session

    with ray_session() as info:
        assert info["started_here"] and info["cpus"] == 2 and info["nodes"] == 1
        yield info
    assert not ray.is_initialized()  # the local Ray fusionc started is stopped after the block


@needs_ray
def test_ray_fleet_builds_the_same_bytes(local_fleet, local_ray, tiny_pipeline, tmp_path: Path, stable_sources) -> None:
    """The same three variants as Ray tasks on a local 2-CPU Ray: one report, the local fleet's bytes, built in
    Ray's workers from the driver's shared work (cache hits)."""
    folder, _, _ = local_fleet
    config = write_config(tmp_path, tiny_pipeline("sd15"))
    config.write_text(config.read_text().replace('cache = "cache"', f'cache = "{folder / "cache"}"'))
    result = CliRunner().invoke(main, ["compile", "--config", str(config), "--executor", "ray",
                                       "--report", str(tmp_path / "ray.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "ray.json").read_text())
    assert report["executor"]["name"] == "ray" and report["executor"]["cpus"] == 2
    assert {v["executor"] for v in report["variants"]} == {"ray"} and all("/" in v["node"] for v in report["variants"])
    assert all(v["pid"] != os.getpid() for v in report["variants"])  # built in Ray's workers, not the driver
    for variant in report["variants"]:
        assert all(c["cache"].startswith("hit") for c in variant["components"].values()), variant["name"]
    for out in BUILT:
        assert artifacts(tmp_path / "build" / out) == artifacts(folder / "build" / out), out
    assert ray.is_initialized()  # a Ray the fleet joined (not started) is left running


@needs_ray
def test_interrupted_ray_fleet_leaves_no_partial_build(local_fleet, local_ray, tmp_path: Path, stable_sources) -> None:
    """Ctrl-C while variants run: pending tasks are cancelled (their workers killed), every out is whole or
    absent and the killed builds' temporary folders are removed."""
    from fusionc.ray_executor import run_ray

    view, outs, jobs = four_onnx_jobs(local_fleet, tmp_path)

    def interrupt(result) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_ray(jobs, view, None, interrupt)
    assert sum((out / "manifest.json").is_file() for out in outs) < len(outs)  # some were stopped
    for out in outs:
        assert not out.exists() or (out / "manifest.json").is_file(), out
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".work-" in p.name]


def test_ray_asks_for_the_memory_of_the_largest_component_times_the_targets_factor() -> None:
    """Two SD-scale QNN builds (~11 GB each) must not be scheduled side by side on one 24 GB node."""
    from types import SimpleNamespace

    from fusionc.ray_executor import PEAK_PER_WEIGHT_BYTE, RUNTIME_BYTES, memory_request

    sizes = {"text_encoder": 0.5e9, "unet": 3.44e9, "vae": 0.2e9}
    view = SimpleNamespace(weight_bytes=lambda folder: sizes.get(folder, 0), component_names=lambda: list(sizes))

    def job(target: str, components, siblings=()) -> SimpleNamespace:
        return SimpleNamespace(options=SimpleNamespace(target=target, components=components, qnn_max_build_bytes=None),
                               sibling_devices=siblings)

    sd15_qnn = memory_request(job("qnn", ("unet",)), view)
    assert sd15_qnn == RUNTIME_BYTES + int(3.44e9 * PEAK_PER_WEIGHT_BYTE["qnn"]) and 2 * sd15_qnn > 24e9
    assert memory_request(job("coreml", None), view) == RUNTIME_BYTES + int(3.44e9 * 2.0)  # None: every component
    assert memory_request(job("qnn", ("vae_decoder",)), view) == RUNTIME_BYTES + int(0.2e9 * 3.5)  # vae_* -> vae/
    # the first of two QNN devices also runs the other's context build, bounded by --qnn-max-build-bytes (8 GiB)
    assert memory_request(job("qnn", ("unet",), ("snapdragon-8-gen-3",)), view) == sd15_qnn + (8 << 30)


def test_a_shared_key_of_the_variants_target_is_not_refused_for_the_default_target(tmp_path: Path) -> None:
    """[coreml] deployment_target shared by Core ML variants was refused as 'not an option of --target onnx' (the
    shared tables' default target): each variant checks the shared keys for its own target."""
    from fusionc.config import check_shared_keys, read_variants, resolve

    config = tmp_path / "fusionc.toml"
    config.write_text('[coreml]\ndeployment_target = "iOS18"\n[[variant]]\nname = "a"\ntarget = "coreml"\n'
                      '[[variant]]\nname = "b"\ntarget = "qnn"\n')
    ctx = compile_command.make_context("compile", ["--config", str(config)])
    shared = resolve(ctx, ctx.params, fleet=True)
    a, b = (resolve(ctx, ctx.params, table) for table in read_variants(config))
    check_shared_keys(shared, [a, b])
    assert (a.options.deployment_target, b.options.target) == ("iOS18", "qnn")


def test_the_fleet_table_counts_one_variant_in_the_singular() -> None:
    """`--variant NAME` builds one: its table said "fusionc fleet: 1 variants"."""
    from rich.console import Console

    from fusionc.fleet_report import print_table

    row = {"name": "iphone15-6bit", "target": "coreml", "device": "iphone-15-pro", "bytes": 5.17e6, "status": "passed",
           "error": None, "worst_psnr_db": 55.1, "latency_ms_per_step": 2.0, "latency_ms_per_generation": 17.4,
           "gates": [], "wall_s": 14.7, "executor": "local", "node": "vm", "pid": 1}
    console = Console(record=True, width=160)
    for rows, title in (([row], "fusionc fleet: 1 variant, executor local"),
                        ([row, {**row, "name": "b"}], "fusionc fleet: 2 variants, executor local")):
        print_table({"variants": rows, "executor": {"name": "local"}, "wall_s": 22.1}, console)
        assert title in console.export_text()


def test_a_ray_fleet_without_ray_is_refused_before_the_shared_work(tiny_pipeline, tmp_path: Path, monkeypatch) -> None:
    """Without Ray installed, `--config fusionc.toml --executor ray` loaded the checkpoint, ran the torch input sets
    and exported every component (2 minutes for the built-in model) before saying that Ray was missing."""
    import sys

    import fusionc.fleet

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    monkeypatch.setattr(fusionc.fleet, "prepare", lambda *a, **k: pytest.fail("the shared work ran"))
    config = write_config(tmp_path, tiny_pipeline("sd15"))
    result = CliRunner().invoke(main, ["compile", "--config", str(config), "--executor", "ray"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines()[-1] == 'fusionc: error: --executor ray needs Ray: pip install "fusionc[ray]"'
    assert not (tmp_path / "build").exists()
