"""`zoo benchmark`: every family on every backend against its peer, in one report.

The workloads are the family benchmarks in this package (`zoo.benchmarks.
bench_bert`, `bench_opt`, ...), so an installed zoo runs them from anywhere.
Each runs as its own process and starts one process per library and Keras
backend, with the peer (transformers, diffusers, faster-whisper, onnxruntime)
in the same run. This module runs them, reduces their results to one row per
(family, workload, dtype, backend) with the speed ratio against the peer and
the model FLOP utilisation (MFU: achieved FLOP/s over what this machine's
matrix products reach in that dtype, measured at the start of the run by
`zoo.benchmarks.common`, which also names the CPU's 16-bit features). It
writes (`zoo.benchmarks.report`):

- a JSON file, `zoo_benchmark.json` in the results folder: `benchmarks/results`
  when run from the root of a zoo checkout, else `./zoo-benchmark-results`
  (`--results-dir` picks another),
- a markdown table, printed, and written into the checkout's
  `benchmarks/README.md` between the `zoo-benchmark` markers (`--readme`),
- a PNG chart of zoo's speed relative to the peer per family and backend.

`--compare baseline.json --max-regression 10%` exits with status 1 when any
row's zoo time grew by more than that against the baseline, so a CI job can
gate on it. `--smoke` runs tiny models for a few seconds per family and
writes nothing outside a temporary folder unless asked.

Example:

    zoo benchmark --family bert,yolov8 --backend jax,torch
    zoo benchmark --dtypes float32,bfloat16      # a bfloat16 row beside each float32 one
    zoo benchmark --family whisper --dtypes float32,int8  # int8 beside faster-whisper int8
    zoo benchmark --smoke --out /tmp/smoke.json
    zoo benchmark --report-only                  # rebuild the report from the
                                                 # families' last result files
    zoo benchmark --compare benchmarks/results/zoo_benchmark.json --max-regression 10%
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import importlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoo import families
from zoo.benchmarks import common
from zoo.benchmarks.report import fmt, markdown_table, write_chart, write_readme
from zoo.core.errors import ZooError
from zoo.utils import atomic

#: family -> its benchmark module in this package (from the family table)
FAMILIES = {family.name: family.benchmark for family in families.FAMILIES}
BACKENDS = ("jax", "tensorflow", "torch")
DTYPES = ("float32", "bfloat16", "int8")
SCHEMA = "zoo-benchmark/1"


class BenchmarkError(ZooError):
    """A problem with the benchmark's inputs or outputs (printed as one line)."""


# --------------------------------------------------------------------------- #
# Options.
# --------------------------------------------------------------------------- #


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `zoo benchmark` (also used by `python -m zoo.benchmarks.suite`)."""
    parser.add_argument("--family", dest="families", default=",".join(FAMILIES),
                        help="comma-separated families (default: all: %(default)s)")
    parser.add_argument("--backend", "--backends", dest="backends", default=",".join(BACKENDS),
                        help="comma-separated Keras backends for zoo (default: %(default)s)")
    parser.add_argument("--dtypes", help="float32,bfloat16,int8 or some of them, for every "
                        "family that has them (int8: whisper, opt; default: each script's own: "
                        "float32; stable_diffusion both)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny models and few runs: the same code in seconds per family")
    parser.add_argument("--out", help="JSON results (default: zoo_benchmark.json in the "
                                      "results folder; with --smoke a temporary folder)")
    parser.add_argument("--results-dir", help="where each family's result file is written and "
                        "--report-only reads them (default: benchmarks/results at the root of "
                        "a zoo checkout, else ./zoo-benchmark-results)")
    parser.add_argument("--chart", help="PNG chart (default: next to --out, .png)")
    parser.add_argument("--readme", help="markdown file whose zoo-benchmark section gets the "
                                         "table (default: benchmarks/README.md at the root of "
                                         "a zoo checkout, else none; with --smoke: none); "
                                         "'none' to skip")
    parser.add_argument("--compare", metavar="BASELINE",
                        help="a previous zoo benchmark JSON to compare against")
    parser.add_argument("--max-regression", default="10%",
                        help="with --compare: largest allowed slow-down of any row "
                             "(e.g. 10%% or 0.1; default %(default)s)")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: report the families' last result files in "
                             "the results folder")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds allowed per family (default: 7200, 600 with --smoke)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="families run at once (default: 1, so timings do not disturb "
                             "each other; 2 with --smoke, whose timings are not measurements)")


def parse_list(text: str, allowed: Sequence[str], what: str) -> list[str]:
    """A comma-separated option as a list of known names."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in items if t not in allowed]
    if unknown or not items:
        raise BenchmarkError(f"Unknown {what} {', '.join(unknown) or repr(text)}. "
                             f"Choose from {', '.join(allowed)}.")
    return items


