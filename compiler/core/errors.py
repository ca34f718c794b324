"""Errors that the CLI turns into one line on stderr and an exit code (design.md: 2 bad input, 1 check failed)."""

from __future__ import annotations


class FusioncError(Exception):
    """Base class: `str(err)` is the one-line message shown to the user."""

    exit_code = 2


class BadInputError(FusioncError):
    """The user's input (checkpoint, options, build folder) is wrong: exit 2."""

    exit_code = 2


class UnsupportedError(BadInputError):
    """The input is valid but outside what a target supports (an op, a component class): exit 2."""


class CheckFailedError(FusioncError):
    """A gate failed (PSNR under the minimum, a budget exceeded): exit 1, after the build is written."""

    exit_code = 1
