"""Export a task's inference graphs as ONNX, TensorFlow SavedModel or LiteRT.

Each task names the graphs people deploy (`Task.export_graphs`): a BERT
embedder or classifier is one graph; YOLOv8 exports its detector up to the
decoded boxes and class probabilities (non-max suppression is left to the
runtime, as in ultralytics' exports); Whisper exports its encoder and one
decoder step with a key/value cache; Stable Diffusion its text encoder, UNet
and VAE decoder. `export` writes one artifact per graph into a folder, with
`export.json` describing every graph's inputs and outputs.

The artifacts are traced by Keras' TensorFlow backend, whatever backend the
task runs on: the graphs are the same model, and TensorFlow's graph is the one
all three formats are written from (Keras' `ExportArchive` for SavedModel,
`tf2onnx` for ONNX, TensorFlow's LiteRT converter). On JAX and PyTorch the
task is saved to a temporary preset and exported by a TensorFlow child
process, so `export` works the same on every backend.

Example:

>>> from zoo.models import BertTextEmbedder
>>> embedder = BertTextEmbedder.from_preset("all_minilm_l6_v2")  # doctest: +SKIP
>>> embedder.export("minilm_onnx", format="onnx")  # doctest: +SKIP
PosixPath('minilm_onnx')
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from zoo.core.compiled_loop import static_shapes, traces_tensorflow_graphs
from zoo.core.errors import InputError
from zoo.utils.atomic import atomic_directory
from zoo.utils.progress import progress

#: the formats `export` writes, and each graph's file name suffix in them
FORMATS = {"onnx": ".onnx", "saved_model": "", "litert": ".tflite"}
#: the ONNX operator set the artifacts use (onnxruntime 1.16 and later run it)
ONNX_OPSET = 17
MANIFEST = "export.json"


@dataclasses.dataclass(frozen=True)
class ExportGraph:
    """One inference graph of a task.

    Attributes:
        name: the artifact's name in the export folder (`encoder`, `unet`...).
        inputs: each input's name, shape (None for any size) and dtype, in
            the order the artifact takes them.
        function: called with one keyword tensor per input; returns a dict of
            named output tensors.
        description: what the graph computes and what the caller does with
            its outputs (written into `export.json`).
    """

    name: str
    inputs: dict[str, tuple[tuple[int | None, ...], str]]
    function: Callable[..., dict[str, Any]]
    description: str = ""


def spec(tensor: Any) -> tuple[tuple[int | None, ...], str]:
    """A symbolic tensor's `(shape, dtype)`, as `ExportGraph.inputs` holds them."""
    return tuple(tensor.shape), keras.backend.standardize_dtype(tensor.dtype)


def functional_graph(model: keras.Model, name: str, output: str) -> ExportGraph:
    """The whole functional `model` as one graph: its named inputs, and its
    output under the name `output` (a dict of outputs keeps its keys)."""
    inputs = model.input
    if not isinstance(inputs, dict):
        inputs = {tensor.name: tensor for tensor in keras.tree.flatten(inputs)}
    keys = list(inputs)

    def run(**tensors: Any) -> dict[str, Any]:
        given = [tensors[key] for key in keys]
        result = model(dict(zip(keys, given)) if isinstance(model.input, dict) else
                       keras.tree.pack_sequence_as(model.input, given), training=False)
        return dict(result) if isinstance(result, dict) else {output: result}

    return ExportGraph(name, {key: spec(tensor) for key, tensor in inputs.items()}, run,
                       f"{type(model).__name__}: the model's forward pass.")


def check_format(format: str) -> str:
    """`format` if it is one `export` writes, else an `InputError`.

    Example:

    >>> check_format("litert")
    'litert'
    >>> check_format("tflite")
    Traceback (most recent call last):
    ...
    zoo.core.errors.InputError: Unknown export format 'tflite'. Fix: pass one of onnx, ...
    """
    if format not in FORMATS:
        raise InputError(f"Unknown export format {format!r}. Fix: pass one of "
                         f"{', '.join(FORMATS)}.")
    return format


def check_target(path: Path, overwrite: bool) -> None:
    """An `InputError` unless `path` is free, or `overwrite` and it holds an
    earlier export (a folder with `export.json`: nothing else is replaced)."""
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise InputError(f"{path} already exists. Fix: pass overwrite=True (--overwrite) or "
                         "another path.")
    if not (path / MANIFEST).is_file():
        raise InputError(f"{path} exists and is not an export folder (no {MANIFEST}); "
                         "overwrite replaces only an earlier export. Fix: pass another path.")


