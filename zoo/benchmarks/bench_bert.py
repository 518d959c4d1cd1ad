"""BERT-base forward-pass benchmark: zoo on jax/tensorflow/torch vs transformers.

What it measures: the wall-clock time of one inference forward pass of a
BERT-base-size encoder (12 layers, 12 heads, hidden 768, MLP 3072, vocabulary
30522) on a batch of 8 x 128 tokens, as milliseconds per batch: the median of
``--runs`` timed calls after ``--warmup`` untimed calls. The first call (which
traces / compiles) is timed on its own and reported as ``first_call_s``, with
``compile_s = first_call_s - median`` as the compile-time estimate.

* zoo: ``BertBackbone.predict_on_batch`` on each Keras backend, each in its own
  subprocess (the backend is fixed when keras is imported). Every reasonable
  fast path is tried and the fastest is kept (all are reported):
  jax: ``compile(jit_compile=True)`` (jax.jit / XLA);
  tensorflow: ``compile(jit_compile=False)`` (tf.function) and
  ``compile(jit_compile=True)`` (tf.function + XLA);
  torch: ``compile(jit_compile=False)`` (eager, ``torch.no_grad``) and
  ``compile(jit_compile=True)`` (``torch.compile``).
* transformers (the peer): ``BertModel`` on torch, eager, ``eval()`` mode,
  under ``torch.inference_mode()``, with its default attention implementation.

Fairness: the transformers model is built first (random init, seed 0); its
weights are saved to a temporary safetensors file and ported into every zoo
backbone with zoo's own BERT converter, so all runs use the same weights and
the same inputs, and each zoo path's output is checked against transformers'
(``max_abs_diff``). Speed does not depend on the weight values; sharing them is
only a correctness check. Inputs: random token ids, two segments, and
right-padding (row ``b`` keeps ``seq - b * seq // (2 * batch)`` real tokens:
800 of the 1024 positions at 8 x 128), so both libraries process an attention
mask; ``--padding none`` makes every row full. transformers computes every
position; zoo's BertBackbone removes the padding on tensorflow (plain graph)
and torch (``remove_padding=True``, its default), so those backends do about
22% fewer matrix-product FLOPs on the ragged batch; jax keeps the padded
layout (compiled shapes cannot depend on the mask). ``max_abs_diff`` compares
the real positions only (outputs at pads carry no meaning), and the MFU that
``zoo benchmark`` reports counts useful FLOPs: real tokens only. torch uses
``torch.set_num_threads(os.cpu_count())`` in both the zoo-torch and the
transformers process; jax and tensorflow use their default thread pools (all
cores). Workers run one after another, never concurrently.

The ratio is ``transformers_ms / zoo_ms`` per backend (> 1: zoo is faster).

bfloat16 (``--dtypes float32,bfloat16``; default float32): a second set of
workers runs both libraries in bfloat16 in the same invocation, transformers
through ``BertModel.from_pretrained(..., dtype=torch.bfloat16)`` of the same
random weights, zoo through ``BertBackbone(..., dtype="bfloat16")``; the
ratio is then transformers' bfloat16 ms / zoo's bfloat16 ms. Their outputs
are compared (``max_abs_diff``, informational: two bfloat16 computations
round differently). The float32 results stay at the top of the JSON file,
the bfloat16 ones go under ``"bfloat16"`` (``precision.py``).

int8 (``--dtypes float32,int8``): zoo loads float32 and runs
``quantize("int8")`` (Keras' int8 weights, activations in float32); the peer
is transformers' model under ``torch.ao.quantization.quantize_dynamic``
(int8 weights and activations in every Linear), PyTorch's own CPU int8 path.
The tensorflow worker also exports its float32 backbone to ONNX
(``zoo.core.export``, before quantizing) and times onnxruntime on it, in
float32 and after ``onnxruntime.quantization.quantize_dynamic`` (QInt8
weights, uint8 activations), ``intra_op_num_threads`` = all cores: zoo's
int8 rows are also given against that (``"onnxruntime"`` in the int8
section). int8 outputs are not gated (``max_abs_diff`` against transformers'
float32 is informational).

Busy machines (``common.py``): the parent waits (``--wait-idle``, 300 s) for
idle CPUs before each worker, each timed loop records the cores other
processes used (``other_cpu_cores``, ``steal_cores``), and a worker that
overlapped more than ``--max-other-cpu`` (0.25) cores is rerun (``--retries``,
3), keeping the cleanest run.

Reproduce (from the repository root, with the venv that has all three
backends and transformers installed)::

    .venv/bin/python -m zoo.benchmarks.bench_bert      # --dtypes float32,bfloat16,int8
    .venv/bin/python -m zoo.benchmarks.bench_bert --backends jax --runs 20
    .venv/bin/python -m zoo.benchmarks.bench_bert --smoke --out /tmp/r.json  # tiny, seconds

Options: ``--backends jax,tensorflow,torch --dtypes float32 --batch 8 --seq 128
--runs 10 --warmup 2 --smoke --out benchmarks/results/bert.json`` (and
``--wait-idle``, ``--max-other-cpu``, ``--retries``, ``--independent-weights``,
``--timeout``). ``--smoke`` swaps in a tiny model (2 layers, 2 heads, hidden
64, MLP 256, vocabulary 1000) with batch 2, 16 tokens and 2 timed runs, no
idle wait, no reruns and no torch.compile path (30 s of compilation even for
the tiny model); otherwise it runs the same code, about 15 s per backend and
dtype. The script re-invokes itself as ``bench_bert.py --worker NAME ...``; a
worker prints one ``BENCH_RESULT {json}`` line on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from zoo.benchmarks import common  # workers, timing, idle-wait, reruns
from zoo.benchmarks import precision  # --dtypes
from zoo.benchmarks import skeleton
from zoo.benchmarks.skeleton import TransformerSize as ModelSize
from zoo.benchmarks.common import fmt as _fmt
from zoo.benchmarks.common import time_calls

BACKENDS = ("jax", "tensorflow", "torch")
PEER = "transformers"
DEFAULT_OUT = common.results_dir() / "bert.json"
# Targets (full-size run): zoo's best backend >= 1.3x faster than transformers,
# and no backend more than 1.5x slower than transformers.
TARGET_BEST_SPEEDUP = 1.3
TARGET_MAX_SLOWDOWN = 1.5


#: `--dtypes` choices (int8: `quantize("int8")` against torch.ao's dynamic int8
#: and onnxruntime's dynamic int8 of zoo's ONNX export)
DTYPES = precision.DTYPES
BERT_BASE = ModelSize(30522, 12, 12, 768, 3072, 512)
SMOKE_WORKLOAD = {"batch": 2, "seq": 16, "runs": 2}


# --------------------------------------------------------------------------- #
# Shared helpers (parent and workers).
# --------------------------------------------------------------------------- #


def model_size(smoke: bool) -> ModelSize:
    return skeleton.TINY_TRANSFORMER if smoke else BERT_BASE


def row_lengths(batch: int, seq: int, padding: str = "ragged") -> list[int]:
    """Real tokens per row: "ragged" (row b keeps seq - b * seq // (2 * batch))
    or "none" (every row full)."""
    if padding == "none":
        return [seq] * batch
    return [seq - b * seq // (2 * batch) for b in range(batch)]


def make_inputs(size: ModelSize, batch: int, seq: int, seed: int = 0,
                padding: str = "ragged") -> dict[str, np.ndarray]:
    """Deterministic int32 inputs in zoo's format (padding_mask: 1 on real tokens)."""
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(1, size.vocabulary_size, size=(batch, seq), dtype=np.int32)
    segment_ids = np.zeros((batch, seq), np.int32)
    segment_ids[:, seq // 2:] = 1
    lengths = np.array(row_lengths(batch, seq, padding))
    padding_mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int32)
    token_ids *= padding_mask
    segment_ids *= padding_mask
    return {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask}


# --------------------------------------------------------------------------- #
# Workers (each in its own process).
# --------------------------------------------------------------------------- #


def worker_transformers(args: argparse.Namespace) -> dict[str, Any]:
    """transformers BertModel, torch eager; optionally saves weights + reference output."""
    import torch
    from transformers import BertConfig, BertModel

    skeleton.torch_peer_setup()
    size = model_size(args.smoke)
    model = BertModel(BertConfig(**size.transformers_config())).eval()
    if args.share_dir:
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(Path(args.share_dir) / "weights.safetensors"))
    dtype = precision.worker_dtype(args)
    if dtype == "bfloat16":  # as users load it: from_pretrained(..., dtype=torch.bfloat16)
        with tempfile.TemporaryDirectory(prefix="bench_bert_hf_") as hf_dir:
            model.save_pretrained(hf_dir)
            model = BertModel.from_pretrained(hf_dir, dtype=getattr(torch, dtype)).eval()
    arrays = make_inputs(size, args.batch, args.seq, padding=args.padding)
    inputs = {
        "input_ids": torch.from_numpy(arrays["token_ids"].astype(np.int64)),
        "token_type_ids": torch.from_numpy(arrays["segment_ids"].astype(np.int64)),
        "attention_mask": torch.from_numpy(arrays["padding_mask"].astype(np.int64)),
    }

    def forward() -> Any:
        with torch.inference_mode():
            return model(**inputs)

    if args.share_dir:  # (int8: the float32 model's output, before quantizing)
        np.save(Path(args.share_dir) / "reference.npy",
                forward().last_hidden_state.float().numpy())
    if dtype == "int8":  # PyTorch's dynamic int8 (weights and activations) of every Linear
        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (deprecated in favour of torchao, still shipped)
            model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    timing = time_calls(forward, args.warmup, args.runs)
    attn = getattr(model.config, "_attn_implementation", None) or "default"
    return {
        **timing,
        "path": f"BertModel eager, eval, inference_mode, attn_implementation={attn}"
                + {"bfloat16": ", from_pretrained(dtype=torch.bfloat16)",
                   "int8": ", torch.ao.quantization.quantize_dynamic(Linear, qint8)"
                   }.get(dtype, ""),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "torch_threads": torch.get_num_threads(),
    }


