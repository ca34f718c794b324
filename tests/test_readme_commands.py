"""Every `fusionc ...` command of the README's shell blocks, on the built-in models, so an example cannot go stale.

The README is parsed when the test runs: each fenced shell block, continuation lines joined, each command of a
`&&` / `;` chain (the install one-liners end in `fusionc compile ...`), so a line added to the README is picked up
with no change here. Each command runs in-process through the real command line and must exit 0.

Every line that can run on Linux x86-64 runs, full size (every component, the full QNN build, onnx w8a8, the Core ML
compression variants, the mixed-bit search, the built-in SD3 and ControlNet pipelines), but for the CHECK_ONLY lines:
- lines are grouped into units: a fenced block runs as one unit, in README order, in one scratch folder (the
  README's relative paths: later lines read the builds earlier ones wrote); blocks that read a folder or recipe
  another block writes, or that repeat another block's build, join its unit. Each unit is one test, in an
  xdist_group per built-in model: the tiny_sd units run in order on one worker (the run's --cache, which every
  worker shares (conftest.py), makes the exports and torch trajectories once, and `debug-accuracy` takes the
  compile's graph from it); SD3 and ControlNet go to groups of their own, so the two CI workers split the load;
- every `compile` line is first checked by the CLI's own checks before any work (argument parsing, config
  resolution, the target's option refusals, the checkpoint named, the target's pass list);
- a compile line that resolves to the same build as an earlier one of its unit (same checkpoint, folder and
  options in effect: `--target qnn --device snapdragon-8-gen-2 --precision w8a16 --out build/qnn` spells out the
  defaults of `fusionc compile --target qnn`), nothing in between having written that folder, is checked and not
  built twice;
- CHECK_ONLY: lines checked and not built for CI's time budget, each with why and where the suite builds it instead;
  a line reading what one writes is skipped, naming it (the README says which, beside its sentence on this file);
- SKIP: what cannot run here (a user's checkpoint or config, a Ray cluster, a Mac or a phone), each with its
  reason; a line that reads a folder no line here builds is skipped, naming the line that writes it.
`outline.png` (the ControlNet example's control image) is the user's picture; the test draws one.

CPU, measured on this 2-core machine from a cold --cache (one pytest process per group, process CPU of each line,
2026-12-07): the tiny_sd group ~430 s, its first unit ~300 s (the QNN build 85 s, `verify build/qnn --steps 8` on the
HTP emulator 86 s, `bench` 31 s, most of it exporting the checkpoint's NPU graphs into the `--cache` the `estimate`
lines then read back in 0 s (27 s each when they exported the graphs again), `debug-accuracy` 22 s), the compression
unit 124 s (the mixed-bit search 62 s); the SD3 group ~55 s, the ControlNet group ~60 s.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner

from fusionc.cli import compile_command, main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHELL_LANGS = ("bash", "sh", "shell", "console", "powershell", "")

# (pattern on the command, why it cannot run here)
SKIP = [
    (r"\bCKPT\b|\[--|\{[a-z_]+,|\w\|\w", "a synopsis with placeholders, not a runnable example"),
    (r"path/to/", "a user's own checkpoint, not shipped"),
    (r"--config fusionc\.toml", "the README's fusionc.toml names the user's checkpoint (models/my-sd15); config "
                                "files and fleets run in tests/test_config.py and tests/test_fleet.py"),
    (r"--ray-address", "needs a Ray cluster (the local-Ray executor runs in tests/test_fleet.py)"),
    (r"--adb\b|xcrun", "needs a phone or a Mac"),
]

# Compile lines that could run here but are checked and not built, for CI time: (pattern, why, where the suite
# builds it instead). Lines reading their folder are skipped. Empty: every line that can run here runs.
CHECK_ONLY: list[tuple[str, str, str]] = []

# A unit's xdist_group: the built-in model its compile lines build (units of one model run in order on one worker)
GROUPS = [(r"builtin:sd3\b", "readme-sd3"), (r"builtin:controlnet\b", "readme-controlnet")]
DEFAULT_GROUP = "readme-tiny-sd"
# Process CPU ceiling of a group's units together (a group runs in one process: one xdist worker), ~1.5x what they
# take from a cold --cache: far more means a new expensive README line (decide what it costs CI, here)
CPU_LIMIT_S = {"readme-tiny-sd": 600, "readme-sd3": 80, "readme-controlnet": 150}
SPENT: dict[str, float] = {}  # CPU of the group's units run so far in this process


@dataclass(frozen=True)
class Command:
    number: int  # README line
    text: str
    args: tuple[str, ...]  # after `fusionc`
    block: int = 0  # README line of the fenced block's opening fence


def _segments(line: str) -> Iterator[list[str]]:
    """The commands of a shell line, split at `&&`, `||`, `;` and `|`, comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words: list[str] = []
    for token in lexer:
        if token and set(token) <= set(";&|"):
            if words:
                yield words
            words = []
        else:
            words.append(token)
    if words:
        yield words


