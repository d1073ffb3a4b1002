"""The base of every error a user can act on. The CLI prints these without a traceback."""


class ClipfitError(Exception):
    """Bad input or state, with a message that says what was wrong and what to do."""


class ConfigError(ClipfitError, ValueError):
    """A setting is out of range or unknown."""
