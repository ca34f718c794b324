"""Automatic accuracy remedies: choose per-node precision until the fake-quant graph clears the gate.

1. A priori (no measurement): in w8a8, the conditioning paths (nodes fed only by timestep / text_embeds /
   time_ids / encoder_hidden_states: the sinusoidal timestep embedding and its MLP, the cross-attention
   K/V projections) and the attention scores/softmax run at 16 bits; 8-bit sin(t*f) for t up to 1000 or
   8-bit attention logits cost more than the rest of the network together.
2. Measured: the QDQ graph runs on onnxruntime's CPU against the fp32 graph on up to 8 inputs of the
   selection set (fusionc.inputs: prompts, seeds and timesteps the calibration never saw, so that clipping
   on unseen inputs counts; the verification set stays held out) (the HTP follows the CPU within
   about 1 dB for graphs built by these rules; `debug.py` checks it per tensor). While it is under `target` dB (gate + 5), each remedy in turn -- 16-bit activations, then
   16-bit weights -- is placed where it buys the most: adaptive group testing (`group_search`) measures the
   output with every candidate raised except one group, splits the noisiest groups, and raises the fewest
   groups whose noise, added up, keeps the rest under the target; one more run verifies it. The local-loss
   ranking of the debugger is not used here: on the built-in UNet the layers with the largest local loss
   (sin/cos of the timestep, already at 16 bits) barely move the output, while conv_in, whose 8-bit input
   latent reaches the output through the first skip connection, costs 20 dB on its own.
   fp16 islands exist in the rules (`float_nodes`) but are not chosen automatically: on the timestep path
   fp16 is *worse* than 16-bit fixed point (sin of t*f for t up to 1000 needs ~0.01 absolute precision).

Each evaluation costs one quantization and one fake-quant run of the component (seconds on the built-in
model); for the CPU consumer (onnx w8a8: `config.op_types` set) one run of a fake-quant session built once
(fakequant.py), and before any node is raised the 8-bit range rule is chosen on the selection set
(`choose_ranges`); `--qnn-remedy-rounds` bounds their number, 0 disables the
measured part, and `--qnn-remedy-seconds` their total time. The group tests of one round are independent: they
go through the component's executor (fusionc.core.executor), so `--executor ray` runs them side by side.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx_ir as ir

from fusionc.core.executor import SERIAL, TaskExecutor
from fusionc.core.numerics import Feeds, outputs_psnr

from fusionc.targets.qnn.calibrate import SegmentedModel, TensorStats
from fusionc.targets.qnn.rules import QuantConfig, quantized_nodes

COND_INPUTS = {"timestep", "text_embeds", "time_ids", "encoder_hidden_states"}
WEIGHTED = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
DEFAULT_MARGIN_DB = 5.0
DEFAULT_ROUNDS = 48  # fake-quant evaluations per component (about 1 s each on the built-in UNet)
DEFAULT_SECONDS = 600.0  # and at most this long (evaluations are timed; SD scale gets a few)

def conditioning_nodes(model: ir.Model) -> set[str]:
    """Nodes whose every graph-input ancestor is a conditioning input (and not the main one)."""
    inputs = {v.name for v in model.graph.inputs}
    if not (inputs & COND_INPUTS) or not (inputs - COND_INPUTS):
        return set()
    deps: dict[int, frozenset] = {id(v): frozenset([v.name]) for v in model.graph.inputs}
    out = set()
    for node in model.graph:
        mine = frozenset().union(*(deps.get(id(v), frozenset()) for v in node.inputs if v is not None))
        for value in node.outputs:
            deps[id(value)] = mine
        if mine and mine <= COND_INPUTS:
            out.add(node.name)
    return out


def attention_nodes(model: ir.Model) -> set[str]:
    """Softmax nodes and the score ops feeding them (MatMul, scale, mask Add)."""
    out = set()
    for node in model.graph:
        if node.op_type != "Softmax":
            continue
        out.add(node.name)
        frontier = [node.inputs[0].producer()]
        while frontier:
            producer = frontier.pop()
            if producer is None or producer.name in out or producer.op_type not in ("Add", "Mul", "MatMul", "Div"):
                continue
            out.add(producer.name)
            if producer.op_type != "MatMul":
                frontier += [v.producer() for v in producer.inputs if v is not None]
    return out


def dynamic_matmuls(model: ir.Model) -> set[str]:
    """MatMuls whose two operands are both activations (attention scores and probabilities x values)."""
    from fusionc.targets.qnn.rules import is_activation

    return {n.name for n in model.graph if n.op_type == "MatMul" and all(is_activation(v) for v in n.inputs[:2])}


def a_priori(model: ir.Model, config: QuantConfig, fp16_attention: bool = True) -> dict[str, list[str]]:
    """Structural remedies that need no measurement; returns what was raised."""
    if fp16_attention:
        config.float_nodes |= dynamic_matmuls(model)
    if config.activation_bits >= 16:
        return {"fp16_attention_matmuls": sorted(config.float_nodes)} if config.float_nodes else {}
    quantized = {n.name for n in quantized_nodes(model.graph, config)}
    if config.float_islands == "fp32":  # a CPU: the sensitive nodes stay in fp32 (no 16-bit kernels there)
        raised = {"conditioning_fp32": sorted(conditioning_nodes(model) & quantized),
                  "attention_fp32": sorted(attention_nodes(model) & quantized)}
        for names in raised.values():
            config.float_nodes |= set(names)
        return raised
    raised = {"conditioning_16bit": sorted(conditioning_nodes(model) & quantized),
              "attention_16bit": sorted(attention_nodes(model) & quantized),
              "fp16_attention_matmuls": sorted(config.float_nodes)}
    for names in raised.values():
        for name in names:
            config.node_bits[name] = 16
    return raised


def _noise(db: float) -> float:
    """Output noise power relative to the peak, from a PSNR (the quantity that adds up across layers)."""
    return 10.0 ** (-db / 10.0) if math.isfinite(db) else 1.0


def group_search(candidates: list[str], only_low, measure_high: float, target: float, budget: int,
                 log: list) -> list[str]:
    """Which candidates to raise so the output reaches `target` dB, by adaptive group testing.

    `only_low(groups)` is, for each group, the PSNR with every candidate raised except that group (the groups
    of one round are measured together, so an executor can run them side by side); each group's excess noise over
    the all-raised graph (`measure_high` dB) estimates what it contributes, noise powers add across layers.
    The noisiest group is split in halves until the budget is spent (8 groups, then 2 evaluations per split),
    then the noisiest groups are raised until the predicted noise of the rest fits the target with a 2x
    margin. Measured on the built-in UNet in w8a8, single nodes dominate: conv_in (its 8-bit input latent)
    alone costs 20 dB, then the first residual adds, GroupNorms and the skip Concat of the last up block.
    """
    base = _noise(measure_high)
    size = max(1, math.ceil(len(candidates) / 8))
    leaves = []
    first = [candidates[i:i + size] for i in range(0, len(candidates), size)]
    for group, db in zip(first, only_low(first)):
        leaves.append((max(_noise(db) - base, 0.0), group))
        log.append({"group": len(group), "db": round(db, 2)})
    budget -= len(leaves)
    while budget >= 2:
        splittable = [leaf for leaf in leaves if len(leaf[1]) > 1]
        if not splittable:
            break
        leaf = max(splittable, key=lambda x: x[0])
        if leaf[0] <= 0.0:
            break
        leaves.remove(leaf)
        half = len(leaf[1]) // 2
        halves = [leaf[1][:half], leaf[1][half:]]
        for group, db in zip(halves, only_low(halves)):
            leaves.append((max(_noise(db) - base, 0.0), group))
            log.append({"group": len(group), "db": round(db, 2)})
        budget -= 2
    allowed = max(_noise(target) - base, 0.0) / 2.0
    leaves.sort(key=lambda x: -x[0])
    chosen: list[str] = []
    rest = sum(x[0] for x in leaves)
    for noise, group in leaves:
        if rest <= allowed:
            break
        chosen += group
        rest -= noise
    return chosen


# 8-bit activation ranges tried on the selection set before any node is raised (cheap with the fake-quant
# evaluator): the calibration min/max widened by a margin, or clipped at a percentile of |x| (no margin).
RANGE_CHOICES = (("margin", 1.0), ("margin", 1.25), ("margin", 2.0),
                 ("percentile", 99.9), ("percentile", 99.99), ("percentile", 99.999))


def choose_ranges(config: QuantConfig, measure, score: float, stats: dict[str, TensorStats],
                  report: dict[str, Any]) -> tuple[QuantConfig, float]:
    """The 8-bit range rule (RANGE_CHOICES or the config's own) that scores best on the selection set.

    Random-weight UNets spread their 8-bit noise over every layer, so no few nodes are worth raising; the
    range rule moves all of them at once (resolution against clipping). Judged on the selection set, whose
    prompts, seeds and timesteps the calibration never saw, so a rule that clips unseen inputs loses here."""
    tried: list[dict[str, Any]] = [{"margin": config.range_margin_8bit, "db": round(score, 2)}]
    best_db, best = score, config
    for kind, value in RANGE_CHOICES:
        cfg = copy.deepcopy(config)
        if kind == "margin":
            cfg.range_margin_8bit = value
        else:
            cfg.clip_percentile = {name: value for name in stats}
        db = measure(cfg)
        tried.append({kind: value, "db": round(db, 2)})
        if db > best_db:
            best_db, best = db, cfg
    report["ranges"] = tried
    return best, best_db


@dataclass
class Trial:
    """What every remedy evaluation shares: the float model, its ranges, the inputs and the fp32 outputs."""

    float_path: Path
    stats: dict[str, TensorStats]
    feeds: list[Feeds]
    reference: Any


def _trial_setup(trial: Trial) -> Trial:
    return trial


def _trial_psnr(trial: Trial, config: QuantConfig) -> float:
    """Quantize with `config` and measure the fake-quant graph's PSNR against the float one."""
    from fusionc.targets.qnn.quantize import quantize, save_model

    with tempfile.TemporaryDirectory() as tmp:
        qdq_path = Path(tmp) / "trial.qdq.onnx"
        save_model(quantize(trial.float_path, trial.stats, config), qdq_path)
        return outputs_psnr(trial.reference, SegmentedModel(qdq_path).run(trial.feeds, lambda *_: None, set()))


def choose_config(float_path: Path, stats: dict[str, TensorStats], feeds: list[Feeds], config: QuantConfig,
                  name: str, options: Any, executor: TaskExecutor = SERIAL) -> tuple[QuantConfig, dict[str, Any]]:
    """The remedied config and a report of what was raised and why (stored in the manifest). `executor` runs
    the group tests of one round side by side (fusionc.core.executor; the same results wherever they run)."""
    from fusionc.targets.qnn.rules import PASSTHROUGH

    gate = options.min_psnr if options.min_psnr else 35.0
    target = float(options.qnn_target_db if options.qnn_target_db is not None else gate + DEFAULT_MARGIN_DB)
    budget = int(options.qnn_remedy_rounds if options.qnn_remedy_rounds is not None else DEFAULT_ROUNDS)
    seconds = float(options.qnn_remedy_seconds)
    model = ir.load(float_path)
    config = copy.deepcopy(config)
    report: dict[str, Any] = {"target_db": target, "a_priori": a_priori(model, config, options.qnn_fp16_attention), "search": []}
    if budget <= 0:
        return config, report
    quantized = {n.name for n in quantized_nodes(model.graph, config)}
    trial = Trial(float_path, stats, feeds, SegmentedModel(float_path).run(feeds, lambda *_: None, set()))

    evaluator = None
    if config.op_types is not None:  # the CPU consumer: one fake-quant session for every candidate (fakequant.py)
        from fusionc.targets.qnn.fakequant import FakeQuantEvaluator

        start = time.perf_counter()
        evaluator = FakeQuantEvaluator(float_path, stats, config, feeds, trial.reference, Path(float_path).parent)
        report["evaluator"] = {"kind": "fake-quant session", **evaluator.describe(),
                               "build_s": round(time.perf_counter() - start, 2)}

    def measure(cfg: QuantConfig) -> float:
        db = evaluator.psnr(cfg) if evaluator is not None else None
        return db if db is not None else _trial_psnr(trial, cfg)

    def measure_many(configs: list[QuantConfig]) -> list[float]:
        if evaluator is not None and all(evaluator.supports(c) for c in configs):
            return [measure(c) for c in configs]
        return executor.map(_trial_setup, _trial_psnr, trial, configs)

    start = time.perf_counter()
    score = measure(config)
    report["initial_db"] = round(score, 2)
    per_eval = time.perf_counter() - start
    budget = min(budget - 1, int(seconds / max(per_eval, 1e-3)))  # at SD scale one evaluation takes minutes
    if evaluator is not None and score < target and budget > 2 * len(RANGE_CHOICES):
        config, score = choose_ranges(config, measure, score, stats, report)
        budget -= len(RANGE_CHOICES)
    report["evaluation_s"] = round(per_eval, 2)
    phases = [  # (remedy, which nodes qualify, how to raise a set of them)
        ("16-bit activations",
         lambda n, c: n.op_type not in PASSTHROUGH and c.node_bits.get(n.name, c.activation_bits) < 16,
         lambda c, names: c.node_bits.update({n: 16 for n in names})),
        ("16-bit weights",
         lambda n, c: n.op_type in WEIGHTED and c.weight_bits_by_node.get(n.name, c.weight_bits) < 16,
         lambda c, names: c.weight_bits_by_node.update({n: 16 for n in names})),
    ]
    if config.float_islands == "fp32":  # a CPU runs a raised node fastest in fp32, weights included
        phases = [("fp32 islands", lambda n, c: n.name not in c.float_nodes,
                   lambda c, names: c.float_nodes.update(names))]
    for what, qualifies, raise_ in phases:
        if score >= target or budget <= 0:
            break
        candidates = [n.name for n in model.graph if n.name in quantized and qualifies(n, config)]
        if not candidates:
            continue

        def raised(names: list[str], base: QuantConfig = config) -> QuantConfig:
            cfg = copy.deepcopy(base)
            raise_(cfg, names)
            return cfg

        high = measure(raised(candidates))
        budget -= 1
        entry: dict[str, Any] = {"remedy": what, "candidates": len(candidates), "all_raised_db": round(high, 2)}
        report["search"].append(entry)
        if high < target or budget < 10:  # this remedy alone cannot get there (or no budget): take it all
            if high > score:
                config, score = raised(candidates), high
                entry["raised"] = len(candidates)
            continue
        log: list = []
        chosen = group_search(candidates, lambda groups: measure_many(
            [raised([n for n in candidates if n not in g]) for g in groups]), high, target, budget - 2, log)
        budget -= len(log)
        entry["groups"] = log
        while True:  # verify the prediction; raise more of the ranking until it holds
            db = measure(raised(chosen))
            budget -= 1
            if db >= target or len(chosen) >= len(candidates) or budget <= 0:
                break
            more = [n for n in candidates if n not in chosen][: max(1, len(chosen) // 2)]
            chosen += more
        if db < target:
            chosen, db = candidates, high
        config, score = raised(chosen), db
        entry["raised"] = chosen if len(chosen) <= 64 else f"{len(chosen)} nodes"
        entry["db"] = round(db, 2)
    report["final_db"] = round(score, 2)
    report["nodes_16bit_activations"] = sum(1 for b in config.node_bits.values() if b >= 16)
    report["nodes_16bit_weights"] = len(config.weight_bits_by_node)
    report["nodes_float"] = len(config.float_nodes)
    return config, report
