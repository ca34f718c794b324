"""The ONNX -> MIL lowering table, one module per op family; importing this package fills `lower.LOWERINGS`."""

from fusionc.targets.coreml.ops import elementwise, fused, nn, quant, tensor  # noqa: F401
