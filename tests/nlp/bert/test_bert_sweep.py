"""Seeded sweep of random BERT configs made and saved by transformers.

Each config (see `bert_space`) is built by transformers with random weights
(layer norms and biases perturbed), saved with `save_pretrained`
(safetensors), converted by `from_preset(folder)` and compared with
transformers on random ids with ragged padding, at the tolerance of
`test_bert_parity.py` (1e-4 max abs on real tokens, float32). Options zoo
does not support must give zoo's own ConversionError, never wrong numbers.
Sweep size: `tests/sweeps.py` (`ZOO_SWEEP_FULL=1` runs all configs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.nlp.bert.reference import make_hf_bert
from tests.sweeps import (assert_close, choice, converted_or_refused, not_multiple_of_8, odd_int,
                          sweep_params)
from zoo.models import BertBackbone, BertMaskedLM, BertTextClassifier, Task

LOGIT_ATOL = 1e-4  # as test_bert_parity.py

ARCHITECTURES = ("BertModel", "BertForSequenceClassification", "BertForMaskedLM",
                 "BertForPreTraining")
#: hidden_act values zoo's converter maps (the rest must be a ConversionError)
SUPPORTED_ACTIVATIONS = ("gelu", "relu")


def bert_space(rng: np.random.Generator) -> dict[str, Any]:
    """One random BERT config: odd vocabularies and head counts, unaligned MLP
    widths, few layers, short odd position tables, 1-3 segment types."""
    heads = choice(rng, (1, 2, 3, 5, 7))
    max_positions = odd_int(rng, 9, 41)
    return {
        "architecture": choice(rng, ARCHITECTURES),
        "vocab_size": choice(rng, (37, 61, 97, 501, 1023, odd_int(rng, 29, 300))),
        "num_attention_heads": heads,
        "hidden_size": heads * choice(rng, (2, 3, 4, 5, 8)),
        "num_hidden_layers": int(rng.integers(1, 5)),
        "intermediate_size": not_multiple_of_8(rng, 5, 99),
        "max_position_embeddings": max_positions,
        "type_vocab_size": int(rng.integers(1, 4)),
        "layer_norm_eps": choice(rng, (1e-12, 1e-7, 1e-5)),
        "hidden_act": choice(rng, SUPPORTED_ACTIVATIONS),
        "num_labels": int(rng.integers(1, 6)),
        # inputs
        "batch": int(rng.integers(1, 5)),
        "length": int(rng.integers(2, max_positions + 1)),
    }


INPUT_KEYS = ("architecture", "batch", "length", "seed")


def make_reference(folder: Path, config: dict[str, Any]) -> Any:
    """Save the config's transformers model into `folder`; return it reloaded."""
    import transformers

    overrides = {k: v for k, v in config.items() if k not in INPUT_KEYS}
    make_hf_bert(folder, config["architecture"], seed=config["seed"], **overrides)
    cls = getattr(transformers, config["architecture"])
    return cls.from_pretrained(folder).eval()


def random_inputs(config: dict[str, Any]) -> dict[str, np.ndarray]:
    """Random ids, every segment type, ragged right padding (row 0 full length)."""
    rng = np.random.default_rng(config["seed"] + 1000)
    batch, length = config["batch"], config["length"]
    lengths = np.concatenate([[length], rng.integers(1, length + 1, size=batch - 1)])
    padding_mask = (np.arange(length)[None, :] < lengths[:, None]).astype("int32")
    token_ids = rng.integers(1, config["vocab_size"], size=(batch, length))
    segment_ids = rng.integers(0, config["type_vocab_size"], size=(batch, length))
    return {"token_ids": np.where(padding_mask == 1, token_ids, 0).astype("int32"),
            "segment_ids": np.where(padding_mask == 1, segment_ids, 0).astype("int32"),
            "padding_mask": padding_mask}


