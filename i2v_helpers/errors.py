"""The errors a user can fix, which ``i2v`` reports as one ``error: ...`` line and an exit code
(:data:`i2v_helpers.cli.EXIT_CODES`) instead of a traceback.

They live here, apart from the modules that raise them, because this module imports nothing: the
command line maps them to exit codes without importing torch.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A training config that cannot run: an unknown key, a value that is not a number, a value
    outside the allowed ones, a malformed ``--set``. Raised when the config is made, before any model loads."""


class ConfigNotFound(ConfigError, FileNotFoundError):
    """No such config file or shipped config (a ``FileNotFoundError`` too, as it was before ``ConfigError``)."""


class TrainingDiverged(RuntimeError):
    """The loss or the gradients turned non-finite; the message names the last good checkpoint to resume from."""
