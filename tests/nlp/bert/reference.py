"""Small random BERT checkpoints made by transformers, saved in its own format."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "good", "bad", "film", "movie",
         "great", "awful", "is", "was", "very", "not", "##s", "##ing", "##ed", ",", ".", "!"]


def write_vocab(directory: Path, size: int) -> list[str]:
    """A vocab.txt of exactly `size` tokens (real words, then filler)."""
    vocab = SPECIAL + WORDS
    vocab += [f"tok{i}" for i in range(size - len(vocab))]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (directory / "tokenizer_config.json").write_text('{"do_lower_case": true}')
    return vocab


def make_hf_bert(directory: Path, architecture: str = "BertModel", seed: int = 0,
                 **config_overrides) -> Path:
    """Save a tiny random transformers BERT (with a vocab) into `directory`."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=48, max_position_embeddings=64, type_vocab_size=2,
                  num_labels=3)
    config.update(config_overrides)
    model = getattr(transformers, architecture)(transformers.BertConfig(**config)).eval()
    with torch.no_grad():  # non-trivial LayerNorm/bias values so every port matters
        for name, param in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                param.add_(0.1 * torch.randn_like(param))
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    write_vocab(directory, config["vocab_size"])
    return directory


def random_batch(batch: int, length: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random ids with ragged padding; row 0 is full length."""
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(5, vocab, size=(batch, length)).astype("int32")
    lengths = np.concatenate([[length], rng.integers(2, length + 1, size=batch - 1)])
    padding_mask = (np.arange(length)[None, :] < lengths[:, None]).astype("int32")
    token_ids = np.where(padding_mask == 1, token_ids, 0).astype("int32")
    segment_ids = ((np.arange(length)[None, :] >= lengths[:, None] // 2) & (padding_mask == 1))
    return {"token_ids": token_ids, "segment_ids": segment_ids.astype("int32"),
            "padding_mask": padding_mask}


def torch_inputs(batch: dict[str, np.ndarray]) -> dict:
    import torch

    return {"input_ids": torch.tensor(batch["token_ids"]).long(),
            "token_type_ids": torch.tensor(batch["segment_ids"]).long(),
            "attention_mask": torch.tensor(batch["padding_mask"]).long()}
