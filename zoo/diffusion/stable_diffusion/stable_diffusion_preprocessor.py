"""Stable Diffusion preprocessing: prompts to CLIP token ids."""

from __future__ import annotations

from typing import Any

import keras

from zoo.core.preprocessor import Preprocessor
from zoo.core.text_to_image_inputs import as_prompt_list
from zoo.tokenizers.clip import CLIPTokenizer


@keras.saving.register_keras_serializable(package="zoo")
class StableDiffusionPreprocessor(Preprocessor):
    """Tokenize prompts for the CLIP text encoder: `<|startoftext|>`, the
    prompt, `<|endoftext|>`, padded (and truncated) to `sequence_length`.

    Args:
        tokenizer: a `CLIPTokenizer`.
        sequence_length: tokens per prompt (77: CLIP's context).

    Example:

    >>> from zoo.models import CLIPTokenizer, StableDiffusionPreprocessor
    >>> pre = StableDiffusionPreprocessor(CLIPTokenizer.from_open_clip())
    >>> pre(["a photo of a cat"])["token_ids"].shape
    (1, 77)
    """

    tokenizer_cls = CLIPTokenizer

    def __init__(self, tokenizer: CLIPTokenizer, sequence_length: int = 77) -> None:
        super().__init__(tokenizer)
        self.sequence_length = int(sequence_length)

    def __call__(self, x: Any, y: Any = None, sample_weight: Any = None) -> Any:
        prompts = as_prompt_list(x)
        return self.tokenizer.encode(prompts, sequence_length=self.sequence_length)

    def get_config(self) -> dict:
        return {"sequence_length": self.sequence_length}
