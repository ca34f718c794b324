"""The compile driver: checkpoint -> ONNX per component -> target pass pipeline -> lowering -> verification.

It owns the order of stages and the build folder; what happens to a graph is decided by the target's pass
list (targets/*/__init__.py) and the passes themselves.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx_ir as ir

import fusionc
from fusionc import buildfs, gates
from fusionc import cache as cache_keys
from fusionc.cache import ComponentCache
from fusionc.checkpoint import Checkpoint, load_checkpoint, module_bytes
from fusionc.core.devices import get_device
from fusionc.core.errors import BadInputError
from fusionc.core.store import cache_root
from fusionc.gates import gate_psnr  # noqa: F401  (re-exported: `fusionc verify` imports it from here)
from fusionc.dit import geometry as dit_geometry
from fusionc.export import component_spec, export_component, image_size
from fusionc.core.memory import forget_removed_values, offload_weights, release_freed_memory, resident_weight_bytes
from fusionc.core.options import (ALL_COMPONENTS, DEFAULT_COMPONENTS, CompileOptions, check_target_options, flag_of,
                                  options_in_effect, targets_of)
from fusionc.core.progress import STAGE_PEAK_RSS_MB, stage, track
from fusionc.core.reproducible import reset_name_state, strip_fold_provenance, strip_host_paths
from fusionc.targets import get_target, verification_runner
from fusionc.core.context import ComponentContext
from fusionc.core.executor import SERIAL, TaskExecutor
from fusionc.core.numerics import Feeds
from fusionc.passes.entry import PassEntry, enabled
from fusionc.core.context import CALIBRATION, SELECTION, VERIFICATION
from fusionc.input_cache import cached_input_sets, missing_sets
from fusionc.inputs import InputSet, needed_roles, role_spec
from fusionc.verify import compare, ran_on, record, reference_outputs


RELEASE_NOW_BYTES = 256 << 20  # freeing more than this is worth a full gc (~0.5 s) at once
OFFLOAD_MIN_BYTES = 256 << 20  # an exported graph with more resident weights is moved to external data (memory.py)
FP16_REPORT_KEY = "fusionc.fp16_safety"  # model metadata the precision pass leaves for the manifest


@dataclass
class PassRecord:
    name: str
    seconds: float
    modified: bool
    nodes_before: int
    nodes_after: int
    why: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "seconds": round(self.seconds, 3), "modified": self.modified,
                "nodes_before": self.nodes_before, "nodes_after": self.nodes_after, "why": self.why}


def count_nodes(model: ir.Model) -> int:
    return sum(1 for _ in model.graph.all_nodes())


def run_passes(model: ir.Model, entries: list[PassEntry], ctx: ComponentContext) -> list[PassRecord]:
    """Run each entry the options switch on, in place, recording its time, `modified` flag and node counts."""
    records = []
    for entry in track(enabled(entries, ctx.options), "passes"):
        the_pass = entry.make(ctx)
        before = count_nodes(model)
        start = time.perf_counter()
        result = the_pass(model)
        if result.model is not model:
            raise RuntimeError(f"pass {type(the_pass).__name__} returned a new model; target passes must be in place")
        records.append(PassRecord(type(the_pass).__name__, time.perf_counter() - start, bool(result.modified),
                                  before, count_nodes(model), entry.why))
    return records


def select_components(checkpoint: Checkpoint, options: CompileOptions, target: Any) -> list[str]:
    available = checkpoint.component_names()
    if options.components is None:
        wanted = DEFAULT_COMPONENTS + tuple(getattr(target, "extra_default_components", ()))
        return [c for c in available if c in wanted]
    for name in options.components:
        if name not in ALL_COMPONENTS:
            raise BadInputError(f"unknown component '{name}': choose from {', '.join(ALL_COMPONENTS)}")
        if name not in available:
            raise BadInputError(f"component '{name}' is not in the checkpoint, which has {', '.join(available)}")
    return list(options.components)


def _check_text_length(checkpoint: Checkpoint, options: CompileOptions) -> None:
    """--text-length counts T5 tokens (a diffusion transformer's prompt, or a T5 folder alone): a UNet pipeline's
    CLIP encoders take their own fixed length, so it would have no effect there (was accepted and ignored)."""
    if options.text_length is None or checkpoint.dit_family is not None:
        return
    if "T5EncoderModel" in checkpoint.classes.values():
        return
    raise BadInputError(f"--text-length {options.text_length} sets the T5 tokens of a diffusion transformer's prompt, "
                        f"and '{checkpoint.path}' has no transformer or T5 (its CLIP text encoders take a fixed "
                        "length): drop --text-length")


# the options that size each tuning set (verification's stay meaningful under --no-verify: `fusionc verify` reads them)
SET_OPTIONS = {CALIBRATION: ("calibration_prompts", "calibration_steps"),
               SELECTION: ("selection_prompts", "selection_steps")}


def _check_unused_sets(roles: tuple[str, ...], options: CompileOptions, config: dict[str, Any] | None) -> None:
    """A tuning set's size given on the command line (or in the build's own [[variant]] table) for a build that does
    not collect that set (an onnx fp32 or Core ML fp32 build has no calibration set; only a quantized QNN / onnx
    w8a8 build or a mixed-bit search has a selection set) would have no effect: refused before the export. A config
    file's shared keys may size every set, for whichever target reads the file (docs/ci.md), and are not refused.
    `roles`: the sets this compile collects (fusionc.inputs.needed_roles)."""
    given = _set_for_this_build(config)
    if given is None:
        return
    for role, names in SET_OPTIONS.items():
        unused = [n for n in names if role not in roles and n in given]
        if unused:
            flags = "/".join(flag_of(n) for n in unused)
            raise BadInputError(f"{flags} size{'s' if len(unused) == 1 else ''} the {role} set, and this "
                                f"{options.target} build collects none (it has {', '.join(roles) or 'no input set'}): "
                                f"drop {'it' if len(unused) == 1 else 'them'}")


def _check_recipe_file(options: CompileOptions) -> None:
    """A --recipe to re-apply (no --palettize auto:DB to search and save one) must exist. Checked here, not when
    the options are resolved: a compile line earlier in a script may write it."""
    if (options.target in targets_of("recipe") and options.recipe is not None and not options.quantize_weights
            and options.palettize is None and not Path(options.recipe).is_file()):
        raise BadInputError(f"--recipe '{options.recipe}' does not exist: give a saved recipe to re-apply, or add "
                            "--palettize auto:DB to search one and save it there")


def _check_compression_components(options: CompileOptions, names: list[str], given: set[str] | None = None) -> None:
    """What --compress-components and a re-applied --recipe name must be built, and how a re-applied recipe
    palettizes: refused before the export. `given`: the options the user set (None: unknown, the API)."""
    from fusionc.passes.compression.dispatch import compressed_components, parse_palettize, wants_compression

    if options.target not in targets_of("compress_components") or not wants_compression(options):
        return
    if options.compress_components:
        missing = [c for c in compressed_components(options) if c not in names]
        if missing:
            raise BadInputError(f"--compress-components names {', '.join(missing)}, which this build does not have "
                                f"(it builds {', '.join(names)}): drop it or add it to --components")
    if options.recipe is not None and parse_palettize(options.palettize)[1] is None and not options.quantize_weights:
        from fusionc.passes.compression.mixed_bit import load_recipe

        lacking = [c for c in compressed_components(options) if c in names and load_recipe(options.recipe, c) is None]
        if lacking:
            raise BadInputError(f"recipe {options.recipe} has no entry for {', '.join(lacking)}: add --palettize "
                                "auto:DB to search one, or give the recipe file saved for it")
    if options.recipe is not None and not options.quantize_weights:
        _check_recipe_grouping(options, names, given)


def _set_for_this_build(config: dict[str, Any] | None) -> set[str] | None:
    """The options set for this build alone (fusionc.config.CompileSettings.manifest_entry): flags and the build's
    own [[variant]] table, not a config file's shared keys. None without a configuration (the API)."""
    if config is None or "from_command_line" not in config:
        return None
    return set(config["from_command_line"]) | set(config.get("from_variant", []))


