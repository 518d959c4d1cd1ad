"""Seeded sweep of random Whisper configs made and saved by transformers.

Each config (see `whisper_space`) is a `WhisperForConditionalGeneration`
with random weights (layer norms and biases perturbed), saved with
`save_pretrained` (safetensors), converted by `from_preset(folder)` and
compared with transformers at the tolerance of `test_whisper_parity.py`
(1e-4 max abs, float32): encoder output, decoder logits of real tokens
(right-padded decoder ids), and greedy ids equal to transformers'
`generate`. Options zoo does not support must give zoo's own
ConversionError, never wrong numbers. Sweep size: `tests/sweeps.py`
(`ZOO_SWEEP_FULL=1` runs all configs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from keras import ops

from tests.audio.whisper.reference import features, random_whisper
from tests.sweeps import (assert_close, choice, converted_or_refused, not_multiple_of_8, odd_int,
                          sweep_params)
from zoo.audio.whisper.whisper_decoding import DecodingOptions, SpecialTokens, WhisperDecoder
from zoo.models import WhisperAudioToText

TOL = 1e-4  # as test_whisper_parity.py
NEW_TOKENS = 5  # greedy steps compared with transformers
PROMPT = [1, 5]  # decoder start, then one token (every vocabulary holds id 5)
EOT = 2


def whisper_space(rng: np.random.Generator) -> dict[str, Any]:
    """One random Whisper config: real and odd mel counts, encoder and decoder
    depths drawn apart, odd head counts and widths, short odd contexts."""
    heads = choice(rng, (1, 2, 3, 5, 6))
    head_dim = choice(rng, (2, 3, 4, 5, 8))
    while (heads * head_dim) % 2 or heads * head_dim < 4:  # transformers' sinusoids
        head_dim += 1  # need an even d_model of at least 4
    ffn = not_multiple_of_8(rng, 5, 99)
    return {
        "vocab_size": choice(rng, (37, 61, 97, 501, odd_int(rng, 29, 300))),
        "num_mel_bins": choice(rng, (80, 128, 7, 13, odd_int(rng, 3, 31))),
        "encoder_layers": int(rng.integers(1, 4)),
        "decoder_layers": int(rng.integers(1, 4)),
        "encoder_attention_heads": heads,
        "decoder_attention_heads": heads,
        "d_model": heads * head_dim,
        "encoder_ffn_dim": ffn,
        "decoder_ffn_dim": ffn,
        "max_source_positions": odd_int(rng, 5, 41),
        "max_target_positions": odd_int(rng, 9, 33),
        # inputs
        "batch": int(rng.integers(1, 4)),
        "length": int(rng.integers(2, 9)),
    }


INPUT_KEYS = ("batch", "length", "seed", "vocab_size")


def make_reference(folder: Path, config: dict[str, Any]) -> Any:
    """Save the config's transformers Whisper into `folder`; return it reloaded."""
    import transformers

    overrides = {k: v for k, v in config.items() if k not in INPUT_KEYS}
    random_whisper(folder, vocab_size=config["vocab_size"], seed=config["seed"], perturb=True,
                   init_std=0.2, **overrides)
    return transformers.WhisperForConditionalGeneration.from_pretrained(folder).eval()


def random_inputs(config: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, decoder ids, decoder padding mask): ragged right padding, row 0 full."""
    rng = np.random.default_rng(config["seed"] + 1000)
    batch, length = config["batch"], config["length"]
    feats = features(batch, seed=config["seed"], mels=config["num_mel_bins"],
                     frames=2 * config["max_source_positions"])
    lengths = np.concatenate([[length], rng.integers(1, length + 1, size=batch - 1)])
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype("int32")
    ids = rng.integers(0, config["vocab_size"], size=(batch, length))
    ids[:, 0] = 1
    return feats, np.where(mask == 1, ids, EOT).astype("int32"), mask


def check_greedy(model: WhisperAudioToText, reference: Any, feats: np.ndarray,
                 config: dict[str, Any]) -> None:
    """zoo's greedy ids equal transformers' until the end token or a step where
    the reference's two best scores are closer than the tolerance (a tie)."""
    vocab = config["vocab_size"]
    special = SpecialTokens(eot=EOT, no_timestamps=vocab - 1, timestamp_begin=vocab,
                            no_speech=3, vocabulary_size=vocab, suppress=(), suppress_begin=())
    decoder = WhisperDecoder(model, special)
    prompts = [PROMPT] * len(feats)
    result = decoder.decode(decoder.encode(feats), prompts, sot_index=0,
                            options=DecodingOptions(timestamps=False, suppress_blank=False,
                                                    max_new_tokens=NEW_TOKENS))
    with torch.no_grad():
        out = reference.generate(torch.tensor(feats), decoder_input_ids=torch.tensor(prompts),
                                 max_new_tokens=NEW_TOKENS, do_sample=False,
                                 suppress_tokens=[vocab - 1], output_scores=True,
                                 return_dict_in_generate=True)
    expected = out.sequences[:, len(PROMPT):].numpy()
    scores = np.stack([s.numpy() for s in out.scores], 1)  # (batch, steps, vocab)
    for row, ours in enumerate(result.tokens):
        ours = list(ours) + [EOT]  # zoo drops the end token
        for step in range(scores.shape[1]):
            if ours[step] != expected[row, step]:
                best = scores[row, step, expected[row, step]]
                gap = best - scores[row, step, ours[step]]
                assert gap < TOL, (f"greedy row {row} step {step}: {ours} vs "
                                   f"{expected[row].tolist()} (gap {gap:.3g}) for {config}")
                break
            if ours[step] == EOT:
                break


