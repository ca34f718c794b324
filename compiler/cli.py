"""The `fusionc` command line (design.md: the contract users, scripts and CI rely on).

Exit codes: 0 success; 1 a check failed (PSNR under the gate, a budget exceeded); 2 bad input or usage,
with one line on stderr and no traceback unless --debug; 3 an internal error (one line naming it); 130 interrupted
(Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Callable

import click

from fusionc import __version__
from fusionc.core import interrupt
from fusionc.core.errors import FusioncError


def internal_error_line(err: BaseException, command: str | None) -> str:
    """The one line an internal error (a bug in fusionc, exit 3) is reported with, on stderr and in --report."""
    first = str(err).splitlines()[0] if str(err) else ""
    return (f"internal error: {type(err).__name__}: {first} (rerun as `fusionc --debug {command} ...` for the "
            "traceback)")


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn FusioncError into its one-line message and exit code; other errors into exit 3."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = click.get_current_context().find_root().params.get("debug", False)
        command = click.get_current_context().info_name
        try:
            # SIGTERM (a cancelled CI job) as Ctrl-C: exit 130, wherever it lands (signals reach the main thread only)
            main_thread = threading.current_thread() is threading.main_thread()
            with interrupt.catching() if main_thread else contextlib.nullcontext():
                return func(*args, **kwargs)
        except FusioncError as err:
            if debug:
                traceback.print_exc()
            click.echo(f"fusionc: error: {err}", err=True)
            sys.exit(err.exit_code)
        except click.UsageError as err:  # `fusionc passes` parses compile's options itself
            click.echo(f"fusionc: error: {usage_error_line(err)}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            fleet = click.get_current_context().meta.get("fusionc.fleet")
            click.echo("fusionc: interrupted" + ("; every variant's out is a whole build or untouched" if fleet else
                                                 "; nothing was written to --out" if command == "compile" else ""),
                       err=True)
            sys.exit(130)
        except Exception as err:  # an internal error: still one line, the traceback with --debug
            if debug:
                traceback.print_exc()
            click.echo(f"fusionc: {internal_error_line(err, command)}", err=True)
            sys.exit(3)

    return wrapper


def usage_error_line(err: click.UsageError) -> str:
    """A command-line mistake in one line: click's message and where to look (`fusionc CMD --help`)."""
    where = err.ctx.command_path if err.ctx is not None else "fusionc"
    return f"{err.format_message()} (see `{where} --help`)"


class OneLineUsageError(click.UsageError):
    """A click usage error shown as the contract's one line on stderr instead of click's usage block (exit 2)."""

    def __init__(self, err: click.UsageError) -> None:
        super().__init__(usage_error_line(err), err.ctx)

    def show(self, file: Any = None) -> None:
        click.echo(f"fusionc: error: {self.message}", err=True)


