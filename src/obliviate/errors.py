"""User-facing exceptions.

Every error a user can cause (bad file, bad field, bad value) is an ``ObliviateError`` whose
message names the file/field/value and says how to fix it. The CLI prints these without a
stack trace. Programming errors stay ordinary exceptions/asserts.
"""

from __future__ import annotations

import difflib


class ObliviateError(Exception):
    """Base class: a problem the user can fix; the message says how."""


class ConfigError(ObliviateError, ValueError):
    """A config key, type or value is wrong."""


class DataError(ObliviateError, ValueError):
    """A data file or record is wrong."""


class ModelError(ObliviateError):
    """A model cannot be found or loaded."""


class TrainingDiverged(ObliviateError, RuntimeError):
    """The loss, gradients or weights became NaN/inf; training stopped (the message names the
    newest verified checkpoint, if any)."""


class CheckpointError(ObliviateError):
    """A checkpoint cannot be read (truncated, corrupt, or holding unsafe pickled objects)."""


class StorageError(ObliviateError, OSError):
    """Writing to disk failed (disk full, permissions); the message names the path and what was kept."""


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return ' Did you mean 'x'?' for the closest choice, or '' if none is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""
