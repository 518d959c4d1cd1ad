"""OPT-125m greedy generation benchmark: zoo on jax/tensorflow/torch vs transformers.

What it measures: tokens per second of greedy generation with an OPT-125m-size
decoder (12 layers, 12 heads, hidden 768, MLP 3072, vocabulary 50272, 2048
positions, float32, random weights): a 32-token prompt, 128 new tokens, at
batch 1 and batch 8. ``tokens/s = batch * new_tokens / seconds`` per
``generate`` call, from the median of ``--runs`` timed calls after a
separately timed first call (``first_call_s``: tracing / compilation plus one
generation; ``compile_s = first_call_s - median``) and ``--warmup`` untimed
calls with the same shapes.

* zoo: ``OPTCausalLM.generate(inputs, max_new_tokens=128, stop_token_ids=())``
  on each Keras backend, each in its own subprocess (``zoo/core/compiled_loop.py``).
  jax and tensorflow compile the whole generation, prefill plus a while loop
  of decode steps, into one XLA program (``jax.jit``,
  ``tf.function(jit_compile=True)``); torch runs a prefill step and then one
  ``torch.jit.trace``-d decode step per token under ``torch.inference_mode``.
  The key/value cache is one heads-first (key, value) pair per layer, updated
  in place.
* transformers (the peer): ``OPTForCausalLM.generate(input_ids, attention_mask,
  max_new_tokens=128, do_sample=False, eos_token_id=None)`` on torch, eager,
  ``eval()``, under ``torch.inference_mode()``, default attention and cache.

Fairness and correctness: the transformers model is built first (random init,
seed 0) and saved with ``save_pretrained``; every zoo worker loads that
directory with ``OPTCausalLM.from_preset`` (zoo's own converter), so all runs
use the same weights and the same prompts, and every zoo run's generated ids
are compared with transformers' (``ids_match``; a random-weight model has no
end token, so all 128 tokens are generated). Prompts: random token ids; at
batch > 1 the rows are left-padded (row ``b`` keeps ``prompt - b * prompt //
(2 * batch)`` real tokens), so both libraries handle a padding mask. Every
library uses all cores (torch: ``torch.set_num_threads(os.cpu_count())``).

The ratio is ``zoo_tokens_per_s / transformers_tokens_per_s`` per backend and
batch size (> 1: zoo is faster). Targets (float32, every batch size): the best
backend >= 1.5x, the torch backend >= 1.0x.

bfloat16 (``--dtypes float32,bfloat16``; default float32): a second set of
workers in the same invocation loads the same saved model in bfloat16 on both
sides, ``OPTForCausalLM.from_pretrained(dir, dtype=torch.bfloat16)`` and
``OPTCausalLM.from_preset(dir, dtype="bfloat16")``; the ratio is then against
transformers' bfloat16 tokens/s. Greedy ids are compared too
(informational: bfloat16 rounding can flip a near-tie). float32 results stay
at the top of the JSON file, bfloat16 ones go under ``"bfloat16"``.

int8 (``--dtypes float32,int8``): zoo loads float32 and runs
``quantize("int8")`` (Keras' int8 weights, activations in float32);
transformers' model goes through ``torch.ao.quantization.quantize_dynamic``
(int8 weights and activations in every Linear, LM head included), PyTorch's
own CPU int8 path; results under ``"int8"``.
Busy machines are handled as in ``bench_bert.py`` (``common.py``).

Reproduce (from the repository root)::

    .venv/bin/python -m zoo.benchmarks.bench_opt       # --dtypes float32,bfloat16 for both
    .venv/bin/python -m zoo.benchmarks.bench_opt --dtypes float32,int8
    .venv/bin/python -m zoo.benchmarks.bench_opt --backends jax --batches 1 --runs 5
    .venv/bin/python -m zoo.benchmarks.bench_opt --smoke --out /tmp/r.json  # tiny, seconds

``--smoke`` swaps in a tiny model (2 layers, 2 heads, hidden 64, MLP 256,
vocabulary 1000, 64 positions) with batches 1 and 2, an 8-token prompt, 8 new
tokens and 2 timed runs, no idle wait and no reruns. The script re-invokes
itself as ``bench_opt.py --worker NAME ...``; a worker prints one
``BENCH_RESULT {json}`` line on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from zoo.benchmarks import common  # workers, timing, idle-wait, reruns
from zoo.benchmarks import precision  # --dtypes
from zoo.benchmarks import skeleton
from zoo.benchmarks.skeleton import TransformerSize as ModelSize
from zoo.benchmarks.common import fmt

BACKENDS = ("jax", "tensorflow", "torch")
PEER = "transformers"
DEFAULT_OUT = common.results_dir() / "opt.json"
HF_DIR = "hf_opt"  # subdirectory of the share dir holding transformers' save_pretrained
PAD_ID = 1  # OPT's padding id (only ever at masked positions)
# Targets (full-size run, every batch size): the best zoo backend >= 1.5x
# transformers' tokens/s, and zoo's torch backend >= 1.0x.
TARGET_BEST_SPEEDUP = 1.5
TARGET_TORCH_SPEEDUP = 1.0


OPT_125M = ModelSize(50272, 12, 12, 768, 3072, 2048)
SMOKE_WORKLOAD = {"batches": "1,2", "prompt": 8, "new_tokens": 8, "runs": 2}


# --------------------------------------------------------------------------- #
# Shared helpers (parent and workers).
# --------------------------------------------------------------------------- #


def model_size(smoke: bool) -> ModelSize:
    return skeleton.TINY_TRANSFORMER if smoke else OPT_125M


def parse_batches(text: str) -> list[int]:
    return [int(b) for b in text.split(",") if b.strip()]


def make_prompts(size: ModelSize, batch: int, prompt: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic left-padded int32 prompts in zoo's format (padding_mask: 1 = real).

    Row `b` keeps `prompt - b * prompt // (2 * batch)` real tokens (all of them at
    batch 1); ids avoid OPT's special tokens 0-2.
    """
    rng = np.random.default_rng(seed + batch)
    token_ids = rng.integers(3, size.vocabulary_size, size=(batch, prompt), dtype=np.int32)
    lengths = np.array([prompt - b * prompt // (2 * batch) for b in range(batch)])
    padding_mask = (np.arange(prompt)[None, :] >= (prompt - lengths)[:, None]).astype(np.int32)
    token_ids = np.where(padding_mask == 1, token_ids, PAD_ID).astype(np.int32)
    return {"token_ids": token_ids, "padding_mask": padding_mask}


def tokens_per_s(batch: int, new_tokens: int, ms: float) -> float:
    return batch * new_tokens / (ms / 1e3)


# --------------------------------------------------------------------------- #
# Workers (each in its own process).
# --------------------------------------------------------------------------- #


def worker_transformers(args: argparse.Namespace) -> dict[str, Any]:
    """transformers OPTForCausalLM.generate, torch eager; saves the model + reference ids."""
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    skeleton.torch_peer_setup()
    size = model_size(args.smoke)
    config = OPTConfig(**size.transformers_config("ffn_dim"), word_embed_proj_dim=size.hidden_dim,
                       dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    model = OPTForCausalLM(config).eval()
    dtype = precision.worker_dtype(args)
    with tempfile.TemporaryDirectory(prefix="bench_opt_hf_") as tmp:
        hf_dir = Path(args.share_dir) / HF_DIR if args.share_dir else Path(tmp)
        model.save_pretrained(hf_dir)
        if dtype == "bfloat16":  # as users load it: from_pretrained(..., dtype=torch.bfloat16)
            model = OPTForCausalLM.from_pretrained(hf_dir, dtype=torch.bfloat16).eval()
    if dtype == "int8":  # PyTorch's dynamic int8 (weights and activations) of every Linear
        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (deprecated in favour of torchao, still shipped)
            model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    model.generation_config.eos_token_id = None  # always generate all new tokens

    batches: dict[str, Any] = {}
    for batch in parse_batches(args.batches):
        arrays = make_prompts(size, batch, args.prompt)
        input_ids = torch.from_numpy(arrays["token_ids"].astype(np.int64))
        attention_mask = torch.from_numpy(arrays["padding_mask"].astype(np.int64))

        def generate() -> Any:
            with torch.inference_mode():
                return model.generate(  # noqa: B023 - called within this iteration
                    input_ids=input_ids, attention_mask=attention_mask,  # noqa: B023
                    max_new_tokens=args.new_tokens, do_sample=False,
                    eos_token_id=None, pad_token_id=PAD_ID)

        entry = common.time_calls(generate, args.warmup, args.runs)
        new_ids = generate()[:, args.prompt:].numpy().astype(np.int32)
        if new_ids.shape != (batch, args.new_tokens):
            raise RuntimeError(f"transformers generated {new_ids.shape}, expected "
                               f"{(batch, args.new_tokens)}")
        if args.share_dir:
            np.save(Path(args.share_dir) / f"reference_b{batch}.npy", new_ids)
        entry["tokens_per_s"] = tokens_per_s(batch, args.new_tokens, entry["ms"])
        batches[str(batch)] = entry
    attn = getattr(model.config, "_attn_implementation", None) or "default"
    return {
        "path": f"OPTForCausalLM.generate greedy, eager, eval, inference_mode, "
                f"attn_implementation={attn}, default (dynamic) KV cache"
                + {"bfloat16": ", from_pretrained(dtype=torch.bfloat16)",
                   "int8": ", torch.ao.quantization.quantize_dynamic(Linear, qint8)"
                   }.get(dtype, ""),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "batches": batches,
        "torch_threads": torch.get_num_threads(),
    }


ZOO_PATHS = {
    "jax": "generate: prefill + decode while loop in one jax.jit (XLA)",
    "tensorflow": "generate: prefill + decode while loop in one "
                  "tf.function(jit_compile=True) (XLA)",
    "torch": "generate: prefill + per-token decode step, torch.jit.trace, inference_mode",
}


def worker_zoo(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    """zoo OPTCausalLM.generate on `backend`, on transformers' weights when shared."""
    common.start_zoo_worker(backend)
    from zoo.models import OPTBackbone, OPTCausalLM
    size = model_size(args.smoke)
    dtype = precision.worker_dtype(args)
    start = time.perf_counter()
    if args.share_dir:
        # The conversion of the peer's (temporary) folder goes into a hub in the
        # shared folder, which the run deletes, not into the user's $ZOO_HOME.
        os.environ["ZOO_HOME"] = str(Path(args.share_dir) / "zoo_home")
        lm = OPTCausalLM.from_preset(str(Path(args.share_dir) / HF_DIR),
                                     dtype=precision.load_dtype(dtype))
    else:
        lm = OPTCausalLM(OPTBackbone(**dataclasses.asdict(size), dropout=0.0,
                                     dtype=precision.load_dtype(dtype)))
    if dtype == "int8":
        lm.quantize("int8")
    load_s = time.perf_counter() - start

    batches: dict[str, Any] = {}
    for batch in parse_batches(args.batches):
        inputs = make_prompts(size, batch, args.prompt)

        def generate() -> np.ndarray:
            return lm.generate(inputs, max_new_tokens=args.new_tokens,  # noqa: B023
                               stop_token_ids=())

        entry = common.time_calls(generate, args.warmup, args.runs)
        entry["tokens_per_s"] = tokens_per_s(batch, args.new_tokens, entry["ms"])
        reference_file = Path(args.share_dir or "/nonexistent") / f"reference_b{batch}.npy"
        if reference_file.is_file():
            ids = np.asarray(generate())
            reference = np.load(reference_file)
            same = ids == reference
            entry["ids_match"] = bool(same.all())
            entry["ids_match_fraction"] = float(same.mean())
            if not same.all():
                row, step = (int(i) for i in np.argwhere(~same)[0])
                entry["first_mismatch"] = {"row": row, "step": step}
        batches[str(batch)] = entry
    result: dict[str, Any] = {
        "path": ZOO_PATHS[backend],
        "batches": batches,
        "load_s": load_s,
        "shared_weights": bool(args.share_dir),
        "dtype": str(lm.backbone.weights[0].dtype),
    }
    if backend == "torch":
        import torch

        result["torch_threads"] = torch.get_num_threads()
    return result


FAMILY = skeleton.Family("bench_opt", "zoo.benchmarks.bench_opt", PEER,
                       worker_transformers, worker_zoo)


# --------------------------------------------------------------------------- #
# Parent: launch workers, collect, report.
# --------------------------------------------------------------------------- #


def add_ratios(peer: dict[str, Any], zoo: dict[str, dict[str, Any]]) -> None:
    """`ratio` = zoo tokens/s / transformers tokens/s, per backend and batch size."""
    for res in zoo.values():
        for batch, entry in res.get("batches", {}).items():
            peer_entry = peer.get("batches", {}).get(batch, {})
            if "tokens_per_s" in entry and "tokens_per_s" in peer_entry:
                entry["ratio"] = entry["tokens_per_s"] / peer_entry["tokens_per_s"]


def evaluate_targets(zoo: dict[str, dict[str, Any]], batches: list[int]) -> dict[str, Any]:
    """Per batch size: the best backend's ratio vs 1.5, and torch's vs 1.0."""
    per_batch: dict[str, Any] = {}
    for batch in map(str, batches):
        ratios = {b: r["batches"][batch]["ratio"] for b, r in zoo.items()
                  if "ratio" in r.get("batches", {}).get(batch, {})}
        if not ratios:
            per_batch[batch] = {"met": False, "reason": "no zoo result"}
            continue
        best = max(ratios, key=ratios.__getitem__)
        entry: dict[str, Any] = {
            "best_backend": best, "best_ratio": ratios[best],
            "best_backend_target": f"ratio >= {TARGET_BEST_SPEEDUP}",
            "best_backend_met": ratios[best] >= TARGET_BEST_SPEEDUP,
        }
        if "torch" in ratios:
            entry["torch_ratio"] = ratios["torch"]
            entry["torch_target"] = f"ratio >= {TARGET_TORCH_SPEEDUP}"
            entry["torch_met"] = ratios["torch"] >= TARGET_TORCH_SPEEDUP
        entry["met"] = (entry["best_backend_met"] and entry.get("torch_met", False)
                        and len(ratios) == len(zoo))
        per_batch[batch] = entry
    return {"per_batch": per_batch,
            "met": bool(per_batch) and all(e["met"] for e in per_batch.values())}


def _match(entry: dict[str, Any]) -> str:
    if "ids_match" not in entry:
        return "-"
    if entry["ids_match"]:
        return "yes"
    where = entry.get("first_mismatch", {})
    return (f"**no** ({entry['ids_match_fraction']:.0%} equal; first at row "
            f"{where.get('row')}, step {where.get('step')})")


def markdown_table(results: dict[str, Any]) -> str:
    table = skeleton.Table(
        ["batch", "library", "backend", "dtype", "path", "tokens/s (median)",
         "ms / generate (median)", "compile / first call (s)", "greedy ids = HF",
         "other procs' CPU (cores)", "zoo / HF tokens/s"], "rllllrrrlrr")
    for dtype, section in precision.sections(results):
        peer = section[PEER]
        for batch in map(str, results["workload"]["batches"]):
            p = peer.get("batches", {}).get(batch)
            if p is None:
                table.error([batch, "transformers", "torch", dtype], peer.get("error", "missing"))
            else:
                table.add(batch, "transformers", "torch", dtype, peer["path"],
                          f"{p['tokens_per_s']:.1f}", f"{p['ms']:.1f}",
                          f"{p['compile_s']:.2f} / {p['first_call_s']:.2f}", "(reference)",
                          fmt(p.get("other_cpu_cores"), ".2f"), "1.00")
            for backend, res in section["zoo"].items():
                e = res.get("batches", {}).get(batch)
                if e is None:
                    table.error([batch, "zoo", backend, dtype], res.get("error", "missing"))
                    continue
                table.add(batch, "zoo", backend, dtype, res["path"],
                          f"**{e['tokens_per_s']:.1f}**", f"{e['ms']:.1f}",
                          f"{e['compile_s']:.2f} / {e['first_call_s']:.2f}", _match(e),
                          fmt(e.get("other_cpu_cores"), ".2f"),
                          f"**{fmt(e.get('ratio'), '.2f')}**")
    return table.render()


def run_dtype(args: argparse.Namespace, backends: list[str], dtype: str) -> dict[str, Any]:
    """The peer's worker, then zoo's per backend, all in `dtype`: a results section."""
    peer, zoo = FAMILY.run(args, backends, dtype, ["--batches", args.batches, "--prompt",
                                                   str(args.prompt), "--new-tokens",
                                                   str(args.new_tokens)])
    add_ratios(peer, zoo)
    targets = ({"targets": evaluate_targets(zoo, parse_batches(args.batches))}
               if dtype == "float32" else {})  # the targets are float32's
    return {PEER: peer, "zoo": zoo, **targets}


def run_parent(args: argparse.Namespace) -> int:
    backends = common.parse_list(args.backends, BACKENDS)
    batches = parse_batches(args.batches)
    size = model_size(args.smoke)
    results: dict[str, Any] = {
        **skeleton.results_header("opt_generate", "zoo.benchmarks.bench_opt"),
        "workload": {
            "model": dataclasses.asdict(size),
            "model_name": "tiny (smoke)" if args.smoke else "OPT-125m size",
            "batches": batches, "prompt": args.prompt, "new_tokens": args.new_tokens,
            "runs": args.runs, "warmup": args.warmup, "smoke": args.smoke,
            "dtypes": args.dtypes, "decoding": "greedy, no stop token",
            "statistic": "median seconds per generate call over `runs` timed calls after "
                         "the first call and `warmup` more untimed calls; "
                         "tokens/s = batch * new_tokens / seconds",
            "padding": "left; row b keeps prompt - b * prompt // (2 * batch) real tokens",
            "weights_note": "random init (seed 0) in transformers, save_pretrained, "
                            "loaded by zoo's converter (and by transformers in bfloat16)",
        },
        "ratio_definition": "zoo_tokens_per_s / transformers_tokens_per_s (> 1: zoo faster)",
    }
    FAMILY.measure(args, backends, results, run_dtype)
    w = results["workload"]
    out = skeleton.write_results(
        results, args.out, markdown_table(results),
        f"OPT greedy generation, {w['model_name']}, {args.prompt}-token prompt, "
        f"{args.new_tokens} new tokens, median of {args.runs} runs after {args.warmup} warm-up")
    met = {True: "met", False: "MISSED"}
    for batch, t in results.get("targets", {"per_batch": {}})["per_batch"].items():
        if "best_backend" in t:  # float32's targets
            print(f"\nbatch {batch}: best zoo/{t['best_backend']} {t['best_ratio']:.2f}x (target"
                  f" >= {TARGET_BEST_SPEEDUP}: {met[t['best_backend_met']]})" + (
                      f"; zoo/torch {t['torch_ratio']:.2f}x (target >= {TARGET_TORCH_SPEEDUP}:"
                      f" {met[t['torch_met']]})" if "torch_ratio" in t else ""), end="")
    print()
    mismatched = [f"{b}@batch{n}" for b, r in results["zoo"].items()  # float32's
                  for n, e in r.get("batches", {}).items() if e.get("ids_match") is False]
    if mismatched:
        print(f"greedy ids differ from transformers: {', '.join(mismatched)}", file=sys.stderr)
    return FAMILY.finish(out, results)


#: `--dtypes` choices (int8: `quantize("int8")` against torch.ao's dynamic int8)
DTYPES = precision.DTYPES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--batches", default="1,8",
                            help="comma-separated batch sizes (default: %(default)s)")
        parser.add_argument("--prompt", type=int, default=32, help="prompt tokens per row")
        parser.add_argument("--new-tokens", type=int, default=128,
                            help="tokens generated per row")

    parser, args = FAMILY.parse_args(
        argv, __doc__, runs=3, warmup=1, out=DEFAULT_OUT, timeout=3600.0,
        smoke_workload=SMOKE_WORKLOAD, options=options,
        runs_help="timed generate calls per batch",
        smoke_help="tiny model, batches 1,2, 8-token prompt, 8 new tokens, 2 runs",
        dtypes=DTYPES)
    try:
        batches = parse_batches(args.batches)
    except ValueError:
        parser.error(f"--batches must be comma-separated integers, got {args.batches!r}")
    if args.prompt < 1 or args.new_tokens < 1 or not batches or min(batches) < 1:
        parser.error("--prompt, --new-tokens and every batch must be >= 1")
    size = model_size(args.smoke)
    if args.prompt + args.new_tokens > size.max_sequence_length:
        parser.error(f"--prompt + --new-tokens exceeds the model's "
                     f"{size.max_sequence_length} positions")
    return args


def summary(results: dict[str, Any]) -> list[dict[str, Any]]:
    """`zoo benchmark`'s rows: one per zoo backend, batch size and dtype
    (against transformers in that dtype). FLOPs: the prompt through every
    layer, then one token per row per new position (against the growing
    context), and the LM head for every generated token. bfloat16 ids are
    not gated (`match` None)."""
    w = results["workload"]
    m = w["model"]
    prompt, new = w["prompt"], w["new_tokens"]
    rows = []
    for batch in w["batches"]:
        args = (m["num_layers"], m["hidden_dim"], m["intermediate_dim"])
        flops = common.transformer_flops(batch * prompt, *args, context=(prompt + 1) / 2)
        flops += common.transformer_flops(batch * (new - 1), *args, context=prompt + new / 2)
        flops += 2.0 * batch * new * m["hidden_dim"] * m["vocabulary_size"]
        for dtype, section in precision.sections(results):
            peer = (section.get(PEER) or {}).get("batches", {}).get(str(batch))
            for backend, res in section["zoo"].items():
                entry = res.get("batches", {}).get(str(batch)) or {"error": res.get("error")}
                rows.append(common.row(
                    "opt", f"generate b{batch}, {prompt}+{new} tokens", backend, entry, PEER,
                    peer, dtype=dtype, flops=flops,
                    match=entry.get("ids_match") if dtype == "float32" else None))
    return rows


main = FAMILY.entry(parse_args, run_parent)


if __name__ == "__main__":
    sys.exit(main())
