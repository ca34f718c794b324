"""The ONNX -> MIL lowering table, one module per op family; importing this package (or its `table`) fills `table.LOWERINGS`."""

from fusionc.targets.coreml.lowering import elementwise, fused, nn, quant, tensor  # noqa: F401