def _zoo_candidates(backend: str, smoke: bool = False) -> list[tuple[str, bool]]:
    """(description, jit_compile) for each zoo path worth trying on `backend`.

    `--smoke` leaves out torch.compile: it costs ~30 s of compilation even on
    the tiny model, and a smoke run must take seconds.
    """
    if backend == "jax":
        return [("predict_on_batch, jit_compile=True (jax.jit, XLA)", True)]
    if backend == "tensorflow":
        return [("predict_on_batch, jit_compile=False (tf.function)", False),
                ("predict_on_batch, jit_compile=True (tf.function + XLA)", True)]
    if backend == "torch":
        eager = [("predict_on_batch, jit_compile=False (eager, no_grad)", False)]
        return eager if smoke else eager + [
            ("predict_on_batch, jit_compile=True (torch.compile)", True)]
    raise ValueError(f"Unknown backend {backend!r}; expected one of {BACKENDS}.")


def worker_zoo(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    """zoo BertBackbone on `backend`: times every candidate path, keeps the fastest."""
    common.start_zoo_worker(backend)
    from zoo.models import BertBackbone
    size = model_size(args.smoke)
    dtype = precision.worker_dtype(args)
    backbone = BertBackbone(**dataclasses.asdict(size), dtype=precision.load_dtype(dtype))
    shared = bool(args.share_dir)
    reference = None
    if shared:
        from zoo.nlp.bert.bert_convert import port_backbone
        from zoo.presets.checkpoint_io import WeightReader, read_safetensors

        weights_file = Path(args.share_dir) / "weights.safetensors"
        port_backbone(backbone, WeightReader(read_safetensors(weights_file), str(weights_file)),
                      prefix="")
        reference = np.load(Path(args.share_dir) / "reference.npy")
    inputs = make_inputs(size, args.batch, args.seq, padding=args.padding)
    real = inputs["padding_mask"].astype(bool)  # outputs at pads carry no meaning
    onnx_peer = None
    if dtype == "int8":
        if backend == "tensorflow":  # the float32 export, before quantizing
            onnx_peer = _onnxruntime_peer(backbone, inputs, real, reference, args)
        backbone.quantize("int8")

    paths = []
    for description, jit_compile in _zoo_candidates(backend, args.smoke):
        entry: dict[str, Any] = {"path": description, "jit_compile_requested": jit_compile}
        try:
            backbone.compile(jit_compile=jit_compile)
            entry["jit_compile_effective"] = bool(backbone.jit_compile)
            if jit_compile and not backbone.jit_compile:
                # the model declined XLA (remove_padding on tensorflow): say what ran
                entry["path"] = description.split(" (")[0] + " (model declined XLA: tf.function)"
            entry.update(time_calls(lambda: backbone.predict_on_batch(inputs),
                                    args.warmup, args.runs))
            if reference is not None:
                out = np.asarray(backbone.predict_on_batch(inputs)["sequence_output"],
                                 "float32")
                entry["max_abs_diff"] = float(np.max(np.abs(out - reference)[real]))
        except Exception as e:  # noqa: BLE001 - a failing path is reported, not fatal
            entry["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:500]
            traceback.print_exc()
        paths.append(entry)
    ok = [p for p in paths if "error" not in p]
    if not ok:
        raise RuntimeError(f"every zoo path failed on {backend}: {paths}")
    best = min(ok, key=lambda p: p["ms"])
    result = {k: v for k, v in best.items() if k != "times_ms"}
    result["times_ms"] = best["times_ms"]
    result["paths"] = paths
    result["shared_weights"] = shared
    result["dtype"] = "int8" if dtype == "int8" else str(backbone.weights[0].dtype)
    if onnx_peer is not None:
        result["onnxruntime"] = onnx_peer
    if backend == "torch":
        import torch

        result["torch_threads"] = torch.get_num_threads()
    return result


def _onnxruntime_peer(backbone: Any, inputs: dict[str, np.ndarray], real: np.ndarray,
                      reference: np.ndarray | None, args: argparse.Namespace
                      ) -> dict[str, Any]:
    """onnxruntime on zoo's ONNX export of `backbone` (float32), as exported
    and after its dynamic int8 quantization (`onnx_int8`): {"float32": timing,
    "int8": timing}, or {"error": ...}."""
    try:
        import onnxruntime

        from zoo.benchmarks import onnx_int8

        out: dict[str, Any] = {}
        with tempfile.TemporaryDirectory(prefix="bench_bert_onnx_") as tmp:
            exported = onnx_int8.export_functional(backbone, Path(tmp) / "export", "backbone")
            files = {"float32": exported, "int8": onnx_int8.quantize_file(
                exported, Path(tmp) / "backbone_int8.onnx")}
            for dtype, file in files.items():
                session = onnx_int8.session(file)
                feed = {i.name: inputs[i.name] for i in session.get_inputs()}

                def run() -> np.ndarray:
                    return session.run(["sequence_output"], feed)[0]  # noqa: B023

                entry = time_calls(run, args.warmup, args.runs)
                if reference is not None:
                    entry["max_abs_diff"] = float(np.max(np.abs(run() - reference)[real]))
                entry["path"] = (f"onnxruntime {onnxruntime.__version__} CPU, zoo's ONNX export"
                                 + ", quantize_dynamic(QInt8)" * (dtype == "int8"))
                entry["model_bytes"] = file.stat().st_size
                out[dtype] = entry
        return out
    except Exception as e:  # noqa: BLE001 - reported beside zoo's result, not fatal
        traceback.print_exc()
        return {"error": f"{type(e).__name__}: {e}".splitlines()[0][:500]}


FAMILY = skeleton.Family("bench_bert", "zoo.benchmarks.bench_bert", PEER,
                       worker_transformers, worker_zoo)


# --------------------------------------------------------------------------- #
# Parent: launch workers, collect, report.
# --------------------------------------------------------------------------- #


def evaluate_targets(zoo: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ratios = {b: r["ratio"] for b, r in zoo.items() if "ratio" in r}
    if not ratios:
        return {"met": False, "reason": "no zoo result"}
    best = max(ratios, key=ratios.__getitem__)
    worst = min(ratios, key=ratios.__getitem__)
    best_ok = ratios[best] >= TARGET_BEST_SPEEDUP
    worst_ok = ratios[worst] >= 1 / TARGET_MAX_SLOWDOWN
    return {
        "best_backend": best, "best_ratio": ratios[best],
        "best_backend_target": f"ratio >= {TARGET_BEST_SPEEDUP}", "best_backend_met": best_ok,
        "worst_backend": worst, "worst_ratio": ratios[worst],
        "all_backends_target": f"ratio >= 1/{TARGET_MAX_SLOWDOWN} "
                               f"(= {1 / TARGET_MAX_SLOWDOWN:.3f})",
        "all_backends_met": worst_ok,
        "met": best_ok and worst_ok and len(ratios) == len(zoo),
    }


def markdown_table(results: dict[str, Any]) -> str:
    table = skeleton.Table(
        ["library", "backend", "dtype", "path", "ms / batch (median)", "min ms",
         "compile / first call (s)", "max abs diff vs HF", "other procs' CPU (cores)",
         "HF ms / zoo ms"], "llllrrrrrr")
    for dtype, section in precision.sections(results):
        peer = section[PEER]
        if "error" in peer:
            table.error(["transformers", "torch", dtype], peer["error"])
        else:
            table.add("transformers", "torch", dtype, peer["path"], f"{peer['ms']:.1f}",
                      f"{peer['min_ms']:.1f}",
                      f"{peer['compile_s']:.2f} / {peer['first_call_s']:.2f}", "(reference)",
                      _fmt(peer.get("other_cpu_cores"), ".2f"), "1.00")
        for ort_dtype, ort in (section.get("onnxruntime") or {}).items():
            if ort_dtype == "error":
                table.error(["onnxruntime", "cpu", dtype], ort)
                continue
            ratio = peer["ms"] / ort["ms"] if "ms" in peer else None
            table.add("onnxruntime", "cpu", ort_dtype, ort["path"], f"{ort['ms']:.1f}",
                      f"{ort['min_ms']:.1f}",
                      f"{ort['compile_s']:.2f} / {ort['first_call_s']:.2f}",
                      _fmt(ort.get("max_abs_diff"), ".1e"),
                      _fmt(ort.get("other_cpu_cores"), ".2f"), _fmt(ratio, ".2f"))
        for backend, res in section["zoo"].items():
            if "error" in res and "paths" not in res:
                table.error(["zoo", backend, dtype], res["error"])
                continue
            for p in res["paths"]:
                best = p["path"] == res["path"]
                if "error" in p:
                    table.add("zoo", backend, dtype, f"{p['path']}: error: {p['error'][:80]}")
                    continue
                ratio = peer["ms"] / p["ms"] if "ms" in peer else None
                table.add("zoo", backend, dtype,
                          f"**{p['path']}** (best)" if best else p["path"],
                          f"**{p['ms']:.1f}**" if best else f"{p['ms']:.1f}",
                          f"{p['min_ms']:.1f}", f"{p['compile_s']:.2f} / {p['first_call_s']:.2f}",
                          _fmt(p.get("max_abs_diff"), ".1e"),
                          _fmt(p.get("other_cpu_cores"), ".2f"), _fmt(ratio, ".2f"))
    return table.render()


def run_dtype(args: argparse.Namespace, backends: list[str], dtype: str) -> dict[str, Any]:
    """The peer's worker, then zoo's per backend, all in `dtype`: a results section."""
    peer, zoo = FAMILY.run(args, backends, dtype, ["--batch", str(args.batch), "--seq",
                                                   str(args.seq), "--padding", args.padding],
                           share=not args.independent_weights)
    onnx_peer = (zoo.get("tensorflow") or {}).pop("onnxruntime", None)
    for res in zoo.values():
        if "ms" in res and "ms" in peer:
            res["ratio"] = peer["ms"] / res["ms"]
    targets = {"targets": evaluate_targets(zoo)} if dtype == "float32" else {}  # float32's
    return {PEER: peer, "zoo": zoo, **targets,
            **({"onnxruntime": onnx_peer} if onnx_peer is not None else {})}


def run_parent(args: argparse.Namespace) -> int:
    backends = common.parse_list(args.backends, BACKENDS)
    size = model_size(args.smoke)
    results: dict[str, Any] = {
        **skeleton.results_header("bert_forward", "zoo.benchmarks.bench_bert"),
        "workload": {
            "model": dataclasses.asdict(size),
            "model_name": "tiny (smoke)" if args.smoke else "BERT-base",
            "batch": args.batch, "seq": args.seq, "runs": args.runs, "warmup": args.warmup,
            "smoke": args.smoke, "dtypes": args.dtypes,
            "statistic": "median ms over `runs` timed calls after the first call and "
                         "`warmup` more untimed calls",
            "padding": ("row b keeps seq - b * seq // (2 * batch) real tokens"
                        if args.padding == "ragged" else "none: every row full"),
            "row_lengths": row_lengths(args.batch, args.seq, args.padding),
            "shared_weights": not args.independent_weights,
            "weights_note": "random init; transformers' weights ported into zoo"
                            if not args.independent_weights
                            else "random init, independent per library",
        },
        "ratio_definition": "transformers_ms / zoo_ms (> 1: zoo faster)",
    }
    FAMILY.measure(args, backends, results, run_dtype)
    model = results["workload"]["model_name"]
    out = skeleton.write_results(results, args.out, markdown_table(results),
                                 f"BERT forward, {model}, batch {args.batch} x {args.seq} "
                                 f"tokens, median of {args.runs} runs after {args.warmup} warm-up")
    t = results.get("targets", {})
    if "best_backend" in t:
        print(f"\nbest: zoo/{t['best_backend']} {t['best_ratio']:.2f}x "
              f"(target >= {TARGET_BEST_SPEEDUP}: {'met' if t['best_backend_met'] else 'MISSED'});"
              f" worst: zoo/{t['worst_backend']} {t['worst_ratio']:.2f}x "
              f"(target >= {1 / TARGET_MAX_SLOWDOWN:.2f}: "
              f"{'met' if t['all_backends_met'] else 'MISSED'})")
    return FAMILY.finish(out, results)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--batch", type=int, default=8)
        parser.add_argument("--seq", type=int, default=128)
        parser.add_argument("--padding", choices=("ragged", "none"), default="ragged",
                            help="ragged right-padding (default; 22%% of the 8x128 batch is "
                                 "padding) or none (every row full length)")
        parser.add_argument("--independent-weights", action="store_true",
                            help="do not port transformers' weights into zoo (skips the "
                                 "output check)")

    parser, args = FAMILY.parse_args(
        argv, __doc__, runs=10, warmup=2, out=DEFAULT_OUT, timeout=1800.0, retries=3,
        smoke_workload=SMOKE_WORKLOAD, options=options, runs_help="timed calls per path",
        smoke_help="tiny model, batch 2 x 16 tokens, 2 runs: same code, seconds",
        dtypes=DTYPES)
    if args.batch < 1 or args.seq < 1:
        parser.error("--batch and --seq must be >= 1")
    return args


def summary(results: dict[str, Any]) -> list[dict[str, Any]]:
    """`zoo benchmark`'s rows: one per zoo backend and dtype (against
    transformers in that dtype), with the forward pass's useful FLOPs (real
    tokens only, each attending to its own row's length; runs recorded before
    `row_lengths` existed count every position). bfloat16 outputs are not
    gated (`match` None): two bfloat16 computations round differently."""
    w = results["workload"]
    m = w["model"]
    lengths = w.get("row_lengths") or [w["seq"]] * w["batch"]
    flops = sum(common.transformer_flops(n, m["num_layers"], m["hidden_dim"],
                                         m["intermediate_dim"], n) for n in lengths)
    workload = f"forward {w['batch']}x{w['seq']}"
    rows = [common.row("bert", workload, backend, res, PEER, section.get(PEER), dtype=dtype,
                       flops=flops, match=(res["max_abs_diff"] < 1e-4)
                       if "max_abs_diff" in res and dtype == "float32" else None)
            for dtype, section, backend, res in precision.zoo_results(results)]
    ort = (results.get("int8") or {}).get("onnxruntime") or {}
    if "int8" in ort:  # zoo's int8 against onnxruntime's too
        rows += [common.row("bert", workload, backend, res, "onnxruntime", ort["int8"],
                            dtype="int8", flops=flops,
                            note="onnxruntime quantize_dynamic(QInt8) of zoo's ONNX export")
                 for backend, res in results["int8"]["zoo"].items()]
    return rows


main = FAMILY.entry(parse_args, run_parent)


if __name__ == "__main__":
    sys.exit(main())
