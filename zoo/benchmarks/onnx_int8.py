"""onnxruntime's own int8 path, the peer of zoo's int8 rows where a family's
reference is an ONNX model (BERT, YOLOv8).

`quantize_file` is onnxruntime's dynamic quantization
(`onnxruntime.quantization.quantize_dynamic`): int8 weights, stored once,
and activations quantized to uint8 per call from their observed range, so
MatMul and Conv run as integer products (MatMulInteger / ConvInteger, or
the fused DynamicQuantizeMatMul). `session` opens a model on the CPU
provider with one intra-op thread per core, as the other peers run.
`export_functional` writes a functional Keras model (a BERT backbone) as
ONNX through zoo's own export, so onnxruntime and zoo run the same weights.

    from zoo.benchmarks.onnx_int8 import quantize_file, session
    quantize_file("backbone.onnx", "/tmp/backbone_int8.onnx")
    session("/tmp/backbone_int8.onnx").run(None, feed)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def quantize_file(source: str | Path, target: str | Path) -> Path:
    """`source` dynamically quantized to int8 (QInt8 weights) into `target`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    return Path(target)


def session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session of `path` with `threads` intra-op threads
    (default: every core) and one inter-op thread."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_functional(model: Any, folder: str | Path, name: str = "model") -> Path:
    """The functional Keras `model` exported as ONNX by `zoo.core.export`
    into `folder`; the `.onnx` file's path. Its outputs keep their names (a
    dict of outputs) or are called `outputs`."""
    from zoo.core.export import export, functional_graph

    class Graphs:
        def export_graphs(self) -> list[Any]:
            return [functional_graph(model, name, "outputs")]

    export(Graphs(), folder, "onnx")
    return Path(folder) / f"{name}.onnx"
