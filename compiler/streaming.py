"""Weights that stay on disk: a component too large to hold in memory is built on the meta device and read tensor by
tensor from its safetensors files, never as a whole.

T5-XXL's encoder is 19 GB in fp32: loading it (fusionc.checkpoint.load_component) and then exporting it held every
weight at least once, and the compile was killed at 20 GB while loading. A streamed component instead is

- built with its parameters on the meta device (buffers stay real: position ids, sin-cos tables) from its config,
  its file's tensors checked against it one at a time (shapes, float dtype, finite values: the loader's checks);
- run in torch (reference outputs, trajectories) with each block's weights read just before the block runs and
  dropped after it: a forward pre-hook per block (the largest sub-module under BLOCK_BYTES, so a module that reads
  a child's weight directly, as T5's attention reads its bias table's device, has it), so the peak is one block;
- exported with its weights as placeholders (fusionc.export.export_component): every initializer that is a meta
  parameter becomes an `ir.LazyTensor` that reads its bytes from the safetensors file when asked, one tensor at a
  time (the driver then writes them to the scratch external data, fusionc.core.memory.offload_weights, which
  reads each once; the passes map them from there as for any other large component).

The values are the loaded path's, byte for byte (the same file bytes, cast to the module's dtype as `.float()`
does); tests/test_streaming.py compares the two paths. It is used for components with at least
`stream_threshold()` bytes of weights (FUSIONC_STREAM_WEIGHTS_BYTES, default 4 GiB) stored as safetensors.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from fusionc.core.errors import BadInputError

STREAM_ENV = "FUSIONC_STREAM_WEIGHTS_BYTES"
DEFAULT_STREAM_BYTES = 4 << 30
BLOCK_BYTES = 1 << 30  # a torch block whose weights are read together for one forward (T5-XXL's: 0.77 GB)

_TORCH_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                 "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                 "BOOL": torch.bool}


def stream_threshold() -> int:
    """Weight bytes from which a component is streamed: FUSIONC_STREAM_WEIGHTS_BYTES, else 4 GiB."""
    raw = os.environ.get(STREAM_ENV, "")
    try:
        return int(raw) if raw.strip() else DEFAULT_STREAM_BYTES
    except ValueError as err:
        raise BadInputError(f"{STREAM_ENV}={raw!r} must be a whole number of bytes") from err


@dataclass(frozen=True)
class StoredTensor:
    """Where one tensor's bytes sit in a safetensors file."""

    file: Path
    key: str
    dtype: str  # safetensors' name: F32, F16, BF16, ...
    shape: tuple[int, ...]
    offset: int  # from the start of the file
    nbytes: int

    def read(self) -> torch.Tensor:
        """The tensor, read (not mapped) into memory of its own: it frees its bytes when dropped."""
        torch_dtype = _TORCH_DTYPES[self.dtype]
        if self.nbytes == 0:
            return torch.empty(self.shape, dtype=torch_dtype)
        # read into a tensor torch owns: a torch.frombuffer tensor freed its bytearray only at the next garbage
        # collection, so a scan of the file one tensor at a time held most of it (1.37 GB of a 1.3 GB T5)
        raw = torch.empty(self.nbytes, dtype=torch.uint8)
        with open(self.file, "rb") as handle:
            handle.seek(self.offset)
            if handle.readinto(memoryview(raw.numpy())) != self.nbytes:
                raise BadInputError(f"'{self.file}' is truncated: tensor '{self.key}' runs past its end")
        return raw.view(torch_dtype).reshape(self.shape)