def parse_regression(text: str) -> float:
    """'10%' or '0.1' -> 0.1.

    >>> parse_regression("10%"), parse_regression("0.25")
    (0.1, 0.25)
    """
    try:
        value = float(text[:-1]) / 100 if text.strip().endswith("%") else float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or math.isinf(value):
        raise BenchmarkError(f"--max-regression {text!r} is not a fraction. Fix: e.g. 10% "
                             "or 0.1.")
    return value


def load_baseline(path: str) -> dict[tuple[str, ...], dict[str, Any]]:
    """The rows of a previous run, by (family, workload, dtype, backend)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BenchmarkError(f"Baseline {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BenchmarkError(f"Cannot read baseline {path}: {e}.") from None
    except json.JSONDecodeError as e:
        raise BenchmarkError(f"Baseline {path} is not valid JSON (line {e.lineno}: {e.msg}); "
                             "pass a file written by zoo benchmark.") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise BenchmarkError(f"Baseline {path} is not a zoo benchmark result (no 'schema': "
                             f"{SCHEMA!r}); pass a file written by zoo benchmark.")
    rows = data.get("rows")
    if not isinstance(rows, list) or not all(
            isinstance(r, dict) and {"family", "workload", "dtype", "backend"} <= set(r)
            for r in rows):
        raise BenchmarkError(f"Baseline {path} has malformed 'rows'; pass a file written by "
                             "zoo benchmark.")
    return {row_key(r): r for r in rows}


def row_key(row: dict[str, Any]) -> tuple[str, ...]:
    return (row["family"], row["workload"], row["dtype"], row["backend"])


def check_writable(path: Path) -> Path:
    from zoo.cli_args import CommandError, check_output_path

    try:
        return check_output_path(path)
    except CommandError as e:
        raise BenchmarkError(str(e)) from None


# --------------------------------------------------------------------------- #
# Running.
# --------------------------------------------------------------------------- #


def family_dtypes(script: Any, dtypes: list[str] | None) -> list[str] | None:
    """The asked `dtypes` that a family's script runs (its `DTYPES`, else
    float32 and bfloat16); None (the script's default) when it runs none."""
    if dtypes is None:
        return None
    return [d for d in dtypes if d in getattr(script, "DTYPES", DTYPES[:2])] or None


def load_script(family: str) -> Any:
    """The family's benchmark module (its `summary` turns results into rows)."""
    return importlib.import_module(FAMILIES[family])


def report_family(script: Any, results_dir: Path, family: str) -> list[dict[str, Any]]:
    """The rows of a family's saved results: `<family>.json` and any
    `<family>_*.json` (a re-run of some backends written beside it). Each row
    keeps its own file's peer timing; a row that failed in one file is
    replaced by the same row from a file where it ran."""
    files = sorted(results_dir.glob(f"{family}_*.json"))
    if (results_dir / f"{family}.json").is_file():
        files.insert(0, results_dir / f"{family}.json")
    if not files:
        raise BenchmarkError(f"No results for {family} in {results_dir}; run zoo benchmark "
                             f"--family {family} first.")
    merged: dict[tuple[str, ...], dict[str, Any]] = {}
    for path in files:
        try:
            results = json.loads(path.read_text())
            rows = script.summary(results)
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise BenchmarkError(f"{path} is not a {family} benchmark result ({e!r}); "
                                 "re-run its benchmark.") from None
        for row in rows:
            key = (*row_key(row), row.get("peer_dtype"))  # whisper: a row per compute type
            if key not in merged or (merged[key].get("error") and not row.get("error")):
                merged[key] = {**row, "source": str(path)}
    return list(merged.values())


def run_family(family: str, backends: list[str], smoke: bool, out: Path, timeout: float,
               dtypes: list[str] | None = None) -> dict[str, Any]:
    """Run one family's benchmark module; return its results (or {"error": ...})."""
    cmd = [sys.executable, "-m", FAMILIES[family], "--backends", ",".join(backends),
           "--out", str(out)] + (["--dtypes", ",".join(dtypes)] if dtypes else []) + (
               ["--smoke"] if smoke else [])
    print(f"[zoo benchmark] {family}: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    print(f"[zoo benchmark] {family}: done in {time.perf_counter() - start:.0f} s",
          file=sys.stderr, flush=True)
    if not out.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exited with {proc.returncode}: {' / '.join(tail)}"}
    return json.loads(out.read_text())


def add_mfu(rows: list[dict[str, Any]], peaks: dict[str, float | None]) -> None:
    for row in rows:
        peak = peaks.get(row["dtype"])
        row["mfu"] = (row["flops"] / (row["zoo_ms"] / 1e3) / peak
                      if row.get("flops") and row.get("zoo_ms") and peak else None)


def compare(rows: list[dict[str, Any]], baseline: dict[tuple[str, ...], dict[str, Any]],
            max_regression: float) -> list[dict[str, Any]]:
    """Rows slower than the baseline by more than `max_regression` (each gets
    `baseline_ms` and `slowdown`); rows missing from the baseline are skipped."""
    regressions = {}  # by row_key: a zoo timing listed against several peer paths counts once
    for row in rows:
        old = baseline.get(row_key(row))
        if not old or not old.get("zoo_ms"):
            continue
        if row.get("zoo_ms") is None:
            regressions.setdefault(row_key(row), {**row, "baseline_ms": old["zoo_ms"],
                                                  "slowdown": math.inf})
            continue
        slowdown = row["zoo_ms"] / old["zoo_ms"] - 1
        row["baseline_ms"] = old["zoo_ms"]
        if slowdown > max_regression:
            regressions.setdefault(row_key(row), {**row, "slowdown": slowdown})
    return list(regressions.values())


# --------------------------------------------------------------------------- #
# Entry points.
# --------------------------------------------------------------------------- #


def run_from_args(args: argparse.Namespace) -> int:
    """Run `zoo benchmark`; returns the exit code (1: a failure or a regression)."""
    families = parse_list(args.families, tuple(FAMILIES), "family")
    backends = parse_list(args.backends, BACKENDS, "backend")
    dtypes = parse_list(args.dtypes, DTYPES, "dtype") if args.dtypes else None
    max_regression = parse_regression(args.max_regression)
    baseline = load_baseline(args.compare) if args.compare else None
    results_dir = Path(args.results_dir) if args.results_dir else common.results_dir()
    checkout = common.checkout_dir()
    in_checkout = checkout is not None and results_dir.resolve() == (
        checkout / "results").resolve()
    tmp_dir = Path(tempfile.mkdtemp(prefix="zoo-benchmark-"))
    default_out = (tmp_dir if args.smoke else results_dir) / "zoo_benchmark.json"
    if not args.out and not args.smoke and not args.report_only:
        results_dir.mkdir(parents=True, exist_ok=True)  # (a first run outside a checkout)
    out = check_writable(Path(args.out) if args.out else default_out)
    chart = check_writable(Path(args.chart) if args.chart else out.with_suffix(".png"))
    readme_arg = args.readme or ("none" if args.smoke or not in_checkout
                                 else str(results_dir.parent / "README.md"))
    readme = None if readme_arg == "none" else check_writable(Path(readme_arg))
    timeout = args.timeout or (600.0 if args.smoke else 7200.0)

    jobs = args.jobs if args.jobs is not None else (2 if args.smoke else 1)
    if jobs < 1:
        raise BenchmarkError(f"--jobs {jobs}: pass 1 or more families at once.")
    scripts = {family: load_script(family) for family in families}
    peaks = common.measure_peak_flops(args.smoke)
    machine = {**common.machine_info(), "peak_flops": peaks}
    run_files = {family: tmp_dir / f"{family}.json" for family in families}
    run_results: dict[str, dict[str, Any]] = {}
    if not args.report_only:
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            run_results = dict(zip(families, pool.map(lambda f: run_family(
                f, backends, args.smoke, run_files[f], timeout,
                family_dtypes(scripts[f], dtypes)), families)))
    rows: list[dict[str, Any]] = []
    sources: dict[str, str] = {}
    failed = []
    for family in families:
        script = scripts[family]
        if args.report_only:
            family_rows = report_family(script, results_dir, family)
            sources[family] = ", ".join(sorted({r.pop("source") for r in family_rows}))
            rows += [r for r in family_rows if r["backend"] in backends]
            continue
        results = run_results[family]
        if "error" in results:
            failed.append(family)
            rows += [{"family": family, "workload": "-", "dtype": "-", "backend": b,
                      "zoo_ms": None, "peer": "-", "peer_ms": None, "ratio": None,
                      "flops": None, "match": None, "error": results["error"]}
                     for b in backends]
            continue
        if not args.smoke:  # keep the family's full result file, as its script does
            results_dir.mkdir(parents=True, exist_ok=True)
            atomic.write_text(results_dir / f"{family}.json", json.dumps(results, indent=2) + "\n")
        sources[family] = str(run_files[family])
        family_rows = [r for r in script.summary(results) if r["backend"] in backends]
        rows += family_rows
        failed += list(dict.fromkeys(f"{family}/{r['backend']}" for r in family_rows
                                     if r.get("error")))
        if any(r.get("peer_error") for r in family_rows):
            failed.append(f"{family}/{family_rows[0]['peer']}")
    add_mfu(rows, peaks)
    regressions = compare(rows, baseline, max_regression) if baseline is not None else []

    table = markdown_table(rows, peaks, machine)
    data = {"schema": SCHEMA,
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "command": " ".join(["zoo benchmark", *sys.argv[2:]]) if sys.argv[1:2] == [
                "benchmark"] else "zoo benchmark",
            "smoke": args.smoke, "report_only": args.report_only,
            "machine": machine, "cpu_count": os.cpu_count(), "peak_flops": peaks,
            "dtypes": dtypes or "each family's default", "sources": sources,
            "rows": rows, "regressions": regressions, "markdown_table": table}
    atomic.write_text(out, json.dumps(data, indent=2, default=str) + "\n")
    chart_path = write_chart(chart, rows)
    if readme is not None:
        write_readme(readme, table)
    print(table)
    print(f"\nresults: {out}" + (f"\nchart: {chart_path}" if chart_path else "")
          + (f"\ntable written into {readme}" if readme else ""))
    status = 1 if failed else 0
    recorded = list(dict.fromkeys(f"{r['family']}/{r['backend']}" for r in rows
                                  if args.report_only and r.get("error")))
    if recorded:
        print(f"zoo benchmark: the result files record failures: {', '.join(recorded)}",
              file=sys.stderr)
    if failed:
        print(f"zoo benchmark: failed: {', '.join(failed)}", file=sys.stderr)
    if baseline is not None:
        if regressions:
            for r in regressions:
                print(f"REGRESSION {r['family']} / {r['workload']} / {r['dtype']} / "
                      f"{r['backend']}: {fmt(r.get('zoo_ms'), '.1f')} ms vs "
                      f"{r['baseline_ms']:.1f} ms in the baseline "
                      f"(+{100 * r['slowdown']:.0f}%, limit {100 * max_regression:.0f}%)",
                      file=sys.stderr)
            status = 1
        else:
            print(f"no row slower than the baseline by more than {100 * max_regression:.0f}%")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.benchmarks.suite",
                                     description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_from_args(args)
    except BenchmarkError as e:
        print(f"zoo benchmark: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
