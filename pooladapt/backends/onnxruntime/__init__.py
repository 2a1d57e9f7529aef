"""The onnxruntime backend: NumPy in, NumPy out, inference only; each plan runs as its one
ONNX node in onnxruntime (translate.py), with the runtime's deviations emulated (quirks.py)."""

from pooladapt.backends.onnxruntime.translate import BACKEND, OnnxRuntimeBackend

__all__ = ["BACKEND", "OnnxRuntimeBackend"]
