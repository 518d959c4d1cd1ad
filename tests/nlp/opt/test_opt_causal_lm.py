"""OPTCausalLM end to end on text: a tiny transformers OPT with a trained
byte-level BPE vocabulary, converted with its tokenizer."""

import json

import keras
import numpy as np
import pytest
import torch

from tests.nlp.opt.reference import make_hf_opt
from tests.nlp.opt.test_opt_tokenizer import OPT_SPECIALS, OPT_TOKENIZER_CONFIG
from tests.tokenizers.test_byte_pair import train_byte_level_bpe
from zoo.models import OPTCausalLM, OPTCausalLMPreprocessor, Task

TEXT = ["the cat sat on the mat and looked at the dog",
        "a dog ran in the park with a red ball",
        "birds sing in the morning when the sun comes up"]


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("opt_text") / "hf"
    folder.mkdir()
    vocab_file, _ = train_byte_level_bpe(folder, OPT_SPECIALS, vocab_size=400)
    vocab_size = len(json.loads(vocab_file.read_text()))
    make_hf_opt(folder, seed=11, vocab_size=vocab_size, max_position_embeddings=128)
    (folder / "tokenizer_config.json").write_text(json.dumps(OPT_TOKENIZER_CONFIG))
    return folder


def test_converted_with_tokenizer_and_generates_like_transformers(hf_folder, zoo_home):
    import transformers

    lm = Task.from_preset(hf_folder)
    assert isinstance(lm, OPTCausalLM)
    assert isinstance(lm.preprocessor, OPTCausalLMPreprocessor)
    prompts = ["the cat sat", "birds sing in the morning"]
    ours = lm.generate(prompts, max_new_tokens=12, stop_token_ids=())

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(hf_folder), padding_side="left")
    model = transformers.OPTForCausalLM.from_pretrained(hf_folder).eval()
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=12, do_sample=False, eos_token_id=None,
                             pad_token_id=1)
    expected = tokenizer.batch_decode(out, skip_special_tokens=True)
    assert ours == expected
    assert lm.generate("the cat sat", max_new_tokens=12, stop_token_ids=()) == expected[0]


def test_fit_on_strings_lowers_loss(hf_folder, zoo_home):
    lm = OPTCausalLM.from_preset(hf_folder)
    lm.compile(optimizer=keras.optimizers.Adam(3e-3), loss=lm.loss, weighted_metrics=[])
    before = lm.evaluate(TEXT, verbose=0)
    history = lm.fit(TEXT * 10, batch_size=1, epochs=1, verbose=0)  # 30 steps
    assert len(history.history["loss"]) == 1
    assert lm.evaluate(TEXT, verbose=0) < 0.8 * before


def test_preprocessor_masks_padding_in_the_loss(hf_folder, zoo_home):
    pre = OPTCausalLMPreprocessor.from_preset(hf_folder, padding="longest")
    texts = ["the cat", "a dog ran in the park"]
    x, y, weights = pre(texts)
    assert x["token_ids"][0, 0] == 2  # </s> first, as transformers' OPT tokenizer
    np.testing.assert_array_equal(y[:, :-1], x["token_ids"][:, 1:])
    # `</s> text </s>` has n tokens: n - 1 inputs with a label; padding weighs 0
    lengths = np.array([len(ids) + 2 for ids in pre.tokenizer.tokenize(texts)])
    positions = np.arange(weights.shape[1])[None, :]
    np.testing.assert_array_equal(weights, (positions < lengths[:, None] - 1).astype("float32"))
    assert (weights <= x["padding_mask"]).all()
    assert weights[0].sum() < weights[1].sum()


def test_text_errors(hf_folder, zoo_home):
    lm = OPTCausalLM.from_preset(hf_folder)
    with pytest.raises(ValueError, match="prompt is empty"):
        lm.generate(["fine", ""])
    with pytest.raises(TypeError, match="not a string"):
        lm.generate(["fine", 42])
    with pytest.raises(ValueError, match="exceeds the model's context"):
        lm.generate("the cat " * 200, max_new_tokens=4)
