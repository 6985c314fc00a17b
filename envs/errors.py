"""User-facing errors: each carries a one-line message that says what is wrong and how to fix it.

The CLIs (`train.py`, `python -m pixelplay.eval`) catch `PixelplayError`, print its message and exit with
status 2; anything else is a bug and keeps its traceback.
"""


class PixelplayError(Exception):
    """Bad input from the user (unknown env, mismatched checkpoint, impossible geometry, ...)."""


class EnvError(PixelplayError):
    """An env name, option or backend that cannot be served."""


class MissingDependencyError(PixelplayError):
    """An optional package (EnvPool, a display for a human player, ...) is not installed."""
