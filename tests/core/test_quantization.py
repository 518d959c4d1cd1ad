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


def dequantized_table(embedding) -> np.ndarray:
    """An int8 `TokenEmbedding`'s table in float64, from its three variables."""
    return (ops.convert_to_numpy(embedding.embeddings).astype("float64")
            / ops.convert_to_numpy(embedding.embeddings_scale)[:, None]
            / ops.convert_to_numpy(embedding.column_scale)[None, :])


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
            and "position" not in v.path and "segment" not in v.path} == {"int8"}
    # (position and segment tables, small and added to every token, stay float)
    for name in ("position_embedding", "segment_embedding"):
        assert backbone.get_layer(name).quantization_mode is None
    quantized = backbone.predict_on_batch(inputs)["sequence_output"]
    assert cosine(quantized, full) >= 0.999
    backbone.save_to_preset(tmp_path / "int8")
    loaded = Backbone.from_preset(tmp_path / "int8")
    # (bit for bit: a preset that lost `activations` would round differently)
    np.testing.assert_array_equal(loaded.predict_on_batch(inputs)["sequence_output"], quantized)
    # (the size target is checked on real weights: tests/nlp/bert/test_bert_precision_gates.py)
    assert weights_bytes(tmp_path / "int8") < 0.5 * weights_bytes(tmp_path / "float")
    # Another compute dtype keeps the int8 weights.
    half = Backbone.from_preset(tmp_path / "int8", dtype="bfloat16")
    assert half.compute_dtype == "bfloat16"
    assert half.get_layer("token_embedding").quantization_mode == "int8"
    out = np.asarray(half.predict_on_batch(inputs)["sequence_output"], "float32")
    assert cosine(out, quantized) >= 0.999


def assert_generates_and_round_trips(lm, inputs, logits, tmp_path) -> None:
    """A quantized LM's first generated token is its logits' argmax, and its
    preset generates the same tokens."""
    first = lm.generate(inputs, max_new_tokens=1, stop_token_ids=())[:, 0]
    np.testing.assert_array_equal(first, logits[:, -1].argmax(-1))
    generated = lm.generate(inputs, max_new_tokens=6, stop_token_ids=())
    lm.save_to_preset(tmp_path / "lm")
    loaded = OPTCausalLM.from_preset(tmp_path / "lm")
    np.testing.assert_array_equal(loaded.generate(inputs, max_new_tokens=6, stop_token_ids=()),
                                  generated)


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
    # The head is x @ (int8 / (row scale ⊗ column scale))ᵀ, computed here in numpy.
    hidden = np.asarray(lm.backbone.predict_on_batch(inputs), "float64")
    table = dequantized_table(lm.backbone.get_layer("token_embedding"))
    np.testing.assert_allclose(logits, hidden @ table.T, rtol=1e-4, atol=1e-4)
    assert cosine(logits, full) >= 0.999
    # generate's head (on torch a dequantized transposed copy) picks the same token.
    assert_generates_and_round_trips(lm, inputs, logits, tmp_path)


@pytest.mark.parametrize("seed", [0, 1])
def test_int4_token_table_is_per_row_so_the_tied_head_runs(tmp_path, seed):
    """Keras' int4 default scales 128-wide groups; a tied LM head reads one
    scale per token row, so zoo's token tables are int4 per row (the rest
    keep Keras' groups) and an int4 OPT predicts, generates and round-trips."""
    keras.utils.set_random_seed(seed)
    lm = OPTCausalLM(OPTBackbone(**{**OPT, "hidden_dim": 256, "intermediate_dim": 512}))
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, OPT["vocabulary_size"], (2, 9)).astype("int32")
    inputs = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    full = lm.predict_on_batch(inputs)
    lm.quantize("int4")
    policies = {layer.path.split("/")[-1]: layer.dtype_policy.name
                for layer in lm.backbone._flatten_layers()
                if getattr(layer, "quantization_mode", None)}
    assert policies["token_embedding"] == "int4/-1_from_float32"
    assert policies["query"] == "int4/128_from_float32"  # groups where nothing reads rows
    logits = lm.predict_on_batch(inputs)
    # a sanity bar, not a quality gate: 16 levels per weight and Keras' int4
    # default of int8 activations give 0.966 / 0.970 on these random models
    assert cosine(logits, full) >= 0.95
    assert_generates_and_round_trips(lm, inputs, logits, tmp_path)


def test_unknown_mode_is_a_clear_error():
    lm = OPTCausalLM(OPTBackbone(**OPT))
    for model in (lm, lm.backbone):
        for mode in ("int3", "gptq", None):
            with pytest.raises(InputError, match=f"Unknown quantization mode {mode!r}.*Fix"):
                model.quantize(mode)
    assert lm.backbone.get_layer("token_embedding").quantization_mode is None