class UsageExit2Group(click.Group):
    """click already exits 2 on usage errors; keep its message on one line."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:  # `fusionc --bogus`, `fusionc compiel`
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as err:
            raise OneLineUsageError(err) from err

    def invoke(self, ctx: click.Context) -> Any:  # a command's own options and arguments
        try:
            return super().invoke(ctx)
        except OneLineUsageError:
            raise
        except click.UsageError as err:
            raise OneLineUsageError(err) from err


@click.group(cls=UsageExit2Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fusionc")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(debug: bool) -> None:
    """fusionc: compile diffusers text-to-image checkpoints for Core ML, QNN HTP and ONNX Runtime."""


@main.command("compile")
@click.argument("checkpoint", required=False, type=click.Path(path_type=Path))
@click.option("--target", type=click.Choice(["onnx", "coreml", "qnn"]), default="onnx", show_default=True)
@click.option("--device", default=None, help="Device profile (see `fusionc devices`); default: the target's.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Build folder [default: build/<target>].")
@click.option("--components", default=None, help="Comma list, e.g. text_encoder,unet,vae_decoder,vae_encoder.")
@click.option("--height", type=click.IntRange(1), default=None, help="Image height in pixels [default: the model's].")
@click.option("--width", type=click.IntRange(1), default=None, help="Image width in pixels [default: the model's].")
@click.option("--text-length", type=click.IntRange(1), default=None,
              help="T5 tokens of a diffusion transformer's prompt [default: SD3 256, PixArt 300, capped by the tokenizer].")
@click.option("--allow-pickle", is_flag=True, help="Accept .bin/.ckpt/.pt weights (loaded with weights_only=True).")
@click.option("--min-psnr", type=float, default=None, help="Exit 1 if a component verifies under this PSNR (dB).")
@click.option("--no-verify", is_flag=True, help="Skip verification against the torch model.")
@click.option("--verify-steps", type=click.IntRange(1), default=3, show_default=True, help="Denoising steps of the verification trajectory.")
@click.option("--verify-prompts", type=click.IntRange(1, 8), default=2, show_default=True,
              help="Prompts (trajectories) of the verification set: what psnr_db and the gates report.")
@click.option("--calibration-steps", type=click.IntRange(1), default=None,
              help="Denoising steps of each calibration trajectory [default: 4].")
@click.option("--calibration-prompts", type=click.IntRange(1, 12), default=None,
              help="Prompts of the calibration set: what QNN ranges, fp16 ranges and mixed-bit probes see [default: 4].")
@click.option("--selection-steps", type=click.IntRange(1), default=None,
              help="Denoising steps of each selection trajectory [default: 5].")
@click.option("--selection-prompts", type=click.IntRange(1, 6), default=None,
              help="Prompts of the selection set: what QNN remedies and mixed-bit recipes are judged on [default: 2].")
@click.option("--attention", type=click.Choice(["original", "split_einsum", "split_einsum_v2"]), default="split_einsum",
              show_default=True, help="Core ML attention form.")
@click.option("--compute-units", type=click.Choice(["all", "cpu_and_ne", "cpu_and_gpu", "cpu_only"]),
              default="cpu_and_ne", show_default=True, help="Core ML compute units.")
@click.option("--deployment-target", type=click.Choice(["iOS16", "iOS17", "iOS18", "macOS13", "macOS14", "macOS15"]),
              default=None, help="Core ML minimum OS [default: the device's].")
@click.option("--chunk", default="auto", show_default=True, help="Core ML UNet chunks: auto, none or a number.")
@click.option("--bundle", type=click.Choice(["swift"]), default=None, help="Also write an app Resources folder.")
@click.option("--palettize", default=None,
              help="Weight palettization: N bits (1,2,3,4,6,8) or auto:DB (mixed-bit, fewest bits keeping DB dB).")
@click.option("--granularity", type=click.Choice(["per_tensor", "per_grouped_channel"]), default="per_tensor",
              show_default=True)
@click.option("--group-size", type=int, default=16, show_default=True, help="Output channels per LUT (grouped).")
@click.option("--quantize-weights", type=click.Choice(["int8", "int4"]), default=None,
              help="Linear weight quantization (int8: per channel unless --block-size; int4: block-wise).")
@click.option("--block-size", type=int, default=None, help="Input channels per scale [default: per channel for int8, 32 for int4].")
@click.option("--quantize-mode", type=click.Choice(["symmetric", "affine"]), default=None,
              help="Weight quantization with or without zero points [default: symmetric].")
@click.option("--recipe", type=click.Path(path_type=Path), default=None,
              help="Mixed-bit recipe JSON: re-applied when it has the component, else written by --palettize auto:DB.")
@click.option("--compress-embeddings", is_flag=True, default=None, help="Also compress token embedding tables.")
@click.option("--compress-components", default=None, help="Comma-separated components to compress [default: the denoising step: unet and controlnet, or transformer].")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "w8a8", "w8a16"]), default=None,
              help="onnx: fp32 | w8a8 (int8 QDQ for ORT's CPU kernels); qnn: w8a16 | w8a8 | fp16 "
                   "[default: onnx fp32, qnn w8a16].")
@click.option("--calibration-samples", type=click.IntRange(0), default=None,
              help="QNN and onnx w8a8: batch-1 calibration inputs per component, spread over the calibration set, 0: all [default: 8].")
@click.option("--selection-samples", type=click.IntRange(0), default=None,
              help="QNN and onnx w8a8: batch-1 selection inputs the remedies are judged on, 0: all [default: 8].")
@click.option("--compute-precision", type=click.Choice(["fp16", "fp32"]), default=None,
              help="Core ML program precision [default: fp16].")
@click.option("--attention-chunk", type=click.IntRange(1), default=None,
              help="Core ML split_einsum_v2 query chunk [default: 512, Apple's].")
@click.option("--coreml-ct-passes", type=click.Choice(["minimal", "default"]), default=None,
              help="coremltools passes at ct.convert [default: minimal; ours did the graph work].")
@click.option("--qnn-range-margin", type=click.FloatRange(1.0), default=None,
              help="QNN: widen 16-bit activation ranges by this factor [default: 3].")
@click.option("--qnn-fp16-attention/--no-qnn-fp16-attention", default=None,
              help="QNN: activation x activation MatMuls in fp16 on the HTP [default: on].")
@click.option("--qnn-target-db", type=float, default=None, help="QNN and onnx w8a8 remedies stop at this PSNR on the selection set [default: the gate + 5 dB].")
@click.option("--qnn-remedy-rounds", type=click.IntRange(0), default=None, help="QNN and onnx w8a8 remedy evaluations, 0: none [default: 48].")
@click.option("--qnn-remedy-seconds", type=click.FloatRange(0), default=None, help="QNN and onnx w8a8 remedies time budget [default: 600].")
@click.option("--qnn-max-context-bytes", type=click.IntRange(1), default=None,
              help="QNN: split contexts above this size [default: the device's limit].")
@click.option("--qnn-max-build-bytes", type=click.IntRange(1), default=None,
              help="QNN: split a component where building its context would take more memory than this "
                   "[default: 8 GiB].")
@click.option("--qnn-verify-runtime", type=click.Choice(["htp", "cpu"]), default=None,
              help="QNN: verify the context binaries on the HTP (the emulator on x86-64; hours per call at SDXL "
                   "size) or the QDQ graphs on ONNX Runtime's CPU EP (the quantization only, minutes) [default: htp].")
@click.option("--opset", type=click.IntRange(18, 21), default=None, help="ONNX opset of the export [default: 18].")
@click.option("--seed", type=int, default=None, help="Seed of the verification trajectory [default: 0].")
@click.option("--latency-steps", type=click.IntRange(1), default=None,
              help="Steps of the per-image latency estimate and gate [default: 8].")
@click.option("--mixed-bit-steps", type=click.IntRange(1), default=None,
              help="Trajectory steps the mixed-bit search measures on [default: 8].")
@click.option("--min-weight-elements", type=click.IntRange(1), default=None,
              help="Compress weights of at least this many elements [default: 2048].")
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
              help="fusionc.toml with any of these options (flags given here override it).")
@click.option("--max-size", multiple=True, help="Exit 1 if the build exceeds N MB (N) or a component does (unet=N).")
@click.option("--max-latency-ms", multiple=True,
              help="Exit 1 if the estimated latency on the device exceeds N ms: unet=N per call, N per image.")
@click.option("--report", type=click.Path(path_type=Path), default=None, help="Write a JSON report (manifest, gates, timings).")
@click.option("--junit", type=click.Path(path_type=Path), default=None, help="Write JUnit XML: one test case per component and gate.")
@click.option("--cache", type=click.Path(path_type=Path), default=None, help="Reuse exported/optimized ONNX from this folder.")
@click.option("--variant", default=None, help="Fleet: build only this [[variant]] of the --config file.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where a fleet's variants (and the passes' probes) run: this process, or Ray tasks.")
@click.option("--jobs", type=click.IntRange(1), default=1, show_default=True,
              help="Fleet, --executor local: build N variants at a time, each in a worker process (1: in this process).")
@click.option("--ray-address", envvar="RAY_ADDRESS", default=None,
              help="Ray cluster for --executor ray [default: $RAY_ADDRESS, else a local Ray started for the run].")
@click.option("--plot", type=click.Path(path_type=Path), default=None,
              help="Fleet: write a PNG of build size vs estimated latency, PSNR as colour.")
@click.pass_context
@handle_errors
def compile_command(ctx: click.Context, **params: Any) -> None:
    """Compile CHECKPOINT (default: the built-in tiny pipeline, `builtin`; `builtin:sd3` and `builtin:controlnet` are
    the other built-in ones) into a verified build folder."""
    import time

    from fusionc.buildfs import check_report_outputs
    from fusionc.config import resolve
    from fusionc.gates import GateFailedError
    from fusionc.pipeline import compile_checkpoint
    from fusionc.report import build_report, write_reports

    start = time.perf_counter()
    from fusionc.config import read_variants

    tables = read_variants(Path(params["config_file"]).resolve()) if params.get("config_file") else []
    if tables or params.get("variant"):
        return _compile_fleet(ctx, params, tables)
    settings = resolve(ctx, params)
    if settings.jobs > 1:
        from fusionc.core.errors import BadInputError

        raise BadInputError(f"--jobs {settings.jobs} builds a fleet's variants in parallel: it needs a --config file "
                            "with [[variant]] tables")
    check_report_outputs([settings.out], ("--report", settings.report), ("--junit", settings.junit))  # before the work
    executor = None
    if settings.executor == "ray":  # one build: the passes' probes and evaluations run as Ray tasks
        from fusionc.ray_executor import RayTaskExecutor, ray_session

        executor = RayTaskExecutor()

    def report(manifest: dict[str, Any] | None, gates: list[Any], error: BaseException | None) -> str | None:
        """Write --report and --junit, each on its own; the message of one that could not be written (its folder
        vanished or its disk filled since the check above), so that it does not hide the compile's outcome."""
        whole = build_report(manifest, gates, settings.out, error, time.perf_counter() - start)
        problems = []
        for json_path, junit_path in ((settings.report, None), (None, settings.junit)):
            try:
                write_reports(json_path, junit_path, whole)
            except FusioncError as err:
                problems.append(str(err))
        return "; ".join(problems) or None

    try:
        if executor is not None:
            with ray_session(settings.ray_address):
                manifest = compile_checkpoint(settings.checkpoint, settings.options, settings.out,
                                              config=settings.manifest_entry(), cache_dir=settings.cache,
                                              executor=executor)
        else:
            manifest = compile_checkpoint(settings.checkpoint, settings.options, settings.out,
                                          config=settings.manifest_entry(), cache_dir=settings.cache)
    except GateFailedError as err:  # the build is written; report, show it, then exit 1
        problem = report(err.manifest, err.gates, None)
        _print_summary(err.manifest, settings.out)
        if problem:  # still exit 1, the one line names both
            raise GateFailedError(f"{err}; {problem}", err.manifest, err.gates) from err
        raise
    except Exception as err:  # bad input (a FusioncError, exit 2) or a bug in fusionc (exit 3): the reports say which
        error = err if isinstance(err, FusioncError) else FusioncError(internal_error_line(err, "compile"))
        error.exit_code = err.exit_code if isinstance(err, FusioncError) else 3
        problem = report(None, [], error)
        if problem and isinstance(err, FusioncError):
            both = FusioncError(f"{err}; {problem}")
            both.exit_code = err.exit_code
            raise both from err
        raise
    except KeyboardInterrupt:
        interrupted = FusioncError("interrupted")
        interrupted.exit_code = 130
        report(None, [], interrupted)  # best effort: the interruption is the outcome
        raise
    from fusionc.gates import GateResult

    problem = report(manifest, [GateResult(**g) for g in manifest.get("gates", [])], None)
    _print_summary(manifest, settings.out)
    if problem:  # the outputs were checked before the work: their folder went away or the disk filled since
        from fusionc.core.errors import BadInputError

        raise BadInputError(f"{problem} (the build at {settings.out} is complete)")


