"""Whisper checkpoints -> zoo: a config map plus one explicit port per weight.

Three origins, one port: transformers folders (`WhisperForConditionalGeneration`),
CTranslate2 / faster-whisper folders (`model.bin`) and openai-whisper `.pt`
files are all read into transformers' names first (`whisper_checkpoints.py`).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from zoo.audio.whisper.whisper_backbone import WhisperBackbone
from zoo.audio.whisper.whisper_checkpoints import (
    ctranslate2_whisper,
    openai_to_transformers,
)
from zoo.core import deferred
from zoo.core.errors import ConversionError
from zoo.core.preset_io import write_preset
from zoo.core.tokenizer import check_fits_embedding
from zoo.presets.checkpoint_io import (
    WeightReader,
    load_reference,
    port_dense,
    port_layer_norm,
    port_weight,
    read_transformers_weights,
)
from zoo.presets.formats import TRANSFORMERS_FORMAT, SourceFormat
from zoo.utils.progress import progress

#: the checkpoints this module converts, and how each is checked (zoo.families)
SOURCE_FORMATS = {
    "transformers": TRANSFORMERS_FORMAT,
    # relative to the output's scale; `compare_with_ctranslate2` says why 1e-4
    "ctranslate2": SourceFormat("convert_ctranslate2", "compare_with_ctranslate2",
                                "ctranslate2",
                                "max abs difference / max abs value vs ctranslate2"),
    "torch_file": SourceFormat("convert_openai", None, "", ""),  # openai-whisper .pt
}


def convert_backbone_config(hf: dict[str, Any]) -> dict[str, Any]:
    """Map a transformers `WhisperConfig` dict to `WhisperBackbone` arguments."""
    if hf.get("activation_function", "gelu") != "gelu":
        raise ConversionError(
            f"activation_function={hf['activation_function']!r} is not supported.")
    if hf.get("scale_embedding"):
        raise ConversionError("scale_embedding=True is not supported (no Whisper uses it).")
    heads = {hf["encoder_attention_heads"], hf["decoder_attention_heads"]}
    ffn = {hf["encoder_ffn_dim"], hf["decoder_ffn_dim"]}
    if len(heads) != 1 or len(ffn) != 1:
        raise ConversionError(
            "Encoder and decoder with different head counts or MLP widths are not "
            f"supported (heads {sorted(heads)}, MLP {sorted(ffn)}).")
    return {
        "vocabulary_size": hf["vocab_size"],
        "num_encoder_layers": hf["encoder_layers"],
        "num_decoder_layers": hf["decoder_layers"],
        "num_heads": heads.pop(),
        "hidden_dim": hf["d_model"],
        "intermediate_dim": ffn.pop(),
        "num_mels": hf["num_mel_bins"],
        "max_encoder_sequence_length": hf["max_source_positions"],
        "max_decoder_sequence_length": hf["max_target_positions"],
        "dropout": hf.get("dropout", 0.0),
    }


def _port_attention(attention: Any, weights: WeightReader, prefix: str) -> None:
    port_dense(attention.query_dense, weights, f"{prefix}.q_proj")
    port_dense(attention.key_dense, weights, f"{prefix}.k_proj", bias=False)
    port_dense(attention.value_dense, weights, f"{prefix}.v_proj")
    port_dense(attention.output_dense, weights, f"{prefix}.out_proj")


def _port_mlp(layer: Any, weights: WeightReader, prefix: str) -> None:
    port_dense(layer.intermediate_dense, weights, f"{prefix}.fc1")
    port_dense(layer.output_dense, weights, f"{prefix}.fc2")
    port_layer_norm(layer.output_layer_norm, weights, f"{prefix}.final_layer_norm")


def _port_conv(layer: Any, weights: WeightReader, prefix: str) -> None:
    # torch Conv1d stores (out, in, width); Keras Conv1D (width, in, out).
    kernel = np.transpose(weights.take(f"{prefix}.weight"), (2, 1, 0))
    port_weight(layer.kernel, kernel, name=prefix)
    port_weight(layer.bias, weights.take(f"{prefix}.bias"), name=prefix)


def port_backbone(backbone: WhisperBackbone, weights: WeightReader, prefix: str = "model.") -> None:
    """Copy `WhisperModel` weights (transformers names under `prefix`)."""
    enc, dec = f"{prefix}encoder", f"{prefix}decoder"
    _port_conv(backbone.encoder_conv1, weights, f"{enc}.conv1")
    _port_conv(backbone.encoder_conv2, weights, f"{enc}.conv2")
    port_weight(backbone.encoder_position_embedding.embeddings,
                weights.take(f"{enc}.embed_positions.weight"), name="encoder positions")
    port_layer_norm(backbone.encoder_layer_norm, weights, f"{enc}.layer_norm")
    port_weight(backbone.token_embedding.embeddings, weights.take(f"{dec}.embed_tokens.weight"),
                name="embed_tokens")
    port_weight(backbone.decoder_position_embedding.embeddings,
                weights.take(f"{dec}.embed_positions.weight"), name="decoder positions")
    port_layer_norm(backbone.decoder_layer_norm, weights, f"{dec}.layer_norm")
    blocks = [(f"{enc}.layers.{i}", layer) for i, layer in enumerate(backbone.encoder_layers)]
    blocks += [(f"{dec}.layers.{i}", layer) for i, layer in enumerate(backbone.decoder_layers)]
    for p, layer in progress(blocks, desc="Converting Whisper", total=len(blocks)):
        _port_attention(layer.self_attention, weights, f"{p}.self_attn")
        port_layer_norm(layer.self_attention_layer_norm, weights, f"{p}.self_attn_layer_norm")
        if layer.name.startswith("decoder"):
            _port_attention(layer.cross_attention, weights, f"{p}.encoder_attn")
            port_layer_norm(layer.cross_attention_layer_norm, weights,
                             f"{p}.encoder_attn_layer_norm")
        _port_mlp(layer, weights, p)


def _convert(config: dict[str, Any], arrays: dict[str, np.ndarray], source: Path,
             output: Path, handle: str, generation: dict[str, Any], tokenizer_dir: Path | None,
             dtype: str = "source", int8: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
             ) -> None:
    from zoo.audio.whisper.whisper_audio_to_text import WhisperAudioToText

    weights = WeightReader(arrays, str(source))
    storage = weights.storage_dtype(dtype)
    # Built in the storage dtype without values; each weight is read, ported
    # and written one at a time (deferred.streamed_values), except for an int8
    # checkpoint, whose model is quantized in memory before it is written.
    with contextlib.nullcontext() if int8 else deferred.streamed_values():
        backbone, created = deferred.abstract_build(
            lambda: WhisperBackbone(**convert_backbone_config(config), dtype=storage))
        port_backbone(backbone, weights)
        deferred.require_values(backbone, created, str(source))
        if int8:
            _keep_int8(backbone, int8)
        for tied in ("proj_out.weight", "model.decoder.proj_out.weight"):
            if tied in weights:  # the output projection is the token embedding
                if not np.array_equal(weights.take(tied), weights.take(
                        "model.decoder.embed_tokens.weight")):
                    raise ConversionError(f"{source}: {tied} differs from the token embedding; "
                                          "zoo's Whisper ties them as every released model does.")
        unused = weights.unused()
        if unused:
            raise ConversionError(
                f"{source} has weights the converted model would drop: {unused[:5]}.")
        preprocessor = None
        if tokenizer_dir is not None:
            preprocessor = _preprocessor(tokenizer_dir, backbone)
            check_fits_embedding(preprocessor.tokenizer, backbone.vocabulary_size, str(source))
        task = WhisperAudioToText(backbone, preprocessor=preprocessor, **generation)
        write_preset(output, task=task, source=handle, storage_dtype=storage,
                     config_dtype="float32")


def _keep_int8(backbone: WhisperBackbone, int8: dict[str, tuple[np.ndarray, np.ndarray]]
               ) -> None:
    """Quantize `backbone` as the int8 CTranslate2 checkpoint it was ported
    from (weights dequantized) is: Keras' int8 of each dequantized linear
    layer gives back the stored int8 values and scales (both round
    `w * 127 / max|row|`); the token embedding takes the stored rows and
    scales as they are (`column_scale` 1: exactly the checkpoint's table).
    The convolutions stay float (Keras has no int8 convolution)."""
    backbone.quantize("int8")
    values, scale = int8["decoder/embeddings/weight"]
    embedding = backbone.token_embedding
    embedding._embeddings.assign(values)
    embedding.embeddings_scale.assign(scale.astype("float32"))
    embedding.column_scale.assign(np.ones(embedding.output_dim, "float32"))


def _preprocessor(directory: Path, backbone: WhisperBackbone) -> Any:
    from zoo.audio.whisper.whisper_audio_converter import WhisperAudioConverter
    from zoo.audio.whisper.whisper_audio_to_text_preprocessor import (
        WhisperAudioToTextPreprocessor,
    )
    from zoo.audio.whisper.whisper_tokenizer import WhisperTokenizer

    tokenizer = WhisperTokenizer.from_huggingface(
        directory, is_multilingual=backbone.vocabulary_size >= 51865)
    return WhisperAudioToTextPreprocessor(
        WhisperAudioConverter(num_mel_bins=backbone.num_mels), tokenizer)


def _has_tokenizer(directory: Path) -> bool:
    return any((directory / n).is_file() for n in ("tokenizer.json", "vocab.json"))


def _generation_settings(data: dict[str, Any]) -> dict[str, Any]:
    """Decoding settings the task keeps: suppressed ids and alignment heads."""
    out: dict[str, Any] = {}
    suppress = data.get("suppress_tokens", data.get("suppress_ids"))
    if suppress is not None:
        out["suppress_tokens"] = [int(t) for t in suppress]
    begin = data.get("begin_suppress_tokens", data.get("suppress_ids_begin"))
    if begin is not None:
        out["begin_suppress_tokens"] = [int(t) for t in begin]
    heads = data.get("alignment_heads")
    if heads is not None:
        out["alignment_heads"] = [[int(a), int(b)] for a, b in heads]
    return out


def convert_transformers(source: Path, output: Path, handle: str, dtype: str = "source") -> None:
    """Convert a transformers Whisper folder to a zoo preset (weights stored in
    `dtype`, see `zoo.presets.checkpoint_io.storage_dtype`)."""
    source = Path(source)
    config = json.loads((source / "config.json").read_text())
    generation_file = source / "generation_config.json"
    generation = {}
    if generation_file.is_file():
        generation = _generation_settings(json.loads(generation_file.read_text()))
    arrays = read_transformers_weights(source)
    _convert(config, arrays, source, output, handle, generation,
             source if _has_tokenizer(source) else None, dtype)


def convert_ctranslate2(source: Path, output: Path, handle: str, dtype: str = "source") -> None:
    """Convert a CTranslate2 (faster-whisper) Whisper folder to a zoo preset
    (weights stored in `dtype`). An int8 model.bin stays int8 unless `dtype`
    asks for a float dtype (`_keep_int8`)."""
    source = Path(source)
    config, arrays, int8 = ctranslate2_whisper(source / "model.bin")
    generation = {}
    if (source / "config.json").is_file():
        generation = _generation_settings(json.loads((source / "config.json").read_text()))
    _convert(config, arrays, source, output, handle, generation,
             source if _has_tokenizer(source) else None, dtype,
             int8 if dtype == "source" else None)


def convert_openai(source: Path, output: Path, handle: str, dtype: str = "source") -> None:
    """Convert an openai-whisper `.pt` file to a zoo preset.

    The file holds no vocabulary: a `tokenizer.json` next to it is used when
    present; otherwise the preset has the model only.
    """
    source = Path(source)
    config, arrays = openai_to_transformers(source)
    _convert(config, arrays, source, output, handle, {},
             source.parent if _has_tokenizer(source.parent) else None, dtype)


def _verification_inputs(backbone: WhisperBackbone, decoder_start: int
                         ) -> dict[str, np.ndarray]:
    """Fixed pseudo-random features (2 clips of 30 s for real models) and
    decoder ids starting with `decoder_start`, so no audio or tokenizer is needed."""
    rng = np.random.default_rng(0)
    frames = 2 * backbone.max_encoder_sequence_length  # the second conv halves them
    features = rng.normal(size=(2, backbone.num_mels, frames)).astype("float32")
    length = min(8, backbone.max_decoder_sequence_length)
    ids = rng.integers(0, backbone.vocabulary_size, size=(2, length)).astype("int32")
    ids[:, 0] = decoder_start
    return {"encoder_features": features, "decoder_token_ids": ids,
            "decoder_padding_mask": np.ones_like(ids)}


def _zoo_outputs(preset_dir: Path, decoder_start: int
                 ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(inputs, encoder output, logits) of the converted preset."""
    from keras import ops

    from zoo.audio.whisper.whisper_audio_to_text import WhisperAudioToText

    task = WhisperAudioToText.from_preset(preset_dir)
    inputs = _verification_inputs(task.backbone, decoder_start)
    out = task.backbone.predict_on_batch(inputs)
    logits = task.logits_from_hidden(out["decoder_sequence_output"])
    return (inputs, np.asarray(out["encoder_sequence_output"], "float32"),
            np.asarray(ops.convert_to_numpy(logits), "float32"))


def compare_with_transformers(preset_dir: Path, source: Path) -> float:
    """Max abs difference of encoder outputs and logits against
    transformers' `WhisperForConditionalGeneration` (float32, from the weights
    as the preset stores them: `load_reference`), on
    fixed pseudo-random features and decoder ids. Needs `torch` and `transformers`.
    """
    import torch
    import transformers

    config = json.loads((Path(source) / "config.json").read_text())
    inputs, encoded, logits = _zoo_outputs(preset_dir, config.get("decoder_start_token_id", 0))
    reference = load_reference(transformers.WhisperForConditionalGeneration, source, preset_dir)
    with torch.no_grad():
        out = reference(input_features=torch.from_numpy(inputs["encoder_features"]),
                        decoder_input_ids=torch.from_numpy(inputs["decoder_token_ids"]).long())
    return float(max(np.abs(encoded - out.encoder_last_hidden_state.numpy()).max(),
                     np.abs(logits - out.logits.numpy()).max()))


def compare_with_ctranslate2(preset_dir: Path, source: Path) -> float:
    """Max abs difference of encoder outputs against CTranslate2 (float32 on
    the CPU), divided by the largest abs value of CTranslate2's output.

    Relative, since outputs grow with model size (about 12 for tiny.en).
    CTranslate2 computes in float32 from the same stored (often float16)
    weights as the preset, so the two differ by summation order only:
    measured 2e-6 on tiny.en with every backend, while single wrong weights
    (a value bias off by 0.01, a layer norm scale off by 1%) give 4e-3 and
    1.4e-2. The script's 1e-4 sits 50x above that noise (room for deeper
    models and other CPUs' kernels) and 40x below such slips. Needs
    `ctranslate2`.
    """
    import ctranslate2

    inputs, encoded, _ = _zoo_outputs(preset_dir, 0)
    reference = ctranslate2.models.Whisper(str(source), device="cpu", compute_type="float32")
    features = ctranslate2.StorageView.from_array(inputs["encoder_features"])
    expected = np.asarray(reference.encode(features, to_cpu=True), "float32")
    return float(np.abs(encoded - expected).max() / np.abs(expected).max())
