"""A Ctrl-C whose KeyboardInterrupt a library swallows still stops the build before it is swapped into place."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from fusionc import buildfs
from fusionc.core import interrupt, progress


class SwallowsInterrupts:
    """Like a library `__del__` or a broad `except BaseException`: the signal's exception never reaches the caller."""

    def run(self) -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pthread_kill(signal.pthread_self(), 0)  # a bytecode boundary: the handler runs here
        except KeyboardInterrupt:
            pass


def test_a_swallowed_sigterm_still_leaves_out_untouched(tmp_path: Path) -> None:
    out = tmp_path / "build"
    out.mkdir()
    (out / "manifest.json").write_text("good")
    with pytest.raises(KeyboardInterrupt), buildfs.atomic_build(out) as tmp:
        (tmp / "manifest.json").write_text("half")
        SwallowsInterrupts().run()
    assert (out / "manifest.json").read_text() == "good"
    assert not list(tmp_path.glob(".build.tmp-*"))


def test_the_next_stage_raises_after_a_swallowed_signal(tmp_path: Path) -> None:
    reached = []
    with pytest.raises(KeyboardInterrupt), buildfs.atomic_build(tmp_path / "b"):
        SwallowsInterrupts().run()
        with progress.stage("export", quiet=True):
            reached.append("export")
    assert reached == []


def test_handlers_are_restored_and_the_record_cleared(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), buildfs.atomic_build(tmp_path / "b"):
        SwallowsInterrupts().run()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    interrupt.check()  # no stale record: a later compile in the same process is not interrupted


def test_an_ignored_sigint_stays_ignored(tmp_path: Path) -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # fleet workers leave Ctrl-C to their driver
    try:
        with buildfs.atomic_build(tmp_path / "b"):
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_sigterm_before_the_build_folder_exists_is_exit_130_with_the_reports(tmp_path: Path, monkeypatch) -> None:
    """CI cancels a job with SIGTERM; at SD scale that often lands while the checkpoint loads or the torch
    trajectories run, before the build folder exists. That is exit 130 too, with the reports saying so, not a
    process killed by the signal (exit 143, no report)."""
    import json

    from click.testing import CliRunner

    import fusionc.pipeline
    from fusionc.cli import main

    def loading(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pthread_kill(signal.pthread_self(), 0)  # the handler runs here
        raise AssertionError("SIGTERM was not turned into an interrupt")

    class Killed(Exception):
        """Stands in for the default action (the process dies) so that pytest survives the test."""

    def dies(signum: int, frame: object) -> None:
        raise Killed("killed by SIGTERM")

    monkeypatch.setattr(fusionc.pipeline, "compile_checkpoint", loading)
    previous = signal.signal(signal.SIGTERM, dies)
    try:
        result = CliRunner().invoke(main, ["compile", "--out", str(tmp_path / "b"),
                                           "--report", str(tmp_path / "r.json")])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == 130, result.output
    assert result.stderr.startswith("fusionc: interrupted") and result.stderr.count("\n") == 1
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["status"], report["exit_code"]) == ("error", 130)
    assert not (tmp_path / "b").exists()


def test_an_interrupted_fleet_says_what_it_leaves(tmp_path: Path, monkeypatch) -> None:
    """Variants finished before the Ctrl-C are whole builds: "nothing was written to --out" was wrong for a fleet."""
    from click.testing import CliRunner

    import fusionc.fleet
    from fusionc.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fusionc.fleet, "run_fleet", interrupted)
    config = tmp_path / "fusionc.toml"
    config.write_text('[[variant]]\nname = "a"\nout = "build/a"\n[[variant]]\nname = "b"\nout = "build/b"\n')
    result = CliRunner().invoke(main, ["compile", "--config", str(config)])
    assert result.exit_code == 130
    assert result.stderr == "fusionc: interrupted; every variant's out is a whole build or untouched\n"
