"""SIGTERM during training: raised as ikd.errors.Terminated in the main thread, so that every `finally` runs (the
run folder's lock is released) and the process exits 143 with one line. A checkpoint being written when the
signal comes is finished first (Slurm waits KillWait, 30 s by default, before its SIGKILL)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import PurePath

from ikd.errors import Terminated


class SigtermGuard:
    """The SIGTERM handler while `installed()`; `deferred()` holds the signal back until its block ends."""

    def __init__(self) -> None:
        self._depth = 0
        self._pending = False

    def _handle(self, signum, frame) -> None:
        if self._depth:
            self._pending = True
            return
        raise Terminated("stopped by SIGTERM")

    @contextlib.contextmanager
    def installed(self) -> Iterator[SigtermGuard]:
        """Handle SIGTERM in this block (the main thread only: elsewhere Python cannot, and nothing changes)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGTERM, self._handle)
        quiet_descriptor_sharer_resets()
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A SIGTERM during this block is raised when it ends (unless the block fails: its own error wins)."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if not self._depth and self._pending:
            self._pending = False
            raise Terminated("stopped by SIGTERM")


def ignore_sigterm(_worker_id: int = 0) -> None:
    """DataLoader worker_init_fn: Slurm signals every process of the job; the training process stops its workers
    itself, and a worker dying first would turn the stop into a DataLoader error."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


_PEER_GONE = (ConnectionResetError, BrokenPipeError, EOFError)


def _from_descriptor_sharer(tb) -> bool:  # noqa: ANN001 (a traceback)
    while tb is not None:
        code = tb.tb_frame.f_code
        if PurePath(code.co_filename).parts[-2:] == ("multiprocessing", "resource_sharer.py"):
            return True
        tb = tb.tb_next
    return False


def quiet_descriptor_sharer_resets() -> None:
    """Drop the tracebacks of multiprocessing's descriptor-sharing thread when a DataLoader worker it was
    serving is gone (connection reset), which happens when training stops on SIGTERM: the one line says what
    happened, and a worker lost during training raises its own error in the main thread. Process-wide, as that
    thread can fail after the training block has ended; other threads' errors print as before."""
    previous: Callable = threading.excepthook
    if getattr(previous, "ikd_quiet_sharer", False):
        return

    def hook(args) -> None:  # noqa: ANN001 (threading.ExceptHookArgs)
        if issubclass(args.exc_type, _PEER_GONE) and _from_descriptor_sharer(args.exc_traceback):
            return
        previous(args)

    hook.ikd_quiet_sharer = True
    threading.excepthook = hook
