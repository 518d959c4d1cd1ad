"""The family skeleton: what every family benchmark (`bench_<family>.py`)
shares beyond `common`'s machinery, so a family's script holds only its
workload, its peer and its table: the options (`family_parser`,
`parse_family_args`), the peer-then-zoo worker processes and the entry point
(`Family`), the results file's head and tail (`results_header`,
`write_results`), and the transformer sizes BERT and OPT build.
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
    add_run_options,
    apply_run_defaults,
    emit_result,
    launch,
    loadavg,
    machine_info,
    main,
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
                      smoke_workload: dict[str, Any], dtypes: bool = True) -> argparse.Namespace:
    """Add the shared run options (and --dtypes), parse, apply the --smoke
    workload and the defaults, and check --runs / --warmup."""
    from zoo.benchmarks import precision

    if dtypes:
        precision.add_dtypes_option(parser)
    add_run_options(parser, workers, timeout=timeout, retries=retries)
    args = parser.parse_args(argv)
    apply_run_defaults(args, argv, smoke_workload, retries=retries)
    if dtypes:
        precision.parse_dtypes(parser, args)
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

    def run_worker(self, args: Any) -> int:
        """In a worker process: run the peer's or one backend's worker and print
        its result line."""
        load_start = loadavg()
        emit_result(self.worker_peer(args) if args.worker == self.peer
                    else self.worker_zoo(args, args.worker), load_start)
        return 0

    def main(self, argv: Sequence[str] | None, parse_args: Callable[[Any], Any],
             run_parent: Callable[[Any], int]) -> int:
        """The script's entry point (`common.main`: worker or parent)."""
        return main(argv, parse_args, self.run_worker, run_parent)

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


def results_header(benchmark: str, module: str,
                   dists: Iterable[str] = DEFAULT_DISTRIBUTIONS) -> dict[str, Any]:
    """The first keys of every results file: what ran, when, how, where, with what."""
    return {"benchmark": benchmark, "date_utc": utc_now(),
            "command": " ".join([f"python -m {module}", *sys.argv[1:]]),
            "machine": machine_info(), "versions": versions(dists)}


def write_results(results: dict[str, Any], out: str, table: str, heading: str) -> Path:
    """Record the end load and the table, write the JSON, print heading and table."""
    results["machine"]["loadavg_end"] = (list(os.getloadavg())
                                         if hasattr(os, "getloadavg") else None)
    results["markdown_table"] = table
    path = write_json(out, results)
    print(f"\n{heading}\n")
    print(table)
    return path
