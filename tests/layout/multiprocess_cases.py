"""The models and inputs `test_multiprocess.py` runs in one process and in a
job of two (`multiprocess_worker.py`): the same code on both sides."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np

from zoo.models import (
    BertBackbone,
    BertPreprocessor,
    BertTextClassifier,
    BertTokenizer,
    OPTBackbone,
    OPTCausalLM,
    OPTCausalLMPreprocessor,
    OPTTokenizer,
    WhisperBackbone,
)

OPT = dict(vocabulary_size=64, num_layers=2, num_heads=8, hidden_dim=32, intermediate_dim=64,
           max_sequence_length=32, dropout=0.0)
BERT = dict(vocabulary_size=30, num_layers=2, num_heads=8, hidden_dim=32, intermediate_dim=64,
            max_sequence_length=16, dropout=0.0)
WHISPER = dict(vocabulary_size=64, num_encoder_layers=2, num_decoder_layers=2, num_heads=8,
               hidden_dim=32, intermediate_dim=64, num_mels=4, max_encoder_sequence_length=10,
               max_decoder_sequence_length=16, dropout=0.0)
INPUTS = {"token_ids": np.array([[1, 2, 3, 4, 5], [0, 0, 6, 7, 8]], "int32"),
          "padding_mask": np.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]], "int32")}
TARGETS = np.array([[2, 3, 4, 5, 6], [0, 0, 7, 8, 9]], "int32")
BERT_INPUTS = {**INPUTS, "segment_ids": np.zeros_like(INPUTS["token_ids"])}
WHISPER_INPUTS = {
    "encoder_features": np.random.default_rng(0).normal(size=(2, 4, 20)).astype("float32"),
    "decoder_token_ids": np.array([[1, 5, 9, 13, 17, 21], [0, 0, 1, 7, 11, 15]], "int32"),
    "decoder_padding_mask": np.array([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]], "int32"),
}
FIT_STEPS = 3
WORDS = "the a cat dog sat on mat ran far away big small red blue green house tree car".split()
BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
OPT_VOCAB = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "t": 4, "h": 5, "e": 6, "Ġ": 7,
             "c": 8, "a": 9, "th": 10, "the": 11, "Ġc": 12, "Ġca": 13, "Ġt": 14, "Ġth": 15,
             "Ġthe": 16}
OPT_MERGES = ["t h", "th e", "Ġ c", "Ġc a", "Ġ t", "Ġt h", "Ġth e"]
#: raw strings for data-parallel fine-tuning: 16 rows, global batches of 8
_rng = np.random.default_rng(1)
TEXTS = [" ".join(_rng.choice(WORDS, size=_rng.integers(2, 12))) for _ in range(16)]
OPT_TEXTS = [" ".join(_rng.choice(["the", "cat", "a", "ca", "tea"], size=_rng.integers(2, 9)))
             for _ in range(16)]
LABELS = _rng.integers(0, 3, size=16).astype("int32")
GLOBAL_BATCH = 8


def make_presets(work: Path) -> None:
    """Random OPT, BERT and Whisper presets under `work` (one process writes them)."""
    keras.utils.set_random_seed(0)
    OPTBackbone(**OPT).save_to_preset(work / "opt")
    BertBackbone(**BERT).save_to_preset(work / "bert")
    WhisperBackbone(**WHISPER).save_to_preset(work / "whisper")
    BertTextClassifier(
        BertBackbone(**{**BERT, "vocabulary_size": len(BERT_VOCAB)}), num_classes=3,
        dropout=0.0, preprocessor=BertPreprocessor(BertTokenizer(vocabulary=BERT_VOCAB),
                                                   sequence_length=16),
    ).save_to_preset(work / "bert_classifier")
    OPTCausalLM(OPTBackbone(**{**OPT, "vocabulary_size": len(OPT_VOCAB)}),
                preprocessor=OPTCausalLMPreprocessor(OPTTokenizer(OPT_VOCAB, OPT_MERGES),
                                                     sequence_length=16),
                ).save_to_preset(work / "opt_lm")


def forward(model: Any, inputs: Any) -> Any:
    """`model(inputs)` as one compiled jax computation. In a job, calling a
    sharded model eagerly runs one small parallel computation per op, and two
    of them can run their collectives in different orders on different
    processes: CI hung that way (each process stuck in another layer norm)."""
    import jax

    def call(trainable: Any, non_trainable: Any, x: Any) -> Any:
        return model.stateless_call(trainable, non_trainable, x)[0]

    return jax.jit(call)([v.value for v in model.trainable_variables],
                         [v.value for v in model.non_trainable_variables], inputs)


def opt_run(directory: Path, host: Callable[[Any], np.ndarray]) -> tuple[Any, dict]:
    """OPT from `directory`: logits, greedy ids, `FIT_STEPS` losses, logits after.

    `host` turns an output into numpy (a gather when other processes hold
    parts of it)."""
    lm = OPTCausalLM(OPTBackbone.from_preset(directory))
    lm.compile(optimizer=keras.optimizers.SGD(0.1),
               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
               weighted_metrics=[])
    out = {"logits": host(forward(lm, INPUTS)),
           "ids": np.asarray(lm.generate(INPUTS, max_new_tokens=8))}
    out["losses"] = np.array([
        float(np.ravel(lm.train_on_batch(INPUTS, TARGETS, sample_weight=INPUTS["padding_mask"]))[0])
        for _ in range(FIT_STEPS)])
    out["logits_after_fit"] = host(forward(lm, INPUTS))
    return lm, out


def data_parallel_fit(work: Path) -> dict:
    """Fine-tune the BERT classifier and OPT with LoRA on raw strings, global
    batches of `GLOBAL_BATCH`, two epochs in order; the loss after each step."""
    from zoo.models import Task

    out = {}
    for name, x, y in (("bert_classifier", TEXTS, LABELS), ("opt_lm", OPT_TEXTS, None)):
        task = Task.from_preset(work / name)
        if name == "opt_lm":
            keras.utils.set_random_seed(0)  # the adapters' random start, as in one process
            task.backbone.enable_lora(rank=2)
        task.compile(optimizer=keras.optimizers.SGD(0.1),
                     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                     weighted_metrics=[])
        seen: list = []
        record = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: seen.append(float(logs["loss"])))
        task.fit(x, y, batch_size=GLOBAL_BATCH, epochs=2, shuffle=False, verbose=0,
                 callbacks=[record])
        out[f"{name}_losses"] = np.array(seen)
    return out