def _compile_fleet(ctx: click.Context, params: dict[str, Any], tables: list[dict[str, Any]]) -> None:
    """`fusionc compile --config F` with [[variant]] tables: build them all (or --variant NAME), one report."""
    from click.core import ParameterSource

    from fusionc.buildfs import check_report_outputs
    from fusionc.config import check_shared_keys, resolve
    from fusionc.core.errors import BadInputError, CheckFailedError
    from fusionc.fleet import run_fleet
    from fusionc.fleet_report import print_table, write

    if not tables:
        raise BadInputError("--variant needs a --config file with [[variant]] tables")
    ctx.meta["fusionc.fleet"] = True  # what an interrupted fleet leaves is said differently (handle_errors)
    if ctx.get_parameter_source("out") == ParameterSource.COMMANDLINE:
        raise BadInputError("--out names one build; a fleet writes each variant to its own out (set out in [[variant]])")
    wanted = params.get("variant")
    if wanted is not None:
        tables = [t for t in tables if t["name"] == wanted]
        if not tables:
            names = ", ".join(t["name"] for t in read_variants_names(params))
            raise BadInputError(f"--variant '{wanted}' is not in {params['config_file']}: choose one of {names}")
    shared = resolve(ctx, params, fleet=True)
    variants = [resolve(ctx, params, table) for table in tables]
    if wanted is None:  # every variant: a shared option none of them uses is ignored by the whole fleet
        check_shared_keys(shared, variants)
    outputs = (("--report", shared.report), ("--junit", shared.junit), ("--plot", shared.plot))
    check_report_outputs([v.out for v in variants], *outputs)

    def done(result: Any) -> None:
        mark = {"passed": "done", "failed": "FAILED (gate)", "error": "ERROR"}[result.status]
        click.echo(f"[fusionc] variant {result.name}: {mark} in {result.wall_s:.1f} s on {result.executor} "
                   f"{result.node}" + (f": {result.error}" if result.error else ""), err=True)

    report = run_fleet(shared.checkpoint, variants, shared.cache, shared.executor, shared.ray_address, done,
                       shared.options.allow_pickle, shared.jobs)
    problems = []  # each output on its own: one that cannot be written (a folder gone, a full disk) hides nothing
    for flag, paths in (("--report", (shared.report, None, None)), ("--junit", (None, shared.junit, None)),
                        ("--plot", (None, None, shared.plot))):
        try:
            write(report, *paths)
        except FusioncError as err:
            problems.append(str(err))
        except OSError as err:
            problems.append(f"cannot write {flag} '{next(p for p in paths if p)}': {err.strerror or err}")
    print_table(report)
    problem = "; ".join(problems)
    if report["exit_code"]:
        failed = report["failed"]
        raise CheckFailedError(f"{len(failed)} of {len(report['variants'])} variants failed: {', '.join(failed)}"
                               + (f"; {problem}" if problem else ""))
    if problem:
        raise BadInputError(f"{problem} (every variant's build is complete)")


