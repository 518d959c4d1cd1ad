"""`zoo benchmark`: the smoke run of every family on the current backend, the
regression gate, the report from committed results, and one-line errors.

The smoke run is the `make test` part of the benchmark: tiny models, each
family's script in its own processes with its peer, seconds per family.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

ROOT = Path(__file__).resolve().parents[2]
BACKEND = keras.backend.backend()
FAMILIES = ("bert", "opt", "whisper", "yolov8", "stable_diffusion")
PEERS = {"bert": "transformers", "opt": "transformers", "whisper": "faster_whisper",
         "yolov8": "onnxruntime", "stable_diffusion": "diffusers"}

for module in ("transformers", "torch", "diffusers", "faster_whisper", "onnxruntime",
               "matplotlib"):
    pytest.importorskip(module)


def zoo_benchmark(*args: str, timeout: float = 1500) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo.cli", "benchmark", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=dict(os.environ))


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def check_rows(data: dict) -> None:
    """Every row: timings of both sides, the ratio and the MFU they imply."""
    for row in data["rows"]:
        assert row["zoo_ms"] > 0 and row["peer_ms"] > 0, row
        assert row["ratio"] == pytest.approx(row["peer_ms"] / row["zoo_ms"], rel=1e-9)
        assert row["match"] is not False, row  # same weights, same inputs: same output
        if row["flops"]:
            peak = data["peak_flops"][row["dtype"]]
            assert row["mfu"] == pytest.approx(row["flops"] / (row["zoo_ms"] / 1e3) / peak,
                                               rel=1e-9)
        else:
            assert row["mfu"] is None


# The smoke run of each family starts its script, a zoo worker and a peer
# worker (about 20 s a family, two families at once on both cores): `make
# test` runs each group on one backend (`once(on=...)`), and a plain pytest
# run runs all three groups on its backend. The bert group carries the
# regression gate.
SMOKE_GROUPS = [
    pytest.param(("bert", "opt"), marks=pytest.mark.once(on="jax"), id="bert+opt"),
    pytest.param(("whisper", "yolov8"), marks=pytest.mark.once(on="tensorflow"),
                 id="whisper+yolov8"),
    pytest.param(("stable_diffusion",), marks=pytest.mark.once(on="torch"),
                 id="stable_diffusion"),
]


def test_smoke_groups_cover_every_family():
    assert sorted(f for group in SMOKE_GROUPS for f in group.values[0]) == sorted(FAMILIES)


@pytest.mark.parametrize("families", SMOKE_GROUPS)
def test_smoke_and_the_regression_gate(tmp_path, families):
    bert_key = {"family": "bert", "workload": "forward 2x16", "dtype": "float32",
                "backend": BACKEND}
    baseline = write_json(tmp_path / "baseline.json", {
        "schema": "zoo-benchmark/1",
        "rows": [{**bert_key, "zoo_ms": 1e-6},  # impossible to match: a regression
                 {"family": "opt", "workload": "generate b1, 8+8 tokens", "dtype": "float32",
                  "backend": BACKEND, "zoo_ms": 1e9}]})  # far slower: not a regression
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- zoo-benchmark:start -->\nold table\n"
                      "<!-- zoo-benchmark:end -->\ntail\n")
    out = tmp_path / "smoke.json"
    proc = zoo_benchmark("--smoke", "--backend", BACKEND, "--family", ",".join(families),
                         "--out", str(out), "--compare", str(baseline), "--max-regression",
                         "10%", "--readme", str(readme))

    gated = "bert" in families  # baseline rows of families not run are not compared
    assert proc.returncode == (1 if gated else 0), proc.stderr[-3000:]
    regressions = [line for line in proc.stderr.splitlines() if line.startswith("REGRESSION")]
    assert len(regressions) == gated, proc.stderr[-3000:]
    if gated:
        assert f"bert / forward 2x16 / float32 / {BACKEND}" in regressions[0]
    assert "failed" not in proc.stderr, proc.stderr[-3000:]

    data = json.loads(out.read_text())
    assert data["schema"] == "zoo-benchmark/1" and data["smoke"] is True
    assert [r["backend"] for r in data["regressions"]] == [BACKEND] * gated
    assert {r["family"] for r in data["rows"]} == set(families)
    assert {r["backend"] for r in data["rows"]} == {BACKEND}
    for row in data["rows"]:
        assert row["peer"] == PEERS[row["family"]]
    check_rows(data)
    flops = {(r["family"], r["workload"]): r["flops"] for r in data["rows"]}

    # Each family's own results, as its script wrote them.
    family = {name: json.loads(Path(path).read_text()) for name, path in data["sources"].items()}
    if "bert" in families:
        assert flops[("bert", "forward 2x16")] > 0
        assert family["bert"]["zoo"][BACKEND]["max_abs_diff"] < 1e-3
    if "opt" in families:
        assert all(b["ids_match"] for b in family["opt"]["zoo"][BACKEND]["batches"].values())
    if "whisper" in families:
        assert flops[("whisper", "transcribe 2s clip")] is None
        assert family["whisper"]["zoo"][BACKEND]["clips"]["2s"]["text_match"] is True
    if "yolov8" in families:
        assert family["yolov8"]["onnxruntime"]["detections"]["classes"]
        assert family["yolov8"]["zoo"][BACKEND]["detections_match"] is True
        batch = family["yolov8"]["zoo"][BACKEND]["batch"]  # crops, one call, per-image match
        assert batch["images"] == 2 and batch["detections_match"] is True, batch
    if "stable_diffusion" in families:
        assert family["stable_diffusion"]["zoo"][BACKEND]["dtypes"]["float32"][
            "max_abs_diff_step"] < 1e-3

    chart = out.with_suffix(".png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("tail\n") and "old table" not in text
    assert data["markdown_table"] in text
    assert all(f"| {name} |" in text for name in families)


def test_report_from_the_committed_results(tmp_path):
    """--report-only runs nothing: it reduces benchmarks/results/<family>.json."""
    out = tmp_path / "report.json"
    proc = zoo_benchmark("--report-only", "--out", str(out), "--readme", "none", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert {r["family"] for r in data["rows"]} == set(FAMILIES)
    bert = json.loads((ROOT / "benchmarks" / "results" / "bert.json").read_text())
    bert_rows = [r for r in data["rows"] if r["family"] == "bert"]
    # One row per (workload, dtype, backend): the float32 rows of bert_bfloat16.json
    # do not duplicate bert.json's, which comes first.
    assert len({(r["workload"], r["dtype"], r["backend"]) for r in bert_rows}) == len(bert_rows)
    for row in (r for r in bert_rows if r["dtype"] == "float32"):
        assert row["zoo_ms"] == bert["zoo"][row["backend"]]["ms"]
        assert row["peer_ms"] == bert["transformers"]["ms"]
    assert "| bert |" in proc.stdout
    # The machine: its 16-bit CPU features beside the measured float32 and bfloat16 peaks.
    machine = data["machine"]
    assert machine["peak_flops"] == data["peak_flops"] and data["peak_flops"]["bfloat16"] > 0
    features = machine["cpu_16bit_features"]
    assert features is None or set(features) == {"avx512_bf16", "amx_bf16", "amx_tile",
                                                 "amx_int8", "avx512_fp16"}
    heading = data["markdown_table"].splitlines()[0]
    assert heading.startswith("Machine: ") and "bfloat16" in heading
    assert f"CPU 16-bit features: {machine['cpu_16bit_text']}" in heading


def test_bad_inputs_are_one_clear_line(tmp_path):
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"schema": "zoo-benchmark/1", "rows": [')
    cases = {
        ("--compare", str(corrupt)): "is not valid JSON",
        ("--compare", str(write_json(tmp_path / "other.json", {"rows": []}))):
            "not a zoo benchmark result",
        ("--compare", str(tmp_path / "missing.json")): "does not exist",
        ("--out", str(tmp_path / "no" / "such" / "dir.json")): "does not exist",
        ("--family", "gpt"): "Unknown family gpt",
        ("--max-regression", "ten"): "not a fraction",
        ("--jobs", "0"): "--jobs 0",
        ("--dtypes", "float16"): "Unknown dtype float16",
    }
    for args, message in cases.items():
        proc = zoo_benchmark("--smoke", *args, timeout=120)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 1, (args, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("zoo: error: "), (args, proc.stderr)
        assert message in lines[0], (args, lines[0])
    assert not (tmp_path / "no").exists()


@pytest.mark.once
def test_benchmark_errors_are_zoo_errors():
    """Code that catches ZooError (the `zoo` command's one-line errors) catches these too."""
    from zoo.benchmarks.suite import BenchmarkError
    from zoo.core.errors import ZooError

    assert issubclass(BenchmarkError, ZooError)
