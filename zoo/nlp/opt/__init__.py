"""OPT: backbone, tokenizer, causal-LM preprocessor and causal LM.

Classes are imported on first use, so reading the catalog data in
`opt_presets` does not import Keras.
"""

import importlib

import zoo.presets  # noqa: F401  (installs the preset resolver zoo.core's from_preset uses)

_EXPORTS = {
    "OPTBackbone": "opt_backbone",
    "OPTCausalLM": "opt_causal_lm",
    "OPTCausalLMPreprocessor": "opt_causal_lm_preprocessor",
    "OPTTokenizer": "opt_tokenizer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