def reference_outputs(reference: Any, batch: dict[str, np.ndarray]) -> Any:
    with torch.no_grad():
        return reference(input_ids=torch.tensor(batch["token_ids"]).long(),
                         token_type_ids=torch.tensor(batch["segment_ids"]).long(),
                         attention_mask=torch.tensor(batch["padding_mask"]).long(),
                         output_hidden_states=True)


@pytest.mark.parametrize("config", sweep_params("bert", bert_space))
def test_random_config_matches_transformers(config, tmp_path, zoo_home):
    reference = make_reference(tmp_path / "hf", config)
    architecture = config["architecture"]
    batch = random_inputs(config)
    real = batch["padding_mask"].astype(bool)
    expected = reference_outputs(reference, batch)
    if architecture == "BertModel":
        model = BertBackbone.from_preset(str(tmp_path / "hf"))
        backbone = model
    else:
        model = Task.from_preset(str(tmp_path / "hf"))
        backbone = model.backbone
    assert backbone.num_heads == config["num_attention_heads"]
    assert backbone.num_segments == config["type_vocab_size"]
    ours = backbone.predict_on_batch(batch)
    assert_close(np.asarray(ours["sequence_output"])[real],
                 expected.hidden_states[-1].numpy()[real], LOGIT_ATOL, "sequence_output",
                 config)
    if architecture == "BertModel":
        assert_close(ours["pooled_output"], expected.pooler_output.numpy(), LOGIT_ATOL,
                     "pooled_output", config)
    elif architecture == "BertForSequenceClassification":
        assert isinstance(model, BertTextClassifier)
        assert model.num_classes == config["num_labels"]
        assert_close(model.predict_on_batch(batch), expected.logits.numpy(), LOGIT_ATOL,
                     "classifier logits", config)
    else:
        assert isinstance(model, BertMaskedLM)
        positions = np.tile(np.arange(config["length"], dtype="int32"), (config["batch"], 1))
        logits = np.asarray(model.predict_on_batch({**batch, "mask_positions": positions}))
        ref_logits = (expected.logits if architecture == "BertForMaskedLM"
                      else expected.prediction_logits).numpy()
        assert_close(logits[real], ref_logits[real], LOGIT_ATOL, "masked-LM logits", config)


#: transformers options zoo's BERT may not support: each either converts to
#: the same numbers or fails with the converter's own ConversionError
UNSUPPORTED = {
    "silu": dict(hidden_act="silu"),
    "gelu_new": dict(hidden_act="gelu_new"),
    "tanh": dict(hidden_act="tanh"),
    "relative_key": dict(position_embedding_type="relative_key"),
    "untied_decoder": dict(architecture="BertForMaskedLM", tie_word_embeddings=False),
}


@pytest.mark.parametrize("option", sorted(UNSUPPORTED))
def test_unsupported_options_are_a_clean_error_or_exact(option, tmp_path, zoo_home):
    config = {"seed": 5, "architecture": "BertForMaskedLM", "vocab_size": 53,
              "num_attention_heads": 3, "hidden_size": 15, "num_hidden_layers": 2,
              "intermediate_size": 19, "max_position_embeddings": 13, "type_vocab_size": 2,
              "batch": 3, "length": 11, **UNSUPPORTED[option]}
    reference = make_reference(tmp_path / "hf", config)
    if option == "untied_decoder":  # make the decoder really differ from the embedding
        with torch.no_grad():
            assert reference.cls.predictions.decoder.weight is not \
                reference.bert.embeddings.word_embeddings.weight
            reference.cls.predictions.decoder.weight.add_(0.5)
        reference.save_pretrained(tmp_path / "hf")
    model = converted_or_refused(lambda: BertMaskedLM.from_preset(str(tmp_path / "hf")), zoo_home)
    if model is None:
        return
    batch = random_inputs(config)
    real = batch["padding_mask"].astype(bool)
    positions = np.tile(np.arange(config["length"], dtype="int32"), (config["batch"], 1))
    logits = np.asarray(model.predict_on_batch({**batch, "mask_positions": positions}))
    assert_close(logits[real], reference_outputs(reference, batch).logits.numpy()[real],
                 LOGIT_ATOL, "masked-LM logits", config)