def read_variants_names(params: dict[str, Any]) -> list[dict[str, Any]]:
    from fusionc.config import read_variants

    return read_variants(Path(params["config_file"]).resolve())


def _print_summary(manifest: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    device = f", device {manifest['device']}" if manifest.get("device") else ""
    table = Table(title=f"fusionc build: {out} (target {manifest['target']}{device})")
    # which set each figure comes from: psnr_db on the held-out verification set, psnr_db_calibration on the inputs
    # the build was tuned on (fusionc.inputs); the gap between them is how far the build generalizes
    tuned = any(c.get("psnr_db_calibration") is not None for c in manifest["components"].values())
    numbers = ("MB", "PSNR dB (held out)") + (("PSNR dB (calibration set)",) if tuned else ())
    for column in ("component", "files", *numbers):
        table.add_column(column, justify="right" if column in numbers else "left")
    for name, comp in manifest["components"].items():
        cells = [comp.get("psnr_db")] + ([comp.get("psnr_db_calibration")] if tuned else [])
        table.add_row(name, ", ".join(comp["files"]), f"{comp['bytes'] / 1e6:.2f}",
                      *("-" if psnr is None else f"{psnr:.1f}" for psnr in cells))
    where = sorted({c["verified_on"] for c in manifest["components"].values() if c.get("verified_on")})
    if where:
        table.caption = "PSNR measured on: " + "; ".join(where)
    console = Console()
    if not console.is_terminal:  # CI logs: rows and gate lines whole, not squeezed into 80 columns
        console = Console(width=160)
    console.print(table)
    marks = {"passed": "[green]pass[/green]", "failed": "[red]FAIL[/red]", "skipped": "[yellow]skip[/yellow]"}
    for gate in manifest.get("gates", []):  # one line each: what a CI step greps for
        console.print(f"gate {gate['gate']:15s} {marks[gate['status']]}  {gate['message']}", soft_wrap=True)


@main.command("verify")
@click.argument("build", type=click.Path(path_type=Path))
@click.option("--min-psnr", type=float, default=None, help="Exit 1 if a component is under this PSNR (dB).")
@click.option("--prompts", default=None,
              help="Verify on these prompts instead of the build's verification set (separated by ';' or '|').")
@click.option("--seeds", default=None, help="Comma-separated seeds, one per prompt (or one to count up from) [default: 0,1,...].")
@click.option("--steps", type=click.IntRange(1, 1000), default=None, help="Denoising steps [default: the build's verify_steps].")
@click.option("--qnn-verify-runtime", type=click.Choice(["htp", "cpu"]), default=None,
              help="QNN builds: the contexts on the HTP (emulator) or the QDQ graphs on ONNX Runtime's CPU EP "
                   "[default: what the compile used].")
@handle_errors
def verify_command(build: Path, min_psnr: float | None, prompts: str | None, seeds: str | None, steps: int | None,
                   qnn_verify_runtime: str | None) -> None:
    """Re-run verification of BUILD against the torch model it was compiled from (on its own held-out
    verification set, or on --prompts/--seeds of your choosing)."""
    from fusionc.core.errors import BadInputError
    from fusionc.verify_build import verify_build

    prompt_list = tuple(p.strip() for p in re.split(r"[;|]", prompts) if p.strip()) if prompts else ()
    if prompts is not None and not prompt_list:
        raise BadInputError("--prompts is empty: give e.g. --prompts 'a red circle on the left;a blue cross at the top'")
    try:
        seed_list = tuple(int(s) for s in seeds.split(",") if s.strip()) if seeds else ()
    except ValueError:
        raise BadInputError(f"--seeds '{seeds}' is not a comma-separated list of integers: write e.g. --seeds 3,4") from None
    verify_build(build, min_psnr, prompt_list, seed_list, steps, qnn_verify_runtime)


@main.command("inspect")
@click.argument("path", type=click.Path(path_type=Path))
@handle_errors
def inspect_command(path: Path) -> None:
    """Op histogram, parameters, bytes and MACs of MODEL.onnx or of every component of BUILD_DIR."""
    from fusionc.inspect_model import inspect_path

    inspect_path(path)


@main.command("generate")
@click.argument("prompt")
@click.option("--build", type=click.Path(path_type=Path), default=None, help="Build folder to run on its target's runtime.")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="Torch checkpoint: the reference for --build's PSNR, or what runs without --build (builtin, builtin:sd3, "
                   "builtin:controlnet or a folder) [default: builtin].")