def read_index(files: list[Path]) -> dict[str, StoredTensor]:
    """Every tensor of the safetensors files, from their headers only (no weight is read)."""
    index: dict[str, StoredTensor] = {}
    for file in files:
        if not file.exists():
            raise BadInputError(f"weight shard '{file}' named in the index is missing")
        try:
            size = file.stat().st_size
            with open(file, "rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                if length > size - 8:
                    raise ValueError("header longer than the file")
                header = json.loads(handle.read(length))
            start = 8 + length
            for key, entry in header.items():
                if key == "__metadata__":
                    continue
                begin, end = entry["data_offsets"]
                if entry["dtype"] not in _TORCH_DTYPES or start + end > size or end < begin:
                    raise ValueError(f"tensor '{key}': dtype {entry['dtype']}, bytes {begin}..{end} of {size - start}")
                index[key] = StoredTensor(file, key, entry["dtype"], tuple(int(d) for d in entry["shape"]),
                                          start + int(begin), int(end) - int(begin))
        except (OSError, ValueError, KeyError, TypeError, struct.error) as err:
            raise BadInputError(f"'{file}' is not a readable safetensors file (truncated or corrupt): {err}") from err
    return index


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside get their parameters on the meta device; buffers (position ids, tables) stay real.
    (torch.device('meta') would lose the buffers' values, which no checkpoint file holds when not persistent.)"""
    original = torch.nn.Module.register_parameter

    def register(module: torch.nn.Module, name: str, param: torch.nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    torch.nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = original  # type: ignore[method-assign]


class StreamedWeights:
    """The file tensors of a module whose parameters are on the meta device, and the hooks that read them."""

    def __init__(self, module: torch.nn.Module, sources: dict[int, StoredTensor], folder: Path) -> None:
        self.sources = sources  # id(meta parameter) -> its bytes in the file
        self.folder = folder
        self.reads = 0  # tensors read for torch forwards (tests)
        self.stand_ins: dict[int, StoredTensor] = {}  # data_ptr of a traced stand-in -> its file tensor (pause)
        self.blocks = []
        for block, direct_only in _blocks(module):
            slots = [(owner, attr, param) for owner, attr, param in _meta_slots(block, direct_only)
                     if id(param) in sources]
            if slots:
                self.blocks.append((block, slots))
        self.handles: list[Any] = []
        self._install()

    def _install(self) -> None:
        for block, slots in self.blocks:
            self.handles.append(block.register_forward_pre_hook(lambda _m, _a, slots=slots: self._fill(slots)))
            self.handles.append(block.register_forward_hook(lambda _m, _a, _o, slots=slots: self._empty(slots),
                                                            always_call=True))

    def _fill(self, slots: list[tuple[torch.nn.Module, str, torch.nn.Parameter]]) -> None:
        for owner, attr, meta in slots:
            value = self.sources[id(meta)].read().to(meta.dtype)
            owner._parameters[attr] = torch.nn.Parameter(value, requires_grad=False)
            self.reads += 1

    def _empty(self, slots: list[tuple[torch.nn.Module, str, torch.nn.Parameter]]) -> None:
        for owner, attr, meta in slots:
            owner._parameters[attr] = meta

    @contextlib.contextmanager
    def filled(self, module: torch.nn.Module) -> Iterator[None]:
        """`module`'s weights read for a call outside its forward (T5's position bias table, computed once)."""
        slots = [(owner, attr, param) for owner, attr, param in _meta_slots(module, False) if id(param) in self.sources]
        self._fill(slots)
        try:
            yield
        finally:
            self._empty(slots)

    @contextlib.contextmanager
    def pause(self) -> Iterator[None]:
        """For the exporter's trace: no hooks (torch.export refuses them), and each meta parameter replaced by an
        uninitialized CPU tensor (meta parameters beside real CPU constants, such as T5's position bias table, fail
        the trace's device checks). Those are allocated, never written: no page of them becomes resident. They
        map to the same file tensors (`source`), so the exported graph's initializers can be pointed at the files.
        """
        for handle in self.handles:
            handle.remove()
        self.handles = []
        placed = []
        for _block, slots in self.blocks:
            for owner, attr, meta in slots:
                if owner._parameters.get(attr) is meta:
                    stand_in = torch.nn.Parameter(torch.empty(meta.shape, dtype=meta.dtype), requires_grad=False)
                    self.sources[id(stand_in)] = self.sources[id(meta)]
                    if stand_in.numel():
                        self.stand_ins[stand_in.data_ptr()] = self.sources[id(meta)]
                    owner._parameters[attr] = stand_in
                    placed.append((owner, attr, meta, stand_in))
        try:
            yield
        finally:
            for owner, attr, meta, stand_in in placed:
                owner._parameters[attr] = meta
                self.sources.pop(id(stand_in), None)
            self.stand_ins.clear()
            self._install()

    def source(self, tensor: Any) -> StoredTensor | None:
        """The file tensor of a meta parameter or of its stand-in (or a view of the stand-in's memory)."""
        found = self.sources.get(id(tensor))
        if found is None and isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu" and tensor.numel():
            found = self.stand_ins.get(tensor.data_ptr())
        return found


def _meta_slots(module: torch.nn.Module, direct_only: bool) -> Iterator[tuple[torch.nn.Module, str, torch.nn.Parameter]]:
    seen: set[tuple[int, str]] = set()
    owners = [module] if direct_only else list(module.modules())
    for owner in owners:
        for attr, param in owner._parameters.items():
            if param is not None and param.device.type == "meta" and (id(owner), attr) not in seen:
                seen.add((id(owner), attr))
                yield owner, attr, param


def _meta_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in {id(p): p for p in module.parameters()}.values()
               if p.device.type == "meta")


def _blocks(module: torch.nn.Module) -> Iterator[tuple[torch.nn.Module, bool]]:
    """(module, direct parameters only) pairs whose forward reads a set of weights: the largest sub-modules under
    BLOCK_BYTES (containers, which have no forward of their own, are split), and each larger module for the
    parameters it holds itself."""
    seen: set[int] = set()

    def walk(node: torch.nn.Module) -> Iterator[tuple[torch.nn.Module, bool]]:
        if id(node) in seen:
            return
        seen.add(id(node))
        container = isinstance(node, (torch.nn.ModuleList, torch.nn.ModuleDict, torch.nn.Sequential))
        children = list(node.children())
        if not children or (_meta_bytes(node) <= BLOCK_BYTES and not container):
            yield node, False
            return
        if any(p is not None and p.device.type == "meta" for p in node._parameters.values()):
            yield node, True
        for child in children:
            yield from walk(child)

    yield from walk(module)


def streamed_weights(module: torch.nn.Module) -> StreamedWeights | None:
    """The StreamedWeights of a module or of a module it wraps (an export wrapper's model), else None."""
    for sub in module.modules():
        found = getattr(sub, "_fusionc_streamed", None)
        if found is not None:
            return found
    return None


def build_streamed(folder: Path, files: list[Path], build: Any) -> torch.nn.Module:
    """Build a module with `build()` (from its config) with its parameters on the meta device, check the files'
    tensors against it as fusionc.checkpoint._load_state_strict does, and attach the hooks that read them."""
    index = read_index(files)
    with parameters_on_meta():
        model = build()
    model = model.eval().float()
    names_by_param: dict[int, list[str]] = {}
    params: dict[int, torch.nn.Parameter] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names_by_param.setdefault(id(param), []).append(name)
        params[id(param)] = param
    sources: dict[int, StoredTensor] = {}
    missing = []
    for key, names in names_by_param.items():
        saved = [n for n in names if n in index]
        if not saved:
            missing.append(names[0])
            continue
        stored, want = index[saved[0]], params[key]
        if stored.shape != tuple(want.shape):
            raise BadInputError(f"tensor '{saved[0]}' in '{folder}' has shape {stored.shape}, "
                                f"config.json implies {tuple(want.shape)}")
        if not _TORCH_DTYPES[stored.dtype].is_floating_point and want.is_floating_point():
            raise BadInputError(f"tensor '{saved[0]}' in '{folder}' has dtype {_TORCH_DTYPES[stored.dtype]}, "
                                "expected a float tensor")
        sources[key] = stored
    if missing:
        raise BadInputError(f"weights in '{folder}' miss tensor '{missing[0]}' (and {len(missing) - 1} more): "
                            "the weights do not match config.json")
    for key, stored in sources.items():  # one tensor at a time: the loader refuses NaN/Inf before any work
        value = stored.read()
        if value.is_floating_point() and not _all_finite(value):
            raise BadInputError(f"tensor '{stored.key}' in '{folder}' holds NaN or Inf values: the checkpoint is damaged")
        del value
    buffers = dict(model.named_buffers())
    for name, buffer in buffers.items():  # persistent buffers the file holds (a module's running statistics)
        if name in index and buffer.device.type != "meta":
            stored = index[name]
            if stored.shape != tuple(buffer.shape):
                raise BadInputError(f"tensor '{name}' in '{folder}' has shape {stored.shape}, "
                                    f"config.json implies {tuple(buffer.shape)}")
            with torch.no_grad():
                buffer.copy_(stored.read().to(buffer.dtype))
    model._fusionc_streamed = StreamedWeights(model, sources, folder)  # type: ignore[assignment]
    return model


class FileTensor:
    """Marks the onnx_ir tensors that read a checkpoint file (lazy_initializer): `stored`, and the permutation of
    a folded Transpose (None: as stored)."""

    stored: StoredTensor
    perm: tuple[int, ...] | None


def _all_finite(tensor: torch.Tensor, chunk: int = 1 << 22) -> bool:
    """torch.isfinite(t).all() in slices: on the whole of T5-XXL's 0.5 GB embedding its temporaries took 0.9 GB."""
    return all(bool(torch.isfinite(part).all()) for part in tensor.reshape(-1).split(chunk))


def lazy_initializer(stored: StoredTensor, dtype: Any, shape: Any, name: str,
                     perm: tuple[int, ...] | None = None) -> Any:
    """An onnx_ir tensor that reads `stored` from its file on every access (never cached), cast to fp32 when the
    graph's `dtype` (an ir.DataType) is, as the loaded module's `.float()` would have; transposed by `perm`."""
    import onnx_ir as ir

    class _Lazy(ir.LazyTensor, FileTensor):
        pass

    def read() -> Any:
        value = stored.read()
        if value.is_floating_point() and value.dtype != torch.float32 and dtype == ir.DataType.FLOAT:
            value = value.float()
        array = value.numpy()
        return ir.tensor(np.ascontiguousarray(array if perm is None else np.transpose(array, perm)), name=name)

    tensor = _Lazy(read, dtype=dtype, shape=ir.Shape(tuple(shape)), name=name)
    tensor.stored, tensor.perm = stored, perm
    return tensor


def lazy_folded_transposes() -> contextlib.AbstractContextManager:
    """While the exporter's optimizer runs: a Transpose of a file tensor, which it folds whatever its size (its one
    consumer takes the transposed copy: onnxscript's _DEFAULT_ALWAYS_FOLD_OPS), becomes a lazy tensor that reads
    and transposes on access, in place of the in-memory copy (T5's Linear weights: the whole model again)."""
    from fusionc.export_rules import on_folded_initializer

    def hook(node: Any, value: Any) -> None:
        source = node.inputs[0].const_value if node.inputs and node.inputs[0] is not None else None
        if node.op_type != "Transpose" or node.domain not in ("", "ai.onnx") or not isinstance(source, FileTensor) \
                or source.perm is not None:
            return
        perm_attr = node.attributes.get("perm")
        perm = tuple(perm_attr.as_ints()) if perm_attr is not None else tuple(reversed(range(len(source.shape))))
        value.const_value = lazy_initializer(source.stored, value.const_value.dtype, value.const_value.shape,
                                             value.const_value.name, perm)

    return on_folded_initializer(hook)
