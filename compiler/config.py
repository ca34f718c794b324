"""`fusionc compile --config fusionc.toml`: every compile option from a file, so a build is reproducible from a repo.

The file holds the same names as the command line (`--max-size` is `max_size` or `max-size`), grouped in any of
the tables [compile], [gates], [report], [verify], [coreml], [compression], [qnn] (the grouping is for readers;
a name may appear once). Values go through the very click types of the flags, so the file and the command line
accept and refuse the same things; CompileOptions fields without a flag (opset, seed, extra, ...) are keys of the
file only, checked against the type of their default. Relative paths in the file are relative to the file, not to the working
directory. Precedence: defaults < the file < flags given on the command line (detected with click's
`ctx.get_parameter_source`, so a flag that merely repeats its default still overrides the file).

    [compile]
    checkpoint = "models/tiny-sd"        # default: the built-in pipeline
    target = "onnx"
    out = "build/onnx"
    components = ["text_encoder", "unet", "vae_decoder"]
    height = 64
    [gates]
    min_psnr = 40
    max_size = { total = 25, unet = 20 }  # MB; or max_size = 25 (total)
    max_latency_ms = { unet = 150 }       # cost-model estimate on the build's device (onnx: set device)
    [report]
    json = "reports/compile.json"
    junit = "reports/compile.xml"

The effective configuration (every value, where each came from) is written into the manifest under "config".

A fleet (fusionc.fleet) adds `[[variant]]` tables: each holds a `name` and any option of one build (target,
device, precision, palettize, out, ...); the tables above hold what the variants share. Precedence for a
variant: defaults < the shared tables < flags on the command line < the variant's own keys.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from fusionc.core.errors import BadInputError
from fusionc.gates import parse_budget
from fusionc.core.options import (ALL_COMPONENTS, CompileOptions, check_option_combinations, check_target_options,
                                  foreign_options)

SECTIONS = ("compile", "gates", "report", "verify", "coreml", "compression", "qnn")
ALIASES = {"json": "report", "verify": "no_verify"}  # file name -> CLI parameter name
PATH_KEYS = ("checkpoint", "out", "report", "junit", "cache", "recipe", "plot")
MAPPED = {"verify": "no_verify"}  # CompileOptions fields whose flag has another name
COMPANIONS = {"group_size": "granularity"}  # a file's option -> the option that, given as a flag, overrides it too


def file_only_fields(command: click.Command) -> dict[str, type | None]:
    """CompileOptions fields without a flag (opset, seed, extra, ...): settable from the file only, typed by their
    default. Computed, so a field added to CompileOptions is in the file at once."""
    flags = {p.name for p in command.params}
    return {f.name: (None if f.default is None or f.default is dataclasses.MISSING else type(f.default))
            if f.default_factory is dataclasses.MISSING else dict
            for f in dataclasses.fields(CompileOptions) if f.name not in flags and f.name not in MAPPED}
NOT_OPTIONS = ("checkpoint", "out", "report", "junit", "cache", "config_file", "components", "no_verify",
               "max_size", "max_latency_ms", "plot", "executor", "ray_address", "variant", "jobs")


@dataclass
class CompileSettings:
    """Everything one `fusionc compile` run needs, after the file and the flags are merged."""

    checkpoint: Path | None
    out: Path
    options: CompileOptions
    report: Path | None = None
    junit: Path | None = None
    cache: Path | None = None
    config_file: Path | None = None
    config_sha256: str | None = None
    sources: dict[str, str] = field(default_factory=dict)  # parameter -> "command line" | "config file"
    variant: str | None = None  # the [[variant]] this build is, in a fleet
    plot: Path | None = None  # fleet: size vs estimated latency PNG
    executor: str = "local"  # fleet: local | ray
    ray_address: str | None = None
    jobs: int = 1  # fleet, executor local: variants built at a time (1: in this process)

    def manifest_entry(self) -> dict[str, Any]:
        """The effective configuration, for manifest["config"]."""
        return {
            "file": None if self.config_file is None else str(self.config_file),
            "sha256": self.config_sha256,
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "out": str(self.out),
            "cache": None if self.cache is None else str(self.cache),
            "report": None if self.report is None else str(self.report),
            "junit": None if self.junit is None else str(self.junit),
            "from_config_file": sorted(k for k, s in self.sources.items() if s == "config file"),
            "from_command_line": sorted(k for k, s in self.sources.items() if s == "command line"),
            **({"variant": self.variant,
                "from_variant": sorted(k for k, s in self.sources.items() if s.startswith("variant"))}
               if self.variant else {}),
        }


def _normalize(key: str) -> str:
    key = key.replace("-", "_")
    return ALIASES.get(key, key)


def _verify_value(key: str, value: Any, where: str) -> bool:
    """`verify = false` or the flag's own name, `no_verify = true` (or `no-verify`): the no_verify parameter.
    A bool only (a string went through click's bool; `no_verify = true` was negated like `verify`)."""
    if not isinstance(value, bool):
        raise BadInputError(f"{where}: {key} must be true or false")
    return not value if key.replace("-", "_") == "verify" else value


def _load_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BadInputError(f"config file '{path}' does not exist")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise BadInputError(f"config file '{path}' is not valid TOML: {err}") from err


VARIANT_ONLY = ("name",)
NOT_PER_VARIANT = ("checkpoint", "cache", "report", "junit", "config_file", "allow_pickle", "plot", "executor",
                   "ray_address", "jobs")


def read_variants(path: Path) -> list[dict[str, Any]]:
    """The file's [[variant]] tables (raw values by parameter name, paths made absolute); [] when none."""
    data = _load_toml(path)
    tables = data.get("variant", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise BadInputError(f"config file '{path}': write each variant as a [[variant]] table")
    if "variant" in data and not tables:
        raise BadInputError(f"config file '{path}': variant = [] lists no variants: add [[variant]] tables, or drop "
                            "it for one build")
    variants = []
    for i, table in enumerate(tables):
        name = table.get("name")
        if not isinstance(name, str) or not name.strip() or "/" in name:
            raise BadInputError(f"config file '{path}': variant {i + 1} needs a name (a word, no '/')")
        flat: dict[str, Any] = {}
        for key, value in table.items():
            if _normalize(key) in flat:
                raise BadInputError(f"config file '{path}': variant '{name}' sets '{_normalize(key)}' twice")
            flat[_normalize(key)] = (_verify_value(key, value, f"config file '{path}': variant '{name}'")
                                     if _normalize(key) == "no_verify" else value)
        for key in NOT_PER_VARIANT:
            if key in flat:
                raise BadInputError(f"config file '{path}': variant '{name}' sets '{key}': it is shared by the "
                                    "fleet, set it in [compile]")
        if isinstance(flat.get("out"), str):
            flat["out"] = (path.parent / flat["out"]).resolve()
        if isinstance(flat.get("recipe"), str):
            flat["recipe"] = (path.parent / flat["recipe"]).resolve()
        variants.append(flat)
    names = [v["name"] for v in variants]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise BadInputError(f"config file '{path}': two variants are named '{dup}': names must be unique")
    return variants


def read_config(path: Path) -> dict[str, Any]:
    """The file's shared values by parameter name (raw TOML values, paths made absolute); [[variant]] aside."""
    data = _load_toml(path)
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key == "variant":
            continue
        items = value.items() if isinstance(value, dict) and key in SECTIONS else [(key, value)]
        for name, item in items:
            if _normalize(name) == "no_verify":  # `verify = false` (or `no_verify = true`) in the file
                item = _verify_value(name, item, f"config file '{path}'")
            name = _normalize(name)
            if name in flat:
                raise BadInputError(f"config file '{path}': '{name}' is set twice")
            flat[name] = item
    for name in PATH_KEYS:
        if isinstance(flat.get(name), str) and not (name == "checkpoint" and flat[name].startswith("builtin")):
            flat[name] = (path.parent / flat[name]).resolve()  # `builtin`, `builtin:controlnet` are names, not paths
    return flat


def _convert(command: click.Command, ctx: click.Context, name: str, value: Any, path: Path) -> Any:
    """A file value through the same click type as its flag (so choices and types are checked alike)."""
    file_only = file_only_fields(command)
    if name in file_only:
        kind = file_only[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is not None and (not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)):
            raise BadInputError(f"config file '{path}': {name} must be a{'n' if kind.__name__[0] in 'aeiou' else ''} "
                                f"{kind.__name__}")
        return value
    params = {p.name: p for p in command.params}
    if name not in params or name in ("config_file", "variant"):
        known = sorted({p.name for p in command.params if p.name not in ("config_file", "variant")} | set(file_only))
        raise BadInputError(f"config file '{path}': unknown option '{name}' (known: {', '.join(known)})")
    if name == "components" and isinstance(value, list):
        value = ",".join(map(str, value))
    if name in ("max_size", "max_latency_ms"):
        return _budget_values(value)
    try:
        return params[name].type_cast_value(ctx, value)
    except click.BadParameter as err:
        raise BadInputError(f"config file '{path}': {name} = {value!r}: {err.message}") from err


def _budget_values(value: Any) -> tuple[str, ...]:
    if isinstance(value, dict):
        return tuple(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return tuple(map(str, value))
    return (str(value),)


def parse_components(value: str | None) -> tuple[str, ...] | None:
    if not value:
        return None
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [n for n in names if n not in ALL_COMPONENTS]
    if unknown:
        raise BadInputError(f"unknown component '{unknown[0]}': choose from {', '.join(ALL_COMPONENTS)}")
    return names or None


def resolve(ctx: click.Context, params: dict[str, Any], variant: dict[str, Any] | None = None, *,
            fleet: bool = False) -> CompileSettings:
    """Merge the config file (if any) under the flags given explicitly, and build the CompileSettings.

    `variant`: one [[variant]] table of the file (read_variants), whose keys override everything else; `fleet`:
    the fleet's shared settings (no variant), whose options may be in effect only in some variants (each
    variant's resolve checks its own)."""
    params = dict(params)
    config_file = params.pop("config_file", None)
    sources = {k: "command line" for k in params if ctx.get_parameter_source(k) in
               (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    extra: dict[str, Any] = {}
    digest = None
    if config_file is not None:
        config_file = Path(config_file).resolve()
        digest = hashlib.sha256(config_file.read_bytes()).hexdigest() if config_file.is_file() else None
        for name, raw in read_config(config_file).items():
            value = _convert(ctx.command, ctx, name, raw, config_file)
            if name in sources:
                continue  # the command line wins
            sources[name] = "config file"
            (extra if name in file_only_fields(ctx.command) else params).__setitem__(name, value)
    for name, raw in (variant or {}).items():
        if name in VARIANT_ONLY:
            continue
        value = _convert(ctx.command, ctx, name, raw, config_file)
        sources[name] = f"variant {variant['name']}"
        (extra if name in file_only_fields(ctx.command) else params).__setitem__(name, value)
    # fleet-only options on one build, and a Ray address without Ray: they would be ignored (RAY_ADDRESS in the
    # environment is not an option given: it may be set for other work)
    if params.get("plot") is not None and variant is None and not fleet:
        raise BadInputError("--plot draws a fleet's variants: it needs a --config file with [[variant]] tables; drop "
                            "it for one build")
    if (params.get("ray_address") and (params.get("executor") or "local") != "ray"
            and ctx.get_parameter_source("ray_address") != ParameterSource.ENVIRONMENT):
        raise BadInputError("--ray-address is for --executor ray: add --executor ray or drop it")
    try:
        max_size = parse_budget(params.get("max_size") or None, "--max-size")
        max_latency = parse_budget(params.get("max_latency_ms") or None, "--max-latency-ms")
    except BadInputError as err:
        raise BadInputError(f"{err} (in config file '{config_file}')" if sources.get(
            "max_size") == "config file" or sources.get("max_latency_ms") == "config file" else str(err)) from None
    fields = {f.name for f in dataclasses.fields(CompileOptions)}
    values = {k: v for k, v in params.items() if k in fields and k not in NOT_OPTIONS and v is not None}
    options = CompileOptions(components=parse_components(params.get("components")),
                             verify=not params.get("no_verify", False), max_size=max_size,
                             max_latency_ms=max_latency, **values, **extra)
    if variant is not None:  # a shared key the variant's target does not honour is for the other variants
        shared = {MAPPED.get(k, k) for k, s in sources.items() if s == "config file"}
        defaults = CompileOptions()
        options = dataclasses.replace(options, **{name: getattr(defaults, name) for name in
                                                  foreign_options(options, shared) if name in shared})
    # a target's foreign option (e.g. --palettize with --target qnn) is refused here, before any work
    given = {MAPPED.get(k, k) for k, s in sources.items() if variant is None or s != "config file"}
    where = {MAPPED.get(k, k): (f"config file '{config_file}'" if s == "config file" else s)
             for k, s in sources.items() if s != "command line"}
    if not fleet:  # a fleet's shared keys are checked per variant, and as a whole by check_shared_keys
        check_target_options(options, given, where)
    # an option with no effect (--block-size without --quantize-weights, --min-psnr with --no-verify, ...) or a
    # gate that cannot be evaluated: refused too, before any work; a fleet's shared keys only where given
    shared = {MAPPED.get(k, k) for k, s in sources.items() if s == "config file"} if variant is not None else set()
    # the file's group size belongs to the file's grouped palettization, which a --granularity flag overrides: not
    # counted as set then (a --group-size given on the command line with --granularity per_tensor still is)
    overridden = {name for name, parent in COMPANIONS.items()
                  if sources.get(name) == "config file" and sources.get(parent) == "command line"}
    given, shared = given - overridden, shared | overridden
    if not fleet:
        check_option_combinations(options, given, where, shared)
    out = params.get("out") or Path("build") / (variant["name"] if variant else options.target)
    return CompileSettings(params.get("checkpoint"), Path(out), options, params.get("report"), params.get("junit"),
                           params.get("cache"), config_file, digest, sources, variant["name"] if variant else None,
                           params.get("plot"), params.get("executor") or "local", params.get("ray_address"),
                           params.get("jobs") or 1)


def check_shared_keys(shared: CompileSettings, variants: list[CompileSettings]) -> None:
    """A fleet's shared config-file option that no variant uses (each one's target does not honour it, the variant
    sets its own, or it has no effect with the variant's other options) would be ignored by the whole fleet:
    refused (exit 2) before any work. Call it with every variant of the file (not a --variant selection, whose
    shared keys may be for the variants left out)."""
    from fusionc.core.options import inert_options, targets_of

    fields = {f.name for f in dataclasses.fields(CompileOptions)}
    for key, source in shared.sources.items():
        name = MAPPED.get(key, key)
        if source != "config file" or name not in fields or key in NOT_OPTIONS:
            continue
        users = [v.variant for v in variants if v.sources.get(key) == "config file"
                 and v.options.target in targets_of(name)
                 and name not in {n for n, _ in inert_options(v.options, {name})}]
        if not users:
            raise BadInputError(f"config file '{shared.config_file}': --{key.replace('_', '-')} is set for the fleet, "
                                "and no variant uses it (not its target's option, set by the variant itself, or "
                                "without effect there): move it into the [[variant]] that needs it, or drop it")