def _given_options(config: dict[str, Any] | None) -> set[str] | None:
    """The options the user set: flags and config-file keys; a fleet variant's shared file keys are not counted
    (they may be for the other variants). None without a configuration (the API)."""
    given = _set_for_this_build(config)
    if given is None or config.get("variant"):
        return given
    return given | set(config.get("from_config_file", []))


def _check_recipe_grouping(options: CompileOptions, names: list[str], given: set[str] | None) -> None:
    """A re-applied recipe palettizes as it was saved (its granularity and group size, which its bits were chosen
    for): a --granularity or --group-size that differs would have no effect, so it is refused before the export.
    `given`: the options the user set (flags, config-file keys); None (the API): those away from their default."""
    from fusionc.passes.compression.dispatch import compressed_components
    from fusionc.passes.compression.mixed_bit import load_recipe

    defaults = CompileOptions()
    is_set = (lambda n: n in given) if given is not None else (  # noqa: E731
        lambda n: getattr(options, n) != getattr(defaults, n))
    for name in compressed_components(options):
        recipe = load_recipe(options.recipe, name) if name in names else None
        if recipe is None:
            continue  # searched (--palettize auto:DB) with the options, or refused above
        group = recipe.group_size if recipe.granularity == "per_grouped_channel" else None
        saved = recipe.granularity + (f" with groups of {group}" if group else "")
        fix = "drop it, or add --palettize auto:DB with another --recipe path to search a recipe for it"
        if is_set("granularity") and options.granularity != recipe.granularity:
            raise BadInputError(f"--granularity {options.granularity} has no effect: recipe {options.recipe} "
                                f"re-applies {name} as saved ({saved}); {fix}")
        if is_set("group_size") and group is not None and options.group_size != group:
            raise BadInputError(f"--group-size {options.group_size} has no effect: recipe {options.recipe} "
                                f"re-applies {name} as saved ({saved}); {fix}")