def _chosen(graphs: Sequence[ExportGraph], names: Sequence[str] | None) -> list[ExportGraph]:
    if names is None:
        return list(graphs)
    names = [names] if isinstance(names, str) else list(names)
    known = {g.name: g for g in graphs}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise InputError(f"This model has no graph {unknown or names!r} to export. Fix: pass "
                         f"graphs from {sorted(known)} (or none, for all).")
    return [known[n] for n in dict.fromkeys(names)]


def export(task: Any, path: str | os.PathLike, format: str = "onnx",
           graphs: Sequence[str] | None = None, overwrite: bool = False) -> Path:
    """Write `task`'s inference graphs to the folder `path` in `format`.

    Args:
        task: a zoo task (it has `export_graphs`).
        path: the folder to write; it holds one artifact per graph
            (`<graph>.onnx`, `<graph>/` SavedModel, `<graph>.tflite`) and
            `export.json`. Written whole or not at all.
        format: `"onnx"`, `"saved_model"` or `"litert"`.
        graphs: names of the graphs to export (default: all of them).
        overwrite: replace an earlier export at `path` (a folder holding
            `export.json`; any other existing path is refused).

    Returns:
        `path`.

    Raises:
        InputError: an unknown format or graph, `path` exists without
            `overwrite`, or the format cannot express a graph (the message
            says which operations and what to use instead).
    """
    check_format(format)
    path = Path(path)
    if path.suffix in (".onnx", ".tflite"):
        raise InputError(f"export writes a folder (one file per graph and {MANIFEST}), not "
                         f"{path.name}. Fix: pass a folder name, such as {path.stem}_{format}.")
    chosen = _chosen(task.export_graphs(), graphs)
    check_target(path, overwrite)
    if not traces_tensorflow_graphs():
        return _export_in_tensorflow(task, path, format, [g.name for g in chosen])
    with atomic_directory(path) as work:
        manifest = {"format": format, "model": type(task).__name__, "graphs": {}}
        for graph in progress(chosen, desc=f"export {format}", unit="graph"):
            manifest["graphs"][graph.name] = _write_graph(graph, format, work)
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------- #
# TensorFlow: trace, then write.
# --------------------------------------------------------------------------- #


def _traced(graph: ExportGraph) -> Any:
    """`graph.function` as a `tf.function` of one positional tensor per input."""
    import tensorflow as tf

    names = list(graph.inputs)
    specs = [tf.TensorSpec(shape, dtype, name=name)
             for name, (shape, dtype) in graph.inputs.items()]

    def serve(*tensors: Any) -> dict[str, Any]:
        with static_shapes():
            outputs = graph.function(**dict(zip(names, tensors)))
        return {key: tf.identity(value, name=key) for key, value in outputs.items()}

    return tf.function(serve, input_signature=specs, autograph=False)


def _write_graph(graph: ExportGraph, format: str, folder: Path) -> dict:
    """Write one graph's artifact into `folder`; its `export.json` entry."""
    function = _traced(graph)
    # in the order every artifact lists them (TensorFlow flattens a dict by key)
    outputs = sorted(function.get_concrete_function().structured_outputs)
    if set(outputs) & set(graph.inputs):  # tf2onnx then loses the input
        raise ValueError(f"Graph {graph.name!r} has an input and an output of the same name: "
                         f"{sorted(set(outputs) & set(graph.inputs))}.")
    target = folder / (graph.name + FORMATS[format])
    _check_weights(function, graph.name, format)
    if format == "onnx":
        _write_onnx(function, graph, target)
    else:
        saved = target if format == "saved_model" else folder / f".{graph.name}_saved_model"
        _write_saved_model(function, saved)
        if format == "litert":
            try:
                _write_litert(saved, graph.name, target)
            finally:
                import shutil

                shutil.rmtree(saved, ignore_errors=True)
    return {
        "file": target.name,
        "inputs": {name: {"shape": list(shape), "dtype": dtype}
                   for name, (shape, dtype) in graph.inputs.items()},
        "outputs": outputs,
        "description": graph.description,
    }


#: ONNX (protobuf) and LiteRT (flatbuffer) files hold at most 2 GiB
_FILE_LIMIT = 2**31


def _check_weights(function: Any, name: str, format: str) -> None:
    if format == "saved_model":
        return
    variables = function.get_concrete_function().variables
    if format == "onnx" and any(v.dtype.name == "bfloat16" for v in variables):
        # tf2onnx writes bfloat16 graphs that onnxruntime refuses to load
        raise InputError(f"Graph {name!r} computes in bfloat16, which ONNX exports do not "
                         "support. Fix: load the model with dtype='float32' or 'float16', "
                         "or export format saved_model.")
    weights = sum(v.shape.num_elements() * v.dtype.size for v in variables)
    if weights >= _FILE_LIMIT:
        raise InputError(f"Graph {name!r} holds {weights / 1e9:.1f} GB of weights; a {format} "
                         "file holds at most 2 GiB. Fix: export format saved_model, or load "
                         "the model with dtype='float16' first.")


