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


def load_script(script: Path = SCRIPT):
    spec = importlib.util.spec_from_file_location(f"{script.stem}_script", script)
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


WHISPER_SCRIPT = ROOT / "scripts" / "convert_weights" / "convert_whisper.py"
WHISPER_CHECKS = {  # source kind -> (printed measure, default tolerance)
    "transformers": ("max abs difference vs transformers: ", 1e-4),
    "ctranslate2": ("max abs difference / max abs value vs ctranslate2: ", 1e-4),
}


@pytest.fixture(scope="module")
def whisper_sources(tmp_path_factory):
    """A small random transformers Whisper folder and its CTranslate2 conversion."""
    from tests.audio.whisper.reference import random_whisper

    root = tmp_path_factory.mktemp("whisper_sources")
    random_whisper(root / "transformers")
    sources = {"transformers": root / "transformers"}
    if importlib.util.find_spec("ctranslate2"):
        import ctranslate2

        ctranslate2.converters.TransformersConverter(str(root / "transformers")).convert(
            str(root / "ctranslate2"))
        sources["ctranslate2"] = root / "ctranslate2"
    return sources


@pytest.mark.parametrize("kind", ["transformers", "ctranslate2"])
def test_whisper_script_converts_verifies_and_writes_hub(whisper_sources, zoo_home, kind):
    if kind not in whisper_sources:
        pytest.skip("ctranslate2 is not installed")
    env = {**os.environ, "ZOO_HOME": str(zoo_home)}
    result = subprocess.run(
        [sys.executable, str(WHISPER_SCRIPT), str(whisper_sources[kind]), "--name", "tiny_w"],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    measure, tolerance = WHISPER_CHECKS[kind]
    diff = float(result.stdout.split(measure)[1].split()[0])
    assert diff <= tolerance
    assert (zoo_home / "presets" / "tiny_w" / "metadata.json").is_file()
    assert type(Task.from_preset("tiny_w")).__name__ == "WhisperAudioToText"


@pytest.mark.parametrize("kind", ["transformers", "ctranslate2"])
def test_whisper_script_fails_above_tolerance_and_writes_nothing(
        whisper_sources, zoo_home, monkeypatch, capsys, kind):
    if kind not in whisper_sources:
        pytest.skip("ctranslate2 is not installed")
    import zoo.audio.whisper.whisper_convert as convert

    original = convert.port_backbone

    def port_with_error(backbone, weights, prefix="model."):
        original(backbone, weights, prefix)
        bias = backbone.encoder_layers[0].self_attention.value_dense.bias
        bias.assign(bias + 0.01)  # a subtly wrong port

    monkeypatch.setattr(convert, "port_backbone", port_with_error)
    code = load_script(WHISPER_SCRIPT).main([str(whisper_sources[kind]), "--name", "broken"])
    measure, tolerance = WHISPER_CHECKS[kind]
    diff = float(capsys.readouterr().out.split(measure)[1].split()[0])
    assert code == 1 and diff > tolerance
    assert not (zoo_home / "presets" / "broken").exists()


def test_whisper_script_rejects_other_folders(tmp_path, zoo_home):
    (tmp_path / "empty").mkdir()
    assert load_script(WHISPER_SCRIPT).main([str(tmp_path / "empty"), "--name", "x"]) == 2