def compile_checkpoint(checkpoint_path: Path | None, options: CompileOptions, out: Path,
                       config: dict[str, Any] | None = None, cache_dir: Path | None = None, *,
                       checkpoint: Checkpoint | None = None, executor: TaskExecutor | None = None,
                       estimate: bool = False, sibling_devices: tuple[str, ...] = ()) -> dict[str, Any]:
    """Compile and verify; returns the manifest. Raises GateFailedError (exit 1) after writing when a gate fails.

    `config`: the effective configuration (fusionc.config) stored in the manifest; `cache_dir`: --cache,
    else the FUSIONC_CACHE environment variable, else no cache. `checkpoint`: one already loaded (a fleet's
    shared view, Checkpoint.shareable) instead of loading `checkpoint_path`; `executor`: where the passes'
    independent measurements run (fusionc.core.executor; default in this process); `estimate`: record the cost
    model's latency estimate of every component even without a latency gate (fleet reports);
    `sibling_devices`: the devices of a fleet's other variants that differ from this one only in the device,
    whose device-specific work the target may do now, into the cache (ComponentContext.sibling_devices).
    """
    cache_dir = cache_root(cache_dir)
    target = get_target(options.target)
    check_target_options(options)  # an option the target cannot honour: refused before any work
    target.pipeline(options)  # and options the pipeline refuses (compression combinations), also before any work
    device = get_device(options.device, options.target)
    if device is not None and options.device is not None:  # "iPhone 14 Pro" is recorded as its slug
        options = dataclasses.replace(options, device=device.name)
    if hasattr(target, "check_options"):  # what the target cannot build, refused before any work
        target.check_options(options)
    _check_recipe_file(options)
    buildfs.check_out(out)  # fail in a second, not after the checkpoint and the trajectory
    timings: dict[str, float] = {}
    component_cache = ComponentCache(cache_dir) if cache_dir is not None else None
    with stage("load checkpoint", timings):
        checkpoint = checkpoint if checkpoint is not None else load_checkpoint(checkpoint_path, options.allow_pickle)
    names = select_components(checkpoint, options, target)
    roles = needed_roles(target, options)
    _check_text_length(checkpoint, options)
    if hasattr(target, "check_checkpoint"):  # what the target cannot build of this checkpoint, before the export
        target.check_checkpoint(checkpoint, options)
    _check_unused_sets(roles, options, config)
    _check_compression_components(options, names, _given_options(config))
    height, width = image_size(checkpoint, options)
    sets = cached_input_sets(checkpoint, options, names, roles, component_cache, timings)
    _release_torch_modules(checkpoint, names)
    empty = InputSet(role_spec(options, VERIFICATION))
    verification, calibration, selection = (sets.get(r, empty) for r in (VERIFICATION, CALIBRATION, SELECTION))
    manifest: dict[str, Any] = {
        "fusionc_version": fusionc.__version__,
        "target": options.target,
        "device": device.name if device else None,
        "checkpoint": {"path": str(checkpoint.path.resolve()), "sha256": checkpoint.sha256},
        "image": {"height": height, "width": width},
        "scaling_factor": _vae_scaling_factor(checkpoint),
        **({"omitted_components": checkpoint.omitted} if checkpoint.omitted else {}),
        **({"dit": dit_geometry(checkpoint, options).to_json()} if checkpoint.dit_family else {}),
        "options": options_in_effect(options),  # only what this target honours
        **({"config": config} if config is not None else {}),
        "host": {"python": platform.python_version(), "machine": platform.machine()},
        "inputs": {role: sets[role].describe() for role in sets},
        "components": {},
        "passes": [],
    }
    with buildfs.atomic_build(out) as build, _scratch(out) as scratch_dir:
        scratch = Path(scratch_dir)
        order = _largest_first(checkpoint, names)
        for name in order:
            remaining = order[order.index(name) + 1:]
            spec = LazySpec(checkpoint, name, options,
                            release=lambda remaining=remaining: _release_torch_modules(checkpoint, remaining))
            for judged in (verification, calibration) if options.verify else ():
                if name not in judged.outputs and judged.feeds.get(name):
                    with stage(f"{name}: torch reference outputs ({judged.spec.role})", timings):
                        judged.outputs[name] = reference_outputs(spec().reference, judged.feeds[name])
            reference = RecordedReference([s_ for s_ in (calibration, selection, verification)], name, spec)
            ctx = ComponentContext(name, options, scratch / name, calibration.feeds.get(name, []), reference,
                                   selection.feeds.get(name, []), executor=executor or SERIAL,
                                   cache_dir=component_cache.root if component_cache is not None else None,
                                   sibling_devices=sibling_devices)
            ctx.work_dir.mkdir(parents=True, exist_ok=True)
            model, records, cached = _export_and_optimize(spec, target, ctx, timings, component_cache,
                                                          (checkpoint.sha256, (height, width), device))
            latency = gates.estimate_latency(model, name, device, options) if options.max_latency_ms or estimate else None
            # Past the passes the torch module is not needed (its reference outputs are computed): free it before
            # the lowering, so a target that saves the graph and drops its weights (qnn) frees them for real.
            ctx = dataclasses.replace(ctx, reference=None)
            del spec, reference
            freed = _release_torch_modules(checkpoint, remaining)
            with stage(f"{name}: lower to {options.target}", timings):
                lowered = target.lower(model, build, ctx)
            fp16_report = model.metadata_props.get(FP16_REPORT_KEY)
            del model, ctx
            if freed >= RELEASE_NOW_BYTES:  # the graph is all reference cycles: free its weights now, not at a later gc
                release_freed_memory()
            manifest["components"][name] = {
                "files": lowered.files, "bytes": sum(_bytes(build / f) for f in lowered.files),
                "inputs": lowered.inputs, "outputs": lowered.outputs, **lowered.extra,
                "passes": [r.to_json() for r in records]}
            if cached:
                manifest["components"][name]["cache"] = cached
            if latency is not None:
                manifest["components"][name]["latency_estimate"] = latency
            if fp16_report:
                manifest["components"][name]["fp16_safety"] = json.loads(fp16_report)
            manifest["passes"] += [{"component": name, **r.to_json()} for r in records]
        manifest["components"] = {n: manifest["components"][n] for n in names}  # the checkpoint's order
        target.finalize(build, checkpoint, manifest, options)
        for name in names if options.verify else []:
            runner = verification_runner(target, build, name, manifest, options)
            feeds = verification.feeds[name]
            with stage(f"{name}: verify on {options.target}", timings):
                scores = compare(runner, verification.outputs[name], track(feeds, "verification inputs", total=len(feeds)))
            record(manifest["components"][name], scores, ran_on(runner))
            if calibration.outputs.get(name):  # the inputs it was tuned on: the gap to psnr_db is the generalization gap
                picks = _spread(len(calibration.feeds[name]), len(verification.feeds[name]))  # as many as verified
                feeds = [calibration.feeds[name][i] for i in picks]
                with stage(f"{name}: PSNR on the calibration set", timings):
                    scores = compare(runner, [calibration.outputs[name][i] for i in picks],
                                     track(feeds, "calibration inputs", total=len(feeds)))
                manifest["components"][name]["psnr_db_calibration"] = scores["psnr_db"]
            del runner
        manifest["timings"] = timings
        manifest["peak_rss_mb_after_stage"] = {k: v for k, v in STAGE_PEAK_RSS_MB.items() if k in timings}
        results = gates.evaluate(manifest, options)
        manifest["gates"] = [r.to_json() for r in results]
        buildfs.write_json(build / buildfs.MANIFEST, manifest)
    gates.enforce(results, manifest)
    return manifest


