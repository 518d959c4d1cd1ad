"""transformers `CLIPTextModel` -> `CLIPTextEncoder`: config map and weight ports."""

from __future__ import annotations

from typing import Any

from zoo.core.errors import ConversionError
from zoo.diffusion.stable_diffusion.clip_text_encoder import ACTIVATIONS, CLIPTextEncoder
from zoo.presets.checkpoint_io import WeightReader, port_dense, port_layer_norm, port_weight


def text_encoder_config(hf: dict[str, Any]) -> dict[str, Any]:
    """`CLIPTextEncoder` arguments from a transformers `CLIPTextConfig` dict."""
    if hf.get("hidden_act", "quick_gelu") not in ACTIVATIONS:
        raise ConversionError(f"The text encoder's hidden_act={hf['hidden_act']!r} is not "
                              f"supported (supported: {', '.join(ACTIVATIONS)}).")
    return {"vocabulary_size": int(hf.get("vocab_size", 49408)),
            "hidden_dim": int(hf.get("hidden_size", 512)),
            "num_layers": int(hf.get("num_hidden_layers", 12)),
            "num_heads": int(hf.get("num_attention_heads", 8)),
            "intermediate_dim": int(hf.get("intermediate_size", 2048)),
            "max_sequence_length": int(hf.get("max_position_embeddings", 77)),
            "activation": hf.get("hidden_act", "quick_gelu"),
            "layer_norm_epsilon": float(hf.get("layer_norm_eps", 1e-5))}


def port_text_encoder(encoder: CLIPTextEncoder, weights: WeightReader,
                      prefix: str | None = None) -> None:
    """Copy a `CLIPTextModel`'s weights (transformers names under `prefix`;
    None: `text_model.` when the checkpoint has it, as transformers 4 saved
    them, else no prefix, as transformers 5 saves them)."""
    if prefix is None:
        prefix = ("text_model." if "text_model.embeddings.token_embedding.weight" in weights
                  else "")
    emb = f"{prefix}embeddings"
    port_weight(encoder.token_embedding.embeddings,
                weights.take(f"{emb}.token_embedding.weight"), name="token_embedding")
    port_weight(encoder.position_embedding.embeddings,
                weights.take(f"{emb}.position_embedding.weight"), name="position_embedding")
    if f"{emb}.position_ids" in weights:
        weights.take(f"{emb}.position_ids")  # a buffer (0..76), not a weight
    for i, layer in enumerate(encoder.encoder_layers):
        p = f"{prefix}encoder.layers.{i}"
        port_layer_norm(layer.layer_norm1, weights, f"{p}.layer_norm1")
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            port_dense(getattr(layer, name), weights, f"{p}.self_attn.{name}")
        port_layer_norm(layer.layer_norm2, weights, f"{p}.layer_norm2")
        port_dense(layer.fc1, weights, f"{p}.mlp.fc1")
        port_dense(layer.fc2, weights, f"{p}.mlp.fc2")
    port_layer_norm(encoder.final_layer_norm, weights, f"{prefix}final_layer_norm")
