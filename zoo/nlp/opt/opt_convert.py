"""transformers OPT -> zoo: a config map plus one explicit port per weight.

Handles every OPT variant: pre-LN (opt-125m, 1.3b, ...) and post-LN
(`do_layer_norm_before=False`, opt-350m), and `word_embed_proj_dim !=
hidden_size` with `project_in`/`project_out` (opt-350m).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from zoo.core import deferred
from zoo.core.errors import ConversionError
from zoo.core.preset_io import write_preset
from zoo.core.tokenizer import check_fits_embedding
from zoo.nlp.opt.opt_backbone import OPTBackbone
from zoo.nlp.opt.opt_causal_lm import OPTCausalLM
from zoo.nlp.opt.opt_causal_lm_preprocessor import OPTCausalLMPreprocessor
from zoo.nlp.opt.opt_tokenizer import OPTTokenizer
from zoo.presets.checkpoint_io import (
    WeightReader,
    load_reference,
    port_dense,
    port_layer_norm,
    port_weight,
    read_transformers_weights,
)
from zoo.presets.formats import TRANSFORMERS_FORMAT
from zoo.utils.progress import progress

#: the checkpoints this module converts, and how each is checked (zoo.families)
SOURCE_FORMATS = {"transformers": TRANSFORMERS_FORMAT}


def convert_backbone_config(hf: dict[str, Any]) -> dict[str, Any]:
    """Map a transformers `OPTConfig` dict to `OPTBackbone` arguments."""
    if hf.get("activation_function", "relu") != "relu":
        raise ConversionError(
            f"activation_function={hf['activation_function']!r} is not supported yet.")
    if not hf.get("layer_norm_elementwise_affine", True):
        raise ConversionError("layer_norm_elementwise_affine=False is not supported yet.")
    pre_ln = hf.get("do_layer_norm_before", True)
    return {
        "vocabulary_size": hf["vocab_size"],
        "num_layers": hf["num_hidden_layers"],
        "num_heads": hf["num_attention_heads"],
        "hidden_dim": hf["hidden_size"],
        "intermediate_dim": hf["ffn_dim"],
        "max_sequence_length": hf["max_position_embeddings"],
        "embedding_dim": hf.get("word_embed_proj_dim") or hf["hidden_size"],
        "normalize_first": pre_ln,
        "final_layer_norm": pre_ln and not hf.get("_remove_final_layer_norm", False),
        "dropout": hf.get("dropout", 0.1),
        "activation": "relu",
        "layer_norm_epsilon": 1e-5,
        "use_bias": hf.get("enable_bias", True),
    }


def port_backbone(backbone: OPTBackbone, weights: WeightReader, prefix: str) -> None:
    """Copy `OPTModel` weights (keys under `prefix`, e.g. `model.decoder.`)."""
    port_weight(backbone.token_embedding.embeddings, weights.take(f"{prefix}embed_tokens.weight"),
                name="embed_tokens")
    port_weight(backbone.position_embedding.embeddings,
                weights.take(f"{prefix}embed_positions.weight"), name="embed_positions")
    if backbone.project_in is not None:
        port_dense(backbone.project_in, weights, f"{prefix}project_in", bias=False)
        port_dense(backbone.project_out, weights, f"{prefix}project_out", bias=False)
    if backbone.output_layer_norm is not None:
        port_layer_norm(backbone.output_layer_norm, weights, f"{prefix}final_layer_norm")
    bias = backbone.use_bias
    layers = backbone.transformer_layers
    for i, layer in enumerate(progress(layers, desc="Converting OPT", total=len(layers))):
        p = f"{prefix}layers.{i}"
        attention = layer.self_attention
        port_dense(attention.query_dense, weights, f"{p}.self_attn.q_proj", bias)
        port_dense(attention.key_dense, weights, f"{p}.self_attn.k_proj", bias)
        port_dense(attention.value_dense, weights, f"{p}.self_attn.v_proj", bias)
        port_dense(attention.output_dense, weights, f"{p}.self_attn.out_proj", bias)
        port_layer_norm(layer.self_attention_layer_norm, weights, f"{p}.self_attn_layer_norm")
        port_dense(layer.intermediate_dense, weights, f"{p}.fc1", bias)
        port_dense(layer.output_dense, weights, f"{p}.fc2", bias)
        port_layer_norm(layer.output_layer_norm, weights, f"{p}.final_layer_norm")


def convert_transformers(source: Path, output: Path, handle: str, dtype: str = "source") -> None:
    """Convert a transformers OPT folder (`OPTModel`/`OPTForCausalLM`) to a zoo
    preset, its weights stored in `dtype` (`checkpoint_io.storage_dtype`).

    Raises:
        ConversionError: the folder is incomplete or holds weights zoo would drop.
    """
    source = Path(source)
    hf_config = json.loads((source / "config.json").read_text())
    weights = WeightReader(read_transformers_weights(source), str(source))
    storage = weights.storage_dtype(dtype)
    # Built in the storage dtype without values; each weight is read, ported
    # and written one at a time (deferred.streamed_values): the converted
    # model is never held in memory.
    with deferred.streamed_values():
        backbone, created = deferred.abstract_build(
            lambda: OPTBackbone(**convert_backbone_config(hf_config), dtype=storage))
        prefix = "model.decoder." if "model.decoder.embed_tokens.weight" in weights else "decoder."
        port_backbone(backbone, weights, prefix)
        deferred.require_values(backbone, created, str(source))
        if "lm_head.weight" in weights:  # tied to embed_tokens in every released OPT
            if not np.array_equal(weights.take("lm_head.weight"),
                                  weights.take(f"{prefix}embed_tokens.weight")):
                raise ConversionError(
                    f"{source}: lm_head.weight differs from the token embedding "
                    "(tie_word_embeddings=False); zoo's OPT ties them as every released OPT does.")
        unused = weights.unused()
        if unused:
            raise ConversionError(
                f"{source} has weights the converted model would drop: {unused[:5]}.")
        preprocessor = None
        if any((source / name).is_file() for name in ("vocab.json", "tokenizer.json")):
            tokenizer = OPTTokenizer.from_huggingface(source)
            check_fits_embedding(tokenizer, backbone.vocabulary_size, str(source))
            preprocessor = OPTCausalLMPreprocessor(
                tokenizer, sequence_length=min(backbone.max_sequence_length, 1024))
        task = OPTCausalLM(backbone, preprocessor=preprocessor)
        write_preset(output, backbone=backbone, preprocessor=preprocessor, task=task, source=handle,
                     storage_dtype=storage, config_dtype="float32")


def compare_with_transformers(preset_dir: Path, source: Path) -> float:
    """Max abs difference of logits (real tokens) against `OPTForCausalLM`
    (float32, from the weights as the preset stores them: `load_reference`).

    Uses fixed pseudo-random token ids with left padding, so it needs no
    tokenizer; requires `torch` and `transformers`.
    """
    import numpy as np
    import torch
    import transformers

    lm = OPTCausalLM.from_preset(preset_dir)
    rng = np.random.default_rng(0)
    vocab = lm.backbone.vocabulary_size
    token_ids = rng.integers(4, vocab, size=(3, 16)).astype("int32")
    padding_mask = (np.arange(16)[None, :] >= np.array([[0], [5], [11]])).astype("int32")
    token_ids = np.where(padding_mask == 1, token_ids, 1).astype("int32")
    # float32 like zoo's model, from the weights the preset stores: a 16-bit
    # checkpoint (every OPT from 1.3b up is float16) is compared in float32 on
    # both sides, never 16-bit against 32-bit
    reference = load_reference(transformers.OPTForCausalLM, source, preset_dir)
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor(token_ids).long(),
                             attention_mask=torch.tensor(padding_mask).long()).logits.numpy()
    ours = np.asarray(lm.predict_on_batch({"token_ids": token_ids,
                                           "padding_mask": padding_mask}), "float32")
    real = padding_mask.astype(bool)
    return float(np.abs(ours[real] - expected[real]).max())
