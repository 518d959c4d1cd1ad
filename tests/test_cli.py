import json
import os
import subprocess
import sys

import pytest


def run_zoo(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "zoo.cli", *args], capture_output=True,
                          text=True, env=dict(os.environ), timeout=timeout)


def test_presets_and_info():
    result = run_zoo("presets", "--family", "bert")
    assert result.returncode == 0
    assert "all_minilm_l6_v2" in result.stdout and "bert_base_en_uncased" in result.stdout
    info = json.loads(run_zoo("info", "all_minilm_l6_v2").stdout)
    assert info["family"] == "bert" and info["sources"][0].startswith("pkg://")


def test_unknown_preset_is_one_clear_line():
    result = run_zoo("info", "bert_bsae_en")
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("zoo:")]
    assert len(lines) == 1 and "Did you mean bert_base_en" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.real_weights
def test_embed_rank_and_demo():
    result = run_zoo("embed", "--rank", "a cat sleeps on the sofa",
                     "stock markets fell sharply", "a kitten naps on the couch")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].endswith("a kitten naps on the couch")  # most similar first
    score = float(lines[0].split()[0])
    assert 0.5 < score <= 1.0
    demo = run_zoo("demo")
    assert demo.returncode == 0, demo.stderr
    assert "Most indoor plants need bright, indirect light." in demo.stdout
