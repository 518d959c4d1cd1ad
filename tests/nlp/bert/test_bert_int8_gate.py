"""int8 quality gate for BERT: all_minilm_l6_v2 (real weights) quantized with
`quantize("int8")` (Keras' per-channel int8 Dense and Embedding layers)
against the same preset in float32.

Gates (fixed by issue 23, never loosened): the cosine similarity of the two
sentence embeddings is at least 0.995 for every sentence, and the int8
preset's weights take at most 0.3x the float32 preset's bytes. The sentences
are the bfloat16 gate's (real English, 4 to 157 tokens, one padded batch).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.nlp.bert.test_bert_bfloat16_gate import SENTENCES
from zoo.models import Task

pytestmark = pytest.mark.real_weights

MIN_COSINE = 0.995
MAX_SIZE_RATIO = 0.3


def test_int8_embeddings_and_preset_size(tmp_path):
    full = Task.from_preset("all_minilm_l6_v2")
    reference = full.embed(SENTENCES)
    full.save_to_preset(tmp_path / "float32")
    full.quantize("int8")
    full.save_to_preset(tmp_path / "int8")
    loaded = Task.from_preset(tmp_path / "int8")  # the preset, not the object in memory
    ours = loaded.embed(SENTENCES)
    cosine = np.sum(ours * reference, -1) / (
        np.linalg.norm(ours, axis=-1) * np.linalg.norm(reference, axis=-1))
    sizes = {name: sum(f.stat().st_size for f in (tmp_path / name).glob("*.weights.*"))
             for name in ("float32", "int8")}
    ratio = sizes["int8"] / sizes["float32"]
    print(f"bert int8: min cosine {cosine.min():.6f}, preset {ratio:.3f}x of float32")
    assert cosine.min() >= MIN_COSINE, cosine.tolist()
    assert ratio <= MAX_SIZE_RATIO, sizes
