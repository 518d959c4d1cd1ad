"""`bench_preset_memory --smoke`: presets written in float32, bfloat16 and
int8, their sizes, and each loaded in its own process with its peak memory."""

from __future__ import annotations

import json
import subprocess
import sys

import keras
import pytest


@pytest.mark.once
def test_bench_preset_memory_smoke(tmp_path):
    backend = keras.backend.backend()
    out = tmp_path / "memory.json"
    proc = subprocess.run([sys.executable, "-m", "zoo.benchmarks.bench_preset_memory",
                           "--smoke", "--backends", backend, "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    bert = json.loads(out.read_text())["models"]["bert"]
    sizes = bert["preset_bytes"]
    assert 0.4 < sizes["bfloat16"] / sizes["float32"] < 0.6  # config and vocabulary on top
    assert sizes["int8"] < 0.8 * sizes["bfloat16"]
    for dtype, loads in bert["load"].items():
        res = loads[backend]
        assert res["finite"] and res["load_s"] > 0, (dtype, res)
        assert res["peak_mib"] is None or res["peak_mib"] >= 0
    assert bert["load"]["bfloat16"][backend]["weights"] == ["bfloat16"]
    assert "int8" in bert["load"]["int8"][backend]["weights"]  # loaded quantized
    assert "| bert | int8 |" in proc.stdout
