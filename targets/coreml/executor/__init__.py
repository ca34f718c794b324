"""The MIL executor: runs a Core ML program op by op in numpy (see engine.py for why and how)."""

from fusionc.targets.coreml.executor.engine import EXECUTORS, MILExecutor, load_program, register

__all__ = ["EXECUTORS", "MILExecutor", "load_program", "register"]
