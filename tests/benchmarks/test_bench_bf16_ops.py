"""Smoke test of zoo/benchmarks/bench_bf16_ops.py on the current backend: small
shapes, every op timed in float32 and bfloat16, and the path each bfloat16
call takes read from XLA's optimized HLO or oneDNN's log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras

MODULE = "zoo.benchmarks.bench_bf16_ops"


def test_bench_bf16_ops_smoke(tmp_path: Path) -> None:
    backend = keras.backend.backend()
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", MODULE, "--smoke", "--backends", backend,
                           "--ops", "matmul,conv3x3,layer_norm", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ops = json.loads(out.read_text())["results"][backend]["ops"]
    assert set(ops) == {f"{op}/{dtype}" for op in ("matmul", "conv3x3", "layer_norm")
                        for dtype in ("float32", "bfloat16")}
    assert all(r["ms"] > 0 for r in ops.values())
    assert ops["matmul/bfloat16"]["gflops"] > 0 and ops["layer_norm/bfloat16"]["gflops"] is None
    matmul = ops["matmul/bfloat16"]["path"]
    if backend == "torch":  # oneDNN's log was read: a matmul kernel, or ATen's own
        assert "matmul" in matmul or "ATen" in matmul, matmul
    elif backend == "tensorflow":  # 16-bit runs as a plain graph (compiled_loop.xla_suits)
        assert matmul.startswith("plain graph"), matmul
        assert "dot in " in ops["matmul/float32"]["path"]  # float32 stays on XLA
    else:  # XLA's HLO was read: the product's dtype is named
        assert "dot in " in matmul or "call" in matmul, matmul
    assert f"| matmul | {backend} |" in proc.stdout