@click.option("--out", type=click.Path(path_type=Path), default=Path("image.png"), show_default=True)
@click.option("--steps", type=click.IntRange(1, 1000), default=8, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--guidance", type=float, default=4.0, show_default=True, help="Classifier-free guidance (1 = off).")
@click.option("--min-psnr", type=float, default=None, help="Exit 1 if the build's image is under this PSNR vs torch.")
@click.option("--control-image", type=click.Path(path_type=Path), default=None,
              help="ControlNet pipelines: the conditioning image (resized to the build's size, RGB in [0, 1]).")
@click.option("--control-scale", type=float, default=None,
              help="ControlNet residual scale (diffusers' controlnet_conditioning_scale) [default: 1].")
@handle_errors
def generate_command(prompt: str, build: Path | None, checkpoint: Path | None, out: Path, steps: int, seed: int,
                     guidance: float, min_psnr: float | None, control_image: Path | None,
                     control_scale: float | None) -> None:
    """Generate one image for PROMPT with BUILD (or in torch with --checkpoint) and write a PNG."""
    from fusionc.generate import generate_command as run_generate

    run_generate(prompt, build, checkpoint, out, steps, seed, guidance, min_psnr, echo=click.echo,
                 control_image=control_image, control_scale=control_scale)


@main.command("debug-accuracy")
@click.argument("build", type=click.Path(path_type=Path))
@click.option("--component", default=None, help="One component [default: every quantized one].")
@click.option("--samples", type=click.IntRange(1, 64), default=2, show_default=True, help="Trajectory inputs to compare on.")
@click.option("--top", type=click.IntRange(1, 1000), default=15, show_default=True, help="Layers to list.")
@click.option("--tensors", default=None, help="Regular expression: compare only these tensors (frugal at SD scale).")
@click.option("--no-htp", is_flag=True, help="CPU fake-quant only (skip the HTP emulator).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write every tensor's figures.")
@handle_errors
def debug_accuracy_command(build: Path, component: str | None, samples: int, top: int, tensors: str | None,
                           no_htp: bool, json_path: Path | None) -> None:
    """Compare a QNN build's quantized tensors with fp32 (CPU fake-quant and HTP emulator); name the worst layers."""
    from fusionc.debug_accuracy import debug_build

    debug_build(build, component, samples, top, tensors, not no_htp, json_path, echo=click.echo)


@main.command("devices")
@click.option("--json", "as_json", is_flag=True, help="Print the profiles as JSON.")
@handle_errors
def devices_command(as_json: bool) -> None:
    """List device profiles: compute units, NPU throughput, bandwidth, model size limits."""
    import json

    from fusionc.bench import print_devices
    from fusionc.core.devices import DEVICES

    if as_json:
        click.echo(json.dumps({n: d.to_json() for n, d in DEVICES.items()}, indent=1))
    else:
        print_devices()


# the runtime a Hexagon estimate is for (fusionc.analysis.costfit.QNN_RUNTIMES; tests check the two lists agree)
qnn_runtime_option = click.option(
    "--qnn-runtime", type=click.Choice(["context-binary", "onnxruntime"]), default=None,
    help="Runtime of the Hexagon estimates: QNN running the context binary, or ONNX Runtime's QNN EP running the "
         "EP-context model [default: context-binary].")


@main.command("bench")
@click.argument("builds", nargs=-1, type=click.Path(path_type=Path))
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write everything as JSON.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None, help="Write a PNG chart.")
@click.option("--steps", type=int, default=8, show_default=True, help="Denoising steps per image.")
@click.option("--guidance/--no-guidance", default=True, show_default=True,
              help="Classifier-free guidance: UNet at batch 2, text encoder twice.")
