"""Run the 8-device sharding tests in a child process with 8 simulated CPU devices.

jax fixes its device count when it starts, so the suite's own process (one
CPU device) cannot run them; this test starts one that can.
"""

import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="sharding runs on jax")
def test_sharded_suite_on_8_simulated_devices():
    env = {**os.environ, "KERAS_BACKEND": "jax",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/layout/test_sharded.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "skipped" not in summary and "passed" in summary, summary
