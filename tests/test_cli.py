"""Every `zoo` command, run as a subprocess on small or offline presets.

Each test checks what the command prints or writes against the reference
library or the in-process API, and that failures are one `zoo: error:` line
with no traceback.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BACKEND = keras.backend.backend()


def run_zoo(*args, timeout=600, cwd=ROOT):
    """`zoo ARGS` with the test's environment (ZOO_HOME included) and backend."""
    return subprocess.run([sys.executable, "-m", "zoo.cli", "--backend", BACKEND, *args],
                          capture_output=True, text=True, env=dict(os.environ), timeout=timeout,
                          cwd=cwd)


def zoo_here(capsys, *args: str) -> subprocess.CompletedProcess:
    """`zoo ARGS` run in this process (zoo.cli.main), as a finished process:
    the command's own code without a 10 s interpreter start per call (the
    entry point itself is tested by run_zoo)."""
    from zoo.cli import main

    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, captured.out, captured.err)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("zoo: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def sample_photo() -> Path:
    from zoo.data import demo_media

    return demo_media("grace_hopper.jpg")


# The end-to-end commands below run on one backend each in `make test`
# (`once(on=...)`, the fastest backend for each, measured): each is a
# subprocess pipeline (load, run, write, check against the reference) whose
# backend-specific parts (conversion, generation, transcription, detection,
# denoising) are tested on every backend by the families' own tests. A plain
# pytest run runs them on its backend.
#
# --------------------------------------------------------------------------- #
# Catalog commands (no Keras import).
# --------------------------------------------------------------------------- #


def test_presets_info_and_unknown_name():
    result = run_zoo("presets", "--family", "bert")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert set(rows) >= {"all_minilm_l6_v2", "bert_base_en_uncased"}
    assert rows["all_minilm_l6_v2"][3] == "yes"  # the installed package works offline
    assert "yolov8s_fall" not in rows

    info = run_zoo("info", "whisper_tiny_en")
    assert info.returncode == 0, info.stderr
    entry = json.loads(info.stdout)
    assert entry["family"] == "whisper" and entry["sources"][0].startswith("pkg://")

    line = assert_one_line_error(run_zoo("info", "bert_bsae_en"), "bert_bsae_en")
    assert "Did you mean bert_base_en" in line
    assert_one_line_error(run_zoo("presets", "--family", "gpt"), "gpt", "bert")


def test_debug_shows_the_trace():
    result = run_zoo("--debug", "info", "bert_bsae_en")
    assert result.returncode != 0 and "Traceback" in result.stderr


# --------------------------------------------------------------------------- #
# pull, convert, upload, generate, text-to-image.
# --------------------------------------------------------------------------- #


@pytest.mark.real_weights
def test_pull_converts_into_the_hub(zoo_home):
    result = run_zoo("pull", "all_minilm_l6_v2")
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip().split(": ", 1)[1])
    assert path.parent == zoo_home / "presets"
    assert (path / "config.json").is_file() and (path / "metadata.json").is_file()


@pytest.fixture(scope="module")
def tiny_opt_folder(tmp_path_factory):
    """A tiny transformers OPT with a trained byte-level BPE tokenizer."""
    pytest.importorskip("transformers")
    from tests.nlp.opt.reference import make_hf_opt
    from tests.nlp.opt.test_opt_tokenizer import OPT_SPECIALS, OPT_TOKENIZER_CONFIG
    from tests.tokenizers.test_byte_pair import train_byte_level_bpe

    folder = tmp_path_factory.mktemp("opt_cli") / "hf"
    folder.mkdir()
    vocab_file, _ = train_byte_level_bpe(folder, OPT_SPECIALS, vocab_size=400)
    make_hf_opt(folder, seed=11, vocab_size=len(json.loads(vocab_file.read_text())),
                max_position_embeddings=128)
    (folder / "tokenizer_config.json").write_text(json.dumps(OPT_TOKENIZER_CONFIG))
    return folder


