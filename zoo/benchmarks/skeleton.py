"""The family skeleton: what every family benchmark (`bench_<family>.py`)
shares beyond `common`'s machinery, so a family's script holds only its
workload, its peer and its table: the options (`family_parser`,
`parse_family_args`), the peer-then-zoo worker processes and the entry point
(`Family`), the results file's head and tail (`results_header`,
`write_results`), the table (`Table`), the target check (`best_target`), and
the transformer sizes BERT and OPT build.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from zoo.benchmarks.common import (
    DEFAULT_DISTRIBUTIONS,
    emit_result,
    entry,
    launch,
    loadavg,
    machine_info,
    parse_run_args,
    utc_now,
    versions,
    write_json,
)


@dataclasses.dataclass(frozen=True)
class TransformerSize:
    """A transformer's architecture in zoo's argument names (transformers' names
    in comments; OPT's `ffn_dim` is `intermediate_size`)."""

    vocabulary_size: int  # vocab_size
    num_layers: int  # num_hidden_layers
    num_heads: int  # num_attention_heads
    hidden_dim: int  # hidden_size (OPT: = word_embed_proj_dim)
    intermediate_dim: int  # intermediate_size (OPT: ffn_dim)
    max_sequence_length: int  # max_position_embeddings

    def transformers_config(self, intermediate: str = "intermediate_size") -> dict[str, int]:
        """These sizes under transformers' config names (`intermediate`: the
        name of the MLP width, `ffn_dim` for OPT)."""
        return {"vocab_size": self.vocabulary_size, "num_hidden_layers": self.num_layers,
                "num_attention_heads": self.num_heads, "hidden_size": self.hidden_dim,
                intermediate: self.intermediate_dim,
                "max_position_embeddings": self.max_sequence_length}


def torch_peer_setup() -> None:
    """A torch peer uses every core, and builds its random weights from seed 0."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)


#: the tiny model every transformer benchmark's --smoke runs
TINY_TRANSFORMER = TransformerSize(1000, 2, 2, 64, 256, 64)



def family_parser(doc: str, backends: Sequence[str], *, runs: int, warmup: int,
                  runs_help: str, smoke_help: str, out: Path) -> argparse.ArgumentParser:
    """--backends, --runs, --warmup, --smoke and --out, with this family's defaults."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=",".join(backends),
                        help="comma-separated zoo backends (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=runs, help=runs_help)
    parser.add_argument("--warmup", type=int, default=warmup,
                        help="untimed calls after the (separately timed) first call")
    parser.add_argument("--smoke", action="store_true", help=smoke_help)
    parser.add_argument("--out", default=str(out), help="JSON results file")
    return parser


def parse_family_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                      workers: Sequence[str], *, timeout: float, retries: int,
                      smoke_workload: dict[str, Any],
                      dtypes: bool | tuple[str, ...] = True) -> argparse.Namespace:
    """Add the shared run options (and --dtypes: `dtypes` names the choices,
    True for float32 and bfloat16), parse, apply the --smoke workload and the
    defaults, and check --runs / --warmup."""
    from zoo.benchmarks import precision

    choices = precision.FLOAT_DTYPES if dtypes is True else dtypes
    if dtypes:
        precision.add_dtypes_option(parser, choices=choices)
    args = parse_run_args(parser, argv, workers, timeout=timeout, retries=retries,
                          smoke_workload=smoke_workload)
    if dtypes:
        precision.parse_dtypes(parser, args, choices)
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be >= 1 and --warmup >= 0")
    return args


