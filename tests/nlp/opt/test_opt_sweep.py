"""Seeded sweep of random OPT configs made and saved by transformers.

Each config (see `opt_space`) is an `OPTForCausalLM` with random weights
(layer norms and biases perturbed), saved with `save_pretrained`
(safetensors), converted by `from_preset(folder)` and compared with
transformers: logits of real tokens within 1e-4 (float32, as
`test_opt_parity.py`) with left or right padding, and greedy generation
equal to transformers' greedy `generate`. Options zoo does not support must
give zoo's own ConversionError, never wrong numbers. Sweep size:
`tests/sweeps.py` (`ZOO_SWEEP_FULL=1` runs all configs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.nlp.opt.reference import make_hf_opt, random_batch
from tests.sweeps import (assert_close, choice, converted_or_refused, not_multiple_of_8, odd_int,
                          sweep_params)
from zoo.models import OPTCausalLM, Task

LOGIT_ATOL = 1e-4  # as test_opt_parity.py
NEW_TOKENS = 4  # greedy steps compared with transformers


def opt_space(rng: np.random.Generator) -> dict[str, Any]:
    """One random OPT config: both layer-norm placements, with and without the
    embedding projection, biases or not, odd vocabularies and head counts."""
    heads = choice(rng, (1, 2, 3, 5, 7))
    hidden = heads * choice(rng, (2, 3, 4, 5, 8))
    max_positions = odd_int(rng, 11, 41)
    pre_ln = bool(rng.integers(2))
    return {
        "vocab_size": choice(rng, (37, 61, 97, 501, 1023, odd_int(rng, 29, 300))),
        "num_attention_heads": heads,
        "hidden_size": hidden,
        "num_hidden_layers": int(rng.integers(1, 5)),
        "ffn_dim": not_multiple_of_8(rng, 5, 99),
        "max_position_embeddings": max_positions,
        "do_layer_norm_before": pre_ln,
        "word_embed_proj_dim": choice(rng, (hidden, hidden, int(rng.integers(3, 21)))),
        "enable_bias": bool(rng.random() < 0.75),
        "_remove_final_layer_norm": bool(pre_ln and rng.random() < 0.25),
        # inputs
        "batch": int(rng.integers(1, 5)),
        "length": int(rng.integers(2, min(max_positions - NEW_TOKENS, 16) + 1)),
        "left_pad": bool(rng.integers(2)),
    }


INPUT_KEYS = ("batch", "length", "left_pad", "seed")


def make_reference(folder: Path, config: dict[str, Any]) -> Any:
    """Save the config's `OPTForCausalLM` into `folder`; return it reloaded."""
    import transformers

    overrides = {k: v for k, v in config.items() if k not in INPUT_KEYS}
    make_hf_opt(folder, seed=config["seed"], **overrides)
    return transformers.OPTForCausalLM.from_pretrained(folder).eval()


def reference_logits(reference: Any, batch: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return reference(input_ids=torch.tensor(batch["token_ids"]).long(),
                         attention_mask=torch.tensor(batch["padding_mask"]).long()
                         ).logits.numpy()


def check_greedy(lm: OPTCausalLM, reference: Any, batch: dict[str, np.ndarray],
                 config: dict[str, Any]) -> None:
    """zoo's greedy ids equal transformers' until a step where the reference's
    two best logits are closer than the logit tolerance (a tie either may break)."""
    with torch.no_grad():
        out = reference.generate(
            input_ids=torch.tensor(batch["token_ids"]).long(),
            attention_mask=torch.tensor(batch["padding_mask"]).long(),
            max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None, pad_token_id=1,
            output_scores=True, return_dict_in_generate=True)
    expected = out.sequences[:, batch["token_ids"].shape[1]:].numpy()
    scores = np.stack([s.numpy() for s in out.scores], 1)  # (batch, steps, vocab)
    ours = np.asarray(lm.generate(batch, max_new_tokens=NEW_TOKENS, stop_token_ids=()))
    assert ours.shape == expected.shape
    for row in range(len(ours)):
        for step in range(NEW_TOKENS):
            if ours[row, step] != expected[row, step]:
                gap = scores[row, step, expected[row, step]] - scores[row, step, ours[row, step]]
                assert gap < LOGIT_ATOL, (f"greedy row {row} step {step}: {ours[row]} != "
                                          f"{expected[row]} (logit gap {gap:.3g}) for {config}")
                break


@pytest.mark.parametrize("config", sweep_params("opt", opt_space))
def test_random_config_matches_transformers(config, tmp_path, zoo_home):
    reference = make_reference(tmp_path / "hf", config)
    lm = Task.from_preset(str(tmp_path / "hf"))
    assert isinstance(lm, OPTCausalLM)
    assert lm.backbone.normalize_first == config["do_layer_norm_before"]
    batch = random_batch(config["batch"], config["length"], config["vocab_size"],
                         seed=config["seed"], left_pad=config["left_pad"])
    real = batch["padding_mask"].astype(bool)
    logits = np.asarray(lm.predict_on_batch(batch))
    assert_close(logits[real], reference_logits(reference, batch)[real], LOGIT_ATOL,
                 "logits", config)
    if config["left_pad"]:  # generation continues after the last token: left padding
        check_greedy(lm, reference, batch, config)


#: transformers options zoo's OPT may not support: each either converts to
#: the same numbers or fails with the converter's own ConversionError
UNSUPPORTED = {
    "gelu": dict(activation_function="gelu"),
    "silu": dict(activation_function="silu"),
    "no_affine_layer_norm": dict(layer_norm_elementwise_affine=False),
    "untied_lm_head": dict(tie_word_embeddings=False),
}


@pytest.mark.parametrize("option", sorted(UNSUPPORTED))
def test_unsupported_options_are_a_clean_error_or_exact(option, tmp_path, zoo_home):
    config = {"seed": 3, "vocab_size": 53, "num_attention_heads": 3, "hidden_size": 15,
              "num_hidden_layers": 2, "ffn_dim": 19, "max_position_embeddings": 17,
              "word_embed_proj_dim": 15, "batch": 3, "length": 9, "left_pad": True,
              **UNSUPPORTED[option]}
    reference = make_reference(tmp_path / "hf", config)
    if option == "untied_lm_head":  # make the head really differ from the embedding
        assert reference.lm_head.weight is not reference.model.decoder.embed_tokens.weight
        with torch.no_grad():
            reference.lm_head.weight.add_(0.5)
        reference.save_pretrained(tmp_path / "hf")
    lm = converted_or_refused(lambda: Task.from_preset(str(tmp_path / "hf")), zoo_home)
    if lm is None:
        return
    batch = random_batch(3, 9, 53, seed=3)
    real = batch["padding_mask"].astype(bool)
    assert_close(np.asarray(lm.predict_on_batch(batch))[real],
                 reference_logits(reference, batch)[real], LOGIT_ATOL, "logits", config)
