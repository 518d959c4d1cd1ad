"""Small random OPT checkpoints made by transformers, saved in its own format."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: the variants every OPT size falls into
VARIANTS = {
    "pre_ln": dict(do_layer_norm_before=True),
    "pre_ln_projection": dict(do_layer_norm_before=True, word_embed_proj_dim=16),
    "post_ln": dict(do_layer_norm_before=False),
    "post_ln_projection": dict(do_layer_norm_before=False, word_embed_proj_dim=16),  # opt-350m
}


def make_hf_opt(directory: Path, seed: int = 0, **config_overrides) -> Path:
    """Save a tiny random `OPTForCausalLM` into `directory`."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = dict(vocab_size=96, hidden_size=32, num_hidden_layers=2, ffn_dim=48,
                  num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=32,
                  pad_token_id=1, bos_token_id=2, eos_token_id=2)
    config.update(config_overrides)
    model = transformers.OPTForCausalLM(transformers.OPTConfig(**config)).eval()
    with torch.no_grad():  # non-trivial LayerNorm/bias values so every port matters
        for name, param in model.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                param.add_(0.1 * torch.randn_like(param))
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    return directory


def random_batch(batch: int, length: int, vocab: int, seed: int = 0,
                 left_pad: bool = True) -> dict[str, np.ndarray]:
    """Random ids; row 0 is full length, the others padded (left by default)."""
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(4, vocab, size=(batch, length)).astype("int32")
    lengths = np.concatenate([[length], rng.integers(2, length + 1, size=batch - 1)])
    positions = np.arange(length)[None, :]
    if left_pad:
        padding_mask = positions >= (length - lengths[:, None])
    else:
        padding_mask = positions < lengths[:, None]
    padding_mask = padding_mask.astype("int32")
    return {"token_ids": np.where(padding_mask == 1, token_ids, 1).astype("int32"),
            "padding_mask": padding_mask}
