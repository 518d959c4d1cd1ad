"""Smoke test of benchmarks/bench_opt.py: the tiny config, one zoo backend, seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_opt.py"

pytest.importorskip("transformers")
pytest.importorskip("torch")


def test_bench_opt_smoke(tmp_path: Path) -> None:
    backend = os.environ.get("KERAS_BACKEND", "jax")
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--backends", backend, "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())

    workload = results["workload"]
    assert workload["smoke"] is True
    assert workload["batches"] == [1, 2]
    assert list(results["zoo"]) == [backend]
    for batch in ("1", "2"):
        peer = results["transformers"]["batches"][batch]
        zoo = results["zoo"][backend]["batches"][batch]
        assert peer["tokens_per_s"] > 0
        assert zoo["tokens_per_s"] > 0
        # tokens/s is batch * new_tokens over the median seconds per generate call.
        assert zoo["tokens_per_s"] == pytest.approx(
            int(batch) * workload["new_tokens"] / (zoo["ms"] / 1e3), rel=1e-9)
        assert zoo["ratio"] == pytest.approx(zoo["tokens_per_s"] / peer["tokens_per_s"],
                                             rel=1e-9)
        # Same weights (transformers' ported by zoo's converter), same prompts
        # (left-padded at batch 2): zoo's greedy ids equal transformers' generate.
        assert zoo["ids_match"] is True, zoo
    assert results["zoo"][backend]["shared_weights"] is True
    assert results["machine"]["cpu_count"] == os.cpu_count()
    assert "| zoo |" in proc.stdout and "| transformers |" in proc.stdout
