"""Serialize a MIL program to an .mlpackage with ct.convert, keeping its pass pipeline minimal.

Our ONNX passes already did the graph work (fusion, layout, precision), so running coremltools' default
pipeline (~100 passes, 55 s on an SD-1.5 UNet) would mostly re-prove it. We keep only what serialization
needs: dead-code elimination (the lowering leaves unused shape consts), and the backend passes that
coremltools always appends (I/O type checks, the sigmoid*x -> silu fusion, name sanitizing).
"""

from __future__ import annotations

import functools
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import coremltools as ct
from coremltools.converters.mil.mil import Program

from fusionc.targets.coreml.lowering.table import deployment_target

MINIMAL_PASSES = ["common::dead_code_elimination"]
_COMPUTE_UNITS = {"all": ct.ComputeUnit.ALL, "cpu_and_ne": ct.ComputeUnit.CPU_AND_NE,
                  "cpu_and_gpu": ct.ComputeUnit.CPU_AND_GPU, "cpu_only": ct.ComputeUnit.CPU_ONLY}


def compute_units(name: str) -> Any:
    if name not in _COMPUTE_UNITS:
        from fusionc.core.errors import BadInputError

        raise BadInputError(f"unknown --compute-units '{name}': choose one of {', '.join(_COMPUTE_UNITS)}")
    return _COMPUTE_UNITS[name]


@contextmanager
def _bars_only_on_a_terminal() -> Iterator[None]:
    """coremltools draws a tqdm bar over each pass pipeline it runs. Off a terminal (a CI log, a pipe) those are
    carriage-return-rewritten noise among fusionc's plain stage lines (docs/ci.md): tqdm's own `disable=None`
    ("off when the stream is not a TTY") keeps them on a terminal only."""
    from coremltools.converters.mil.mil.passes import pass_pipeline

    bar = pass_pipeline.tqdm
    pass_pipeline.tqdm = functools.partial(bar, disable=None)
    try:
        yield
    finally:
        pass_pipeline.tqdm = bar


def convert_program(program: Program, deployment: str, units: str = "cpu_and_ne",
                    passes: list[str] | None = None) -> ct.models.MLModel:
    """ct.convert(program) with our minimal pass pipeline; precision is already in the program."""
    if passes == ["default"]:  # coremltools' full pipeline, for measuring what the minimal one saves
        pipeline = ct.PassPipeline.DEFAULT
    else:
        pipeline = ct.PassPipeline(pass_names=list(MINIMAL_PASSES if passes is None else passes), pipeline_name="fusionc")
    with _bars_only_on_a_terminal():
        return ct.convert(
            program, convert_to="mlprogram", minimum_deployment_target=deployment_target(deployment),
            compute_precision=ct.precision.FLOAT32,  # no add_fp16_cast: the program already is fp16 where we want it
            compute_units=compute_units(units), pass_pipeline=pipeline, skip_model_load=True,
        )


def save_mlpackage(program: Program, path: Path, deployment: str, units: str = "cpu_and_ne",
                   metadata: dict[str, str] | None = None, passes: list[str] | None = None) -> dict[str, float]:
    """Write `path` (.mlpackage); returns timings {convert_s, save_s}."""
    start = time.perf_counter()
    model = convert_program(program, deployment, units, passes)
    converted = time.perf_counter()
    if metadata:
        model.user_defined_metadata.update(metadata)
    model.short_description = (metadata or {}).get("description", "fusionc")
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(path))
    if model.is_temp_package and model.package_path:  # ct.convert's copy in /tmp: removed only at interpreter
        shutil.rmtree(model.package_path, ignore_errors=True)  # exit (atexit), never by a Ray worker or a kill
    from fusionc.core.reproducible import canonical_mlpackage

    canonical_mlpackage(path)  # same program, same bytes: no random item ids, no conversion date
    return {"convert_s": converted - start, "save_s": time.perf_counter() - converted}
