"""User-facing errors: each carries one line that names the problem (and the fix)."""


class UsageError(ValueError):
    """Bad input from the user: a value, a file, a frame. Front-ends print str(e) and exit 2."""


class WeightsError(UsageError):
    """A weights file is missing, corrupt, truncated, or does not fit the requested model."""