@click.option("--budget", type=float, default=2.0, show_default=True, help="End-to-end budget in seconds.")
@click.option("--runs", type=click.IntRange(1), default=10, show_default=True, help="Timed runs per component.")
@click.option("--warmup", type=click.IntRange(0), default=2, show_default=True)
@click.option("--no-measure", is_flag=True, help="Estimates only (skip running anything).")
@click.option("--emulator", is_flag=True,
              help="Also time a qnn build's contexts in the HTP emulator here (x86-64 Linux or Windows: no device "
                   "figure, and hours per call at SD-1.5's size).")
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Keep the graph statistics an onnx build's Hexagon and Apple estimates export from its checkpoint "
                   "(as `fusionc estimate --cache`) [default: $FUSIONC_CACHE].")
@qnn_runtime_option
@click.option("--check", is_flag=True, help="Exit 1 when no backend fits the budget.")
@click.pass_context
@handle_errors
def bench_command(ctx: click.Context, check: bool, **kwargs: Any) -> None:
    """Measured and estimated latency of each component of BUILD... and the end-to-end budget."""
    from click.core import ParameterSource

    from fusionc.bench import run_bench_cli
    from fusionc.core.errors import BadInputError, CheckFailedError

    timing = [f"--{n}" for n in ("runs", "warmup", "emulator")
              if ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE]
    if kwargs["no_measure"] and timing:  # they time the measured runs that --no-measure skips
        raise BadInputError(f"{'/'.join(timing)} time{'s' if len(timing) == 1 else ''} the measured runs, and "
                            "--no-measure skips them: drop one")

    result = run_bench_cli(**kwargs, check=check)
    if check and not any(r["within_budget"] for r in result["budgets"]):
        raise CheckFailedError(f"no backend meets the {kwargs['budget']:g} s budget")


