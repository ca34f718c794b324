"""Every `fusionc ...` command of the README's shell blocks, on the built-in model, so an example cannot go stale.

The README is parsed when the test runs: each fenced shell block, continuation lines joined, each command of a
`&&` / `;` chain (the install one-liners end in `fusionc compile ...`), so a line added to the README is picked up
with no change here. The commands run in README order in one scratch folder (the README's relative paths: later
lines read the builds earlier ones wrote), in-process through the real command line, and each must exit 0.

What runs, and what does not (CI budget: ~45 s of CPU for this file). Measured (process CPU, one pytest process):
44 s when the worker's --cache already holds the built-in model's exports and torch trajectories (other tests of
the suite export them: tests/test_generate.py, the conftest Core ML build, ...), 69 s from a cold cache. One test,
so one worker runs the README once.
- every `compile` line is first checked by the CLI's own checks before any work (argument parsing, config
  resolution, the target's option refusals, the checkpoint named, the target's pass list), which is where
  flags, values and combinations go stale;
- a compile line is then built for real when a later line reads the folder it writes (verify, inspect,
  generate, bench, estimate, debug-accuracy), one build shared by every line that reads it, or when it is
  cheap: an fp32 onnx build of the built-in model reuses the first one's exports and torch trajectories through
  the worker's --cache. NOT_BUILT, OVER_BUDGET and SHRINK name the others: each is a gap of this test, with where
  the suite builds it instead;
- SKIP: what cannot run here (a user's checkpoint or config, a Ray cluster, a Mac or a phone), each with its
  reason; a line that reads a folder no line here builds is skipped, naming the line that writes it.
`outline.png` (the ControlNet example's control image) is the user's picture; the test draws one.
"""

from __future__ import annotations

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

CPU_LIMIT_S = 120  # this file's CPU with a cold --cache is ~70 s: far more means a new expensive README line

# (pattern on the command, why it cannot run here)
SKIP = [
    (r"\bCKPT\b|\[--|\{[a-z_]+,|\w\|\w", "a synopsis with placeholders, not a runnable example"),
    (r"path/to/", "a user's own checkpoint, not shipped"),
    (r"--config fusionc\.toml", "the README's fusionc.toml names the user's checkpoint (models/my-sd15); config "
                                "files and fleets run in tests/test_config.py and tests/test_fleet.py"),
    (r"--ray-address", "needs a Ray cluster (the local-Ray executor runs in tests/test_fleet.py)"),
    (r"--adb\b|xcrun", "needs a phone or a Mac"),
]

# Compile lines no later line reads are built only when cheap (an fp32 onnx build: the first one's exports and
# torch trajectories come from the per-worker --cache); the others are checked, not built, and these are the gaps:
# target -> (why not built here, where the suite builds it)
NOT_BUILT = {
    "coreml": ("a Core ML build (~10 s for the built-in model)", "tests/targets/coreml/test_target.py, "
               "test_compressed_weights.py, tests/test_mixed_bit.py, tests/test_dit.py"),
    "qnn": ("a QNN calibration + HTP context build (~50 s for the built-in model)",
            "tests/targets/qnn/test_qnn_target.py, tests/test_dit.py"),
    "onnx-w8a8": ("onnx w8a8 calibrates and runs the QNN remedies (~65 s)", "tests/targets/onnx/test_onnx_precision.py"),
}
# Builds over budget even though a later line reads them: checked, not built, and the lines that read them are
# skipped (gaps of this test): (pattern, why, where the suite builds it)
OVER_BUDGET = [
    (r"builtin:controlnet", "the built-in ControlNet pipeline on Core ML with the Swift bundle (~64 s of CPU; "
                            "`generate` on it runs the MIL executor 8 steps more)",
     "tests/targets/test_controlnet_targets.py (Core ML + --bundle swift), tests/test_controlnet.py "
     "(generate --control-image)"),
    (r"compile builtin:sd3\b(?!.*--target (coreml|qnn))",  # its Core ML / QNN lines: NOT_BUILT
     "the built-in SD3 pipeline on onnx (~25 s of CPU: two CLIPs, the transformer and the VAE exported and verified)",
     "tests/models/test_builtin_sd3.py (compile), tests/test_dit.py (generate --build on DiT builds)"),
]
# Builds a later line reads are built for real; where the whole build is over budget, with these flags appended
# (the lines that read it run as written): target -> (flags, why, what the restriction leaves out)
SHRINK: dict[str, tuple[tuple[str, ...], str]] = {
    "qnn": (("--components", "text_encoder"), "the UNet and VAE contexts (calibration, HTP emulator: ~45 s of the "
                                              "build, ~45 s of `verify build/qnn --steps 8`); built in "
                                              "tests/targets/qnn/test_qnn_target.py"),
}


@dataclass(frozen=True)
class Command:
    number: int  # README line
    text: str
    args: tuple[str, ...]  # after `fusionc`


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
    commands, lang, in_block, pending, start = [], "", False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_block, lang = (not in_block), line.strip()[3:].strip()
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
                commands.append(Command(start, shlex.join(words), tuple(words[1:])))
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


