"""What a graph keeps alive by accident: removed values must be freed with their weights."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import onnx_ir as ir

from fusionc.core.memory import forget_removed_values


def test_a_weight_moved_out_of_the_graph_inputs_is_freed() -> None:
    """torch's exporter makes each weight a graph input first; onnx_ir then remembers it even once removed."""
    x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([4]))
    weight = ir.Value(name="w", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([4]),
                      const_value=ir.tensor(np.ones(4, np.float32)))
    add = ir.node("Add", [x, weight])
    model = ir.Model(ir.Graph([x, weight], add.outputs, nodes=[add], opset_imports={"": 21}), ir_version=10)
    model.graph.inputs.remove(weight)
    add.replace_input_with(1, ir.Value(name="w2", const_value=ir.tensor(np.zeros(4, np.float32))))
    model.graph.register_initializer(add.inputs[1])
    alive = weakref.ref(weight)
    del weight
    gc.collect()
    assert alive() is not None  # onnx_ir's input counter still holds it (what this module works around)
    assert forget_removed_values(model) == 1
    gc.collect()
    assert alive() is None
    assert [v.name for v in model.graph.inputs] == ["x"] and "w2" in model.graph.initializers