@dataclasses.dataclass(frozen=True)
class Family:
    """A family benchmark's identity: its log tag, its module (workers start as
    ``python -m module --worker NAME``), its peer's worker name and the two
    worker functions (`worker_peer(args)`, `worker_zoo(args, backend)`, each
    returning one result dict)."""

    tag: str
    module: str
    peer: str
    worker_peer: Callable[[Any], dict[str, Any]]
    worker_zoo: Callable[[Any, str], dict[str, Any]]
    backends: tuple[str, ...] = ("jax", "tensorflow", "torch")

    def parse_args(self, argv: Sequence[str] | None, doc: str, *, runs: int, warmup: int,
                   runs_help: str, smoke_help: str, out: Path, timeout: float,
                   retries: int = 2, smoke_workload: dict[str, Any] | None = None,
                   options: Callable[[argparse.ArgumentParser], None] | None = None,
                   dtypes: bool | tuple[str, ...] = True
                   ) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
        """The family's command line: the shared options (`family_parser`,
        `parse_family_args`), plus what `options(parser)` adds. Returns the
        parser (for the family's own checks) and the parsed arguments."""
        parser = family_parser(doc, self.backends, runs=runs, warmup=warmup,
                               runs_help=runs_help, smoke_help=smoke_help, out=out)
        if options is not None:
            options(parser)
        args = parse_family_args(parser, argv, (self.peer, *self.backends), timeout=timeout,
                                 retries=retries, dtypes=dtypes,
                                 smoke_workload=smoke_workload or {"runs": 1, "warmup": 0})
        return parser, args

    def measure(self, args: Any, backends: Sequence[str], results: dict[str, Any],
                run_dtype: Callable[[Any, Sequence[str], str], dict[str, Any]]) -> None:
        """Each of `args.dtypes` in turn: `run_dtype(args, backends, dtype)`
        (a results section) stored into `results` (`precision.store`)."""
        from zoo.benchmarks import precision

        for dtype in args.dtypes:
            precision.store(results, dtype, run_dtype(args, backends, dtype))

    def finish(self, out: Path, results: dict[str, Any]) -> int:
        """Say where the results went; the exit code (1 when the peer or a
        zoo worker failed, naming them, `precision.exit_code`)."""
        from zoo.benchmarks import precision

        print(f"results written to {out}")
        return precision.exit_code(self.peer, results)

    def run_worker(self, args: Any) -> int:
        """In a worker process: run the peer's or one backend's worker and print
        its result line."""
        load_start = loadavg()
        emit_result(self.worker_peer(args) if args.worker == self.peer
                    else self.worker_zoo(args, args.worker), load_start)
        return 0

    def entry(self, parse_args: Callable[[Any], Any], run_parent: Callable[[Any], int]
              ) -> Callable[..., int]:
        """The script's `main(argv=None) -> int` (`common.main`): a worker when
        called with --worker, else the parent."""
        return entry(parse_args, self.run_worker, run_parent)

    def run(self, args: Any, backends: Sequence[str], dtypes: str,
            options: Sequence[str] = (), share: bool = True
            ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """The peer's worker, then zoo's per backend, each in its own process with
        the workload `options` and the run options of `args`. The peer writes
        what the zoo workers reuse (weights, inputs, its outputs) into a shared
        folder, which they get only when the peer succeeded (and `share`)."""

        def launch_one(name: str, share_dir: str | None) -> dict[str, Any]:
            cmd = [sys.executable, "-m", self.module, "--worker", name, *options,
                   "--runs", str(args.runs), "--warmup", str(args.warmup), "--dtypes", dtypes,
                   *["--smoke"] * args.smoke,
                   *(["--share-dir", share_dir] if share_dir else [])]
            return launch(f"{name} ({dtypes})", cmd,
                          keras_backend=None if name == self.peer else name,
                          retries=args.retries, max_other_cpu=args.max_other_cpu,
                          timeout=args.timeout, wait_idle=args.wait_idle, tag=self.tag)

        with tempfile.TemporaryDirectory(prefix=f"{self.tag}_") as tmp:
            peer = launch_one(self.peer, tmp if share else None)
            share_dir = tmp if share and "error" not in peer else None
            zoo = {backend: launch_one(backend, share_dir) for backend in backends}
        return peer, zoo


class Table:
    """A markdown table of a benchmark's results.

    Args:
        columns: the header cells.
        align: one letter per column, `l` (text) or `r` (numbers).

    Example:

    >>> table = Table(["library", "backend", "ms"], "llr")
    >>> table.add("zoo", "jax", "1.5")
    >>> table.error(["zoo", "torch"], "out of memory")
    >>> print(table.render())
    | library | backend | ms |
    |---|---|---:|
    | zoo | jax | 1.5 |
    | zoo | torch | error: out of memory |
    """

    def __init__(self, columns: Sequence[str], align: str) -> None:
        if len(columns) != len(align) or set(align) - {"l", "r"}:
            raise ValueError(f"align {align!r} needs one of l/r per column ({len(columns)})")
        self.rows = [list(columns)]
        self.rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"

    def add(self, *cells: Any) -> None:
        """A row; missing trailing cells are written `-`."""
        width = len(self.rows[0])
        if len(cells) > width:
            raise ValueError(f"{len(cells)} cells for {width} columns: {cells}")
        self.rows.append([str(c) for c in cells] + ["-"] * (width - len(cells)))

    def error(self, lead: Sequence[Any], error: str | None, limit: int = 80) -> None:
        """A row of `lead` cells, then the (shortened) error, then `-`."""
        self.add(*lead, f"error: {(error or '')[:limit]}")

    def render(self, notes: Sequence[str] = ()) -> str:
        """The table's markdown, then a blank line and `notes`, if any."""
        lines = ["| " + " | ".join(row) + " |" for row in self.rows]
        lines.insert(1, self.rule)
        return "\n".join(lines + [""] * bool(notes) + list(notes))


def best_target(ratios: dict[str, float], target: float, **extra: Any) -> dict[str, Any] | None:
    """The best backend by `ratios` (peer time / zoo time) and whether it
    meets `target`; `extra` entries are added. None without any ratio."""
    if not ratios:
        return None
    best = max(ratios, key=ratios.__getitem__)
    return {"best_backend": best, "best_ratio": ratios[best],
            "met": ratios[best] >= target, **extra}


def target_line(target: dict[str, Any], what: str, goal: float) -> str:
    """`best zoo/<backend> <ratio>x <what> (target >= <goal>: met|MISSED)`."""
    return (f"best zoo/{target['best_backend']} {target['best_ratio']:.2f}x {what} "
            f"(target >= {goal:.2f}: {'met' if target['met'] else 'MISSED'})")


def results_header(benchmark: str, module: str,
                   dists: Iterable[str] = DEFAULT_DISTRIBUTIONS) -> dict[str, Any]:
    """The first keys of every results file: what ran, when, how, where, with what."""
    return {"benchmark": benchmark, "date_utc": utc_now(),
            "command": " ".join([f"python -m {module}", *sys.argv[1:]]),
            "machine": machine_info(), "versions": versions(dists)}


def write_results(results: dict[str, Any], out: str, table: str, heading: str) -> Path:
    """Record the end load and the table, write the JSON, print heading (with
    the machine's CPU count) and table."""
    results["machine"]["loadavg_end"] = (list(os.getloadavg())
                                         if hasattr(os, "getloadavg") else None)
    results["markdown_table"] = table
    path = write_json(out, results)
    print(f"\n{heading} ({results['machine']['cpu_count']} CPUs)\n")
    print(table)
    return path