@pytest.mark.parametrize("seed", [0, 1])
def test_int8_masked_lm_head_reads_the_scales(seed):
    from zoo.models import BertMaskedLM

    keras.utils.set_random_seed(seed)
    mlm = BertMaskedLM(BertBackbone(**BERT))
    inputs = {**bert_inputs(seed), "mask_positions": np.array([[1, 4], [2, 6], [0, 11]], "int32")}
    full = mlm.predict_on_batch(inputs)
    mlm.quantize("int8")
    logits = mlm.predict_on_batch(inputs)
    head = mlm.mlm_head
    sequence = mlm.backbone.predict_on_batch(
        {k: v for k, v in inputs.items() if k != "mask_positions"})["sequence_output"]
    gathered = np.take_along_axis(np.asarray(sequence), inputs["mask_positions"][..., None], 1)
    hidden = ops.convert_to_numpy(head.layer_norm(head.dense(gathered))).astype("float64")
    expected = (hidden @ dequantized_table(mlm.backbone.get_layer("token_embedding")).T
                + ops.convert_to_numpy(head.bias))
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    assert cosine(logits, full) >= 0.999


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_column_scale_keeps_a_tied_head_precise_with_outlier_dimensions(seed):
    """A table with a few large hidden dimensions, as trained LMs have: on
    the other dimensions zoo's int8 table is at least 5x closer to the float
    table than Keras' per-row int8 table, whose row scales the large ones
    set (whisper_tiny_en's whole real table: relative error 0.0052 against
    0.031); the head's products and the lookups read the same table."""
    from zoo.layers.embeddings import TokenEmbedding
    from zoo.layers.tied_logits import tied_product

    rng = np.random.default_rng(seed)
    table = rng.normal(0, 0.02, (400, 48)).astype("float32")
    large = rng.choice(48, 3, replace=False)
    table[:, large] *= rng.uniform(10, 30, 3)
    ordinary = np.setdiff1d(np.arange(48), large)
    x = rng.normal(size=(5, 48)).astype("float32")
    errors = {}
    for cls in (TokenEmbedding, keras.layers.Embedding):
        layer = cls(400, 48)
        layer.build()
        layer.embeddings.assign(table)
        layer.quantize("int8", type_check=False)
        ids = np.arange(400, dtype="int32")
        # (the lookup and the head read one dequantized table)
        looked_up = ops.convert_to_numpy(layer(ids)).astype("float64")
        products = ops.convert_to_numpy(tied_product(ops.convert_to_tensor(x), layer))
        np.testing.assert_allclose(products, x @ looked_up.T, rtol=1e-3, atol=1e-4)
        errors[cls.__name__] = (np.linalg.norm(looked_up[:, ordinary] - table[:, ordinary])
                                / np.linalg.norm(table[:, ordinary]))
    print(f"relative error of the int8 table off the large dimensions: {errors}")
    assert errors["TokenEmbedding"] < errors["Embedding"] / 5, errors


def test_a_model_keras_cannot_quantize_is_a_clear_error_and_stays_float():
    from zoo.models import YOLOV8Backbone, YOLOV8Detector

    detector = YOLOV8Detector(YOLOV8Backbone(stackwise_channels=[8, 16, 32, 32, 64],
                                             stackwise_depth=[1, 1, 1, 1]), num_classes=2)
    before = [ops.convert_to_numpy(v) for v in detector.weights]
    with pytest.raises(InputError, match="no layer that Keras quantizes in 'int8'.*Fix"):
        detector.quantize("int8")
    assert {v.dtype for v in detector.weights} == {"float32"}
    for old, new in zip(before, detector.weights):
        np.testing.assert_array_equal(old, ops.convert_to_numpy(new))


@pytest.mark.parametrize("every_bytes,many", [(None, False), (1, True)])
def test_quantize_collects_garbage_per_256_mib_not_per_variable(monkeypatch, every_bytes, many):
    """Keras collects garbage for every float variable a quantized layer drops
    (0.2 s each with a large heap); zoo lets one collection through per
    COLLECT_EVERY_BYTES replaced, plus one at the end, and puts gc.collect back."""
    import gc

    from zoo.core import quantization

    if every_bytes is not None:
        monkeypatch.setattr(quantization, "COLLECT_EVERY_BYTES", every_bytes)
    calls = []

    def counted(*args, **kwargs):  # (collects nothing: a full collection costs ~1 s here)
        calls.append(args)
        return 0

    monkeypatch.setattr(gc, "collect", counted)
    backbone = BertBackbone(**BERT)
    backbone.quantize("int8")
    assert gc.collect is counted
    # 2 layers x 6 Dense + the token table: Keras alone would collect 13 times
    assert (len(calls) > 10) if many else (len(calls) == 1), len(calls)
    assert quantization.quantized_layers(backbone)

    def failing(layer):
        raise RuntimeError("a filter that fails")

    with pytest.raises(RuntimeError, match="a filter that fails"):
        BertBackbone(**BERT).quantize("int8", filters=failing)
    assert gc.collect is counted  # put back after a failure too
