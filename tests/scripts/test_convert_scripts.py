import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.nlp.bert.reference import make_hf_bert
from zoo.models import BertTextClassifier, Task

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "convert_weights" / "convert_bert.py"


def load_script():
    spec = importlib.util.spec_from_file_location("convert_bert_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("architecture", ["BertForSequenceClassification", "BertForMaskedLM"])
def test_script_converts_verifies_and_writes_hub(tmp_path, zoo_home, architecture):
    folder = make_hf_bert(tmp_path / "hf", architecture)
    env = {**os.environ, "ZOO_HOME": str(zoo_home)}
    result = subprocess.run([sys.executable, str(SCRIPT), str(folder), "--name", "tiny"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    diff = float(result.stdout.split("max abs difference vs transformers: ")[1].split()[0])
    assert diff <= 1e-4
    assert (zoo_home / "presets" / "tiny" / "metadata.json").is_file()
    task = Task.from_preset("tiny")  # the hub name now resolves
    assert type(task).__name__ == architecture.replace("ForSequenceClassification",
                                                       "TextClassifier").replace(
        "ForMaskedLM", "MaskedLM")


def test_script_fails_above_tolerance_and_writes_nothing(tmp_path, zoo_home, monkeypatch):
    folder = make_hf_bert(tmp_path / "hf", "BertForSequenceClassification")
    import zoo.nlp.bert.bert_convert as convert

    original = convert.port_classifier

    def port_with_error(task: BertTextClassifier, weights) -> None:
        original(task, weights)
        bias = task.output_dense.bias
        bias.assign(bias + 0.01)  # a subtly wrong port

    monkeypatch.setattr(convert, "port_classifier", port_with_error)
    assert load_script().main([str(folder), "--name", "broken"]) == 1
    assert not (zoo_home / "presets" / "broken").exists()


def test_script_rejects_non_transformers_folder(tmp_path, zoo_home):
    (tmp_path / "empty").mkdir()
    assert load_script().main([str(tmp_path / "empty"), "--name", "x"]) == 2


def test_opt_script_converts_and_verifies(tmp_path, zoo_home):
    from tests.nlp.opt.reference import VARIANTS, make_hf_opt

    folder = make_hf_opt(tmp_path / "hf", **VARIANTS["post_ln_projection"])
    script = ROOT / "scripts" / "convert_weights" / "convert_opt.py"
    env = {**os.environ, "ZOO_HOME": str(zoo_home)}
    result = subprocess.run([sys.executable, str(script), str(folder), "--name", "tiny_opt"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    diff = float(result.stdout.split("max abs difference vs transformers: ")[1].split()[0])
    assert diff <= 1e-4
    assert type(Task.from_preset("tiny_opt")).__name__ == "OPTCausalLM"
