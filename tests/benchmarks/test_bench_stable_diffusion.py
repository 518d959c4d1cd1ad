"""Smoke test of benchmarks/bench_stable_diffusion.py: tiny model, one run, one zoo backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_stable_diffusion.py"

pytest.importorskip("diffusers")


def test_bench_stable_diffusion_smoke(tmp_path: Path) -> None:
    backend = os.environ.get("KERAS_BACKEND", "jax")
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--backends", backend, "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["workload"]["smoke"] is True and results["workload"]["runs"] == 1
    peer = results["diffusers"]["dtypes"]
    zoo = results["zoo"][backend]["dtypes"]
    assert set(zoo) == set(peer) == {"float32", "bfloat16"}
    for dtype in ("float32", "bfloat16"):
        assert zoo[dtype]["ratio_step"] == pytest.approx(
            peer[dtype]["step"]["ms"] / zoo[dtype]["step"]["ms"], rel=1e-9)
    # The same random weights on both sides: the outputs agree.
    assert zoo["float32"]["max_abs_diff_step"] < 1e-3
    assert zoo["float32"]["max_abs_diff_decode"] < 1e-3
    assert results["target"]["best_backend"] == backend
    assert "| zoo |" in proc.stdout and "| diffusers |" in proc.stdout
