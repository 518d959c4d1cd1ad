"""Text model families (currently BERT).

Example:

>>> from zoo.nlp import BertTextEmbedder
>>> BertTextEmbedder.__name__
'BertTextEmbedder'
"""

from zoo.nlp import bert as _bert

__all__ = list(_bert.__all__)


def __getattr__(name: str):
    if name in __all__:
        return getattr(_bert, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
