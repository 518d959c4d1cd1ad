"""Text model families: BERT and OPT.

Example:

>>> from zoo.nlp import BertTextEmbedder
>>> BertTextEmbedder.__name__
'BertTextEmbedder'
"""

from zoo.nlp import bert as _bert
from zoo.nlp import opt as _opt

__all__ = list(_bert.__all__) + list(_opt.__all__)


def __getattr__(name: str):
    for family in (_bert, _opt):
        if name in family.__all__:
            return getattr(family, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
