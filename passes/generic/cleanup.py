"""Generic cleanup passes: constant folding, shape inference, no-op removal, CSE, dead code.

Every pass here wraps what onnx_ir and onnxscript already do (onnxscript's constant folder and
rewrite rules, onnx_ir's CSE / unused-removal / shape-inference passes); fusionc only adds:

* memory safety for models over 2 GB with external data: onnx_ir keeps such tensors lazy
  (mmap'd ExternalTensor), so no pass may read a big weight. The folder is told never to fold a node
  with an input over `input_size_limit` elements (onnxscript would otherwise fold a Transpose of a
  big weight into a new in-memory tensor), CSE and initializer dedup only look at small tensors, and
  shape inference goes through onnx_ir's ShapeInferencePass, which strips every initializer over
  1 KB before serializing, so the protobuf it hands to onnx.shape_inference stays small whatever the
  model size;
* fused functions (domain fusionc) are hidden from folding and rewriting, so their bodies are never
  touched;
* shape inference never makes a known dim less specific (a plain merge can replace [s, 4, 64, 8]
  by [?, ?, ?, ?]), which also keeps the pass idempotent;
* two rules for what the torch exporter leaves behind (simplify_rules.py).

`CleanUpGraphPass` runs them to a fixpoint; it is the first and the last entry of every pipeline.
"""

from __future__ import annotations

import logging

import onnx_ir as ir
import onnx_ir.passes.common as common
from onnxscript import optimizer
from onnxscript.rewriter import pattern
from onnxscript.rewriter.rules import common as rules

from fusionc.passes.generic import simplify_rules
from fusionc.passes.generic._match import apply_rules, fused_functions_hidden, root_filtered

logger = logging.getLogger(__name__)

# Folding limits (elements). Inputs above the limit are never read: the model may be >2 GB on disk.
FOLD_INPUT_LIMIT = 8192
FOLD_OUTPUT_LIMIT = 512 * 512

_NO_OP_RULES = root_filtered(pattern.RewriteRuleSet(
    [
        # x+0, x-0, x*1, x/1, Dropout in inference
        rules.add_0_rule, rules.sub_0_rule, rules.mul_by_1_rule, rules.div_by_1_rule,
        rules.dropout_inference_rule, rules.dropout_zero_rule,
        # Cast/Expand/Transpose that change nothing, and chains that collapse into one op
        rules.no_op_cast_rule, rules.cast_cast_rule, rules.no_op_expand_rule, rules.no_op_transpose_rule,
        rules.transpose_transpose_rule, rules.flatten_to_reshape_rule, rules.reshape_reshape_rule,
        rules.unsqueeze_unsqueeze_rule, rules.squeeze_reshape_1d_rule,
        # (not slice_split_rule: a two-output pattern, which onnxscript matches by trying every
        # node pair of the graph, O(nodes^2) - minutes on an SD-scale UNet)
        rules.collapse_slice_rule, rules.collapse_slice2_rule,
        rules.cast_constant_of_shape_rule, rules.cast_constant_of_shape_without_value_rule,
        rules.materialize_reshape_shape_rule,
        rules.no_op_static_scatter_nd_rule, rules.no_op_dynamic_scatter_nd_rule,
        *simplify_rules.rules,
    ]
))


class FoldConstantsPass(ir.passes.InPlacePass):
    """Fold constant subgraphs and partially evaluate shape computations (onnxscript's folder);
    never reads an input over `input_size_limit` elements.

        c1 = Constant [2]; c2 = Mul(c1, 3)      ->   c2 = [6] (initializer)
        s = Shape(x[1,4,8,8]); Gather(s, 1)     ->   [4]
        Reshape(x[2,3], [2,3]); Cast(x:f32, f32) ->  Identity(x)   (removed by RemoveNoOpsPass)
    """

    def __init__(self, input_size_limit: int = FOLD_INPUT_LIMIT, output_size_limit: int = FOLD_OUTPUT_LIMIT):
        super().__init__()
        self.input_size_limit = input_size_limit
        self.output_size_limit = output_size_limit

    def _should_fold(self, node: ir.Node) -> bool | None:
        for value in node.inputs:
            if value is not None and value.const_value is not None and value.const_value.size > self.input_size_limit:
                return False  # onnxscript folds single-use big Transposes: that would load the weight
        return None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        with fused_functions_hidden(model):
            result = optimizer.fold_constants(
                model,
                onnx_shape_inference=False,  # InferShapesPass runs in the same loop, once for the graph
                input_size_limit=self.input_size_limit,
                output_size_limit=self.output_size_limit,
                should_fold=self._should_fold,
            )
        return ir.passes.PassResult(model, result.modified)


