"""Shared machinery of the benchmark scripts (``bench_bert.py``, ``bench_opt.py``).

Every benchmark runs each library / Keras backend in its own worker process
(the Keras backend is fixed when keras is imported), one after another. A
worker prints one ``BENCH_RESULT {json}`` line on stdout; the parent collects
them, computes ratios and writes a JSON file plus a markdown table.

Because the machine is shared, the parent waits for the CPUs to go idle before
each worker (:func:`wait_for_idle`), every timed loop records how many cores
*other* processes used meanwhile (:func:`time_calls`: ``other_cpu_cores``,
``steal_cores``), and a worker whose timed loops overlapped more than a given
amount of other work is rerun, keeping the cleanest attempt (:func:`launch`).

Nothing here knows about a particular model. Scripts import it as
``from zoo.benchmarks import common``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

RESULT_PREFIX = "BENCH_RESULT "
DEFAULT_DISTRIBUTIONS = ("zoo", "keras", "jax", "jaxlib", "tensorflow", "torch",
                         "transformers", "numpy")


# --------------------------------------------------------------------------- #
# Measuring (workers).
# --------------------------------------------------------------------------- #


def checkout_dir() -> Path | None:
    """The repository's ``benchmarks`` folder (results and README) when run
    from the root of a zoo checkout, else None."""
    repo = Path.cwd() / "benchmarks"
    return repo if (repo / "README.md").is_file() else None


def results_dir() -> Path:
    """Where results go unless ``--out`` says otherwise: the checkout's
    ``benchmarks/results``, else ``./zoo-benchmark-results``."""
    repo = checkout_dir()
    return repo / "results" if repo else Path.cwd() / "zoo-benchmark-results"


def self_command(spec: Any, file: str) -> list[str]:
    """How a script starts its own workers: ``python -m zoo.benchmarks.<name>``
    (``spec`` is the module's ``__spec__``; None when it was run as a file path)."""
    return [sys.executable, "-m", spec.name] if spec is not None else [sys.executable, file]


def cpu_seconds() -> tuple[float, float] | None:
    """Machine-wide (busy, steal) CPU-seconds since boot, from /proc/stat (Linux), else None.

    busy: user + nice + system + irq + softirq of every process; steal: time the
    hypervisor gave this VM's vCPUs to someone else.
    """
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    steal = int(fields[7]) if len(fields) > 7 else 0
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def cpu_busy_seconds() -> float | None:
    snapshot = cpu_seconds()
    return None if snapshot is None else snapshot[0]


def time_calls(fn: Callable[[], Any], warmup: int, runs: int) -> dict[str, Any]:
    """Time the first call, run `warmup` more untimed calls, then `runs` timed ones.

    Also reports `other_cpu_cores`: the average number of cores that *other*
    processes kept busy during the timed calls (machine-wide CPU time minus this
    process's), and `steal_cores` (vCPU time the hypervisor gave to other VMs), so
    a timing taken on a busy machine can be spotted.
    """
    start = time.perf_counter()
    fn()
    first_call_s = time.perf_counter() - start
    for _ in range(warmup):
        fn()
    times_ms = []
    cpu0, own0, wall0 = cpu_seconds(), time.process_time(), time.perf_counter()
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times_ms.append((time.perf_counter() - start) * 1e3)
    cpu1, own1, wall1 = cpu_seconds(), time.process_time(), time.perf_counter()
    other = steal = None
    if cpu0 is not None and cpu1 is not None:
        other = max((cpu1[0] - cpu0[0]) - (own1 - own0), 0.0) / (wall1 - wall0)
        steal = (cpu1[1] - cpu0[1]) / (wall1 - wall0)
    median = statistics.median(times_ms)
    return {
        "ms": median,
        "min_ms": min(times_ms),
        "mean_ms": statistics.fmean(times_ms),
        "stdev_ms": statistics.stdev(times_ms) if len(times_ms) > 1 else 0.0,
        "times_ms": times_ms,
        "first_call_s": first_call_s,
        "compile_s": max(first_call_s - median / 1e3, 0.0),
        "other_cpu_cores": other,
        "steal_cores": steal,
    }


def loadavg() -> float | None:
    """The 1-minute load average, or None where the OS has none."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def emit_result(result: dict[str, Any], load_start: float | None) -> None:
    """Print a worker's result as the one ``BENCH_RESULT {json}`` line the parent reads."""
    # 1-minute load average before/after: other processes on the machine skew timings.
    result["loadavg_1min"] = [load_start, loadavg()]
    sys.stdout.flush()
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- #
# Describing the run (parent).
# --------------------------------------------------------------------------- #


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(dists: Iterable[str] = DEFAULT_DISTRIBUTIONS) -> dict[str, str | None]:
    """Installed versions; tensorflow falls back to the tensorflow-cpu distribution."""
    found = {d: version(d) for d in dists}
    if "tensorflow" in found and found["tensorflow"] is None:
        found["tensorflow"] = version("tensorflow-cpu")
    return found


def machine_info() -> dict[str, Any]:
    cpu_model = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from zoo.benchmarks.precision import cpu_16bit_features, features_text

    features = cpu_16bit_features()  # None: unknown (no /proc/cpuinfo)
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "cpu_16bit_features": features,
        "cpu_16bit_text": features_text(features),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpu": None,
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def measure_peak_flops(smoke: bool = False) -> dict[str, float | None]:
    """FLOP/s of large square matrix products on this machine, float32 and
    bfloat16 (torch, every core): the ceiling `zoo benchmark` measures MFU
    against. Each product is checked to come out in its dtype (torch.mm of
    two bfloat16 matrices runs oneDNN's bfloat16 kernels, AMX where the CPU
    has it), so the bfloat16 peak is a bfloat16 peak."""
    try:
        import torch
    except ImportError:
        return {"float32": None, "bfloat16": None}
    torch.set_num_threads(os.cpu_count() or 1)
    n = 1024 if smoke else 2048
    peaks: dict[str, float | None] = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        with torch.inference_mode():
            if torch.mm(a, b).dtype != dtype:
                raise RuntimeError(f"torch.mm of {dtype} matrices did not run in {dtype}")
            best = float("inf")
            for _ in range(3 if smoke else 5):
                start = time.perf_counter()
                torch.mm(a, b)
                best = min(best, time.perf_counter() - start)
        peaks[name] = 2.0 * n ** 3 / best
    return peaks


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def fmt(value: Any, spec: str) -> str:
    """`format(value, spec)`, or "-" for None (markdown table cells)."""
    return "-" if value is None else format(value, spec)


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write `data` to `path` atomically (a temporary file, then a rename)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp")
    tmp_out.write_text(json.dumps(data, indent=2) + "\n")
    tmp_out.replace(out)
    return out


# --------------------------------------------------------------------------- #
# Launching workers (parent).
# --------------------------------------------------------------------------- #


def wait_for_idle(max_wait_s: float, threshold: float = 0.25, quiet_s: int = 3,
                  tag: str = "bench") -> float:
    """Wait (at most `max_wait_s`) until other processes use < `threshold` cores for
    `quiet_s` consecutive seconds; returns the seconds waited."""
    if max_wait_s <= 0 or cpu_busy_seconds() is None:
        return 0.0
    start = time.perf_counter()
    quiet = 0
    announced = False
    while time.perf_counter() - start < max_wait_s:
        b0, t0 = cpu_busy_seconds(), time.perf_counter()
        time.sleep(1.0)
        load = (cpu_busy_seconds() - b0) / (time.perf_counter() - t0)  # type: ignore[operator]
        quiet = quiet + 1 if load < threshold else 0
        if quiet >= quiet_s:
            break
        if not announced and quiet == 0:
            print(f"[{tag}] machine busy ({load:.1f} cores used by other processes); "
                  f"waiting up to {max_wait_s:.0f} s", file=sys.stderr, flush=True)
            announced = True
    return time.perf_counter() - start


def other_cpu(result: Any) -> float:
    """The most CPU other processes used during any timed loop recorded in `result`
    (every ``other_cpu_cores`` value, at any depth of nested dicts and lists)."""
    values: list[float] = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "other_cpu_cores" and isinstance(value, (int, float)):
                    values.append(float(value))
                else:
                    visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(result)
    return max(values, default=0.0)


def launch_once(name: str, cmd: Sequence[str], *, keras_backend: str | None,
                timeout: float, wait_idle: float, tag: str) -> dict[str, Any]:
    """Wait for idle CPUs, run one worker subprocess; return its result dict, or
    ``{"error": ...}``. `keras_backend` sets ``KERAS_BACKEND`` for it (None: unset
    nothing, e.g. for a torch-only peer)."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if keras_backend is not None:
        env["KERAS_BACKEND"] = keras_backend
    waited = wait_for_idle(wait_idle, tag=tag)
    print(f"[{tag}] running {name} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(list(cmd), env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    elapsed = time.perf_counter() - start
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("[0] "):  # a job started by `zoo launch`: process 0's line
            line = line[4:]
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX):])
            result["worker_wall_s"] = elapsed
            result["waited_for_idle_s"] = waited
            return result
    tail = (proc.stderr or proc.stdout)[-2000:]
    return {"error": f"worker exited with {proc.returncode}: {tail}"}


def launch(name: str, cmd: Sequence[str], *, keras_backend: str | None, retries: int,
           max_other_cpu: float, timeout: float, wait_idle: float,
           tag: str = "bench") -> dict[str, Any]:
    """Run one worker; rerun it (at most `retries` times) if other processes took
    more than `max_other_cpu` cores during its timed runs. Keeps the cleanest run."""
    attempts = []
    for attempt in range(retries + 1):
        result = launch_once(name, cmd, keras_backend=keras_backend, timeout=timeout,
                             wait_idle=wait_idle, tag=tag)
        attempts.append(result)
        if "error" in result or other_cpu(result) <= max_other_cpu or attempt == retries:
            break
        print(f"[{tag}] {name}: other processes used {other_cpu(result):.2f} cores "
              "during the timed runs; running it again", file=sys.stderr, flush=True)
    ok = [a for a in attempts if "error" not in a]
    best = min(ok, key=other_cpu) if ok else attempts[-1]
    best["attempts"] = len(attempts)
    best["other_cpu_cores_per_attempt"] = [other_cpu(a) if "error" not in a else None
                                           for a in attempts]
    return best


# --------------------------------------------------------------------------- #
# Command-line options every benchmark shares.
# --------------------------------------------------------------------------- #


def add_run_options(parser: Any, workers: Sequence[str], timeout: float,
                    retries: int) -> None:
    """Add --timeout, --wait-idle, --max-other-cpu, --retries and the hidden
    --worker / --share-dir options (defaults: `timeout` s, `retries` reruns)."""
    parser.add_argument("--timeout", type=float, default=timeout,
                        help="seconds allowed per worker process")
    parser.add_argument("--wait-idle", type=float, default=None, metavar="SECONDS",
                        help="before each worker, wait up to SECONDS for other processes to "
                             "leave the CPUs idle (default: 300, or 0 with --smoke)")
    parser.add_argument("--max-other-cpu", type=float, default=0.25, metavar="CORES",
                        help="rerun a worker whose timed runs overlapped other processes "
                             "using more than CORES cores (default: %(default)s)")
    parser.add_argument("--retries", type=int, default=None,
                        help=f"reruns allowed per worker (default: {retries}, or 0 with --smoke)")
    parser.add_argument("--worker", choices=tuple(workers), help=argparse.SUPPRESS)
    parser.add_argument("--share-dir", help=argparse.SUPPRESS)


def apply_run_defaults(args: Any, argv: Sequence[str] | None, smoke_workload: dict[str, Any],
                       retries: int) -> None:
    """With --smoke (parent only), swap in `smoke_workload` for every option not
    given explicitly; then fill the --retries / --wait-idle defaults."""
    if args.smoke and not args.worker:
        given = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:])}
        for key, value in smoke_workload.items():
            if f"--{key.replace('_', '-')}" not in given:
                setattr(args, key, value)
    if args.retries is None:
        args.retries = 0 if args.smoke else retries
    if args.wait_idle is None:
        args.wait_idle = 0.0 if args.smoke else 300.0


def parse_list(text: str, allowed: Sequence[str], what: str = "backend") -> list[str]:
    """A comma-separated option value (`--backends`, or `what` names it) as a
    list; exits on unknown or no names."""
    chosen = [b.strip() for b in text.split(",") if b.strip()]
    unknown = sorted(set(chosen) - set(allowed))
    if unknown or not chosen:
        raise SystemExit(f"unknown {what}(s) {unknown or repr(text)}; choose from "
                         f"{','.join(allowed)}")
    return chosen


def finish_run(text: str, out: str | None, data: dict[str, Any],
               results: dict[str, dict[str, Any]]) -> int:
    """Print `text` (the table), write `data` to `out` when given, and name the
    workers of `results` that failed; the exit code (1 when one did)."""
    print(text)
    if out:
        print(f"results written to {write_json(out, data)}")
    failed = [name for name, r in results.items() if "error" in r]
    for name in failed:
        print(f"{name} failed: {results[name]['error']}", file=sys.stderr)
    return 1 if failed else 0


def exit_code(peer_name: str, peer: dict[str, Any], zoo: dict[str, dict[str, Any]]) -> int:
    """1 (after naming them on stderr) when the peer or a zoo worker failed, else 0."""
    failed = [peer_name] * ("error" in peer) + [b for b, r in zoo.items() if "error" in r]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None, parse_args: Callable[[Any], Any],
         run_worker: Callable[[Any], int], run_parent: Callable[[Any], int]) -> int:
    """A benchmark script's entry point: parse, then run as worker or parent."""
    args = parse_args(argv)
    return run_worker(args) if args.worker else run_parent(args)


def parse_run_args(parser: Any, argv: Sequence[str] | None, workers: Sequence[str], *,
                   timeout: float, retries: int, smoke_workload: dict[str, Any]) -> Any:
    """Add the run options (`add_run_options`), parse, and apply the --smoke
    workload and the defaults (`apply_run_defaults`)."""
    add_run_options(parser, workers, timeout=timeout, retries=retries)
    args = parser.parse_args(argv)
    apply_run_defaults(args, argv, smoke_workload, retries=retries)
    return args


def entry(parse_args: Callable[[Any], Any], run_worker: Callable[[Any], int],
          run_parent: Callable[[Any], int]) -> Callable[..., int]:
    """A script's `main(argv=None) -> int` (see `main`)."""

    def script_main(argv: Sequence[str] | None = None) -> int:
        return main(argv, parse_args, run_worker, run_parent)

    return script_main


def start_zoo_worker(backend: str) -> Any:
    """Set up a zoo worker process for `backend` and return the `keras` module.

    Checks that KERAS_BACKEND names `backend` and that keras picked it, gives
    torch every core (as the transformers worker has), and seeds Keras.
    """
    if os.environ.get("KERAS_BACKEND") != backend:
        raise RuntimeError(f"worker for {backend} started with KERAS_BACKEND="
                           f"{os.environ.get('KERAS_BACKEND')!r}")
    if backend == "torch":
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
    import keras

    if keras.backend.backend() != backend:
        raise RuntimeError(f"keras picked {keras.backend.backend()!r}, not {backend!r}")
    keras.utils.set_random_seed(0)
    return keras


# --------------------------------------------------------------------------- #
# FLOPs and the rows `zoo benchmark` reports.
# --------------------------------------------------------------------------- #


def transformer_flops(tokens: int, layers: int, hidden: int, intermediate: int,
                      context: float) -> float:
    """Matrix-product FLOPs of `tokens` tokens through `layers` transformer
    layers: the four attention projections (8 h^2), the MLP (4 h ff) and the
    score and value products against `context` keys (4 context h), per token."""
    per_token = 8 * hidden * hidden + 4 * hidden * intermediate + 4 * context * hidden
    return float(tokens * layers * per_token)


def jax_flops(fn: Callable[..., Any], *args: Any) -> float | None:
    """The FLOPs XLA counts for one call of `fn(*args)`, a function of
    `keras.ops`; None unless the Keras backend is jax."""
    import keras

    if keras.backend.backend() != "jax":
        return None
    import jax

    analysis = jax.jit(fn).lower(*args).cost_analysis()
    if isinstance(analysis, list):  # older jax: one dict per computation
        analysis = analysis[0]
    return float(analysis["flops"]) if analysis and "flops" in analysis else None


def row(family: str, workload: str, backend: str, zoo: dict[str, Any] | None, peer_name: str,
        peer: dict[str, Any] | None, dtype: str = "float32", flops: float | None = None,
        match: bool | None = None, peer_dtype: str | None = None,
        note: str | None = None) -> dict[str, Any]:
    """One line of `zoo benchmark`'s table: zoo on `backend` in `dtype` against
    the peer's path in `peer_dtype` (default: the same dtype; e.g. "int16" for
    CTranslate2's 16-bit type) for one workload; `zoo` and `peer` are timing
    dicts with `ms` (or None after a failure). ratio = peer ms / zoo ms (> 1:
    zoo faster). `note`: what the reader must know about the peer's path."""
    zoo_ms = (zoo or {}).get("ms")
    peer_ms = (peer or {}).get("ms")
    out = {"family": family, "workload": workload, "dtype": dtype, "backend": backend,
           "zoo_ms": zoo_ms, "peer": peer_name, "peer_dtype": peer_dtype or dtype,
           "peer_ms": peer_ms,
           "ratio": peer_ms / zoo_ms if zoo_ms and peer_ms else None,
           "flops": flops, "match": match,
           "other_cpu_cores": (zoo or {}).get("other_cpu_cores")}
    if note:
        out["note"] = note
    if zoo_ms is None:
        out["error"] = str((zoo or {}).get("error", "no result"))[-300:]
    if peer_ms is None:
        out["peer_error"] = str((peer or {}).get("error", "no result"))[-300:]
    return out
