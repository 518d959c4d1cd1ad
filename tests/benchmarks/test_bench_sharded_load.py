"""Smoke test of zoo/benchmarks/bench_sharded_load.py: tiny model, 8 simulated devices,
a bfloat16 preset (the float32 path differs only in not passing a dtype) and
the load in a job of 2 processes x 4 devices (zoo launch). Conversion memory
has its own benchmark (test_bench_convert_memory.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import pytest

MODULE = "zoo.benchmarks.bench_sharded_load"


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="sharding runs on jax")
def test_bench_sharded_load_smoke(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", MODULE, "--smoke", "--preset-dir", str(tmp_path / "preset"),
         "--dtype", "bfloat16", "--modes", "unsharded,sharded,sharded_2_processes",
         "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    workload = data["workload"]
    assert workload["smoke"] is True and workload["dtype"] == "bfloat16"
    assert workload["weight_bytes"] > 0
    results = data["results"]
    # (sharded_build_then_assign, the comparison, runs in the full benchmark only)
    assert list(results) == ["unsharded", "sharded", "sharded_2_processes"]
    job = results.pop("sharded_2_processes")
    assert job["devices"] == 8 and len(job["processes"]) == 2, job
    for process in job["processes"]:
        assert process["local_devices"] == 4 and process["shards_equal_preset"] == 1.0
        assert process["read_bytes"] >= workload["weight_bytes"]  # each read the preset
        assert process["peak_over_own"] > 0
    # mesh (2, 4): the two processes hold the same share (each has all 4 model shards)
    assert job["processes"][0]["held_shard_bytes"] == job["processes"][1]["held_shard_bytes"] > 0
    assert job["matches_unsharded"] is True
    for mode, result in results.items():
        assert result["devices"] == 8, mode
        assert result["load_s"] > 0 and result["peak_delta_mib"] >= 0
        assert result["anon_peak_delta_mib"] >= 0
        assert result["matches_unsharded"] is True, mode
    assert "single device" in results["unsharded"]["example_shardings"].values()
    sharded = results["sharded"]["example_shardings"]
    assert sharded["token_embedding/embeddings"] == "P('model', None)"
    assert "| sharded |" in proc.stdout
