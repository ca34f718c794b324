"""The Core ML target: ONNX -> MIL (our lowering table) -> .mlpackage, verified on Linux by the MIL executor.

`TARGET` implements fusionc.targets.base.Target; see target.py. coremltools is imported lazily by the
submodules that need it, so `get_target("coreml")` stays cheap.
"""

from fusionc.targets.coreml.target import CoreMLTarget

TARGET = CoreMLTarget()
