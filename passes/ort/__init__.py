"""fusionc.passes.ort: rewrites into ONNX Runtime's contrib ops that have fast CPU kernels (the onnx target)."""
