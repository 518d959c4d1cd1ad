"""`--dtypes`: float32 and bfloat16 rows of every family benchmark, in one run.

zoo runs in the dtype of the row (`dtype="bfloat16"` when loading or
building); the peer runs its own 16-bit path in the same invocation:

* transformers (BERT, OPT): `from_pretrained(..., dtype=torch.bfloat16)`;
* faster-whisper: every 16-bit CTranslate2 compute type this CPU supports
  (`ctranslate2.get_supported_compute_types("cpu")`), each its own peer row
  named by its compute type (:func:`ct2_16bit_compute_types`);
* onnxruntime (YOLOv8): the float32 export cast to float16
  (`onnx_float16.py`); ONNX has no bfloat16 convolution, and where the CPU
  provider has no float16 kernel it inserts casts and computes in float32,
  which the worker counts and reports (:func:`ort_float16_report`).

Layout of a family's results file: the float32 run at the top level
(`results[peer]`, `results["zoo"]`, as before `--dtypes` existed), every
other dtype in `results[dtype]` with the same two keys. `sections(results)`
yields them all. Each script runs each dtype as its own set of worker
processes (a peer worker, then one per backend), float32 first.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: every dtype a results file may hold, in order; `zoo.quantization`'s int8
#: rows load float32 and `quantize("int8")` (families that have a peer int8)
DTYPES = ("float32", "bfloat16", "int8")
#: the dtypes of a family benchmark's `--dtypes` unless it names its own
FLOAT_DTYPES = ("float32", "bfloat16")
#: CTranslate2's 16-bit compute types, in the order tried (CPU support varies)
CT2_16BIT = ("bfloat16", "int8_bfloat16", "float16", "int8_float16", "int16")
CPU_16BIT_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "amx_int8", "avx512_fp16")


def add_dtypes_option(parser: argparse.ArgumentParser, default: str = "float32",
                      choices: tuple[str, ...] = FLOAT_DTYPES) -> None:
    """`--dtypes float32,bfloat16` (the spelling of bench_stable_diffusion.py)."""
    parser.add_argument("--dtypes", default=default,
                        help="comma-separated dtypes of zoo's rows, each against the peer's "
                             f"own path in that precision (choose from {','.join(choices)}; "
                             "default: %(default)s)")


def parse_dtypes(parser: argparse.ArgumentParser, args: argparse.Namespace,
                 choices: tuple[str, ...] = FLOAT_DTYPES) -> None:
    """`args.dtypes` as a list (in `DTYPES` order), or a parser error."""
    given = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    unknown = sorted(set(given) - set(choices))
    if unknown or not given:
        parser.error(f"--dtypes {args.dtypes!r}: choose from {','.join(choices)}")
    args.dtypes = [d for d in DTYPES if d in given]


def load_dtype(dtype: str) -> str:
    """The dtype a zoo worker loads the model in for a row of `dtype`: int8
    rows load float32, then `quantize("int8")`."""
    return "float32" if dtype == "int8" else dtype


def worker_dtype(args: argparse.Namespace) -> str:
    """The one dtype a worker process runs (the parent passes `--dtypes D`)."""
    if len(args.dtypes) != 1:
        raise SystemExit(f"a worker runs one dtype, got {args.dtypes}")
    return args.dtypes[0]


def sections(results: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(dtype, section) for every dtype a results file holds; a section has the
    peer's key and "zoo". Files written before `--dtypes` are float32 only."""
    if results.get("zoo"):
        yield "float32", results
    for dtype in DTYPES[1:]:
        if isinstance(results.get(dtype), dict):
            yield dtype, results[dtype]


def zoo_results(results: dict[str, Any]
                ) -> Iterator[tuple[str, dict[str, Any], str, dict[str, Any]]]:
    """(dtype, section, backend, result) for every zoo worker of every dtype."""
    for dtype, section in sections(results):
        for backend, res in section["zoo"].items():
            yield dtype, section, backend, res


def store(results: dict[str, Any], dtype: str, section: dict[str, Any]) -> None:
    """Put one dtype's section into `results` (see the module docstring)."""
    if dtype == "float32":
        results.update(section)
    else:
        results[dtype] = section
    results.setdefault("zoo", {})


