"""Small random Whisper models made by transformers (the reference), saved to disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TINY_HF = dict(num_mel_bins=8, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
               decoder_attention_heads=2, d_model=16, encoder_ffn_dim=32, decoder_ffn_dim=32,
               max_source_positions=30, max_target_positions=40, decoder_start_token_id=1,
               eos_token_id=2, pad_token_id=2, bos_token_id=2, init_std=0.3,
               suppress_tokens=[], begin_suppress_tokens=None)
FRAMES = 60  # 2 * max_source_positions


def random_whisper(directory: Path, vocab_size: int = 120, seed: int = 0,
                   perturb: bool = False, **config_overrides):
    """Save a random `WhisperForConditionalGeneration` into `directory`; return it.

    `config_overrides` replace entries of `TINY_HF`; `perturb` adds noise to
    layer norms and biases (zero biases and unit scales when fresh), so a
    port that drops or swaps one changes the outputs.
    """
    import torch
    import transformers

    from tests.sweeps import perturb_norms_and_biases

    torch.manual_seed(seed)
    config = transformers.WhisperConfig(vocab_size=vocab_size,
                                        **{**TINY_HF, **config_overrides})
    model = transformers.WhisperForConditionalGeneration(config).eval()
    if perturb:
        perturb_norms_and_biases(model)
    model.save_pretrained(directory)
    return model


def features(batch: int, seed: int = 0, mels: int = 8, frames: int = FRAMES) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, mels, frames)).astype("float32")
