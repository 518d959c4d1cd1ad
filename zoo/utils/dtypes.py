"""Keras dtype names as numpy dtypes (bfloat16 through ml_dtypes).

Example:

    >>> from zoo.utils.dtypes import numpy_dtype
    >>> numpy_dtype("bfloat16").itemsize, numpy_dtype("float32").name
    (2, 'float32')
"""

from __future__ import annotations

import ml_dtypes
import numpy as np


def numpy_dtype(dtype: str) -> np.dtype:
    """The numpy dtype for a Keras dtype name (bfloat16 through ml_dtypes)."""
    return np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
