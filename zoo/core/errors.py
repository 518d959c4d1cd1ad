"""Exceptions zoo raises for problems a user can fix.

Each message names the problem and the fix; none of them should ever surface
as a stack trace from deep inside a backend.
"""

from __future__ import annotations


class ZooError(Exception):
    """Base class of every error zoo raises on purpose."""


class PresetNotFoundError(ZooError, FileNotFoundError):
    """A handle could not be resolved to a preset (nothing was found anywhere)."""


class PresetError(ZooError, ValueError):
    """A preset exists but is broken: missing file, corrupt weights, bad config."""


class ConversionError(ZooError, ValueError):
    """A checkpoint could not be converted into a zoo preset."""


class InputError(ZooError, ValueError, TypeError):
    """An input to a task call is unusable: empty, of the wrong type, or out of range.

    It is both a `ValueError` and a `TypeError`, so code that caught the
    built-in error a bad input used to raise keeps working.
    """


class NetworkError(ZooError, ConnectionError):
    """A transfer to or from a remote hub failed: offline, refused, or not allowed."""
