"""`fusionc verify BUILD`: re-run verification of a finished build against its torch checkpoint.

By default on the build's own verification set; `--prompts "a,b" --seeds 3,4 --steps 8` on inputs the user
chooses (any prompts the checkpoint's tokenizer takes), so nobody has to trust the compile's choice of inputs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from fusionc import buildfs
from fusionc.checkpoint import checkpoint_sha256, load_checkpoint, recorded_checkpoint
from fusionc.core.errors import BadInputError
from fusionc.export import component_spec
from fusionc.core.options import CompileOptions
from fusionc.pipeline import gate_psnr
from fusionc.core.progress import stage
from fusionc.targets import get_target, verification_runner
from fusionc.core.context import CALIBRATION, SELECTION, VERIFICATION
from fusionc.inputs import collect, role_spec, role_steps, user_spec
from fusionc.verify import compare, ran_on, record, reference_outputs


def options_from_manifest(manifest: dict[str, Any]) -> CompileOptions:
    fields = {f.name for f in dataclasses.fields(CompileOptions)}
    saved = {k: v for k, v in manifest.get("options", {}).items() if k in fields}
    if saved.get("components") is not None:
        saved["components"] = tuple(saved["components"])
    if saved.get("recipe") is not None:
        saved["recipe"] = Path(saved["recipe"])
    return CompileOptions(**saved)


def tuned_on(manifest: dict[str, Any], prompts: tuple[str, ...]) -> dict[str, list[str]]:
    """The prompts of `prompts` that are in one of the build's tuning sets (calibration, selection), by set."""
    found = {}
    for role in (CALIBRATION, SELECTION):
        recorded = set((manifest.get("inputs", {}).get(role) or {}).get("prompts", []))
        if recorded & set(prompts):
            found[role] = [p for p in prompts if p in recorded]
    return found


def verify_build(build: Path, min_psnr: float | None = None, prompts: tuple[str, ...] = (),
                 seeds: tuple[int, ...] = (), steps: int | None = None,
                 qnn_runtime: str | None = None) -> dict[str, Any]:
    """Recompute each component's PSNR, print it, apply the gate.

    Without `prompts`: the build's own verification set (the manifest's options), and the manifest's
    `psnr_db` is updated. With `prompts` (and optionally `seeds`, one per prompt, and `steps`): trajectories
    of the user's choosing; the result goes to the manifest under `verify_runs`, beside the compile's figures."""
    manifest = buildfs.read_manifest(build)
    source = recorded_checkpoint(manifest["checkpoint"])
    if seeds and not prompts:
        raise BadInputError("--seeds needs --prompts: give the prompts the seeds belong to")
    if seeds and len(seeds) not in (1, len(prompts)):
        raise BadInputError(f"--seeds has {len(seeds)} values for {len(prompts)} prompts: give one per prompt, or one to start from")
    if not source.exists():
        raise BadInputError(f"the checkpoint this build came from, '{source}', is gone: verification needs it")
    if checkpoint_sha256(source) != manifest["checkpoint"]["sha256"]:
        raise BadInputError(f"checkpoint '{source}' changed since the build was made: recompile before verifying")
    options = options_from_manifest(manifest)
    if steps is not None:
        options = dataclasses.replace(options, verify_steps=steps)
    if qnn_runtime is not None:
        if manifest["target"] != "qnn":
            raise BadInputError(f"--qnn-verify-runtime is for QNN builds and '{build}' was built for "
                                f"--target {manifest['target']}: drop it")
        options = dataclasses.replace(options, qnn_verify_runtime=qnn_runtime)
    # --steps is taken as given (role_steps would raise it to a mixed-bit build's generation length, silently)
    steps = steps or role_steps(options, VERIFICATION)
    spec = user_spec(tuple(prompts), tuple(seeds), steps) if prompts else \
        dataclasses.replace(role_spec(options, VERIFICATION), steps=steps)
    checkpoint = load_checkpoint(source, options.allow_pickle)
    target = get_target(manifest["target"], f"verifying a {manifest['target']} build")
    with stage("reference trajectories (torch)"):
        inputs = collect(checkpoint, options, list(manifest["components"]), {VERIFICATION: spec})[VERIFICATION]
    feeds, expected = inputs.feeds, inputs.outputs
    results: dict[str, Any] = {}
    where: dict[str, dict[str, str]] = {}
    print("PSNR vs torch on " + (f"the {len(spec.prompts)} prompt(s) given" if prompts else
                                 "the build's held-out verification set") + f", {spec.steps} step(s):")
    for name in manifest["components"]:
        with stage(f"{name}: verify on {manifest['target']}"):
            if name not in expected:
                expected[name] = reference_outputs(component_spec(checkpoint, name, options).reference, feeds[name])
            runner = verification_runner(target, build, name, manifest, options)
            scores = compare(runner, expected[name], feeds[name])
        results[name] = scores
        where[name] = ran_on(runner)
        print(f"{name:14s} {scores['psnr_db']:7.2f} dB")
    places = sorted({w["verified_on"] for w in where.values() if w})
    if places:  # as compile's table says it: a QNN build's figures come from the emulator or the CPU check
        print("PSNR measured on: " + "; ".join(places))
    if prompts:
        run = {"inputs": inputs.describe(), "components": {n: {"psnr_db": r["psnr_db"], **where[n]}
                                                           for n, r in results.items()}}
        tuned = tuned_on(manifest, spec.prompts)
        if tuned:  # the text encoders saw these very inputs (token ids depend on the prompt alone) when tuning
            run["not_held_out"] = tuned
            print("note: not held out: " + "; ".join(f"{', '.join(repr(p) for p in ps)} in the build's {role} set"
                                                     for role, ps in tuned.items()))
        manifest.setdefault("verify_runs", []).append(run)
        gated = {**manifest, "components": {n: {**e, "psnr_db": results[n]["psnr_db"]}
                                            for n, e in manifest["components"].items()}}
    else:
        for name, scores in results.items():
            record(manifest["components"][name], scores, where[name])
        manifest.setdefault("inputs", {})[VERIFICATION] = inputs.describe()  # the set psnr_db now comes from (--steps)
        gated = manifest
    tmp = build / (buildfs.MANIFEST + ".tmp")
    buildfs.write_json(tmp, manifest)
    tmp.replace(build / buildfs.MANIFEST)
    gate_psnr(gated, min_psnr)
    return gated
