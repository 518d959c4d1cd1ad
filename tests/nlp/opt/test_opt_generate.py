"""Generation: greedy ids equal transformers' `generate`; samplers are
reproducible; stop tokens end rows; bad inputs give clear errors."""

import numpy as np
import pytest
import torch

from tests.nlp.opt.reference import make_hf_opt
from zoo.models import OPTCausalLM, Task
from zoo.samplers import BeamSampler, TopKSampler, TopPSampler

PROMPTS = [[2, 10, 11, 12, 13, 14, 15, 16], [2, 20, 21], [2, 30, 31, 32, 33]]


def left_padded(prompts, pad=1):
    length = max(map(len, prompts))
    ids = np.full((len(prompts), length), pad, "int32")
    mask = np.zeros((len(prompts), length), "int32")
    for row, prompt in enumerate(prompts):
        ids[row, length - len(prompt):] = prompt
        mask[row, length - len(prompt):] = 1
    return {"token_ids": ids, "padding_mask": mask}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import transformers

    folder = make_hf_opt(tmp_path_factory.mktemp("opt") / "hf", seed=5,
                         max_position_embeddings=128)
    reference = transformers.OPTForCausalLM.from_pretrained(folder).eval()
    return Task.from_preset(folder), reference


def test_greedy_matches_transformers(models):
    lm, reference = models
    assert isinstance(lm, OPTCausalLM)
    batch = left_padded(PROMPTS)
    with torch.no_grad():
        expected = reference.generate(
            input_ids=torch.tensor(batch["token_ids"]).long(),
            attention_mask=torch.tensor(batch["padding_mask"]).long(),
            max_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=1,
        )[:, batch["token_ids"].shape[1]:].numpy()
    ours = lm.generate(batch, max_new_tokens=32, stop_token_ids=())
    assert ours.shape == (3, 32)
    np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "compiled_loop"])
def test_stop_tokens_end_rows(models, streaming):
    # With a stream callback generate runs one compiled step per token; without
    # one (jax, tensorflow) the whole loop is a single compiled while loop.
    lm, _ = models
    batch = left_padded(PROMPTS)
    free = lm.generate(batch, max_new_tokens=12, stop_token_ids=())
    stop = int(free[0, 3])  # a token row 0 produces at step 3
    seen = []
    out = lm.generate(batch, max_new_tokens=12, stop_token_ids=[stop],
                      stream=seen.append if streaming else None)
    for row in range(3):
        hits = np.flatnonzero(free[row] == stop)
        if len(hits):
            end = hits[0]
            np.testing.assert_array_equal(out[row, : end + 1], free[row, : end + 1])
            # padding after the stop token (id 0: this model has no tokenizer)
            assert (out[row, end + 1:] == 0).all()
        else:
            np.testing.assert_array_equal(out[row], free[row])
    if streaming:
        assert len(seen) >= 4 and all(s.shape == (3,) for s in seen)
        np.testing.assert_array_equal(np.stack(seen, 1), out[:, : len(seen)])


@pytest.mark.parametrize("sampler", [TopKSampler(k=5), TopPSampler(p=0.8, temperature=0.7)])
def test_random_samplers_are_reproducible(models, sampler):
    lm, _ = models
    batch = left_padded(PROMPTS)
    a = lm.generate(batch, max_new_tokens=10, stop_token_ids=(), sampler=sampler, seed=3)
    b = lm.generate(batch, max_new_tokens=10, stop_token_ids=(), sampler=sampler, seed=3)
    c = lm.generate(batch, max_new_tokens=10, stop_token_ids=(), sampler=sampler, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_clear_errors(models):
    lm, _ = models
    with pytest.raises(ValueError, match="exceeds the model's context of 128"):
        lm.generate(left_padded([[2] + [5] * 120]), max_new_tokens=16)
    with pytest.raises(ValueError, match="empty prompt"):
        lm.generate({"token_ids": np.ones((1, 4), "int32"),
                     "padding_mask": np.zeros((1, 4), "int32")})
    with pytest.raises(ValueError, match="max_new_tokens"):
        lm.generate(left_padded(PROMPTS), max_new_tokens=0)


def test_beam_search_matches_transformers(models):
    lm, reference = models
    batch = left_padded(PROMPTS)
    with torch.no_grad():
        expected = reference.generate(
            input_ids=torch.tensor(batch["token_ids"]).long(),
            attention_mask=torch.tensor(batch["padding_mask"]).long(),
            max_new_tokens=16, do_sample=False, num_beams=3, eos_token_id=None,
            pad_token_id=1, early_stopping=False,
        )[:, batch["token_ids"].shape[1]:].numpy()
    ours = lm.generate(batch, max_new_tokens=16, stop_token_ids=(), sampler="beam")
    np.testing.assert_array_equal(ours, expected)


def test_beam_search_with_stop_token_returns_a_finished_beam(models):
    lm, _ = models
    batch = left_padded(PROMPTS)
    free = lm.generate(batch, max_new_tokens=10, stop_token_ids=(), sampler=BeamSampler(3))
    stop = int(free[1, 2])
    out = lm.generate(batch, max_new_tokens=10, stop_token_ids=[stop], sampler=BeamSampler(3))
    for row in out:
        hits = np.flatnonzero(row == stop)
        if len(hits):  # nothing but padding after the first stop token
            assert (row[hits[0] + 1:] == 0).all()
