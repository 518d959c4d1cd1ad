"""Smoke test of benchmarks/bench_bert.py: the tiny config, one zoo backend, seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_bert.py"

pytest.importorskip("transformers")
pytest.importorskip("torch")


def test_bench_bert_smoke(tmp_path: Path) -> None:
    backend = os.environ.get("KERAS_BACKEND", "jax")
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--backends", backend, "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())

    assert results["workload"]["smoke"] is True
    peer_ms = results["transformers"]["ms"]
    zoo = results["zoo"][backend]
    assert peer_ms > 0
    assert zoo["ms"] > 0
    assert zoo["ratio"] == pytest.approx(peer_ms / zoo["ms"], rel=1e-9)
    # Same weights, same inputs: zoo reproduces transformers' output.
    assert zoo["max_abs_diff"] < 1e-3
    assert results["machine"]["cpu_count"] == os.cpu_count()
    assert "| zoo |" in proc.stdout and "| transformers |" in proc.stdout