def _spread(n: int, count: int) -> list[int]:
    """`count` indices spread evenly over range(n), first and last included (all of them when count >= n)."""
    if count >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / max(count - 1, 1)) for i in range(count)})


def _export(spec: Any, options: CompileOptions) -> ir.Model:
    model = export_component(spec, options.opset)
    strip_host_paths(model)  # the exporter's stack traces hold this machine's paths: not reproducible
    reset_name_state(model)  # name new nodes as a model loaded from the --cache would
    return model


class LazySpec:
    """component_spec on first call: a compile whose export comes from the --cache never touches the torch module.

    `release` (the driver's): frees the torch modules no later component needs, once this one is exported; after
    it, the torch reference is only what the input sets recorded (RecordedReference), never the module again."""

    def __init__(self, checkpoint: Checkpoint, name: str, options: CompileOptions,
                 release: Any = None) -> None:
        self.checkpoint, self.name, self.options, self.spec = checkpoint, name, options, None
        self._release, self.released = release, False

    def __call__(self) -> Any:
        if self.released:
            raise RuntimeError(f"the torch module of {self.name} was released after its export: a pass asked for "
                               "its torch outputs on inputs no input set recorded (use the recorded trajectories)")
        if self.spec is None:
            self.spec = component_spec(self.checkpoint, self.name, self.options)
        return self.spec

    def release(self) -> int:
        """Drop the wrapper and free the torch modules no later component needs; returns their bytes."""
        if self._release is None:
            return 0
        self.spec, self.released = None, True
        return self._release()


