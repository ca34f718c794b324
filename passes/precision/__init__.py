"""Precision passes: fp16 safety (rescale or keep in fp32 what overflows fp16 on real inputs)."""