def _compile_target(args: tuple[str, ...]) -> str:
    target = _option(args, "--target") or "onnx"
    return "onnx-w8a8" if target == "onnx" and _option(args, "--precision") == "w8a8" else target


def plan(commands: list[Command]) -> list[tuple[Command, str, str]]:
    """(command, action, reason) in README order: action is run | check | skip."""
    steps: list[tuple[Command, str, str]] = []
    unbuilt: dict[str, str] = {}  # folder -> why no build is there
    ran: dict[tuple[str, ...], int] = {}
    for i, cmd in enumerate(commands):
        reason = skip_reason(cmd.text)
        if reason is None:
            missing = sorted(f for f in reads(cmd.args) if f in unbuilt)
            if missing:
                reason = f"reads {missing[0]}, which {unbuilt[missing[0]]}"
        out = writes(cmd.args) if _option(cmd.args, "--config") is None else None
        if reason is not None:
            if out is not None:
                unbuilt[out] = f"only the skipped README.md:{cmd.number} writes"
            steps.append((cmd, "skip", reason))
            continue
        if cmd.args in ran:
            steps.append((cmd, "check", f"the same command as README.md:{ran[cmd.args]}, run there"))
            continue
        if cmd.args[0] == "compile" and out is not None:
            unbuilt.pop(out, None)
            over = next(((why, where) for pattern, why, where in OVER_BUDGET if re.search(pattern, cmd.text)), None)
            if over is not None:
                unbuilt[out] = f"README.md:{cmd.number} writes and this test does not build (cost)"
                steps.append((cmd, "check", f"{over[0]}; built in {over[1]}"))
                continue
            target = _compile_target(cmd.args)
            if target in NOT_BUILT and not _read_before_rewritten(commands[i + 1:], out):
                why, where = NOT_BUILT[target]
                steps.append((cmd, "check", f"{why}; no later line reads it; built in {where}"))
                continue
        ran[cmd.args] = cmd.number
        if cmd.args[0] == "compile" and (shrink := SHRINK.get(_compile_target(cmd.args))):
            steps.append((Command(cmd.number, cmd.text, cmd.args + shrink[0]), "run",
                          f"with {' '.join(shrink[0])}: leaves out {shrink[1]}"))
            continue
        steps.append((cmd, "run", ""))
    return steps


def _read_before_rewritten(later: list[Command], folder: str) -> bool:
    for cmd in later:
        if folder in reads(cmd.args):
            return True
        if writes(cmd.args) == folder:
            return False
    return False


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
    steps = plan(readme_commands())
    actions = {step[0].text: step[1] for step in steps}
    assert sum(a == "run" for a in actions.values()) >= 15
    # a line reading what only a skipped line writes is skipped with that reason
    dependent = plan([Command(1, "fusionc compile path/to/x --out build/x", ("compile", "path/to/x", "--out",
                                                                             "build/x")),
                      Command(2, "fusionc verify build/x", ("verify", "build/x"))])
    assert dependent[1][1] == "skip" and "README.md:1" in dependent[1][2]
    assert [a for _, a, _ in plan(readme_commands())].count("run") >= 15


def run_readme(folder: Path) -> list[str]:
    """Every README command in README order in `folder`: the failures, each naming its README line."""
    began = time.process_time()
    (folder / "compiler").symlink_to(ROOT / "compiler")  # README paths are relative to the repository
    write_control_image(folder / "outline.png")
    failures, report = [], []
    with working_dir(folder):
        for cmd, action, reason in plan(readme_commands()):
            where = f"README.md:{cmd.number}: {cmd.text}"
            start = time.process_time()
            if action == "skip":
                report.append(f"  skip  {where[:110]} ({reason})")
                continue
            if cmd.args[0] == "compile":
                try:
                    check_compile_line(cmd.args[1:])
                except Exception as err:  # noqa: BLE001 - reported with the README line
                    failures.append(f"{where}\n    refused before any work: {err}")
                    continue
            if action == "check":
                report.append(f"  check {where[:110]} (not built: {reason})")
                continue
            result = CliRunner().invoke(main, list(cmd.args))
            report.append(f"  run   {where[:110]} ({time.process_time() - start:.1f} s CPU)"
                          + (f" {reason}" if reason else ""))
            if result.exit_code != 0:
                failures.append(f"{where}\n    exit {result.exit_code}: "
                                f"{(result.stderr or result.stdout).strip()[-800:]}")
    print("\n".join(report))
    spent = time.process_time() - began
    if spent > CPU_LIMIT_S:  # a new README line made this file expensive: decide what it costs CI, here
        failures.append(f"the README's commands took {spent:.0f} s of CPU (> {CPU_LIMIT_S} s; ~45 s with a warm "
                        "--cache, ~70 s cold): add the new expensive line to NOT_BUILT, OVER_BUDGET or SHRINK, "
                        "or make the README's example cheaper")
    return failures


def test_every_readme_command_runs(tmp_path: Path) -> None:
    """One test (one worker, one run of the README): every line runs, and the README's bench charges its
    palettized Core ML build the weight bytes the package stores (the fp16 case: tests/test_bench_coreml.py)."""
    failures = run_readme(tmp_path)
    assert not failures, "\n".join(failures)
    check_bench_charges_the_palettized_package(tmp_path)


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