@pytest.mark.parametrize("config", sweep_params("whisper", whisper_space, sample_size=1))
def test_random_config_matches_transformers(config, tmp_path, zoo_home):
    reference = make_reference(tmp_path / "hf", config)
    model = WhisperAudioToText.from_preset(str(tmp_path / "hf"))
    assert model.backbone.num_mels == config["num_mel_bins"]
    feats, ids, mask = random_inputs(config)
    out = model.backbone({"encoder_features": feats, "decoder_token_ids": ids,
                          "decoder_padding_mask": mask})
    logits = ops.convert_to_numpy(model.logits_from_hidden(out["decoder_sequence_output"]))
    with torch.no_grad():
        expected = reference(input_features=torch.tensor(feats),
                             decoder_input_ids=torch.tensor(ids).long(),
                             decoder_attention_mask=torch.tensor(mask).long())
    assert_close(ops.convert_to_numpy(out["encoder_sequence_output"]),
                 expected.encoder_last_hidden_state.numpy(), TOL, "encoder output", config)
    real = mask.astype(bool)
    assert_close(np.asarray(logits)[real], expected.logits.numpy()[real], TOL,
                 "decoder logits", config)
    check_greedy(model, reference, feats, config)


#: transformers options zoo's Whisper may not support: each either converts
#: to the same numbers or fails with the converter's own ConversionError
UNSUPPORTED = {
    "decoder_heads_differ": dict(decoder_attention_heads=4),
    "decoder_ffn_differs": dict(decoder_ffn_dim=21),
    "scale_embedding": dict(scale_embedding=True),
    "relu": dict(activation_function="relu"),
    "untied_proj_out": dict(tie_word_embeddings=False),
}


@pytest.mark.parametrize("option", sorted(UNSUPPORTED))
def test_unsupported_options_are_a_clean_error_or_exact(option, tmp_path, zoo_home):
    config = {"seed": 4, "vocab_size": 53, "num_mel_bins": 9, "encoder_layers": 1,
              "decoder_layers": 2, "encoder_attention_heads": 2, "decoder_attention_heads": 2,
              "d_model": 12, "encoder_ffn_dim": 17, "decoder_ffn_dim": 17,
              "max_source_positions": 7, "max_target_positions": 11, "batch": 2, "length": 5,
              **UNSUPPORTED[option]}
    reference = make_reference(tmp_path / "hf", config)
    if option == "untied_proj_out":  # make the head really differ from the embedding
        assert reference.proj_out.weight is not reference.model.decoder.embed_tokens.weight
        with torch.no_grad():
            reference.proj_out.weight.add_(0.5)
        reference.save_pretrained(tmp_path / "hf")
    model = converted_or_refused(lambda: WhisperAudioToText.from_preset(str(tmp_path / "hf")), zoo_home)
    if model is None:
        return
    feats, ids, mask = random_inputs(config)
    out = model.backbone({"encoder_features": feats, "decoder_token_ids": ids,
                          "decoder_padding_mask": mask})
    logits = ops.convert_to_numpy(model.logits_from_hidden(out["decoder_sequence_output"]))
    with torch.no_grad():
        expected = reference(input_features=torch.tensor(feats),
                             decoder_input_ids=torch.tensor(ids).long())
    real = mask.astype(bool)
    assert_close(np.asarray(logits)[real], expected.logits.numpy()[real], TOL,
                 "decoder logits", config)
