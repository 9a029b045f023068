"""The one exception type users see: the CLI prints its message (no traceback) and exits 1."""


class IkdError(Exception):
    """A user-facing error. The message must name the file, line or key at fault."""
