"""Small random Whisper models from transformers, converted three ways
(transformers folder, CTranslate2 model.bin, openai-whisper .pt): encoder
outputs and logits within 1e-4, greedy ids equal transformers' generate."""

import numpy as np
import pytest
import torch
from keras import ops

from tests.audio.whisper.reference import features, random_whisper
from zoo.audio.whisper.whisper_decoding import DecodingOptions, SpecialTokens, WhisperDecoder
from zoo.core.errors import ConversionError
from zoo.models import WhisperAudioToText
from zoo.presets import resolve

TOL = 1e-4


def zoo_outputs(model, feats, ids):
    out = model.backbone({"encoder_features": feats, "decoder_token_ids": ids,
                          "decoder_padding_mask": np.ones_like(ids)})
    logits = model.logits_from_hidden(out["decoder_sequence_output"])
    return (np.asarray(ops.convert_to_numpy(out["encoder_sequence_output"])),
            np.asarray(ops.convert_to_numpy(logits)))


def reference_outputs(reference, feats, ids):
    with torch.no_grad():
        out = reference(input_features=torch.tensor(feats),
                        decoder_input_ids=torch.tensor(ids).long())
    return out.encoder_last_hidden_state.numpy(), out.logits.numpy()


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("whisper_hf")
    return directory, random_whisper(directory)


def check_parity(model, reference):
    feats = features(2, seed=1)
    ids = np.random.default_rng(2).integers(0, 120, size=(2, 9)).astype("int32")
    ours_enc, ours_logits = zoo_outputs(model, feats, ids)
    ref_enc, ref_logits = reference_outputs(reference, feats, ids)
    assert np.abs(ours_enc - ref_enc).max() < TOL
    assert np.abs(ours_logits - ref_logits).max() < TOL


def test_transformers_conversion_parity(hf_model, zoo_home):
    directory, reference = hf_model
    check_parity(WhisperAudioToText.from_preset(str(directory)), reference)


def test_greedy_ids_equal_transformers_generate(hf_model, zoo_home):
    directory, reference = hf_model
    model = WhisperAudioToText.from_preset(str(directory))
    special = SpecialTokens(eot=2, no_timestamps=119, timestamp_begin=120, no_speech=3,
                            vocabulary_size=120, suppress=(), suppress_begin=())
    decoder = WhisperDecoder(model, special)
    feats = features(3, seed=7)
    prompt = [[1, 5], [1, 5], [1, 5]]
    result = decoder.decode(decoder.encode(feats), prompt, sot_index=0,
                            options=DecodingOptions(timestamps=False, suppress_blank=False,
                                                    max_new_tokens=12))
    with torch.no_grad():
        expected = reference.generate(torch.tensor(feats), decoder_input_ids=torch.tensor(prompt),
                                      max_new_tokens=12, do_sample=False,
                                      suppress_tokens=[119]).numpy()
    for row, ids in enumerate(result.tokens):
        reference_row = expected[row].tolist()
        end = reference_row.index(2) if 2 in reference_row else len(reference_row)
        assert ids == reference_row[:end]
    assert len({tuple(t) for t in result.tokens}) > 1  # the rows really differ


def test_ctranslate2_conversion_parity(hf_model, tmp_path, zoo_home):
    ctranslate2 = pytest.importorskip("ctranslate2")
    directory, reference = hf_model
    target = tmp_path / "ct2"
    ctranslate2.converters.TransformersConverter(str(directory)).convert(str(target))
    assert (target / "model.bin").is_file()
    check_parity(WhisperAudioToText.from_preset(str(target)), reference)


