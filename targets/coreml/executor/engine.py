"""MILExecutor: runs a MIL program (what a .mlpackage holds) op by op in numpy, with Core ML's numerics.

Why our own: Core ML itself only runs on macOS, and coremltools' value inference covers a fraction of the
op set (no conv, instance_norm, silu, upsample) and folds constants only. This executor walks the `main`
function of the exact program we serialized (loaded back from the .mlpackage, so ct.convert's passes are
included) and gives every op a numpy implementation from an extensible table (`register`).

Numerics: each op computes in float32 from its inputs and rounds its outputs to the dtype the program
declares (fp16 in an fp16 program), which is how the GPU and the Neural Engine store activations between
ops. constexpr_* weight ops are decompressed once, at load time, as Core ML does, unless their dense form would
pass LAZY_WEIGHT_BYTES: then each is decompressed just before its first use in a call and dropped after its last
(T5-XXL's four 6-bit chunks are 9.5 GB dense in fp16 beside 3.6 GB compressed: decompressed at load, the
executor took the verification past 18 GB; per call it costs one decompression of every weight).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from coremltools.converters.mil.mil import Program, Var, types

OpFn = Callable[..., Any]
EXECUTORS: dict[str, OpFn] = {}
LAZY_WEIGHT_BYTES = 2 << 30  # dense constexpr weights above this are decompressed per call, at their first use


def register(*op_types: str) -> Callable[[OpFn], OpFn]:
    """Decorator: register a numpy implementation `fn(op, **inputs)` for MIL op types."""

    def wrap(fn: OpFn) -> OpFn:
        for op_type in op_types:
            EXECUTORS[op_type] = fn
        return fn

    return wrap


def np_dtype(var: Var) -> Any:
    dtype = var.dtype
    if types.is_tensor(var.sym_type):
        dtype = var.sym_type.get_primitive()
    if dtype == types.bool:
        return np.bool_
    return types.nptype_from_builtin(dtype)


@dataclass
class OpProfile:
    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


class MILExecutor:
    """Executes `program.functions[function]`; constants are materialized once, constexpr weights once (at load)
    or per call (`lazy_weights`: True, False, or None to decide by their dense size against LAZY_WEIGHT_BYTES)."""

    def __init__(self, program: Program, function: str = "main", lazy_weights: bool | None = None) -> None:
        self.function = program.functions[function]
        self.constants: dict[str, np.ndarray] = {}
        self.steps: list[Any] = []
        self.profile: OpProfile | None = None
        constexprs = [op for op in self.function.operations if op.op_type.startswith("constexpr_")]
        if lazy_weights is None:
            lazy_weights = sum(_dense_bytes(op.outputs[0]) for op in constexprs) > LAZY_WEIGHT_BYTES
        self.deferred: dict[str, Any] = {}  # constexpr output name -> op, decompressed in __call__ (lazy_weights)
        returned = {v.name for v in self.function.outputs}
        missing = set()
        for op in self.function.operations:
            if op.op_type == "const":
                self.constants[op.outputs[0].name] = np.asarray(op.outputs[0].val)
            elif op.op_type.startswith("constexpr_"):
                if op.op_type not in EXECUTORS:
                    missing.add(op.op_type)
                elif lazy_weights and op.outputs[0].name not in returned:
                    self.deferred[op.outputs[0].name] = op
                else:
                    self.constants[op.outputs[0].name] = self._decompress(op, self.constants)
            else:
                if op.op_type not in EXECUTORS:
                    missing.add(op.op_type)
                self.steps.append(op)
        if missing:
            raise NotImplementedError(f"MIL executor has no implementation for ops: {', '.join(sorted(missing))}")
        self.input_names = list(self.function.inputs)
        self.output_names = [v.name for v in self.function.outputs]
        self._last_use = self._liveness()

    @classmethod
    def from_mlpackage(cls, path: str | Path) -> "MILExecutor":
        return cls(load_program(path))

    def _decompress_inputs(self, op: Any, env: dict[str, np.ndarray]) -> None:
        """The deferred weights `op` reads, decompressed into `env` at their first use (freed after their last)."""
        for var in _input_vars(op):
            if var.name in self.deferred and var.name not in env:
                env[var.name] = self._decompress(self.deferred[var.name], env)

    def _decompress(self, op: Any, env: dict[str, np.ndarray]) -> np.ndarray:
        self._decompress_inputs(op, env)  # a constexpr of a deferred constexpr (constexpr_cast of a LUT)
        out = np.asarray(EXECUTORS[op.op_type](op, **self._inputs(op, env)))
        return out.astype(np_dtype(op.outputs[0]), copy=False)

    def _liveness(self) -> dict[int, list[str]]:
        """For each step, the values last read there (freed afterwards to bound peak memory)."""
        last: dict[str, int] = {}
        for i, op in enumerate(self.steps):
            for var in _input_vars(op):
                last[var.name] = i
        keep = set(self.output_names) | set(self.constants)
        free: dict[int, list[str]] = {}
        for name, i in last.items():
            if name not in keep:
                free.setdefault(i, []).append(name)
        return free

    def _inputs(self, op: Any, env: dict[str, np.ndarray]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in op.inputs.items():
            if isinstance(value, (list, tuple)):
                out[name] = [self._value(v, env) for v in value]
            else:
                out[name] = self._value(value, env)
        return out

    def _value(self, var: Var, env: dict[str, np.ndarray]) -> Any:
        if var.name in env:
            return env[var.name]
        if var.name in self.constants:
            return self.constants[var.name]
        if var.val is not None:
            return np.asarray(var.val)
        raise KeyError(f"MIL executor: value '{var.name}' is not computed yet")

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        env: dict[str, np.ndarray] = {}
        for name, var in self.function.inputs.items():
            if name not in feeds:
                raise KeyError(f"missing input '{name}'")
            arr = np.asarray(feeds[name])
            if tuple(arr.shape) != tuple(var.shape):
                raise ValueError(f"input '{name}' has shape {arr.shape}, the program expects {tuple(var.shape)}")
            env[name] = arr.astype(np_dtype(var))
        for i, op in enumerate(self.steps):
            start = time.perf_counter() if self.profile is not None else 0.0
            self._decompress_inputs(op, env)
            result = EXECUTORS[op.op_type](op, **self._inputs(op, env))
            outs = result if isinstance(result, (list, tuple)) else [result]
            for var, arr in zip(op.outputs, outs):
                env[var.name] = np.asarray(arr).astype(np_dtype(var), copy=False)
            for name in self._last_use.get(i, ()):
                env.pop(name, None)
            if self.profile is not None:
                self.profile.seconds[op.op_type] = self.profile.seconds.get(op.op_type, 0.0) + time.perf_counter() - start
                self.profile.counts[op.op_type] = self.profile.counts.get(op.op_type, 0) + 1
        return {name: self._value_out(name, env) for name in self.output_names}

    def _value_out(self, name: str, env: dict[str, np.ndarray]) -> np.ndarray:
        if name in env:
            return env[name]
        return self.constants[name]


def _dense_bytes(var: Var) -> int:
    """Bytes of a tensor var's value at its declared dtype (0 when its shape is not static)."""
    shape = var.shape if types.is_tensor(var.sym_type) else ()
    if any(not isinstance(d, (int, np.integer)) for d in shape):
        return 0
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(np_dtype(var)).itemsize


def _input_vars(op: Any) -> list[Var]:
    out = []
    for value in op.inputs.values():
        out.extend(value if isinstance(value, (list, tuple)) else [value])
    return out


def load_program(path: str | Path) -> Program:
    """The MIL program inside an .mlpackage (weights read from its blob file)."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load

    model = ct.models.MLModel(str(path), skip_model_load=True)
    spec = model.get_spec()
    return load(spec, spec.specificationVersion, model.weights_dir)