@pytest.mark.once(on="tensorflow")
def test_convert_generate_and_upload(tiny_opt_folder, zoo_home, tmp_path):
    import torch
    import transformers

    result = run_zoo("convert", str(tiny_opt_folder), "--name", "tiny_opt")
    assert result.returncode == 0, result.stderr
    diff = float(result.stdout.split("max abs difference vs transformers: ")[1].split()[0])
    assert diff <= 1e-4
    assert (zoo_home / "presets" / "tiny_opt" / "metadata.json").is_file()

    prompt = "the cat sat"
    result = run_zoo("generate", prompt, "--preset", "tiny_opt", "--max-new-tokens", "10")
    assert result.returncode == 0, result.stderr
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tiny_opt_folder))
    model = transformers.OPTForCausalLM.from_pretrained(tiny_opt_folder).eval()
    with torch.no_grad():
        ids = model.generate(**tokenizer(prompt, return_tensors="pt"), max_new_tokens=10,
                             do_sample=False, pad_token_id=1)
    assert result.stdout.strip() == tokenizer.decode(ids[0], skip_special_tokens=True).strip()

    # Converting a zoo preset is refused; an embedder command on an LM names the problem.
    assert_one_line_error(run_zoo("convert", str(zoo_home / "presets" / "tiny_opt"),
                                  "--name", "again"), "already a zoo preset")
    assert_one_line_error(run_zoo("embed", "hello", "--preset", "tiny_opt"), "no embed()")

    # upload validates before sending: a folder that is not a preset, then a valid
    # preset with the network off (the error names the connection, in one line).
    (tmp_path / "not_a_preset").mkdir()
    assert_one_line_error(run_zoo("upload", str(tmp_path / "not_a_preset"), "hf://org/repo"),
                          "not a zoo preset")
    assert_one_line_error(run_zoo("upload", str(tmp_path / "missing"), "hf://org/repo"),
                          "is not a directory")
    result = run_zoo("upload", str(zoo_home / "presets" / "tiny_opt"), "not-a-handle")
    assert_one_line_error(result, "not-a-handle")


@pytest.fixture(scope="module")
def tiny_sd_folder(tmp_path_factory):
    pytest.importorskip("diffusers")
    from tests.diffusion.stable_diffusion.tiny_pipeline import make_pipeline

    root = tmp_path_factory.mktemp("tiny_sd_cli")
    make_pipeline(root)
    return root / "diffusers"


@pytest.mark.once(on="torch")
def test_convert_and_text_to_image(tiny_sd_folder, zoo_home, tmp_path):
    from PIL import Image

    from zoo.models import StableDiffusion

    result = run_zoo("convert", str(tiny_sd_folder), "--name", "tiny_sd")
    assert result.returncode == 0, result.stderr
    diff = float(result.stdout.split("max abs difference vs diffusers/transformers: ")[1]
                 .split()[0])
    assert diff <= 1e-4

    out = tmp_path / "image.png"
    args = ("a red square", "--preset", "tiny_sd", "--out", str(out), "--steps", "2",
            "--seed", "7", "--scheduler", "ddim")
    result = run_zoo("text-to-image", *args)
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    written = np.asarray(Image.open(out))
    # The command passes its options through: the API gives the same image.
    expected = StableDiffusion.from_preset("tiny_sd").text_to_image(
        "a red square", num_steps=2, seed=7, scheduler="ddim")[0]
    assert written.shape == expected.shape and written.dtype == np.uint8
    assert np.abs(written.astype(int) - expected.astype(int)).max() <= 1

    assert_one_line_error(run_zoo("text-to-image", "x", "--preset", "tiny_sd", "--out",
                                  str(tmp_path / "image.txt")), ".png")
    assert_one_line_error(run_zoo("text-to-image", "x", "--preset", "tiny_sd", "--out",
                                  str(out), "--steps", "0"), "num_steps")


# --------------------------------------------------------------------------- #
# Real weights shipped in installed packages.
# --------------------------------------------------------------------------- #


@pytest.mark.real_weights
@pytest.mark.once(on="tensorflow")
def test_embed_json_lines_and_rank():
    result = run_zoo("embed", "a cat sleeps on the sofa", "stock markets fell sharply")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["text"] for line in lines] == ["a cat sleeps on the sofa",
                                                "stock markets fell sharply"]
    vectors = np.array([line["embedding"] for line in lines])
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    result = run_zoo("embed", "--rank", "a cat sleeps on the sofa",
                     "stock markets fell sharply", "a kitten naps on the couch")
    assert result.returncode == 0, result.stderr
    ranked = result.stdout.strip().splitlines()
    assert ranked[0].endswith("a kitten naps on the couch")  # most similar first
    assert float(ranked[0].split()[0]) > float(ranked[1].split()[0])


