"""fusionc.core: the foundation every room may import; it imports nothing else of the project.

errors (exit codes), options (CompileOptions), devices (profiles), progress (stages), reproducible
(byte-identical artifacts), memory (freeing graph weights), numerics (PSNR, Feeds), context (what a pass or a
target gets for one component), executor (where a pass's independent measurements run).
"""
