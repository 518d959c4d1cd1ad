"""The report of `zoo benchmark`: the markdown table (with the machine's
matrix-product peaks and 16-bit features), the README section between the
`zoo-benchmark` markers, and the PNG chart."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from zoo.utils import atomic

MARK_START = "<!-- zoo-benchmark:start -->"
MARK_END = "<!-- zoo-benchmark:end -->"



def error_cell(text: str) -> str:
    """The last line of an error (usually the exception), short enough for a table.

    >>> error_cell("worker exited with 1: Traceback...\\n  File x\\nValueError: bad | input")
    'error: ValueError: bad / input'
    """
    lines = [line.strip() for line in str(text).splitlines() if line.strip()] or ["?"]
    last = lines[-1].replace("|", "/")
    return "error: " + (last if len(last) <= 70 else last[:67] + "...")


def fmt(value: Any, spec: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, spec) + suffix


def markdown_table(rows: list[dict[str, Any]], peaks: dict[str, float | None],
                   machine: dict[str, Any] | None = None) -> str:
    """The report: a heading line with the machine (CPU count, its 16-bit
    features and measured matrix-product peaks), the table, then notes."""
    machine = machine or {}
    peak_text = ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items() if v)
    lines = [f"Machine: {machine.get('cpu_count') or os.cpu_count()} CPUs "
             f"({machine.get('cpu_model') or 'model unknown'}); matrix-product peak "
             f"{peak_text or 'not measured'}; CPU 16-bit features: "
             f"{machine.get('cpu_16bit_text', 'unknown')}.", "",
             "| family | workload | dtype | backend | zoo ms | peer | peer ms | speed-up vs peer"
             " | output matches peer | MFU |",
             "|---|---|---|---|---:|---|---:|---:|:---:|---:|"]
    for r in rows:
        zoo_ms = (fmt(r.get("zoo_ms"), ".1f") if r.get("zoo_ms")
                  else error_cell(r.get("error", "")))
        peer_ms = (fmt(r.get("peer_ms"), ".1f") if r.get("peer_ms")
                   else error_cell(r["peer_error"]) if r.get("peer_error") else "-")
        match = {True: "yes", False: "**no**", None: "-"}[r.get("match")]
        mfu = fmt(None if r.get("mfu") is None else 100 * r["mfu"], ".1f", "%")
        peer = r["peer"] + (f" {r['peer_dtype']}" if r.get("peer_dtype", r["dtype"]) != r["dtype"]
                            else "")
        lines.append(f"| {r['family']} | {r['workload']} | {r['dtype']} | {r['backend']} | "
                     f"{zoo_ms} | {peer} | {peer_ms} | "
                     f"{fmt(r.get('ratio'), '.2f', 'x')} | {match} | {mfu} |")
    lines.append("")
    lines.append("speed-up = peer ms / zoo ms (> 1: zoo faster). MFU = the workload's "
                 "matrix-product FLOPs per second over this machine's measured matrix-product "
                 "peak in that dtype (above); '-' where the FLOPs are not defined "
                 "(whisper: they depend on the decoded text) or were not counted. In bfloat16 "
                 "the peer runs its own 16-bit path (named beside it where it is not bfloat16);"
                 " the family's results compare the outputs, ungated here ('-').")
    notes = dict.fromkeys(f"{r['family']} {r['dtype']}: {r['note']}." for r in rows
                          if r.get("note"))
    return "\n".join(lines + [f"\n{note}" for note in notes])


def write_readme(path: Path, section: str) -> None:
    """Replace the text between the zoo-benchmark markers of `path` (appending
    the markers at the end when they are missing)."""
    text = path.read_text() if path.is_file() else ""
    block = f"{MARK_START}\n{section}\n{MARK_END}"
    if MARK_START in text and MARK_END in text:
        head, _, rest = text.partition(MARK_START)
        _, _, tail = rest.partition(MARK_END)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    atomic.write_text(path, text)


def write_chart(path: Path, rows: list[dict[str, Any]]) -> Path | None:
    """A grouped bar chart: zoo's speed-up over the peer per workload, one bar
    per backend (and dtype), a line at 1 (parity). None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[zoo benchmark] matplotlib not installed: no chart", file=sys.stderr)
        return None
    labels = list(dict.fromkeys(f"{r['family']}\n{r['workload']}" for r in rows))
    series = list(dict.fromkeys(f"{r['backend']} {r['dtype']}" for r in rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 * len(labels)), 5.0))
    width = 0.8 / max(1, len(series))
    for i, name in enumerate(series):
        values = []
        for label in labels:
            match = [r for r in rows if f"{r['family']}\n{r['workload']}" == label
                     and f"{r['backend']} {r['dtype']}" == name]
            values.append(match[0]["ratio"] if match and match[0].get("ratio") else 0.0)
        ax.bar([x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))], values,
               width, label=name)
    ax.axhline(1.0, color="black", linewidth=1, linestyle="--")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(["\n".join(textwrap.fill(part, 18) for part in label.split("\n"))
                        for label in labels], fontsize=7)
    ax.set_ylabel("speed-up over the peer (peer time / zoo time)")
    ax.set_title("zoo vs peer, per family and backend (> 1: zoo faster)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic.atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
