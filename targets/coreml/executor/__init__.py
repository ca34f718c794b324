"""The MIL executor: runs a Core ML program op by op in numpy (see engine.py for why and how).

Importing the package fills the executor table: engine.py holds it, the ops_* modules register into it.
"""

from fusionc.targets.coreml.executor.engine import EXECUTORS, MILExecutor, load_program, register
from fusionc.targets.coreml.executor import ops_constexpr, ops_math, ops_nn, ops_tensor  # noqa: F401,E402

__all__ = ["EXECUTORS", "MILExecutor", "load_program", "register"]