def readme_commands(text: str | None = None) -> list[Command]:
    """Every `fusionc ...` command in the README's fenced shell blocks, in order."""
    text = README.read_text() if text is None else text
    commands, lang, in_block, pending, start, block = [], "", False, "", 0, 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_block, lang = (not in_block), line.strip()[3:].strip()
            block = number
            continue
        if not in_block or lang not in SHELL_LANGS:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full, pending = pending + line, ""
        if not re.search(r"(^|[;&|]\s*)fusionc\s", full.strip()):
            continue  # prose in a plain block (the layout tree), or no fusionc command
        for words in _segments(full.replace("\\S", "/S")):  # PowerShell's .venv\Scripts\activate
            if words[0] == "fusionc":
                commands.append(Command(start, shlex.join(words), tuple(words[1:]), block))
    return commands


def skip_reason(command: str) -> str | None:
    return next((reason for pattern, reason in SKIP if re.search(pattern, command)), None)


def _option(args: tuple[str, ...], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def writes(args: tuple[str, ...]) -> str | None:
    """The build folder a compile line writes (the CLI's default: build/<target>)."""
    if args[0] != "compile":
        return None
    return _option(args, "--out") or f"build/{_option(args, '--target') or 'onnx'}"


def reads(args: tuple[str, ...]) -> set[str]:
    """The build folders a line reads, from the real CLI's parse (a file inside a build counts as its folder)."""
    if args[0] == "compile":
        return set()
    command = main.get_command(None, args[0])  # type: ignore[arg-type]
    with command.make_context(args[0], list(args[1:]), resilient_parsing=True) as ctx:
        values = [v for name, v in ctx.params.items() if name not in ("out", "json_path", "plot_path")]
    paths = [str(p) for v in values for p in (v if isinstance(v, (tuple, list)) else [v]) if p is not None]
    return {"/".join(Path(p).parts[:2]) for p in paths if p.startswith("build/")}


def recipe_file(args: tuple[str, ...]) -> tuple[str, str] | None:
    """("writes" | "reads", path) for a compile line's --recipe: `--palettize auto:DB` writes it, else it is read."""
    recipe = _option(args, "--recipe") if args[0] == "compile" else None
    if recipe is None:
        return None
    return ("writes" if (_option(args, "--palettize") or "").startswith("auto:") else "reads"), recipe


def resolved_build(args: tuple[str, ...]) -> tuple | None:
    """What a compile line builds, as the CLI resolves it (checkpoint, folder, options in effect, reports), or None
    for a fleet (--config). Two lines with the same value do the same work: one spells out the other's defaults."""
    from fusionc.config import resolve
    from fusionc.core.devices import get_device

    if args[0] != "compile" or _option(args, "--config") is not None:
        return None
    with compile_command.make_context("compile", list(args[1:])) as ctx:
        settings = resolve(ctx, ctx.params)
    device = get_device(settings.options.device, settings.options.target)
    options = dataclasses.replace(settings.options, device=device.name if device else None)
    return (str(settings.checkpoint), str(settings.out), repr(options), settings.report, settings.junit,
            settings.cache, settings.plot, settings.executor, settings.jobs)


@contextmanager
def working_dir(path: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def write_control_image(path: Path) -> None:
    """`outline.png` in the README is the user's own control image (any picture, resized); the test draws the
    outline of a circle on the right, as the built-in ControlNet was trained on."""
    import numpy as np
    from PIL import Image

    from fusionc.controlnet import outline_image

    pixels = outline_image("a circle on the right", 64, 64)[0].transpose(1, 2, 0)
    Image.fromarray((pixels * 255).round().astype(np.uint8)).save(path)


def check_compile_line(args: tuple[str, ...]) -> None:
    """What `fusionc compile ARGS` checks before any work, without building."""
    from fusionc.checkpoint import BUILTIN_CHECKPOINT, BUILTIN_NAMES
    from fusionc.config import resolve
    from fusionc.targets import get_target

    with compile_command.make_context("compile", list(args)) as ctx:
        settings = resolve(ctx, ctx.params)
    checkpoint = BUILTIN_NAMES.get(str(settings.checkpoint), settings.checkpoint or BUILTIN_CHECKPOINT)
    assert Path(checkpoint).is_dir(), f"checkpoint {checkpoint} does not exist"
    get_target(settings.options.target).pipeline(settings.options)


@dataclass(frozen=True)
class Step:
    command: Command
    action: str  # run | check | skip
    reason: str
    unit: int  # README line of the unit's first command: the test that runs it


def plan(commands: list[Command]) -> list[Step]:
    """Steps in README order: action run | check | skip, and the unit each belongs to."""
    parent: dict[int, int] = {}  # union-find over fenced blocks

    def root(block: int) -> int:
        while parent.setdefault(block, block) != block:
            block = parent[block]
        return block

    def join(a: int, b: int) -> None:
        a, b = root(a), root(b)
        parent[max(a, b)] = min(a, b)

    raw: list[tuple[Command, str, str]] = []
    unbuilt: dict[str, str] = {}  # folder -> why no build is there
    writer: dict[str, Command] = {}  # folder -> the last line that builds it
    built: dict[tuple, Command] = {}  # resolved build -> the line that ran it (until its folder is rewritten)
    for cmd in commands:
        root(cmd.block)
        reason = skip_reason(cmd.text)
        recipe = recipe_file(cmd.args)
        needs = reads(cmd.args) | ({recipe[1]} if recipe and recipe[0] == "reads" else set())
        if reason is None:
            missing = sorted(f for f in needs if f in unbuilt)
            if missing:
                reason = f"reads {missing[0]}, which {unbuilt[missing[0]]}"
        out = writes(cmd.args) if _option(cmd.args, "--config") is None else None
        made = [out] if out is not None else []
        made += [recipe[1]] if recipe and recipe[0] == "writes" else []
        if reason is not None:
            for path in made:
                unbuilt[path] = f"only the skipped README.md:{cmd.number} writes"
                writer.pop(path, None)
            raw.append((cmd, "skip", reason))
            continue
        for path in needs:
            if path in writer:
                join(cmd.block, writer[path].block)
        if out is None:
            raw.append((cmd, "run", ""))
            continue
        for path in made:
            unbuilt.pop(path, None)
        over = next(((why, where) for pattern, why, where in CHECK_ONLY if re.search(pattern, cmd.text)), None)
        if over is not None:
            for path in made:
                unbuilt[path] = f"README.md:{cmd.number} writes and this test does not build (CI time)"
                writer.pop(path, None)
            raw.append((cmd, "check", f"not built: {over[0]}; built in {over[1]}"))
            continue
        key = resolved_build(cmd.args)
        twin = built.get(key)
        if twin is not None and writer.get(out) is twin:
            join(cmd.block, twin.block)
            raw.append((cmd, "check", f"the same build as README.md:{twin.number} (same checkpoint, folder and "
                                      "options in effect), run there"))
            continue
        built = {k: c for k, c in built.items() if writes(c.args) != out}
        built[key] = cmd
        for path in made:
            writer[path] = cmd
        raw.append((cmd, "run", ""))
    first: dict[int, int] = {}
    for cmd, _, _ in raw:
        first.setdefault(root(cmd.block), cmd.number)
    return [Step(cmd, action, reason, first[root(cmd.block)]) for cmd, action, reason in raw]


def units(steps: list[Step]) -> dict[int, list[Step]]:
    """Steps by unit, each in README order; units that run nothing are left out."""
    found: dict[int, list[Step]] = {}
    for step in steps:
        found.setdefault(step.unit, []).append(step)
    return {unit: group for unit, group in found.items() if any(s.action != "skip" for s in group)}


def group_of(unit_steps: list[Step]) -> str:
    texts = " ".join(s.command.text for s in unit_steps if s.action != "skip")
    return next((name for pattern, name in GROUPS if re.search(pattern, texts)), DEFAULT_GROUP)


def test_the_parser_finds_every_command_and_the_plan_reads_it() -> None:
    commands = readme_commands()
    texts = [c.text for c in commands]
    assert "fusionc devices" in texts
    # the install one-liners' last command, after `&&` / `;`
    assert "fusionc compile --target coreml" in texts and "fusionc compile --target qnn" in texts
    chained = readme_commands("```bash\npython3 -m venv .venv && . .venv/bin/activate && fusionc compile \\\n"
                              "  --target qnn  # comment\n```\n```python\nfusionc = 1\n```\n")
    assert [(c.number, c.args) for c in chained] == [(2, ("compile", "--target", "qnn"))]
    quoted = readme_commands('```\nfusionc verify build/qnn --prompts "a;b" --seeds 1\n```\n')
    assert quoted[0].args == ("verify", "build/qnn", "--prompts", "a;b", "--seeds", "1")
    assert skip_reason("fusionc compile CKPT --target qnn [--device snapdragon-8-gen-2|snapdragon-8-elite]")
    assert skip_reason("fusionc compile path/to/sd-checkpoint --out build/sd")
    assert skip_reason('fusionc compile --target coreml --device "iPhone 15 Pro" --palettize 6') is None
    assert writes(("compile", "--target", "qnn")) == "build/qnn" and writes(("verify", "build/x")) is None
    assert reads(("inspect", "build/onnx/unet/model.onnx")) == {"build/onnx"}
    assert reads(("generate", "a", "--build", "build/cn", "--out", "image.png")) == {"build/cn"}
    steps = plan(commands)
    # every line that is not skipped runs, but for builds another line of its unit already made
    checked = [s for s in steps if s.action == "check"]
    assert all("the same build as" in s.reason or any(re.search(p, s.command.text) for p, _, _ in CHECK_ONLY)
               for s in checked), [s.command.text for s in checked]
    assert sum(s.action == "run" for s in steps) >= 30
    # a recipe written by a check-only line: the line re-applying it is skipped, naming the writer
    recipe = plan(readme_commands("```\nfusionc compile --target coreml --palettize auto:35 --recipe r.json\n"
                                  "fusionc compile --target coreml --recipe r.json\n```\n"))
    if CHECK_ONLY:
        assert recipe[1].action == "skip" and "r.json" in recipe[1].reason and "README.md:2" in recipe[1].reason
    # a line reading what only a skipped line writes is skipped with that reason
    dependent = plan(readme_commands("```\nfusionc compile path/to/x --out build/x\n```\n```\n"
                                     "fusionc verify build/x\n```\n"))
    assert dependent[1].action == "skip" and "README.md:2" in dependent[1].reason
    # a block reading another block's build joins its unit; a build spelled out with its defaults is not rebuilt
    two = plan(readme_commands("```\nfusionc compile --target qnn\n```\ntext\n```\nfusionc compile --target qnn "
                               "--device snapdragon-8-gen-2 --precision w8a16 --out build/qnn\nfusionc verify "
                               "build/qnn\nfusionc compile --out build/x\n```\n```\nfusionc inspect build/x\n```\n"))
    assert [(s.action, s.unit) for s in two] == [("run", 2), ("check", 2), ("run", 2), ("run", 2), ("run", 2)]
    again = plan(readme_commands("```\nfusionc compile --target qnn\nfusionc compile --target qnn --precision w8a8 "
                                 "--out build/qnn\nfusionc compile --target qnn\n```\n"))
    assert [s.action for s in again] == ["run", "run", "run"]  # the folder was rewritten in between
    apart = plan(readme_commands("```\nfusionc compile\n```\n```\nfusionc compile --target coreml\n```\n"))
    assert [s.unit for s in apart] == [2, 5]
    assert group_of([Step(Command(1, "fusionc compile builtin:sd3", ("compile", "builtin:sd3")), "run", "", 1)]) \
        == "readme-sd3"


def run_unit(folder: Path, unit_steps: list[Step]) -> tuple[list[str], float]:
    """One unit's README commands in README order in `folder`: the failures, each naming its README line, and the
    process CPU they took."""
    began = time.process_time()
    (folder / "compiler").symlink_to(ROOT / "compiler")  # README paths are relative to the repository
    write_control_image(folder / "outline.png")
    failures, report = [], []
    with working_dir(folder):
        for step in unit_steps:
            cmd = step.command
            where = f"README.md:{cmd.number}: {cmd.text}"
            start = time.process_time()
            if step.action == "skip":
                report.append(f"  skip  {where[:110]} ({step.reason})")
                continue
            if cmd.args[0] == "compile":
                try:
                    check_compile_line(cmd.args[1:])
                except Exception as err:  # noqa: BLE001 - reported with the README line
                    failures.append(f"{where}\n    refused before any work: {err}")
                    continue
            if step.action == "check":
                report.append(f"  check {where[:110]} ({step.reason})")
                continue
            result = CliRunner().invoke(main, list(cmd.args))
            report.append(f"  run   {where[:110]} ({time.process_time() - start:.1f} s CPU)")
            if result.exit_code != 0:
                failures.append(f"{where}\n    exit {result.exit_code}: "
                                f"{(result.stderr or result.stdout).strip()[-800:]}")
    print("\n".join(report))
    return failures, time.process_time() - began


PLAN = units(plan(readme_commands()))


@pytest.mark.parametrize("unit", [pytest.param(unit, id=f"README.md:{unit}", marks=pytest.mark.xdist_group(group_of(s)))
                                  for unit, s in PLAN.items()])
def test_every_readme_command_runs(unit: int, tmp_path: Path) -> None:
    """One unit of the README's commands: every line runs; the README's bench charges its palettized Core ML build
    the weight bytes the package stores (the fp16 case: tests/test_bench_coreml.py)."""
    steps = PLAN[unit]
    failures, spent = run_unit(tmp_path, steps)
    group = group_of(steps)
    SPENT[group] = SPENT.get(group, 0.0) + spent
    if SPENT[group] > CPU_LIMIT_S[group]:  # a new README line made this group expensive: decide what it costs CI
        failures.append(f"the {group} units took {SPENT[group]:.0f} s of CPU so far (> {CPU_LIMIT_S[group]} s): make "
                        "the new expensive line cheaper, or add it to CHECK_ONLY with why and where the suite builds it")
    assert not failures, "\n".join(failures)
    if (tmp_path / "bench.json").is_file():
        check_bench_charges_the_palettized_package(tmp_path)


def test_the_readme_bench_line_is_checked() -> None:
    """The palettized-package check below runs in the unit holding the README's `bench ... --json bench.json`."""
    assert any(s.command.args[0] == "bench" and "bench.json" in s.command.args and s.action == "run"
               for steps in PLAN.values() for s in steps)


def check_bench_charges_the_palettized_package(folder: Path) -> None:
    """The README's `bench` estimates its palettized Core ML build from the kept graph (fp32 ONNX weights without
    data): the memory term must charge the package's 6-bit indices and fp16 weights, not fp32."""
    import json

    result = json.loads((folder / "bench.json").read_text())
    (coreml,) = [b for b in result["builds"] if b["target"] == "coreml"]
    manifest = json.loads((folder / coreml["path"] / "manifest.json").read_text())
    unet = manifest["components"]["unet"]
    assert unet["compression"]["palettize"], "the README's Core ML build is no longer palettized: pick another check"
    stored = sum(p.stat().st_size for rel in unet["coreml"]["packages"]
                 for p in (folder / coreml["path"] / rel).rglob("weight.bin"))
    charged = {f["detail"]["weight_bytes"] for f in coreml["figures"] if f["component"] == "unet"}
    assert len(charged) == 1 and abs(charged.pop() / stored - 1) < 0.1, stored
