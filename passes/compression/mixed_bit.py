"""Mixed-bit palettization (`--palettize auto:DB`): a bit width per layer from {2, 4, 6, 8, fp16}, measured.

Apple's recipe search compresses one layer at a time and runs the model on a GPU for hours. Ours fits the
CPU budget of a compile (under 30 minutes for an SD-1.5 UNet) by measuring only what must be measured:

1. Weight error, free: every layer's relative squared error at every width comes from its fp16 histogram
   (passes/lut.palette_errors), no decompression.
2. Output sensitivity, measured: one onnxruntime session in which the weights are graph *inputs*, so a run
   with some weights swapped for their palettized values costs one inference and no session build. A probe
   palettizes a group of layers at 4 bits on a few calibration-set inputs and divides the UNet output's MSE by
   the group's summed weight error: the group's gain. Groups are single layers when the time budget allows
   (tiny models: then up to 8 probe inputs spread over the trajectory, which has the generation's length),
   else the finest balanced split of the module tree that fits the budget.
3. Allocation: quantization errors of different layers add up in the output (they are nearly orthogonal),
   so the output MSE is predicted as sum(gain * weight error); a Lagrangian bisection picks the fewest
   average bits whose prediction fits the MSE budget of DB dB against the fp32 torch reference.
4. Selection: the whole recipe runs on every selection-set input (other prompts, seeds and timesteps than the
   probes saw) against the torch reference; the budget
   is rescaled by measured/predicted and the allocation redone until the measured PSNR holds (the best
   passing recipe wins, and one relaxation is tried when the prediction was pessimistic).

A denoiser's calls are guidance pairs (unconditional, conditional), and the sampler steps with
uncond + g (cond - uncond). Noise that is the same in both rows (the convolutions see the same latent) passes
through that unchanged; noise that differs between them (the cross-attention projections see different text)
is multiplied ~g times. Measured per row, the built-in UNet's first recipes (2.15 bits, 38.8 dB per row on
held-out inputs) looked like uniform 4-bit (39.8 dB) but their guided prediction was 6 dB worse, and their
images lost colour and shape where 4-bit's did not (benchmarks/results/mixed_bit_heldout.json). So for a
denoiser the probes measure the guided prediction's error (both rows of a pair), the allocation budgets it,
and a recipe must keep DB on every row *and* on the guided prediction (at TRAJECTORY_GUIDANCE, the input
sets' scale).

The recipe (layer -> bits), its selection-set PSNR and average bits go in the manifest (the component's
`psnr_db` beside them is the compile's held-out verification figure); `--recipe FILE` saves
it and re-applies it without a search (palettization is deterministic: the same bytes).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import onnx_ir as ir

from fusionc.core.context import TRAJECTORY_GUIDANCE, ComponentContext
from fusionc.core.errors import BadInputError
from fusionc.core.executor import SERIAL, TaskExecutor
from fusionc.core.generation import DENOISERS  # components whose batch-2 calls are guidance pairs
from fusionc.core.numerics import Feeds, psnr_from_mse
from fusionc.passes.compression import lut as lutlib
from fusionc.passes.ane.interface import artifact_feeds, read_interface
from fusionc.passes.compression.palettize import PalettizeWeightsPass, choose_group, record_compression
from fusionc.passes.compression.weights import Weight, find_weights

log = logging.getLogger(__name__)

RECIPE_FORMAT = "fusionc-mixed-bit-recipe/1"
CANDIDATES = (2, 4, 6, 8, 16)
PROBE_BITS = 4
GAIN_FLOOR = 0.25  # of the median measured gain
MAX_PROBE_INPUTS = 8  # trajectory inputs per probe when the budget allows every layer alone
DEFAULT_SEARCH_SECONDS = 1200.0  # the whole search; SD-1.5 must finish in 30 minutes


@dataclass
class Recipe:
    """Bits per layer (16 = left in fp16) and how the recipe was obtained."""

    layers: dict[str, int]
    granularity: str = "per_tensor"
    group_size: int | None = None
    target_db: float | None = None
    psnr_db: float | None = None
    average_bits: float | None = None
    search: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"granularity": self.granularity, "group_size": self.group_size, "target_db": self.target_db,
                "psnr_db": self.psnr_db, "average_bits": self.average_bits, "search": self.search,
                "layers": self.layers}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> "Recipe":
        if not isinstance(data, dict) or not isinstance(data.get("layers"), dict):
            raise BadInputError(f"{where}: a recipe needs a 'layers' object (layer -> bits)")
        allowed = set(lutlib.NBITS) | {16}
        for layer, bits in data["layers"].items():
            if bits not in allowed:
                raise BadInputError(f"{where}: layer {layer} has {bits} bits; allowed: {sorted(allowed)}")
        return cls({k: int(v) for k, v in data["layers"].items()}, data.get("granularity", "per_tensor"),
                   data.get("group_size"), data.get("target_db"), data.get("psnr_db"), data.get("average_bits"),
                   data.get("search", {}))


def load_recipe(path: Path, component: str) -> Recipe | None:
    """The recipe of `component` in a recipe file; None when the file or the component is absent."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise BadInputError(f"cannot read recipe {path}: {err}") from None
    if not isinstance(data, dict) or data.get("format") != RECIPE_FORMAT or not isinstance(data.get("components"), dict):
        raise BadInputError(f"{path} is not a fusionc mixed-bit recipe (format {RECIPE_FORMAT})")
    entry = data["components"].get(component)
    return None if entry is None else Recipe.from_json(entry, f"recipe {path} ({component})")


