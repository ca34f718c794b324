"""Graph statistics (MACs, bytes per op) and the device latency cost model built on them."""