def cpu_16bit_features(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, bool] | None:
    """Which of the 16-bit CPU features (`CPU_16BIT_FLAGS`) the first CPU of
    `cpuinfo` lists; None when there is no such file (unknown)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags = set(line.split(":", 1)[1].split())
            break
    return {flag: flag in flags for flag in CPU_16BIT_FLAGS}


def features_text(features: dict[str, bool] | None) -> str:
    """The CPU's 16-bit features in words, for report headings.

    >>> features_text({"avx512_bf16": True, "amx_bf16": False}), features_text(None)
    ('avx512_bf16 (not amx_bf16)', 'unknown (no /proc/cpuinfo)')
    """
    if features is None:
        return "unknown (no /proc/cpuinfo)"
    missing = [f for f, on in features.items() if not on]
    return (", ".join(f for f, on in features.items() if on) or "none") + (
        f" (not {', '.join(missing)})" if missing else "")


# --------------------------------------------------------------------------- #
# The peers' 16-bit paths.
# --------------------------------------------------------------------------- #


def ct2_16bit_compute_types() -> tuple[list[str], list[str]]:
    """(the 16-bit compute types CTranslate2 supports on this CPU, those it
    does not), from `ctranslate2.get_supported_compute_types("cpu")`."""
    import ctranslate2

    supported = set(ctranslate2.get_supported_compute_types("cpu"))
    return ([c for c in CT2_16BIT if c in supported],
            [c for c in CT2_16BIT if c not in supported])


def ort_op_counts(model_path: str | Path) -> dict[str, int]:
    """How many nodes of each op type the ONNX model's main graph has (ops of
    other domains than ONNX's as "domain:op")."""
    from zoo.benchmarks import onnx_float16 as pb

    fields = pb.parse(Path(model_path).read_bytes())
    graph = pb.parse(next(v for n, _, v in fields if n == pb.MODEL_GRAPH))
    counts: dict[str, int] = {}
    for number, _, value in graph:
        if number == pb.GRAPH_NODE:
            node = pb.parse(value)
            domain = pb._string(node, pb.NODE_DOMAIN)
            op = (f"{domain}:" if domain else "") + (pb._string(node, pb.NODE_OP_TYPE) or "")
            counts[op] = counts.get(op, 0) + 1
    return counts


def ort_float16_report(model_path: str | Path, tmp_dir: str | Path) -> dict[str, Any]:
    """What onnxruntime's CPU provider makes of the float16 model `model_path`
    (from the graph it optimizes it into): `inserted_casts`, the Cast nodes it
    adds around nodes it has no float16 kernel for (those compute in float32),
    `convolutions` and `float32_convolutions` (those it runs with its NCHWc
    kernels, which are float32 only), and a `note` saying so in words."""
    import onnxruntime as ort

    optimized = Path(tmp_dir) / "optimized.onnx"
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(optimized)
    options.log_severity_level = 3  # its warning about NCHWc-specific saved graphs
    ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    before, after = ort_op_counts(model_path), ort_op_counts(optimized)
    casts = after.get("Cast", 0) - before.get("Cast", 0)
    convs = sum(n for op, n in before.items() if op.endswith("Conv"))
    nchwc = after.get("com.microsoft.nchwc:Conv", 0)
    note = (f"onnxruntime's CPU provider has no float16 kernel for much of the float16 model: "
            f"it inserts {casts} Casts and runs {nchwc} of its {convs} convolutions in "
            "float32 (NCHWc)" if casts or nchwc else
            "onnxruntime runs the float16 model with float16 kernels")
    return {"inserted_casts": casts, "convolutions": convs, "float32_convolutions": nchwc,
            "note": note}

def exit_code(peer_name: str, results: dict[str, Any]) -> int:
    """1 (after naming them on stderr) when a peer or zoo worker of any dtype failed."""
    from zoo.benchmarks import common

    return max((common.exit_code(f"{peer_name} ({dtype})", section[peer_name], section["zoo"])
                for dtype, section in sections(results)), default=0)