class RecordedReference:
    """The fp32 torch reference of one component: the outputs recorded along the input sets' trajectories for
    their own inputs (the same values torch returns: the trajectory ran the same module on them), torch itself
    (loaded on first use) for any other input."""

    def __init__(self, sets: list[Any], name: str, spec: LazySpec) -> None:
        self.known = {id(f): o for s in sets for f, o in zip(s.feeds.get(name, []), s.outputs.get(name, []))}
        self.spec = spec

    def __call__(self, feeds: Feeds) -> Feeds:
        found = self.known.get(id(feeds))
        return found if found is not None else self.spec().reference(feeds)


def _run_stage(model: ir.Model, entries: list[PassEntry], ctx: ComponentContext) -> list[PassRecord]:
    records = run_passes(model, entries, ctx)
    forget_removed_values(model)  # the weights the passes replaced would stay pinned through the lowering
    strip_fold_provenance(model)  # the folder's notes differ between a graph kept in memory and one from the --cache
    reset_name_state(model)  # later passes and the lowering name alike whether these ran or came from the --cache
    return records


def optimize(model: ir.Model, target: Any, ctx: ComponentContext) -> list[PassRecord]:
    """The target's pass list on an exported model in the compile's two stages (the generic passes, then the
    target's own), so the graph and its node names are the compile's (`fusionc debug-accuracy` rebuilds it)."""
    generic, specific = split_generic(target.pipeline(ctx.options))
    return _run_stage(model, generic, ctx) + _run_stage(model, specific, ctx)