def _write_saved_model(function: Any, folder: Path) -> None:
    # (the endpoint tracks the variables it reads: only those are saved)
    archive = keras.export.ExportArchive()
    archive.add_endpoint("serve", function)
    archive.write_out(str(folder), verbose=False)


def _erfc_as_erf(ctx: Any, node: Any, name: str, args: Any) -> None:
    """tf2onnx has no ONNX form of TensorFlow's `Erfc` (exact GELU uses it):
    rewrite `erfc(x)` as `1 - erf(x)`."""
    from tf2onnx import utils

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    erf = ctx.make_node("Erf", [node.input[0]])
    one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype=dtype))
    node.type = "Sub"
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])


def _write_onnx(function: Any, graph: ExportGraph, target: Path) -> None:
    import logging

    try:
        import onnx
        import tf2onnx
    except ImportError as error:
        raise InputError(f"ONNX export needs {error.name}, which is not installed. Fix: pip "
                         'install "zoo[export]".') from error

    quiet = logging.getLogger("tf2onnx")  # its unmapped-op errors become ours below
    level, quiet.level = quiet.level, logging.CRITICAL
    try:
        model, _ = tf2onnx.convert.from_function(
            function, input_signature=function.input_signature, opset=ONNX_OPSET,
            custom_op_handlers={"Erfc": (_erfc_as_erf, [])})
    except Exception as error:  # tf2onnx raises plain exceptions
        raise InputError(f"ONNX cannot express graph {graph.name!r}: {_first_line(error)}. "
                         "Fix: export format saved_model.") from error
    finally:
        quiet.level = level
    # tf2onnx keeps an operation it cannot map under its TensorFlow name, which
    # no ONNX runtime runs: refuse instead of writing a file that fails to load
    foreign = sorted({node.op_type for node in _onnx_nodes(model.graph)
                      if not onnx.defs.has(node.op_type, node.domain)})
    if foreign:
        raise InputError(f"ONNX cannot express graph {graph.name!r}: operations "
                         f"{', '.join(foreign)} have no ONNX form. Fix: export format "
                         "saved_model.")
    onnx.save(model, str(target))


def _onnx_nodes(graph: Any) -> Any:
    """Every node of an ONNX graph, those of its subgraphs (If, Loop) included."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                yield from _onnx_nodes(sub)


def _write_litert(saved: Path, name: str, target: Path) -> None:
    """Convert a SavedModel to LiteRT with builtin operations only (no Flex
    delegate, which LiteRT runtimes do not ship by default)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        target.write_bytes(converter.convert())
    except Exception as error:  # tf.lite raises ConverterError with MLIR diagnostics
        ops = sorted(set(re.findall(r"'tf\.(\w+)' op is neither", str(error))))
        what = f"operations {', '.join(ops)} are not LiteRT builtins" if ops else \
            _first_line(error)
        raise InputError(f"LiteRT cannot run graph {name!r}: {what}. Fix: export format onnx "
                         "or saved_model.") from error


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__


# --------------------------------------------------------------------------- #
# JAX and PyTorch: a TensorFlow child process exports a saved copy.
# --------------------------------------------------------------------------- #


def _export_in_tensorflow(task: Any, path: Path, format: str, graphs: list[str]) -> Path:
    """Save `task` to a temporary preset next to `path` (a large model may not
    fit a memory-backed /tmp) and export it with `zoo export` under TensorFlow
    on the CPU (the parent checked the request; the child overwrites)."""
    if importlib.util.find_spec("tensorflow") is None:
        raise InputError("export traces graphs with TensorFlow, which is not installed. Fix: "
                         'pip install "zoo[export]".')
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".zoo_export_", dir=path.parent) as tmp:
        preset = Path(tmp) / "preset"
        task.save_to_preset(preset)
        env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3",
               "CUDA_VISIBLE_DEVICES": "-1"}  # tracing needs no accelerator
        command = [sys.executable, "-m", "zoo.cli", "export", str(preset), f"--out={path}",
                   f"--format={format}", "--overwrite", *(f"--graph={g}" for g in graphs)]
        done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, encoding="utf-8", errors="replace")
    if done.returncode != 0:  # `zoo` prints one line: "zoo: error: ..."
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        message = lines[-1] if lines else f"exit status {done.returncode}"
        raise InputError(message.removeprefix("zoo: error: "))
    return path
