"""transformers BERT -> zoo: a config map plus one explicit port per weight.

Used by `from_preset("hf://...")` (through zoo.presets.formats) and by
`scripts/convert_weights/convert_bert.py`. Handles `BertModel`,
`BertForSequenceClassification`, `BertForMaskedLM` / `BertForPreTraining`,
and sentence-transformers folders (mean/CLS pooling, Normalize), which become
a `BertTextEmbedder`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from zoo.core import deferred
from zoo.core.errors import ConversionError
from zoo.core.preset_io import write_preset
from zoo.core.tokenizer import check_fits_embedding
from zoo.nlp.bert.bert_backbone import BertBackbone
from zoo.nlp.bert.bert_masked_lm import BertMaskedLM
from zoo.nlp.bert.bert_preprocessor import BertPreprocessor
from zoo.nlp.bert.bert_text_classifier import BertTextClassifier
from zoo.nlp.bert.bert_text_embedder import BertTextEmbedder
from zoo.nlp.bert.bert_tokenizer import BertTokenizer
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

logger = logging.getLogger(__name__)

ACTIVATIONS = {"gelu": "gelu", "relu": "relu"}


def convert_backbone_config(hf: dict[str, Any]) -> dict[str, Any]:
    """Map a transformers `BertConfig` dict to `BertBackbone` arguments."""
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ConversionError(
            f"position_embedding_type={hf['position_embedding_type']!r} is not supported "
            "(zoo's BERT has absolute positions)."
        )
    if hf.get("hidden_act", "gelu") not in ACTIVATIONS:
        raise ConversionError(f"hidden_act={hf['hidden_act']!r} is not supported yet.")
    return {
        "vocabulary_size": hf["vocab_size"],
        "num_layers": hf["num_hidden_layers"],
        "num_heads": hf["num_attention_heads"],
        "hidden_dim": hf["hidden_size"],
        "intermediate_dim": hf["intermediate_size"],
        "dropout": hf.get("hidden_dropout_prob", 0.1),
        "max_sequence_length": hf.get("max_position_embeddings", 512),
        "num_segments": hf.get("type_vocab_size", 2),
        "layer_norm_epsilon": hf.get("layer_norm_eps", 1e-12),
        "activation": ACTIVATIONS[hf.get("hidden_act", "gelu")],
    }


def port_backbone(backbone: BertBackbone, weights: WeightReader, prefix: str) -> None:
    """Copy `BertModel` weights (keys under `prefix`) into `backbone`."""
    e = f"{prefix}embeddings"
    port_weight(backbone.token_embedding.embeddings,
                weights.take(f"{e}.word_embeddings.weight"), name="word_embeddings")
    port_weight(backbone.position_embedding.embeddings,
                weights.take(f"{e}.position_embeddings.weight"), name="position_embeddings")
    port_weight(backbone.segment_embedding.embeddings,
                weights.take(f"{e}.token_type_embeddings.weight"), name="token_type_embeddings")
    port_layer_norm(backbone.embeddings_layer_norm, weights, f"{e}.LayerNorm")
    layers = backbone.transformer_layers
    for i, layer in enumerate(progress(layers, desc="Converting BERT", total=len(layers))):
        p = f"{prefix}encoder.layer.{i}"
        attention = layer.self_attention
        port_dense(attention.query_dense, weights, f"{p}.attention.self.query")
        port_dense(attention.key_dense, weights, f"{p}.attention.self.key")
        port_dense(attention.value_dense, weights, f"{p}.attention.self.value")
        port_dense(attention.output_dense, weights, f"{p}.attention.output.dense")
        port_layer_norm(layer.self_attention_layer_norm, weights, f"{p}.attention.output.LayerNorm")
        port_dense(layer.intermediate_dense, weights, f"{p}.intermediate.dense")
        port_dense(layer.output_dense, weights, f"{p}.output.dense")
        port_layer_norm(layer.output_layer_norm, weights, f"{p}.output.LayerNorm")
    if f"{prefix}pooler.dense.weight" in weights:
        port_dense(backbone.pooled_dense, weights, f"{prefix}pooler.dense")
    else:
        logger.warning("The checkpoint has no pooler; pooled_output is randomly initialised.")


def port_classifier(task: BertTextClassifier, weights: WeightReader) -> None:
    """Copy `BertForSequenceClassification.classifier` into the task head."""
    port_dense(task.output_dense, weights, "classifier")


def port_masked_lm(task: BertMaskedLM, weights: WeightReader) -> None:
    """Copy `BertForMaskedLM.cls.predictions` (decoder tied to embeddings)."""
    head = task.mlm_head
    port_dense(head.dense, weights, "cls.predictions.transform.dense")
    port_layer_norm(head.layer_norm, weights, "cls.predictions.transform.LayerNorm")
    port_weight(head.bias, weights.take("cls.predictions.bias", "cls.predictions.decoder.bias"),
                name="cls.predictions.bias")
    if "cls.predictions.decoder.weight" in weights:  # tied: equals word_embeddings
        embeddings = weights.take("bert.embeddings.word_embeddings.weight",
                                  "embeddings.word_embeddings.weight")
        if not np.array_equal(weights.take("cls.predictions.decoder.weight"), embeddings):
            raise ConversionError(
                "cls.predictions.decoder.weight differs from the word embeddings "
                "(tie_word_embeddings=False); zoo's BertMaskedLM ties them.")


def convert_tokenizer(source: Path) -> BertTokenizer:
    """Build a `BertTokenizer` from vocab.txt (or tokenizer.json) and its settings."""
    config_file = source / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    lowercase = config.get("do_lower_case", True)
    kwargs = {
        "lowercase": lowercase,
        "strip_accents": config.get("strip_accents"),
        "split_cjk": config.get("tokenize_chinese_chars", True),
    }
    if (source / "vocab.txt").is_file():
        return BertTokenizer(vocabulary=source / "vocab.txt", **kwargs)
    if (source / "tokenizer.json").is_file():
        model = json.loads((source / "tokenizer.json").read_text())["model"]
        if model.get("type") != "WordPiece":
            raise ConversionError(f"{source}/tokenizer.json is not a WordPiece tokenizer.")
        vocab = sorted(model["vocab"].items(), key=lambda item: item[1])
        return BertTokenizer(vocabulary=[t for t, _ in vocab], **kwargs)
    raise ConversionError(
        f"{source} has no vocab.txt or tokenizer.json, so its tokenizer cannot be "
        "converted. Fix: add the tokenizer files of the original model."
    )


def _sentence_transformers_head(source: Path) -> dict[str, Any] | None:
    """Pooling/normalize settings of a sentence-transformers folder, if it is one."""
    modules_file = source / "modules.json"
    if not modules_file.is_file():
        return None
    modules = json.loads(modules_file.read_text())
    pooling = "mean"
    for module in modules:
        if module["type"].endswith("Pooling"):
            pooling_config = json.loads((source / module["path"] / "config.json").read_text())
            if pooling_config.get("pooling_mode_cls_token"):
                pooling = "cls"
            elif not pooling_config.get("pooling_mode_mean_tokens", True):
                raise ConversionError(f"{source}: only mean and CLS pooling are supported.")
    normalize = any(m["type"].endswith("Normalize") for m in modules)
    head = {"pooling": pooling, "normalize": normalize}
    st_config = source / "sentence_bert_config.json"
    if st_config.is_file():
        head["sequence_length"] = json.loads(st_config.read_text()).get("max_seq_length")
    return head


def convert_transformers(source: Path, output: Path, handle: str, dtype: str = "source") -> None:
    """Convert a transformers (or sentence-transformers) BERT folder into a zoo preset.

    Args:
        source: the folder with config.json, weights and tokenizer files.
        output: an empty directory to write the preset into.
        handle: the source handle, recorded in metadata.json.
        dtype: the dtype the preset stores its weights in
            (`zoo.presets.checkpoint_io.storage_dtype`; "source": the checkpoint's).

    Raises:
        ConversionError: the folder is incomplete, or holds weights zoo would drop.
    """
    source = Path(source)
    hf_config = json.loads((source / "config.json").read_text())
    weights = WeightReader(read_transformers_weights(source), str(source))
    storage = weights.storage_dtype(dtype)
    # Built in the storage dtype without values; each weight is read, ported
    # and written one at a time (deferred.streamed_values).
    with deferred.streamed_values():
        backbone, created = deferred.abstract_build(
            lambda: BertBackbone(**convert_backbone_config(hf_config), dtype=storage))
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""
        port_backbone(backbone, weights, prefix)
        deferred.initialize_rest(created)  # the pooler, when the checkpoint has none
        tokenizer = convert_tokenizer(source)
        check_fits_embedding(tokenizer, backbone.vocabulary_size, str(source))
        sequence_length = min(hf_config.get("max_position_embeddings", 512), 512)
        architectures = hf_config.get("architectures") or []
        st_head = _sentence_transformers_head(source)
        task = None
        if "BertForSequenceClassification" in architectures:
            num_classes = hf_config.get("num_labels") or len(hf_config.get("id2label", {})) or 2
            dropout = (hf_config.get("classifier_dropout")
                       or hf_config.get("hidden_dropout_prob", 0.1))
            task = BertTextClassifier(backbone, num_classes=num_classes, dropout=dropout,
                                      preprocessor=BertPreprocessor(tokenizer, sequence_length))
            port_classifier(task, weights)
        elif {"BertForMaskedLM", "BertForPreTraining"} & set(architectures):
            from zoo.nlp.bert.bert_masked_lm_preprocessor import BertMaskedLMPreprocessor

            task = BertMaskedLM(backbone, BertMaskedLMPreprocessor(tokenizer, sequence_length))
            port_masked_lm(task, weights)
            for name in weights.unused():  # next-sentence head of BertForPreTraining
                if name.startswith("cls.seq_relationship."):
                    weights.take(name)
        elif st_head is not None:
            sequence_length = min(st_head.pop("sequence_length") or sequence_length,
                                  sequence_length)
            task = BertTextEmbedder(backbone, BertPreprocessor(tokenizer, sequence_length),
                                    **st_head)
        preprocessor = task.preprocessor if task else BertPreprocessor(tokenizer, sequence_length)
        unused = [n for n in weights.unused() if not n.endswith("position_ids")]
        if unused:
            raise ConversionError(
                f"{source} has weights the converted model would drop: {unused[:5]}. "
                "Its architecture is not one zoo's BERT supports yet."
            )
        write_preset(output, backbone=backbone, preprocessor=preprocessor, task=task,
                     source=handle, storage_dtype=storage, config_dtype="float32")


VERIFY_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Café crème, naïve façade — déjà vu!",
    "東京は日本の首都です。",
    "Short.",
]


def compare_with_transformers(preset_dir: Path, source: Path) -> float:
    """Max abs difference between the zoo preset and transformers on sample text.

    Compares classifier logits, masked-LM logits (every real position) or
    last hidden states (real tokens), whichever the preset holds, with the
    reference in float32 from the weights as the preset stores them
    (`load_reference`). Needs `torch` and `transformers`.
    """
    import numpy as np
    import torch
    import transformers

    from zoo.core.backbone import Backbone
    from zoo.core.task import Task

    preset_dir, source = Path(preset_dir), Path(source)
    preprocessor = BertPreprocessor.from_preset(preset_dir, padding="longest")
    batch = preprocessor.encode(VERIFY_SENTENCES)
    torch_batch = {
        "input_ids": torch.tensor(batch["token_ids"]).long(),
        "token_type_ids": torch.tensor(batch["segment_ids"]).long(),
        "attention_mask": torch.tensor(batch["padding_mask"]).long(),
    }
    real = batch["padding_mask"].astype(bool)
    has_task = (preset_dir / "task.json").is_file()
    task = Task.from_preset(preset_dir) if has_task else None
    # float32 like zoo's model, from the weights as the preset stores them
    with torch.no_grad():
        if isinstance(task, BertTextClassifier):
            ref = load_reference(transformers.BertForSequenceClassification, source, preset_dir)
            expected = ref(**torch_batch).logits.numpy()
            ours = np.asarray(task.predict_on_batch(batch))
        elif isinstance(task, BertMaskedLM):
            ref = load_reference(transformers.BertForMaskedLM, source, preset_dir)
            expected = ref(**torch_batch).logits.numpy()[real]
            positions = np.tile(np.arange(real.shape[1], dtype="int32"), (len(real), 1))
            ours = np.asarray(task.predict_on_batch({**batch, "mask_positions": positions}))[real]
        else:
            ref = load_reference(transformers.BertModel, source, preset_dir)
            expected = ref(**torch_batch).last_hidden_state.numpy()[real]
            backbone = task.backbone if task is not None else Backbone.from_preset(preset_dir)
            ours = np.asarray(backbone.predict_on_batch(batch)["sequence_output"])[real]
    return float(np.abs(ours.astype("float32") - expected).max())
