"""Read Whisper checkpoints of every origin into transformers' names and config.

zoo ports one naming, transformers' (`model.encoder.layers.0.self_attn.q_proj.weight`),
so each other origin is first renamed into it here:

- CTranslate2 `model.bin` (faster-whisper): read directly (a small binary
  header, then named arrays; float16 and bfloat16 become float32, int8 with a
  per-row `weight_scale` is dequantized). Fused query/key/value projections are
  split; the architecture comes from the arrays' shapes and the stored head
  counts.
- openai-whisper `.pt`: `{"dims": ..., "model_state_dict": ...}`, read with
  zoo's restricted unpickler (no code from the file runs).
"""

from __future__ import annotations

import math
import os
import re
import struct
from pathlib import Path
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np

from zoo.core.errors import ConversionError

#: CTranslate2's DataType ids, in the order of its C++ enum
_CT2_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, ml_dtypes.bfloat16)
_CT2_VERSIONS = (5, 6)


def _read(f: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise EOFError
    return struct.unpack("<" + fmt, data)[0]


def _read_string(f: BinaryIO) -> str:
    length = _read(f, "H")
    return _read_bytes(f, length)[:-1].decode("utf-8")


def _read_bytes(f: BinaryIO, nbytes: int) -> bytes:
    """`nbytes` from `f`, checked against what is left of the file before reading,
    so a corrupt length never allocates more than the file holds."""
    if nbytes > os.fstat(f.fileno()).st_size - f.tell():
        raise EOFError
    return f.read(nbytes)


def read_ctranslate2(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """The spec name and every variable of a CTranslate2 `model.bin`.

    Aliases (e.g. Whisper's output projection, tied to the embedding) are
    resolved to the arrays they name. Every length in the header is checked
    against the file before it is read, and each variable's byte count must
    match its shape and dtype, so memory never exceeds the file's size.

    Raises:
        ConversionError: the file is not a CTranslate2 model, is truncated,
            is inconsistent, or uses a format version zoo does not read.
    """
    path = Path(path)
    fix = "Fix: download or convert the model again."
    arrays: dict[str, np.ndarray] = {}
    try:
        with open(path, "rb") as f:
            version = _read(f, "I")
            if version not in _CT2_VERSIONS:
                raise ConversionError(
                    f"{path} is a CTranslate2 model of binary version {version}; zoo reads "
                    f"versions {_CT2_VERSIONS}. Fix: convert it again with a recent "
                    "ctranslate2 converter.")
            spec = _read_string(f)
            _read(f, "I")  # spec revision
            for _ in range(_read(f, "I")):
                name = _read_string(f)
                shape = tuple(_read(f, "I") for _ in range(_read(f, "B")))
                dtype_id = _read(f, "B")
                nbytes = _read(f, "I")
                if dtype_id >= len(_CT2_DTYPES):
                    raise ConversionError(
                        f"{path}: {name} has unknown dtype id {dtype_id}. {fix}")
                dtype = np.dtype(_CT2_DTYPES[dtype_id])
                if nbytes != math.prod(shape) * dtype.itemsize:
                    raise ConversionError(
                        f"{path}: {name} of shape {shape} and dtype {dtype} declares "
                        f"{nbytes:,} bytes of data instead of "
                        f"{math.prod(shape) * dtype.itemsize:,}. {fix}")
                arrays[name] = np.frombuffer(_read_bytes(f, nbytes), dtype).reshape(shape)
            for _ in range(_read(f, "I")):
                alias, target = _read_string(f), _read_string(f)
                if target not in arrays:
                    raise ConversionError(
                        f"{path}: the alias {alias} names {target}, which the file does not "
                        f"hold. {fix}")
                arrays[alias] = arrays[target]
    except (EOFError, UnicodeDecodeError, ValueError) as e:
        if isinstance(e, ConversionError):
            raise
        raise ConversionError(
            f"{path} is truncated or not a CTranslate2 model.bin ({type(e).__name__}). "
            f"{fix}") from None
    return spec, arrays


def _dequantize(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Float32 copies of weights; int8 weights (matrices, and the
    convolutions' `(out, in, width)` kernels) use their `weight_scale`, one
    per output row."""
    out = {}
    for name, value in arrays.items():
        if name.endswith("weight_scale"):
            continue
        scale = arrays.get(name + "_scale")
        if value.dtype == np.int8 and scale is not None:
            rows = scale.astype(np.float32).reshape((-1,) + (1,) * (value.ndim - 1))
            value = value.astype(np.float32) / rows
        elif value.dtype in (np.float16, ml_dtypes.bfloat16):
            value = value.astype(np.float32)
        out[name] = value
    return out


def _split_fused(weight: np.ndarray, parts: int) -> list[np.ndarray]:
    return np.split(weight, parts, axis=0)


def ctranslate2_to_transformers(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A CTranslate2 Whisper `model.bin` as (transformers config, state dict),
    int8 weights dequantized (`ctranslate2_whisper` keeps them).

    Raises:
        ConversionError: the model is not a Whisper model.
    """
    config, state, _ = ctranslate2_whisper(path)
    return config, state


def ctranslate2_whisper(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray],
                                                  dict[str, tuple[np.ndarray, np.ndarray]]]:
    """A CTranslate2 Whisper `model.bin` as (transformers config, state dict
    with int8 weights dequantized, int8 weights as stored). The last is
    `{CTranslate2 name: (int8 values, scale per output row)}`, empty for a
    float model; an int8 one (`quantization="int8"`, what faster-whisper's
    `compute_type="int8"` runs) stores every linear layer, the convolutions
    and the token embedding (`decoder/embeddings/weight`) so.

    Raises:
        ConversionError: the model is not a Whisper model.
    """
    spec, raw = read_ctranslate2(path)
    if spec != "WhisperSpec":
        raise ConversionError(
            f"{path} holds a CTranslate2 {spec}, not a Whisper model. Fix: point at a "
            "faster-whisper / CTranslate2 Whisper model directory.")
    try:
        config, state = _ctranslate2_whisper(_dequantize(raw), raw)
    except KeyError as e:
        raise ConversionError(
            f"{path} is a CTranslate2 Whisper model without the variable {e}. Fix: convert "
            "the model again with ctranslate2's transformers converter.") from None
    int8 = {name: (value, raw[name + "_scale"]) for name, value in raw.items()
            if value.dtype == np.int8 and name + "_scale" in raw}
    return config, state, int8


def _ctranslate2_whisper(arrays: dict[str, np.ndarray], raw: dict[str, np.ndarray]
                         ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    out: dict[str, np.ndarray] = {}

    def linear(src: str, dst: str, bias: bool = True) -> None:
        out[f"{dst}.weight"] = arrays[f"{src}/weight"]
        if bias:
            out[f"{dst}.bias"] = arrays[f"{src}/bias"]

    def norm(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = arrays[f"{src}/gamma"]
        out[f"{dst}.bias"] = arrays[f"{src}/beta"]

    def fused(src: str, dst: str, names: tuple[str, ...]) -> None:
        weights = _split_fused(arrays[f"{src}/weight"], len(names))
        biases = _split_fused(arrays[f"{src}/bias"], len(names))
        for name, weight, bias in zip(names, weights, biases):
            out[f"{dst}.{name}.weight"] = weight
            if name != "k_proj":  # Whisper's keys have no bias (CT2 stores zeros)
                out[f"{dst}.{name}.bias"] = bias

    def layers(side: str) -> list[int]:
        found = {int(m.group(1)) for k in arrays
                 if (m := re.match(rf"{side}/layer_(\d+)/", k))}
        return sorted(found)

    for i in ("1", "2"):
        out[f"model.encoder.conv{i}.weight"] = arrays[f"encoder/conv{i}/weight"]
        out[f"model.encoder.conv{i}.bias"] = arrays[f"encoder/conv{i}/bias"]
    out["model.encoder.embed_positions.weight"] = arrays["encoder/position_encodings/encodings"]
    norm("encoder/layer_norm", "model.encoder.layer_norm")
    for i in layers("encoder"):
        src, dst = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        fused(f"{src}/self_attention/linear_0", f"{dst}.self_attn", ("q_proj", "k_proj", "v_proj"))
        linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
        norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
        linear(f"{src}/ffn/linear_1", f"{dst}.fc2")
        norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
    out["model.decoder.embed_tokens.weight"] = arrays["decoder/embeddings/weight"]
    out["model.decoder.embed_positions.weight"] = arrays["decoder/position_encodings/encodings"]
    norm("decoder/layer_norm", "model.decoder.layer_norm")
    for i in layers("decoder"):
        src, dst = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        fused(f"{src}/self_attention/linear_0", f"{dst}.self_attn", ("q_proj", "k_proj", "v_proj"))
        linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
        norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
        fused(f"{src}/attention/linear_1", f"{dst}.encoder_attn", ("k_proj", "v_proj"))
        linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
        norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
        linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
        linear(f"{src}/ffn/linear_1", f"{dst}.fc2")
        norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
    vocab, width = out["model.decoder.embed_tokens.weight"].shape
    config = {
        "vocab_size": int(vocab),
        "d_model": int(width),
        "num_mel_bins": int(out["model.encoder.conv1.weight"].shape[1]),
        "encoder_layers": len(layers("encoder")),
        "decoder_layers": len(layers("decoder")),
        "encoder_attention_heads": int(raw["encoder/num_heads"].item()),
        "decoder_attention_heads": int(raw["decoder/num_heads"].item()),
        "encoder_ffn_dim": int(out["model.encoder.layers.0.fc1.weight"].shape[0]),
        "decoder_ffn_dim": int(out["model.decoder.layers.0.fc1.weight"].shape[0]),
        "max_source_positions": int(out["model.encoder.embed_positions.weight"].shape[0]),
        "max_target_positions": int(out["model.decoder.embed_positions.weight"].shape[0]),
    }
    return config, out


#: openai-whisper state-dict names -> transformers names (regex, replacement)
_OPENAI_RENAMES = (
    (r"^encoder\.positional_embedding$", "model.encoder.embed_positions.weight"),
    (r"^decoder\.positional_embedding$", "model.decoder.embed_positions.weight"),
    (r"^decoder\.token_embedding\.", "model.decoder.embed_tokens."),
    (r"^encoder\.conv(\d)\.", r"model.encoder.conv\1."),
    (r"^encoder\.ln_post\.", "model.encoder.layer_norm."),
    (r"^decoder\.ln\.", "model.decoder.layer_norm."),
    (r"^(encoder|decoder)\.blocks\.(\d+)\.", r"model.\1.layers.\2."),
    (r"\.cross_attn\.query\.", ".encoder_attn.q_proj."),
    (r"\.cross_attn\.key\.", ".encoder_attn.k_proj."),
    (r"\.cross_attn\.value\.", ".encoder_attn.v_proj."),
    (r"\.cross_attn\.out\.", ".encoder_attn.out_proj."),
    (r"\.cross_attn_ln\.", ".encoder_attn_layer_norm."),
    (r"\.attn\.query\.", ".self_attn.q_proj."),
    (r"\.attn\.key\.", ".self_attn.k_proj."),
    (r"\.attn\.value\.", ".self_attn.v_proj."),
    (r"\.attn\.out\.", ".self_attn.out_proj."),
    (r"\.attn_ln\.", ".self_attn_layer_norm."),
    (r"\.mlp\.0\.", ".fc1."),
    (r"\.mlp\.2\.", ".fc2."),
    (r"\.mlp_ln\.", ".final_layer_norm."),
)

_OPENAI_DIMS = ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer",
                "n_vocab", "n_text_ctx", "n_text_state", "n_text_head", "n_text_layer")


def _rows(arrays: dict[str, np.ndarray], name: str, default: int) -> int:
    return int(arrays[name].shape[0]) if name in arrays else default


def openai_to_transformers(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """An openai-whisper `.pt` checkpoint as (transformers config, state dict).

    Raises:
        ConversionError: the file is not an openai-whisper checkpoint.
    """
    from zoo.utils.torch_pickle import UnsafeCheckpointError, load_torch_checkpoint

    try:
        checkpoint = load_torch_checkpoint(path)
    except UnsafeCheckpointError:
        raise
    except Exception as e:
        fix = "" if "Fix:" in str(e) else " Fix: download the checkpoint again."
        raise ConversionError(f"{path} is not a readable PyTorch checkpoint ({e}).{fix}"
                              ) from None
    if not (isinstance(checkpoint, dict) and isinstance(checkpoint.get("dims"), dict)
            and isinstance(checkpoint.get("model_state_dict"), dict)):
        raise ConversionError(
            f"{path} is not an openai-whisper checkpoint (no 'dims' and "
            "'model_state_dict'). Fix: pass a file saved by openai-whisper, or a "
            "transformers / CTranslate2 Whisper directory.")
    dims = checkpoint["dims"]
    missing = [k for k in _OPENAI_DIMS if type(dims.get(k)) is not int or dims[k] <= 0]
    if missing:
        raise ConversionError(f"{path}: 'dims' lacks positive integers {missing}. Fix: pass "
                              "a checkpoint saved by openai-whisper.")
    out: dict[str, np.ndarray] = {}
    for name, value in checkpoint["model_state_dict"].items():
        new = name
        for pattern, replacement in _OPENAI_RENAMES:
            new = re.sub(pattern, replacement, new)
        out[new] = np.asarray(value)
    config = {
        "vocab_size": dims["n_vocab"], "d_model": dims["n_audio_state"],
        "num_mel_bins": dims["n_mels"], "encoder_layers": dims["n_audio_layer"],
        "decoder_layers": dims["n_text_layer"],
        "encoder_attention_heads": dims["n_audio_head"],
        "decoder_attention_heads": dims["n_text_head"],
        # 4x the width in every released model; read from the weights anyway
        "encoder_ffn_dim": _rows(out, "model.encoder.layers.0.fc1.weight",
                                 4 * dims["n_audio_state"]),
        "decoder_ffn_dim": _rows(out, "model.decoder.layers.0.fc1.weight",
                                 4 * dims["n_text_state"]),
        "max_source_positions": dims["n_audio_ctx"],
        "max_target_positions": dims["n_text_ctx"],
    }
    if dims["n_text_state"] != dims["n_audio_state"]:
        raise ConversionError(f"{path}: encoder and decoder widths differ, which Whisper "
                              "models never do.")
    return config, out