def split_generic(entries: list[PassEntry]) -> tuple[list[PassEntry], list[PassEntry]]:
    """(the generic passes every target starts with, the target's own): the first part is cached per export."""
    from fusionc.passes.generic import default_pipeline

    names = [e.name for e in default_pipeline()]
    if [e.name for e in entries[:len(names)]] == names:
        return entries[:len(names)], entries[len(names):]
    return [], entries


def _after_export(model: ir.Model, spec: LazySpec, ctx: ComponentContext, timings: dict[str, float]) -> None:
    """Past the export the passes need the graph, not torch: at SDXL size the torch module (10 GB fp32) and
    the graph's copies of its weights would otherwise sit side by side through every pass. The weights move to
    external data in the scratch folder (memory-mapped), then the module is freed."""
    moved = 0
    # first the values the exporter made graph inputs and then replaced: onnx_ir's input counter keeps them, with
    # their torch tensors, which no offload reaches (at SDXL size 8 GB stayed through the generic passes)
    forget_removed_values(model)
    if ctx.work_dir is not None and resident_weight_bytes(model) >= OFFLOAD_MIN_BYTES:
        with stage(f"{spec.name}: weights to external data", timings):
            moved = offload_weights(model, ctx.work_dir / "weights", OFFLOAD_MIN_BYTES)
    freed = spec.release()  # collects itself when it frees much
    if moved >= RELEASE_NOW_BYTES and freed < RELEASE_NOW_BYTES:
        release_freed_memory()


def _export_and_optimize(spec: LazySpec, target: Any, ctx: ComponentContext, timings: dict[str, float],
                         cache: ComponentCache | None, key_parts: tuple) -> tuple[ir.Model, list[PassRecord], str | None]:
    """Export, the generic passes and the target's passes, or their cached results (--cache):
    (model, pass records, cache status). The generic stage is shared by every target and option set."""
    name, options = spec.name, ctx.options
    generic, specific = split_generic(target.pipeline(options))
    if cache is None:
        with stage(f"{name}: export", timings):
            model = _export(spec(), options)
        _after_export(model, spec, ctx, timings)
        with stage(f"{name}: passes", timings):
            return model, optimize(model, target, ctx), None
    checkpoint_sha, image, device = key_parts
    export_key = cache_keys.export_key(checkpoint_sha, name, image, options)
    generic_key = cache_keys.generic_key(export_key)
    optimized_key = cache_keys.optimized_key(export_key, options, device.name if device else None)
    hit = cache.load(optimized_key)
    if hit is not None:
        timings[f"{name}: optimized ONNX from the cache"] = 0.0
        return hit.model, [PassRecord(**r) for r in hit.meta["passes"]], "hit: optimized"
    model, records, status = _generic_model(spec, ctx, timings, cache, export_key, generic_key, generic)
    with stage(f"{name}: passes", timings):
        records += _run_stage(model, specific, ctx)
    if not cache.ephemeral:  # a fleet's temporary cache: no other variant reads this variant's graph
        cache.store(optimized_key, model, {"stage": "optimized", "component": name,
                                           "passes": [dataclasses.asdict(r) for r in records]})
    return model, records, status


