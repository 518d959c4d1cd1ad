"""int8 quantization through Keras' API: outputs stay close to float, the
quantized preset is the quantized model (bit for bit) and smaller, the tied
LM head reads the scales on every path, and a preset keeps its quantization
when loaded in another compute dtype.
Random models from several seeds, not one hand-picked case."""

from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops

from zoo.core.errors import InputError
from zoo.models import Backbone, BertBackbone, OPTBackbone, OPTCausalLM

BERT = dict(vocabulary_size=1000, num_layers=2, num_heads=2, hidden_dim=64,
            intermediate_dim=128, max_sequence_length=32)
OPT = dict(vocabulary_size=500, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64,
           max_sequence_length=64, dropout=0.0)


def bert_inputs(seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, BERT["vocabulary_size"], (3, 12)).astype("int32")
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    return {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": mask}


def cosine(a, b):
    a, b = np.asarray(a, "float64").reshape(-1), np.asarray(b, "float64").reshape(-1)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def weights_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.weights.*"))


@pytest.mark.parametrize("seed,activations", [(0, False), (1, True)])
def test_int8_backbone_is_close_and_its_preset_is_it(tmp_path, seed, activations):
    keras.utils.set_random_seed(seed)
    backbone = BertBackbone(**BERT)
    inputs = bert_inputs(seed)
    full = backbone.predict_on_batch(inputs)["sequence_output"]
    backbone.save_to_preset(tmp_path / "float")
    backbone.quantize("int8", activations=activations)
    rounds_inputs = [layer.inputs_quantizer is not None for layer in backbone._flatten_layers()
                     if hasattr(layer, "inputs_quantizer")]
    assert rounds_inputs and set(rounds_inputs) == {activations}
    assert {v.dtype for v in backbone.weights if v.path.endswith(("/kernel", "/embeddings"))
            and "position" not in v.path} == {"int8"}
    quantized = backbone.predict_on_batch(inputs)["sequence_output"]
    assert cosine(quantized, full) >= 0.999
    backbone.save_to_preset(tmp_path / "int8")
    loaded = Backbone.from_preset(tmp_path / "int8")
    # (bit for bit: a preset that lost `activations` would round differently)
    np.testing.assert_array_equal(loaded.predict_on_batch(inputs)["sequence_output"], quantized)
    # (the size target is checked on real weights: tests/nlp/bert/test_bert_int8_gate.py)
    assert weights_bytes(tmp_path / "int8") < 0.5 * weights_bytes(tmp_path / "float")
    # Another compute dtype keeps the int8 weights.
    half = Backbone.from_preset(tmp_path / "int8", dtype="bfloat16")
    assert half.compute_dtype == "bfloat16"
    assert half.get_layer("token_embedding").quantization_mode == "int8"
    out = np.asarray(half.predict_on_batch(inputs)["sequence_output"], "float32")
    assert cosine(out, quantized) >= 0.999


@pytest.mark.parametrize("seed", [0, 1])
def test_int8_lm_head_reads_the_scales_on_every_path(tmp_path, seed):
    keras.utils.set_random_seed(seed)
    lm = OPTCausalLM(OPTBackbone(**OPT))
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, OPT["vocabulary_size"], (2, 9)).astype("int32")
    inputs = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    full = lm.predict_on_batch(inputs)
    lm.quantize("int8")
    logits = lm.predict_on_batch(inputs)
    # The head is x @ (int8 / scale)ᵀ, computed here in numpy.
    embedding = lm.backbone.get_layer("token_embedding")
    table = (ops.convert_to_numpy(embedding.embeddings).astype("float64")
             / ops.convert_to_numpy(embedding.embeddings_scale)[:, None])
    hidden = np.asarray(lm.backbone.predict_on_batch(inputs), "float64")
    np.testing.assert_allclose(logits, hidden @ table.T, rtol=1e-4, atol=1e-4)
    assert cosine(logits, full) >= 0.999
    # generate's head (on torch a dequantized transposed copy) picks the same token.
    first = lm.generate(inputs, max_new_tokens=1, stop_token_ids=())[:, 0]
    np.testing.assert_array_equal(first, logits[:, -1].argmax(-1))
    generated = lm.generate(inputs, max_new_tokens=6, stop_token_ids=())
    lm.save_to_preset(tmp_path / "lm")
    loaded = OPTCausalLM.from_preset(tmp_path / "lm")
    np.testing.assert_array_equal(loaded.generate(inputs, max_new_tokens=6, stop_token_ids=()),
                                  generated)


def test_unknown_mode_is_a_clear_error():
    lm = OPTCausalLM(OPTBackbone(**OPT))
    for model in (lm, lm.backbone):
        for mode in ("int3", "gptq", None):
            with pytest.raises(InputError, match=f"Unknown quantization mode {mode!r}.*Fix"):
                model.quantize(mode)
    assert lm.backbone.get_layer("token_embedding").quantization_mode is None