def save_recipe(path: Path, component: str, recipe: Recipe) -> None:
    """Write (or update) `component`'s recipe in a recipe file."""
    path = Path(path)
    data: dict[str, Any] = {"format": RECIPE_FORMAT, "components": {}}
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(old, dict) and isinstance(old.get("components"), dict):
                data["components"] = old["components"]
        except json.JSONDecodeError:
            pass
    data["components"][component] = recipe.to_json()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def average_bits(weights: list[Weight], bits: dict[str, int]) -> float:
    total = sum(w.size for w in weights)
    return sum(w.size * bits.get(w.layer, 16) for w in weights) / total if total else 16.0


class WeightSession:
    """onnxruntime session of `model` with the given weights as graph inputs, so any of them can be swapped.

    The model is not changed: the inputs are moved only while the proto is built. Initializers left in the
    graph are inlined into the proto (they are small), so external data never has to be resolved.
    """

    def __init__(self, model: ir.Model, weights: list[Weight], threads: int = 0) -> None:
        import onnxruntime as ort

        graph = model.graph
        self.weights = {w.value.name: w for w in weights}
        self.names = [v.name for v in graph.inputs]
        moved = [w.value for w in weights]
        for value in moved:
            graph.initializers.pop(value.name)
            graph.inputs.append(value)
        try:
            proto = ir.serde.serialize_model(model)
        finally:
            for value in moved:
                graph.inputs.remove(value)
                graph.register_initializer(value)
        for tensor in proto.graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                tensor.raw_data = graph.initializers[tensor.name].const_value.tobytes()
                del tensor.external_data[:]
                tensor.data_location = onnx.TensorProto.DEFAULT
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.proto = proto.SerializeToString()  # small: the weights are inputs; kept to rebuild in another process
        self.threads = threads
        self.session = ort.InferenceSession(self.proto, options, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.dense = {w.value.name: w.value.const_value.numpy() for w in weights}
        self.adapter = InterfaceAdapter(model)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for an executor's worker (fusionc.core.executor): everything but the onnxruntime session."""
        return {k: v for k, v in self.__dict__.items() if k not in ("session", "weights")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        import onnxruntime as ort

        self.__dict__.update(state)
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(self.proto, options, providers=["CPUExecutionProvider"])
        self.weights = {}

    def __call__(self, feeds: Feeds, overrides: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
        results: list[list[np.ndarray]] = []
        for piece, keep in self.adapter.pieces(feeds):
            inputs = {k: piece[k] for k in self.names if k in piece}
            inputs.update(self.dense)
            if overrides:
                inputs.update(overrides)
            results.append([o[:keep] if keep is not None else o for o in self.session.run(None, inputs)])
        return [np.concatenate(parts, axis=0) if len(results) > 1 else parts[0] for parts in zip(*results)]


class InterfaceAdapter:
    """Canonical feeds -> the graph's inputs, when a target pass changed the interface (Core ML's Apple
    contract: renamed inputs, [B,C,1,S] text states, float input_ids, a static batch with `timestep` [B]).
    Batches are cut to the static batch, a short last piece padded by repeating its last row."""

    def __init__(self, model: ir.Model) -> None:
        interface = read_interface(model)
        self.names = dict(interface.inputs) if interface else {}
        self.bc1s = set(interface.bc1s_inputs) if interface else set()
        self.floats = set(interface.float_inputs) if interface else set()
        timestep = self.names.get("timestep", "timestep")
        self.timestep = timestep
        dims = [v.shape[0] for v in model.graph.inputs if v.name != timestep and v.shape is not None and len(v.shape)]
        self.batch = dims[0] if dims and isinstance(dims[0], int) else None

    def pieces(self, feeds: Feeds) -> list[tuple[Feeds, int | None]]:
        out = artifact_feeds(feeds, self.names, self.bc1s, self.floats)
        if self.batch is None:
            return [(out, None)]
        batched = {k: v for k, v in out.items() if k != self.timestep}
        rows = next(iter(batched.values())).shape[0] if batched else self.batch
        pieces = []
        for start in range(0, rows, self.batch):
            piece = {}
            for name, value in batched.items():
                part = value[start:start + self.batch]
                if part.shape[0] < self.batch:
                    part = np.concatenate([part, np.repeat(part[-1:], self.batch - part.shape[0], axis=0)])
                piece[name] = part
            if self.timestep in out:
                t = np.asarray(out[self.timestep], np.float32).reshape(-1)
                piece[self.timestep] = np.resize(t[start:start + self.batch] if t.size == rows else t, self.batch)
            pieces.append((piece, min(self.batch, rows - start)))
        return pieces


def balanced_groups(weights: list[Weight], max_groups: int) -> list[list[Weight]]:
    """Split layers into at most `max_groups` groups along their dotted module names, largest groups first."""
    if max_groups >= len(weights):
        return [[w] for w in weights]
    parts = {w.layer: w.layer.split(".") for w in weights}
    groups: list[tuple[int, list[Weight]]] = [(0, list(weights))]  # (prefix depth, members)
    while len(groups) < max_groups:
        best = None
        for i, (depth, members) in enumerate(groups):
            if len(members) < 2:
                continue
            children = _split(members, depth, parts)
            if len(children) < 2 or len(groups) - 1 + len(children) > max_groups:
                continue
            size = sum(w.size for w in members)
            if best is None or size > best[0]:
                best = (size, i, children)
        if best is None:
            break
        _, i, children = best
        groups[i:i + 1] = children
    return [members for _, members in groups]


def _split(members: list[Weight], depth: int, parts: dict[str, list[str]]) -> list[tuple[int, list[Weight]]]:
    """Children of a group one name component deeper (descending while there is a single child)."""
    while True:
        buckets: dict[str, list[Weight]] = {}
        for w in members:
            key = ".".join(parts[w.layer][:depth + 1])
            buckets.setdefault(key, []).append(w)
        depth += 1
        if len(buckets) > 1 or depth > max(len(parts[w.layer]) for w in members):
            break
    if len(buckets) < 2:  # names do not split: halves in graph order
        half = len(members) // 2
        return [(depth, members[:half]), (depth, members[half:])]
    return [(depth, b) for b in buckets.values()]


def allocate(weights: list[Weight], noise: dict[str, dict[int, float]], budget: float) -> dict[str, int]:
    """Fewest total bits with sum(noise[layer][bits]) <= budget (Lagrangian relaxation, bisection on lambda)."""

    def choose(lam: float) -> tuple[dict[str, int], float]:
        bits, total = {}, 0.0
        for w in weights:
            table = noise[w.layer]
            b = min(CANDIDATES, key=lambda c: w.size * c + lam * table[c])
            bits[w.layer] = b
            total += table[b]
        return bits, total

    lo, hi = 0.0, 1.0
    bits, total = choose(hi)
    while total > budget and hi < 1e300:
        hi *= 16.0
        bits, total = choose(hi)
    if total > budget:
        return bits
    for _ in range(80):
        mid = math.sqrt(lo * hi) if lo > 0 else hi / 1e6
        cand, cand_total = choose(mid)
        if cand_total <= budget:
            hi, bits = mid, cand
        else:
            lo = mid
        if lo > 0 and hi / lo < 1.0001:
            break
    return bits


@dataclass
class Calibration:
    """Real trajectory inputs and the fp32 reference (the driver's ComponentContext provides them).

    `feeds` (the calibration set) are what the layer sensitivities are probed on; `selection` (other prompts,
    seeds and timesteps) is what each candidate recipe is judged on, and its PSNR is the recipe's
    `measured_psnr_db`. Without a selection set the search judges on `feeds`."""

    feeds: list[Feeds]
    reference: Callable[[Feeds], Feeds] | None = None
    selection: list[Feeds] = field(default_factory=list)
    # a denoiser's guidance scale: its batch-2 calls (uncond, cond) are also judged as the sampler uses them,
    # uncond + g (cond - uncond), which amplifies errors that differ between the rows (the text path) ~g times
    guidance: float | None = None


def search(model: ir.Model, calibration: Calibration, target_db: float, *, granularity: str = "per_tensor",
           group_size: int = 16, min_elements: int = 2048, include_embeddings: bool = False,
           budget_seconds: float = DEFAULT_SEARCH_SECONDS, probe_count: int = 2, rounds: int = 5,
           executor: TaskExecutor = SERIAL) -> Recipe:
    """Find the recipe with the fewest average bits whose measured output PSNR is >= target_db.

    Time: the probes get what the budget leaves after reserving 3 verification rounds on a 2-input subset
    of the trajectory and one confirmation on all of it (the PSNR that is reported and gated). `executor` runs
    the probes (fusionc.core.executor; the same gains wherever they run).
    """
    start = time.perf_counter()
    if not calibration.feeds:
        raise BadInputError("--palettize auto:DB needs trajectory inputs (sample feeds) for the component")
    weights = find_weights(model, min_elements, include_embeddings)
    if not weights:
        return Recipe({}, granularity, None, target_db, None, 16.0)
    groups_of = {w.layer: choose_group(w, granularity, group_size) for w in weights}
    errors = {w.layer: lutlib.palette_errors(w.value.const_value.numpy(), CANDIDATES[:-1], w.out_axis,
                                             groups_of[w.layer]) for w in weights}
    t_errors = time.perf_counter() - start
    session = WeightSession(model, weights)

    def reference(feeds_list: list[Feeds]) -> list[dict[str, np.ndarray]]:
        return [calibration.reference(f) for f in feeds_list] if calibration.reference else [
            dict(zip(session.outputs, session(f))) for f in feeds_list]

    calib = calibration.feeds  # probed for sensitivities
    feeds = calibration.selection or calib  # judged on: every candidate recipe's PSNR
    g = calibration.guidance if calibration.guidance and _batch(calib[0]) == 2 else None
    ref_out = reference(feeds)
    ref = [_flat(list(r.values())) for r in ref_out]  # every row, as the component's psnr_db measures it
    ref_g = [_guided(list(r.values()), g) for r in ref_out]  # what the sampler steps with (== ref without guidance)
    peak = max(float(np.max(np.abs(r))) for r in ref) or 1.0
    peak_g = max(float(np.max(np.abs(r))) for r in ref_g) or 1.0
    # a recipe is judged per output, its worst one, as the compile's verification judges the component
    # (numerics.outputs_psnr): a ControlNet's 13 residuals differ in scale by orders of magnitude, and pooled
    # together the largest would hide the error of the small ones
    ref_lists = [list(r.values()) for r in ref_out]
    ref_rows = [[_flat([r[k]]) for r in ref_lists] for k in range(len(ref_lists[0]))]  # [output][sample]: every row
    ref_steps = [[_guided([r[k]], g) for r in ref_lists] for k in range(len(ref_lists[0]))]  # the guided prediction
    peaks = [max(float(np.max(np.abs(r))) for r in samples) or 1.0 for samples in ref_rows]
    peaks_g = [max(float(np.max(np.abs(r))) for r in samples) or 1.0 for samples in ref_steps]
    # the allocation predicts the guided output's MSE (it is the larger error: cross-attention noise differs
    # between the rows and guidance multiplies the difference); a recipe must keep target_db on both
    target_mse = (peak_g / 10 ** (target_db / 20)) ** 2

    picks = _spread_indices(len(calib), probe_count)
    probes = [calib[i] if g else _last_row(calib[i]) for i in picks]
    t0 = time.perf_counter()
    probe_base = [_guided(session(f), g) for f in probes]
    t_call = (time.perf_counter() - t0) / len(probes)  # one probe inference (batch 2 with guidance)
    t_eval = t_call / (2 if g else 1)  # one batch-1 inference
    probe_ref = [_guided([v if g else v[-1:] for v in r.values()], g) for r in reference([calib[i] for i in picks])]
    floor = _mse(probe_base, probe_ref)  # uncompressed ONNX vs the reference (tiny for fp32)
    budget = target_mse - floor
    info: dict[str, Any] = {"uncompressed_psnr_db": round(psnr_from_mse(peak_g, floor), 3), "layers": len(weights),
                            "seconds_weight_errors": round(t_errors, 1), "guidance": g,
                            "judged_on": "min(PSNR of every row, PSNR of the guided prediction)" if g else "PSNR of every row"}
    if budget <= 0:
        log.warning("the uncompressed model is already under %.1f dB: no layer is palettized", target_db)
        return Recipe({w.layer: 16 for w in weights}, granularity, group_size if granularity != "per_tensor" else None,
                      target_db, psnr_from_mse(peak, floor), 16.0, info)
    subset = _spread_indices(len(feeds), 2)
    rows = _batch(feeds[0])
    reserve = t_eval * rows * (3 * len(subset) + len(feeds))
    left = budget_seconds - (time.perf_counter() - start) - reserve
    if left < t_call * len(probes) * len(weights) and len(probes) > 1:  # slow model: one probe input
        probes, probe_base = probes[-1:], probe_base[-1:]
    else:  # every layer alone fits: spread more probe inputs over the trajectory (sensitivity varies with t)
        more = min(len(calib), MAX_PROBE_INPUTS, int(left / (t_call * len(weights))))
        if more > len(probes):
            probes = [calib[i] if g else _last_row(calib[i]) for i in _spread_indices(len(calib), more)]
            probe_base = [_guided(session(f), g) for f in probes]
    groups = balanced_groups(weights, max(1, int(left / (t_call * len(probes)))))

    def dense(w: Weight, bits: int) -> np.ndarray:
        return lutlib.palettize(w.value.const_value.numpy(), bits, w.out_axis, groups_of[w.layer]).dense(
            w.value.dtype.numpy())

    gains: dict[str, float] = {}
    # the probes are independent: the executor may run them anywhere (a Ray cluster), in chunks
    jobs = [[(w.value.name, w.out_axis, groups_of[w.layer], w.value.dtype.numpy()) for w in members]
            for members in groups]
    mses = executor.map(_probe_setup, _probe_mse, Probes(session, probes, probe_base, g), jobs,
                        "mixed-bit search: layer sensitivity")
    for members, mse in zip(groups, mses):
        weight_error = sum(errors[w.layer][PROBE_BITS] for w in members)
        for w in members:
            gains[w.layer] = mse / weight_error if weight_error > 0 else 0.0
    t_probe = time.perf_counter() - start
    # A gain measured near zero on a few trajectory inputs (a time-embedding projection at those timesteps,
    # a block an untrained model barely uses) must not make the layer's 2 bits look free: floor the gains.
    floor_gain = GAIN_FLOOR * float(np.median([g for g in gains.values()] or [0.0]))
    gains = {k: max(g, floor_gain) for k, g in gains.items()}
    # 16 bits keeps the layer as it is in the graph: no added noise in what is measured here
    noise = {w.layer: {b: (gains[w.layer] * errors[w.layer][b] if b != 16 else 0.0) for b in CANDIDATES}
             for w in weights}
    cache: dict[tuple[str, int], np.ndarray] = {}

    def measure(bits: dict[str, int], which: list[int]) -> tuple[float, float, float]:
        """(the PSNR a recipe is judged by, every row's PSNR, the guided prediction's PSNR)."""
        for key in [k for k in cache if bits.get(k[0]) != k[1]]:
            del cache[key]
        overrides = {}
        for w in weights:
            if bits[w.layer] != 16:
                key = (w.layer, bits[w.layer])
                if key not in cache:
                    cache[key] = dense(w, bits[w.layer])
                overrides[w.value.name] = cache[key]
        outs = [session(feeds[i], overrides) for i in which]
        rows = _worst_output_psnr(outs, [[r[i] for i in which] for r in ref_rows], peaks, None)
        guided = _worst_output_psnr(outs, [[r[i] for i in which] for r in ref_steps], peaks_g, g)
        return min(rows, guided), rows, guided

    def allocate_for(scale: float) -> tuple[dict[str, int], float]:
        bits = allocate(weights, noise, budget * scale)
        return bits, sum(noise[w.layer][bits[w.layer]] for w in weights)

    history: list[dict[str, Any]] = []

    def refine(which: list[int], scale: float, max_rounds: int) -> tuple[tuple | None, float]:
        """Secant steps on the noise budget: each round moves the budget by the dB it missed or had to spare,
        until the measured PSNR lands in [target, target + 0.15 dB] or time runs out; best passing recipe."""
        best, seconds, seen, step = None, 0.0, set(), 1.0
        for _ in range(max_rounds):
            if best is not None and time.perf_counter() - start + seconds > budget_seconds:
                break
            began = time.perf_counter()
            bits, predicted = allocate_for(scale)
            key = tuple(bits[w.layer] for w in weights)
            for _ in range(8):  # the step did not change the allocation: keep going the same way
                if key not in seen:
                    break
                scale *= step
                bits, predicted = allocate_for(scale)
                key = tuple(bits[w.layer] for w in weights)
            seen.add(key)
            psnr, rows_db, guided_db = measure(bits, which)
            avg = average_bits(weights, bits)
            history.append({"average_bits": round(avg, 3), "psnr_db": round(psnr, 3), "inputs": len(which),
                            "rows_psnr_db": round(rows_db, 3), "guided_psnr_db": round(guided_db, 3),
                            "predicted_psnr_db": round(psnr_from_mse(peak_g, floor + predicted), 3)})
            seconds = time.perf_counter() - began
            if psnr >= target_db and (best is None or avg < best[1]):
                best = (bits, avg, scale, psnr)
            if 0 <= psnr - target_db < 0.15:
                break
            step = 1.25 if psnr > target_db else 0.8
            factor = 10 ** ((psnr - target_db - 0.05) / 10)  # the dB missed or spare, as noise power
            scale *= factor if psnr >= target_db else min(factor, 0.5)  # a miss at least halves the budget
        return best, scale

    found, scale = refine(subset, 1.0, rounds)
    # the whole trajectory decides (the reported and gated PSNR): confirm, and refine there while time allows
    best, _ = refine(list(range(len(feeds))), found[2] if found else scale, 4)
    if best is None:
        bits = {w.layer: 16 for w in weights}
        best = (bits, 16.0, 0.0, measure(bits, list(range(len(feeds))))[0])
    bits, avg, _, psnr = best
    avg = average_bits(weights, bits)
    info.update({"probe_bits": PROBE_BITS, "probe_inputs": len(probes), "groups": len(groups),
                 "seconds_per_inference": round(t_eval, 3), "seconds_probes": round(t_probe - t_errors, 1),
                 "seconds": round(time.perf_counter() - start, 1), "rounds": history})
    return Recipe(bits, granularity, group_size if granularity != "per_tensor" else None, target_db,
                  round(psnr, 3), round(avg, 4), info)


@dataclass
class Probes:
    """What every sensitivity probe shares: the weight-input session and the probe inputs with their outputs."""

    session: WeightSession
    inputs: list[Feeds]
    base: list[np.ndarray]
    guidance: float | None = None


def _probe_setup(probes: Probes) -> Probes:
    return probes


def _probe_mse(probes: Probes, group: list[tuple[str, int | None, Any, Any]]) -> float:
    """Output MSE with one group of layers palettized at PROBE_BITS (the group's weights, by input name)."""
    dense = probes.session.dense
    overrides = {name: lutlib.palettize(dense[name], PROBE_BITS, axis, grouping).dense(dtype)
                 for name, axis, grouping, dtype in group}
    return _mse([_guided(probes.session(f, overrides), probes.guidance) for f in probes.inputs], probes.base)


def _spread_indices(n: int, count: int) -> list[int]:
    """`count` indices spread evenly over range(n) (first and last included)."""
    return sorted({round(i * (n - 1) / max(count - 1, 1)) for i in range(min(count, n))})


def _last_row(feeds: Feeds) -> Feeds:
    """The batch cut to its last row (the conditional branch of a guidance batch)."""
    return {k: (v[-1:] if v.ndim >= 2 else v) for k, v in feeds.items()}


def _batch(feeds: Feeds) -> int:
    return max((v.shape[0] for v in feeds.values() if v.ndim >= 2), default=1)


def _guided(outputs: list[np.ndarray], guidance: float | None) -> np.ndarray:
    """The outputs as the sampler uses them: uncond + g (cond - uncond) of a batch-2 guidance call, flattened;
    without guidance (or a batch of 1), every row as it is."""
    if guidance is None or np.asarray(outputs[0]).shape[0] != 2:
        return _flat(outputs)
    return _flat([np.asarray(o[:1], np.float64) + guidance * (np.asarray(o[1:2], np.float64) - np.asarray(o[:1], np.float64))
                  for o in outputs])


def _worst_output_psnr(outs: list[list[np.ndarray]], refs: list[list[np.ndarray]], peaks: list[float],
                       guidance: float | None) -> float:
    """The worst output's PSNR over these samples (each output's error against its own peak; `refs[k]`: output k's
    references, flattened as `_guided` flattens with `guidance`), every row or, with `guidance`, the guided
    prediction: one output's figure is what the pooled one was for a one-output UNet."""
    return min(psnr_from_mse(peak, _mse([_guided([o[k]], guidance) for o in outs], refs[k]))
               for k, peak in enumerate(peaks))


def _flat(outputs: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(o, np.float64).ravel() for o in outputs])


def _mse(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    total = sum(float(np.sum((g - w) ** 2)) for g, w in zip(got, want))
    return total / max(sum(w.size for w in want), 1)


class MixedBitPalettizePass(ir.passes.InPlacePass):
    """Palettize with a per-layer recipe: loaded from `recipe_path`, or searched for `target_db` and saved there.

    The search probes sensitivities on the component's calibration set and judges recipes on its selection set
    (both with the torch reference, taken from `ctx`); the compile then verifies the result on held-out inputs.
    """

    def __init__(self, target_db: float | None, ctx: ComponentContext | None = None, *,
                 recipe_path: Path | None = None, granularity: str = "per_tensor",
                 group_size: int = 16, min_elements: int = 2048, include_embeddings: bool = False,
                 budget_seconds: float = DEFAULT_SEARCH_SECONDS) -> None:
        super().__init__()
        if target_db is None and recipe_path is None:
            raise ValueError("MixedBitPalettizePass needs a target PSNR or a recipe file")
        self.target_db = target_db
        self.recipe_path = Path(recipe_path) if recipe_path else None
        self.component = ctx.name if ctx is not None else "unet"
        self.granularity = granularity
        self.group_size = group_size
        self.min_elements = min_elements
        self.include_embeddings = include_embeddings
        self.budget_seconds = budget_seconds
        self.calibration = (Calibration(list(ctx.calibration_feeds), ctx.reference, list(ctx.selection_feeds),
                                        TRAJECTORY_GUIDANCE if ctx.name in DENOISERS else None)
                            if ctx is not None else None)
        self.executor = ctx.executor if ctx is not None else SERIAL
        self.recipe: Recipe | None = None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        recipe = load_recipe(self.recipe_path, self.component) if self.recipe_path is not None else None
        if recipe is None:
            if self.target_db is None:
                raise BadInputError(f"recipe {self.recipe_path} has no entry for {self.component}: "
                                    "add --palettize auto:DB to search one")
            if self.calibration is None or not self.calibration.feeds:
                raise BadInputError("--palettize auto:DB needs the component's trajectory inputs (verification on)")
            recipe = search(model, self.calibration, float(self.target_db), granularity=self.granularity,
                            group_size=self.group_size, min_elements=self.min_elements,
                            include_embeddings=self.include_embeddings, budget_seconds=self.budget_seconds,
                            executor=self.executor)
            if self.recipe_path is not None:
                save_recipe(self.recipe_path, self.component, recipe)
        self.recipe = recipe
        inner = PalettizeWeightsPass(None, recipe=recipe.layers, granularity=recipe.granularity,
                                     group_size=recipe.group_size or self.group_size, min_elements=self.min_elements,
                                     include_embeddings=self.include_embeddings)
        result = inner(model)
        summary = inner.summary() if inner.reports else {"method": "palettize", "layers": 0}
        weights_total = sum(r.elements for r in inner.reports)
        summary.update({"method": "mixed_bit_palettize", "target_db": recipe.target_db,
                        "measured_psnr_db": recipe.psnr_db, "average_bits": recipe.average_bits,
                        "compressed_average_bits": summary.get("average_bits") if weights_total else None,
                        "recipe_file": str(self.recipe_path) if self.recipe_path else None,
                        "search": recipe.search, "recipe": recipe.layers})
        record_compression(model, "palettize", summary)
        return ir.passes.PassResult(model, modified=result.modified)