@main.command("estimate")
@click.argument("source", required=False, type=click.Path(path_type=Path))
@click.option("--components", default=None, help="Comma-separated components [default: the pipeline's].")
@click.option("--device", "devices", multiple=True, help="Device profile (repeatable) [default: every profile].")
@click.option("--precision", default=None, help="fp16 | w8a16 | w8a8 | w4a16 [default: w8a16 Hexagon, fp16 ANE].")
@click.option("--palettize", type=float, default=None, help="Bits per weight (palettized/compressed) [default: none].")
@click.option("--height", type=click.IntRange(1), default=None, help="Image height in pixels [default: the model's].")
@click.option("--width", type=click.IntRange(1), default=None, help="Image width in pixels [default: the model's].")
@click.option("--steps", type=int, default=8, show_default=True, help="Denoising steps per image.")
@click.option("--guidance/--no-guidance", default=True, show_default=True,
              help="Classifier-free guidance: the denoiser and a ControlNet twice per step (Core ML: one batch-2 call).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write the estimates as JSON.")
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Keep a checkpoint's graph statistics in this folder; a second estimate reads them back.")
@qnn_runtime_option
@handle_errors
def estimate_command(**kwargs: Any) -> None:
    """Estimated latency per component and device of CHECKPOINT, MODEL.onnx or BUILD, with nothing built.

    Without SOURCE: the built-in tiny pipeline. A checkpoint is exported from its configs alone (no weight read).
    """
    from fusionc.estimate import run_estimate_cli

    run_estimate_cli(**kwargs)


@main.command("passes", context_settings={"ignore_unknown_options": True})
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@click.argument("compile_args", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def passes_command(as_json: bool, compile_args: tuple[str, ...]) -> None:
    """The pass list of a target, in order: each pass, why it sits there, whether the options switch it on.

    Takes the options of `fusionc compile` (--target, --config, --palettize, --attention, ...)."""
    from fusionc.config import resolve
    from fusionc.pass_list import pass_list, print_pass_list

    with compile_command.make_context("fusionc passes", list(compile_args)) as compile_ctx:
        options = resolve(compile_ctx, compile_ctx.params).options
    rows = pass_list(options)
    if as_json:
        import json

        click.echo(json.dumps({"target": options.target, "passes": rows}, indent=1))
    else:
        print_pass_list(options.target, rows)


if __name__ == "__main__":
    main()
