"""The one exception type users see: the CLI prints its message (no traceback) and exits 1."""


class IkdError(Exception):
    """A user-facing error. The message must name the file, line or key at fault."""


class Terminated(BaseException):
    """SIGTERM (Slurm's preemption signal) during training: the CLI prints its message and exits 143 (128 + 15).
    A BaseException, as KeyboardInterrupt, so that no `except Exception` swallows it."""