class RemoveNoOpsPass(ir.passes.InPlacePass):
    """Remove ops that compute nothing (onnxscript's rules + ours) and Identity nodes.

        y = Identity(x); Dropout(x); Cast(x:f16, to=f16); Mul(x, 1); Reshape(x, Shape(x))  ->  x
        Reshape(Transpose(Reshape(k, [-1,S,D]), [0,2,1]), [B,H,D,S])  ->  Transpose(k, [0,1,3,2])
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = apply_rules(model, _NO_OP_RULES)
        identity = common.IdentityEliminationPass()(model)
        return ir.passes.PassResult(model, bool(count) or identity.modified)


class EliminateCommonSubexpressionsPass(ir.passes.InPlacePass):
    """Merge nodes that compute the same op on the same inputs (onnx_ir's CSE), after lifting
    Constant nodes to initializers and merging equal small ones so their consumers compare equal.

        a = Shape(x); b = Shape(x); Concat(a, b)   ->   a = Shape(x); Concat(a, a)
    """

    def __init__(self, initializer_size_limit: int = 1024):
        super().__init__()
        self.initializer_size_limit = initializer_size_limit

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        lifted = common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
        dedup = common.DeduplicateInitializersPass(size_limit=self.initializer_size_limit)(model)
        cse = common.CommonSubexpressionEliminationPass()(model)
        return ir.passes.PassResult(model, lifted.modified or dedup.modified or cse.modified)


class RemoveDeadCodePass(ir.passes.InPlacePass):
    """Remove nodes whose outputs nobody uses, unused initializers, functions and opset imports.

        t = Transpose(x)  (t unused)   ->   (gone)
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for step in (
            common.RemoveUnusedNodesPass(),
            common.RemoveUnusedFunctionsPass(),
            common.RemoveUnusedOpsetsPass(),
        ):
            modified |= step(model).modified
        return ir.passes.PassResult(model, modified)


class InferShapesPass(ir.passes.InPlacePass):
    """Whole-graph ONNX shape inference (onnx_ir's ShapeInferencePass: big initializers are
    stripped before serializing), keeping every dim at least as specific as it was.

        y = Reshape(x[s,8,256], Shape(z[s,32,8,8]))  : y [?,?,?,?]  ->  y [s,32,8,8]
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before = {v: (v.shape, v.dtype) for v in _all_values(model.graph)}
        common.ShapeInferencePass()(model)
        modified = False
        for value, (shape, dtype) in before.items():
            if value.dtype != dtype and dtype is not None:
                value.dtype = dtype  # never retype what the exporter typed
            merged = _more_specific(shape, value.shape)
            if merged is not value.shape:
                value.shape = merged
            if not _same_shape(merged, shape):
                modified = True
        return ir.passes.PassResult(model, modified)


class CleanUpGraphPass(ir.passes.InPlacePass):
    """Fold, remove no-ops, CSE, dead code and infer shapes until nothing changes.

    Shape inference is inside the loop because what it learns enables more rewrites (a Reshape
    whose output shape becomes known gets a constant target; its Shape/Slice/Concat chain dies).

        exported graph with Identity/no-op Reshape/duplicate Shape chains  ->  same graph without them
    """

    def __init__(self, max_iterations: int = 4):
        super().__init__()
        self.max_iterations = max_iterations

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        steps: list[ir.passes.PassBase] = [
            FoldConstantsPass(),
            RemoveNoOpsPass(),
            EliminateCommonSubexpressionsPass(),
            RemoveDeadCodePass(),
        ]
        modified = False
        for iteration in range(self.max_iterations):
            changed = False
            for step in steps:
                changed |= step(model).modified
            if not changed and iteration > 0:
                break  # shapes were inferred after the last change
            shapes = InferShapesPass()(model).modified
            modified |= changed or shapes
            if not (changed or shapes):
                break
        return ir.passes.PassResult(model, modified)


def _all_values(graph: ir.Graph) -> list[ir.Value]:
    values = list(graph.inputs) + list(graph.initializers.values())
    for node in graph:
        values.extend(node.outputs)
    return values


def _same_shape(a: ir.Shape | None, b: ir.Shape | None) -> bool:
    if a is None or b is None:
        return a is b
    return len(a) == len(b) and all(_dim_key(x) == _dim_key(y) for x, y in zip(a, b))


def _dim_key(d: object) -> object:
    return d if isinstance(d, int) else ("sym", getattr(d, "value", None))


def _more_specific(old: ir.Shape | None, new: ir.Shape | None) -> ir.Shape | None:
    """`new` where it adds information, `old` where it would lose some (or on conflict)."""
    if new is None or old is new:
        return old
    if old is None:
        return new
    if len(old) != len(new):
        logger.debug("shape inference changed a rank (%s -> %s): kept %s", old, new, old)
        return old
    dims: list[int | str | None] = []
    changed = False
    for o, n in zip(old, new):
        o_val = o if isinstance(o, int) else getattr(o, "value", None)
        n_val = n if isinstance(n, int) else getattr(n, "value", None)
        if isinstance(o_val, int) or (o_val is not None and not isinstance(n_val, int)) or n_val is None:
            dims.append(o_val)
        else:
            dims.append(n_val)
            changed = True
    return ir.Shape(dims) if changed else old
