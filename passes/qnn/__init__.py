"""QNN HTP rewrites (static batch, opset 21, fused units lowered to ops the QNN EP maps one to one) and Q/DQ
insertion from a precomputed plan."""
