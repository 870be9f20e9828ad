"""Inference runtimes: backends that run a model (eager torch, onnxruntime), the predictor core shared by
every prediction path, ONNX export and int8 quantisation, portable model folders, and a dynamic batcher.

Layer: above `sadetr.model` and `sadetr.data`, below the Predictor, the corpus search, serve and the CLI.
"""

# The inference backends (`--backend`), here without importing torch (command-line parsers use it).
BACKENDS = ("torch", "onnx", "onnx-int8")