def _generic_model(spec: LazySpec, ctx: ComponentContext, timings: dict[str, float], cache: ComponentCache,
                   export_key: str, generic_key: str, generic: list[PassEntry]) -> tuple[ir.Model, list[PassRecord], str]:
    """The exported graph after the generic passes: from the cache, or exported (or loaded) and optimized."""
    name = spec.name
    hit = cache.load(generic_key)
    if hit is not None:
        timings[f"{name}: generic passes from the cache"] = 0.0
        return hit.model, [PassRecord(**r) for r in hit.meta["passes"]], "hit: generic"
    exported = cache.load(export_key)
    with stage(f"{name}: export" + (" (from the cache)" if exported else ""), timings):
        model = exported.model if exported else _export(spec(), ctx.options)
        if exported is None:
            cache.store(export_key, model, {"stage": "export", "component": name})
    _after_export(model, spec, ctx, timings)
    with stage(f"{name}: generic passes", timings):
        records = _run_stage(model, generic, ctx)
    cache.store(generic_key, model, {"stage": "generic", "component": name,
                                     "passes": [dataclasses.asdict(r) for r in records]})
    return model, records, "hit: export" if exported else "miss"


def prepare_shared(checkpoint: Checkpoint, variants: list[CompileOptions], cache: ComponentCache,
                   timings: dict[str, float]) -> dict[str, int]:
    """A fleet's shared work, done once before any variant: every input set (torch trajectories) the variants
    ask for, and each component's export and generic passes, all into `cache`. Returns how many of each were
    computed (not found in the cache); `trajectories` counts input sets."""
    done = {"trajectories": 0, "exports": 0, "generic": 0}
    seen: set[str] = set()
    for options in variants:
        target = get_target(options.target)
        names = select_components(checkpoint, options, target)
        image = image_size(checkpoint, options)
        missing = missing_sets(checkpoint, options, names, needed_roles(target, options), cache)
        if missing:
            cached_input_sets(checkpoint, options, names, tuple(missing), cache, timings)
            done["trajectories"] += len(missing)
        for name in names:
            export_key = cache_keys.export_key(checkpoint.sha256, name, image, options)
            generic_key = cache_keys.generic_key(export_key)
            if generic_key in seen or cache.has(generic_key):
                continue
            seen.add(generic_key)
            generic, _ = split_generic(get_target(options.target).pipeline(options))
            ctx = ComponentContext.for_options(options, name)
            _, _, status = _generic_model(LazySpec(checkpoint, name, options), ctx, timings, cache,
                                          export_key, generic_key, generic)
            done["exports"] += status == "miss"
            done["generic"] += 1
    return done


def _vae_scaling_factor(checkpoint: Checkpoint) -> float | None:
    """The latent scaling factor the denoising loop divides by before the VAE decoder."""
    vae = checkpoint.configs.get("vae")
    return float(vae.scaling_factor) if vae is not None and getattr(vae, "scaling_factor", None) else None


def _torch_folder(component: str) -> str:
    """The checkpoint folder whose torch module a component is exported from (vae_decoder, vae_encoder: vae)."""
    return "vae" if component.startswith("vae") else component


def _largest_first(checkpoint: Checkpoint, names: list[str]) -> list[str]:
    """Build order: the component with the most torch weights first. Every module not yet built stays resident,
    so the UNet's export and lowering (the peak at SD scale) should not also wait behind the others: building
    the text encoder first kept 3.4 GB of UNet weights resident through its lowering (8.2 GB peak)."""
    def weight_bytes(name: str) -> int:
        return checkpoint.weight_bytes(_torch_folder(name))
    return sorted(names, key=weight_bytes, reverse=True)  # stable: ties keep the checkpoint's order


def _release_torch_modules(checkpoint: Checkpoint, remaining: list[str]) -> int:
    """Free torch modules no remaining component needs (at SD scale each holds GBs); returns their bytes."""
    needed = {_torch_folder(n) for n in remaining}
    freed = 0
    for folder in [f for f in checkpoint.models if f not in needed]:
        freed += module_bytes(checkpoint.models.pop(folder))
    if freed >= RELEASE_NOW_BYTES:
        release_freed_memory()
    return freed


def _scratch(out: Path) -> tempfile.TemporaryDirectory:
    """A scratch folder next to --out (same disk) for intermediate files, removed afterwards."""
    out.resolve().parent.mkdir(parents=True, exist_ok=True)
    # the pid in the name lets the next compile remove it if this one is killed (buildfs._stale_temporaries)
    return tempfile.TemporaryDirectory(prefix=f".{out.name}.work-{os.getpid()}-", dir=out.resolve().parent)


def _bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0
