"""Weight compression passes: palettization (lut, palettize), linear quantization (quantize_weights), the
mixed-bit search (mixed_bit), and the step a target appends to its pipeline from the options (dispatch)."""