@pytest.mark.real_weights
@pytest.mark.once(on="jax")
def test_transcribe_vtt_and_json(tmp_path, capsys):
    clip = ROOT / "tests" / "data" / "speech" / "fox.wav"
    result = run_zoo("transcribe", str(clip), "--vtt")  # the `zoo` entry point, once
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "WEBVTT" and " --> " in lines[2]
    assert "quick brown fox" in result.stdout.lower()

    out = tmp_path / "fox.json"  # the rest in this process (10 s less a call)
    result = zoo_here(capsys, "transcribe", str(clip), "--json", "--out", str(out))
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["language"] == "en" and "quick brown fox" in data["text"].lower()
    assert data["segments"][0]["start"] == 0.0

    assert_one_line_error(zoo_here(capsys, "transcribe", str(tmp_path / "none.wav")),
                          "none.wav")
    assert_one_line_error(zoo_here(capsys, "transcribe", str(clip), "--srt", "--out",
                                   str(tmp_path / "x.vtt")), ".srt")


@pytest.mark.real_weights
@pytest.mark.once
def test_transcribe_several_files_a_folder_and_vad(tmp_path, capsys):
    """Several inputs: `==> NAME <==` blocks on stdout, or one file each in
    the --out folder; a folder gives its recordings; --vad and --batch-size
    reach transcribe (same text as the Python call)."""
    from zoo.models import WhisperAudioToText

    speech = ROOT / "tests" / "data" / "speech"
    folder = tmp_path / "calls"
    folder.mkdir()
    for name in ("fox.wav", "weather.wav"):
        (folder / name).write_bytes((speech / name).read_bytes())
    (folder / "notes.txt").write_text("not audio")  # not a media file: left out
    result = zoo_here(capsys, "transcribe", str(folder), str(speech / "name.mp3"),
                      "--batch-size", "3")
    assert result.returncode == 0, result.stderr
    blocks = result.stdout.split("==> ")[1:]
    assert [b.split(" <==")[0] for b in blocks] == [
        str(folder / "fox.wav"), str(folder / "weather.wav"), str(speech / "name.mp3")]
    whisper = WhisperAudioToText.from_preset("whisper_tiny_en")
    expected = whisper.transcribe([str(folder / "fox.wav"), str(folder / "weather.wav"),
                                   str(speech / "name.mp3")])
    assert [b.split("<==\n")[1] for b in blocks] == [r["text"].strip() + "\n" for r in expected]

    out = tmp_path / "subtitles"
    result = zoo_here(capsys, "transcribe", str(folder), "--srt", "--vad", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["fox.srt", "weather.srt"]
    vad = whisper.transcribe(str(folder / "weather.wav"), vad=True)
    assert vad["text"].strip().split()[-1] in (out / "weather.srt").read_text()

    assert_one_line_error(zoo_here(capsys, "transcribe", str(tmp_path / "empty.d")), "empty.d")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(zoo_here(capsys, "transcribe", str(tmp_path / "empty")),
                          "no audio or video files")
    assert_one_line_error(zoo_here(capsys, "transcribe", str(folder), "--out",
                                   str(folder / "fox.wav")), "is a file")
    assert_one_line_error(zoo_here(capsys, "transcribe", str(folder), "--batch-size", "0"),
                          "--batch-size 0")


@pytest.mark.real_weights
@pytest.mark.once(on="tensorflow")
def test_detect_writes_the_annotated_image(tmp_path):
    from PIL import Image

    from zoo.models import Task

    out = tmp_path / "annotated.png"
    result = run_zoo("detect", str(sample_photo()), "--out", str(out))
    assert result.returncode == 0, result.stderr
    found = Task.from_preset("yolov8s_fall").predict(str(sample_photo()))[0]
    printed = [line.split() for line in result.stdout.splitlines()[:-1]]
    assert [row[0] for row in printed] == list(found["class_names"])
    np.testing.assert_allclose([float(row[1]) for row in printed], found["scores"], atol=2e-3)
    image = Image.open(out)
    assert image.size == Image.open(sample_photo()).size
    assert np.asarray(image.convert("RGB")).tobytes() != np.asarray(
        Image.open(sample_photo()).convert("RGB")).tobytes()  # boxes were drawn

    assert_one_line_error(run_zoo("detect", str(sample_photo()), "--out",
                                  str(tmp_path / "no" / "dir.png")), "does not exist")
    not_image = tmp_path / "notes.txt"
    not_image.write_text("hello")
    assert_one_line_error(run_zoo("detect", str(not_image), "--out", str(out)), "notes.txt")


@pytest.mark.once(on="torch")
def test_quantize_writes_an_int8_preset(zoo_home, tmp_path):
    from zoo.models import OPTBackbone, OPTCausalLM

    keras.utils.set_random_seed(3)
    lm = OPTCausalLM(OPTBackbone(vocabulary_size=500, num_layers=2, num_heads=2, hidden_dim=64,
                                 intermediate_dim=128, max_sequence_length=32))
    lm.save_to_preset(tmp_path / "lm")
    result = run_zoo("quantize", str(tmp_path / "lm"), "--name", "lm_int8")
    assert result.returncode == 0, result.stderr
    assert "int8 weights" in result.stdout
    loaded = OPTCausalLM.from_preset(zoo_home / "presets" / "lm_int8")
    assert loaded.backbone.get_layer("token_embedding").quantization_mode == "int8"
    lm.quantize("int8")  # the same quantization, here
    ids = np.array([[5, 9, 13, 2]], "int32")
    inputs = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    np.testing.assert_array_equal(loaded.generate(inputs, max_new_tokens=5, stop_token_ids=()),
                                  lm.generate(inputs, max_new_tokens=5, stop_token_ids=()))
    assert_one_line_error(run_zoo("quantize", str(tmp_path / "lm"), "--name", "lm_int8"),
                          "already exists")
    # A model Keras cannot quantize (only convolutions): one line, nothing written.
    from zoo.models import YOLOV8Backbone, YOLOV8Detector

    YOLOV8Detector(YOLOV8Backbone(stackwise_channels=[8, 16, 32, 32, 64],
                                  stackwise_depth=[1, 1, 1, 1]),
                   num_classes=2).save_to_preset(tmp_path / "yolo")
    assert_one_line_error(run_zoo("quantize", str(tmp_path / "yolo"), "--name", "yolo_int8"),
                          "no layer that Keras quantizes")
    assert not (zoo_home / "presets" / "yolo_int8").exists()


def test_convert_quantize_writes_the_verified_model_quantized(tiny_opt_folder, zoo_home):
    from zoo.models import OPTCausalLM

    result = run_zoo("convert", str(tiny_opt_folder), "--name", "tiny_opt_int8",
                     "--quantize", "int8")
    assert result.returncode == 0, result.stderr
    assert "max abs difference vs transformers" in result.stdout  # verified in float first
    assert "int8 weights" in result.stdout
    loaded = OPTCausalLM.from_preset(zoo_home / "presets" / "tiny_opt_int8")
    assert loaded.backbone.get_layer("token_embedding").quantization_mode == "int8"
    expected = OPTCausalLM.from_preset(tiny_opt_folder)  # converted here, then quantized
    expected.quantize("int8")
    ids = np.array([[2, 9, 13, 40]], "int32")
    inputs = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    np.testing.assert_array_equal(loaded.generate(inputs, max_new_tokens=5, stop_token_ids=()),
                                  expected.generate(inputs, max_new_tokens=5, stop_token_ids=()))


@pytest.mark.once
def test_export_writes_onnx_that_equals_the_preset(tmp_path):
    """`zoo export` on a preset folder: the ONNX file runs in onnxruntime and
    equals the model; a second run without --overwrite, and an unknown graph,
    fail in one line."""
    import onnxruntime

    from zoo.models import BertBackbone, BertTextClassifier

    keras.utils.set_random_seed(5)
    task = BertTextClassifier(BertBackbone(vocabulary_size=200, num_layers=1, num_heads=2,
                                           hidden_dim=16, intermediate_dim=32,
                                           max_sequence_length=16), num_classes=4)
    task.save_to_preset(tmp_path / "clf")
    out = tmp_path / "clf_onnx"
    result = run_zoo("export", str(tmp_path / "clf"), "--format", "onnx", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["classifier:", str(out / "classifier.onnx")]
    ids = np.array([[2, 50, 7, 9, 0], [3, 11, 0, 0, 0]], "int32")
    inputs = {"token_ids": ids, "segment_ids": np.zeros_like(ids),
              "padding_mask": (ids > 0).astype("int32")}
    session = onnxruntime.InferenceSession(str(out / "classifier.onnx"))
    np.testing.assert_allclose(session.run(["logits"], inputs)[0], task.predict(inputs),
                               atol=1e-4)
    assert_one_line_error(run_zoo("export", str(tmp_path / "clf"), "--out", str(out)),
                          "already exists", "--overwrite")
    assert_one_line_error(run_zoo("export", str(tmp_path / "clf"), "--out", str(tmp_path / "x"),
                                  "--graph", "unet"), "no graph ['unet']", "classifier")
    assert not (tmp_path / "x").exists()