def test_ctranslate2_int8_checkpoint_loads_as_int8(hf_model, tmp_path, zoo_home):
    """faster-whisper's int8 models (CTranslate2 `quantization="int8"`): the
    preset holds the checkpoint's int8 values and scales, and computes what
    transformers computes from the dequantized weights."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    from zoo.audio.whisper.whisper_checkpoints import ctranslate2_whisper, read_ctranslate2
    from zoo.audio.whisper.whisper_convert import compare_with_ctranslate2

    directory, reference = hf_model
    target = tmp_path / "ct2_int8"
    ctranslate2.converters.TransformersConverter(str(directory)).convert(
        str(target), quantization="int8")
    _, raw = read_ctranslate2(target / "model.bin")
    model = WhisperAudioToText.from_preset(str(target))
    backbone = model.backbone
    # int8 as stored: the embedding's rows and a linear layer's (transposed) rows
    embedding = backbone.token_embedding
    np.testing.assert_array_equal(ops.convert_to_numpy(embedding.embeddings),
                                  raw["decoder/embeddings/weight"])
    np.testing.assert_array_equal(ops.convert_to_numpy(embedding.column_scale), 1.0)
    dense = backbone.encoder_layers[0].intermediate_dense
    assert dense.quantization_mode == "int8"
    np.testing.assert_array_equal(ops.convert_to_numpy(dense._kernel).T,
                                  raw["encoder/layer_0/ffn/linear_0/weight"])
    np.testing.assert_allclose(ops.convert_to_numpy(dense.kernel_scale),
                               raw["encoder/layer_0/ffn/linear_0/weight_scale"], rtol=1e-6)
    # computes what the dequantized weights compute
    _, state, int8 = ctranslate2_whisper(target / "model.bin")
    assert "decoder/layer_0/ffn/linear_1/weight" in int8
    dequantized = type(reference)(reference.config).eval()
    dequantized.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()},
                                strict=False)
    dequantized.proj_out.weight = dequantized.model.decoder.embed_tokens.weight
    check_parity(model, dequantized)
    # and CTranslate2's own float32 encoder on the int8 file
    preset = next((zoo_home / "presets").iterdir())
    assert compare_with_ctranslate2(preset, target) < 1e-4


def _openai_state(reference) -> dict:
    """The reference model's weights under openai-whisper's module names
    (`blocks.N.attn.query`, `mlp.0`, `ln_post`, ...)."""
    state = {}
    for name, value in reference.state_dict().items():
        if name == "proj_out.weight":
            continue
        new = name.replace("model.", "", 1)
        for old, repl in (("embed_positions.weight", "positional_embedding"),
                          ("embed_tokens", "token_embedding"), ("layers.", "blocks."),
                          ("encoder_attn_layer_norm", "cross_attn_ln"),
                          ("encoder_attn.", "cross_attn."), ("self_attn_layer_norm", "attn_ln"),
                          ("self_attn.", "attn."), ("q_proj", "query"), ("k_proj", "key"),
                          ("v_proj", "value"), ("out_proj", "out"), ("final_layer_norm", "mlp_ln"),
                          ("fc1", "mlp.0"), ("fc2", "mlp.2")):
            new = new.replace(old, repl)
        new = new.replace("encoder.layer_norm", "encoder.ln_post")
        new = new.replace("decoder.layer_norm", "decoder.ln")
        state[new] = value.clone()
    return state


def test_openai_checkpoint_parity(hf_model, tmp_path, zoo_home):
    _, reference = hf_model
    c = reference.config
    dims = {"n_mels": c.num_mel_bins, "n_audio_ctx": c.max_source_positions,
            "n_audio_state": c.d_model, "n_audio_head": c.encoder_attention_heads,
            "n_audio_layer": c.encoder_layers, "n_vocab": c.vocab_size,
            "n_text_ctx": c.max_target_positions, "n_text_state": c.d_model,
            "n_text_head": c.decoder_attention_heads, "n_text_layer": c.decoder_layers}
    path = tmp_path / "tiny.pt"
    torch.save({"dims": dims, "model_state_dict": _openai_state(reference)}, path)
    check_parity(WhisperAudioToText.from_preset(str(path)), reference)


def test_broken_checkpoints_give_clear_errors(tmp_path, zoo_home):
    truncated = tmp_path / "ct2"
    truncated.mkdir()
    (truncated / "model.bin").write_bytes(b"\x06\x00\x00\x00\x0c\x00WhisperSpec\x00\x03\x00")
    with pytest.raises(ConversionError, match="truncated"):
        resolve(str(truncated))
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ConversionError, match="not an openai-whisper checkpoint"):
        resolve(str(other))
    assert not any(zoo_home.rglob("model.weights.h5")) if zoo_home.exists() else True
