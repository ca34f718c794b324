"""Core ML / Apple Neural Engine rewrites: Apple's interface, (B, C, 1, S) layout, split-einsum attention,
GroupNorm as rank-4 reductions. Shared graph-building helpers live in graph.py."""
