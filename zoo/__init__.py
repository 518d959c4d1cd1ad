"""zoo: a pretrained-model hub for Keras 3.

Importing `zoo` is cheap: it only sets the version. Models live in
`zoo.models` (the flat public namespace), preset handling in `zoo.presets`.

Example:

>>> import zoo
>>> isinstance(zoo.__version__, str)
True
"""

__version__ = "0.1.0"
