"""One training per run folder: RUN/.lock names the training that writes the folder (host, PID, start time).

How it is taken: the holder's record is written to a temporary file, which is then hard-linked to RUN/.lock.
link(2) fails when the name exists, atomically, on local disks and on NFS alike (O_EXCL is atomic on NFS v3+
only, and flock(2) is local-only or missing on some cluster file systems), so two trainings never both hold it.
Where hard links are not supported, O_EXCL creation is used instead.

A lock is stale when its holder is gone: on the same host (and since the same boot), its PID is not running,
or runs another program that started later (a PID reused). A stale lock is taken over. On another host nothing
can tell whether the holder still runs (a node that crashed, a job requeued elsewhere after SIGKILL), so the
lock is refused with a line naming the holder; removing the file lets the next training take it. The lock is
removed when the training ends, also on errors and on SIGTERM (ikd.train.signals); SIGKILL leaves it, stale.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from ikd.errors import IkdError

LOCK = ".lock"
# Locks this process holds, by path, with how many holders: `ikd experiment` holds a run's lock and trains in it
_HELD: dict[Path, tuple[Holder, int]] = {}
# link(2) errors of a file system without hard links (then O_EXCL creation is used)
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EXDEV, errno.EMLINK}


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started: str  # ISO 8601 time the lock was taken
    boot_id: str = ""  # /proc/sys/kernel/random/boot_id ("" off Linux): a PID means nothing after a reboot
    process_start: int = -1  # the process's start in clock ticks since boot (/proc/PID/stat), -1 unknown

    def describe(self) -> str:
        if self.pid < 0:
            return "an empty lock file, as older versions left"
        return f"host {self.host}, PID {self.pid}, since {self.started}"


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


def _boot_id() -> str:
    return _read("/proc/sys/kernel/random/boot_id")


def _process_start(pid: int) -> tuple[int, bool] | None:
    """(start time in clock ticks since boot, whether it is a zombie) of a process, from /proc; None if
    /proc cannot tell (not Linux, or the process is gone)."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after "PID (COMMAND) ": the command may hold spaces
    try:
        return int(fields[19]), fields[0] == "Z"
    except (IndexError, ValueError):
        return None


def this_process() -> Holder:
    start = _process_start(os.getpid())
    return Holder(
        host=socket.gethostname(),
        pid=os.getpid(),
        started=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        boot_id=_boot_id(),
        process_start=start[0] if start else -1,
    )


def _alive(holder: Holder) -> bool:
    """Whether the holder (on this host) may still run. When in doubt: yes."""
    if holder.boot_id and _boot_id() and holder.boot_id != _boot_id():
        return False  # the machine was restarted since
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process
    start = _process_start(holder.pid)
    if start is None:
        return True
    ticks, zombie = start
    if zombie:
        return False
    return holder.process_start < 0 or ticks == holder.process_start


_UNHELD = Holder(host="", pid=-1, started="")  # an empty lock file (older versions held it with flock)


def read_holder(path: Path) -> Holder | None:
    """The holder recorded in a lock file; None if the file is gone, _UNHELD if it is empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise IkdError(f"{path}: the run folder's lock cannot be read ({e.strerror or e})") from None
    if not text.strip():
        return _UNHELD
    try:
        raw = json.loads(text)
        return Holder(**{k: raw[k] for k in ("host", "pid", "started")}, boot_id=raw.get("boot_id", ""),
                      process_start=int(raw.get("process_start", -1)))  # fmt: skip
    except (ValueError, KeyError, TypeError):
        raise IkdError(
            f"{path}: not a lock that ikd wrote; remove it if no training runs in {path.parent}"
        ) from None


class RunLock:
    """RUN/.lock, held from `acquire()` to `release()` (or as a context manager)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self.holder: Holder | None = None
        self.taken_over: Holder | None = None  # the stale holder this lock replaced
        self._created_folder = False
        self._key: Path | None = None

    def acquire(self) -> RunLock:
        """Take the lock, or raise IkdError naming the folder and the holder; a stale lock is taken over. A lock
        this process already holds is held once more (and released by the last holder)."""
        if not self.folder.exists():
            self.folder.mkdir(parents=True)
            self._created_folder = True
        self._key = self.path.resolve()
        if self._key in _HELD:
            holder, count = _HELD[self._key]
            _HELD[self._key] = (holder, count + 1)
            self.holder = holder
            return self
        me = this_process()
        text = json.dumps(asdict(me), indent=1) + "\n"
        for _ in range(10):  # each turn either takes the lock, refuses, or removes one stale lock
            if self._create(text):
                self.holder = me
                _HELD[self._key] = (me, 1)
                return self
            holder = read_holder(self.path)
            if holder is None:
                continue  # released meanwhile
            if holder is _UNHELD:  # an empty file no process locks: an older version's lock, or a crash
                if self._remove_stale(holder):
                    self.taken_over = holder
                    continue
                raise IkdError(f"{self.folder}: another ikd process is working in this run folder (an older version)")
            if holder.host != me.host:
                raise IkdError(
                    f"{self.folder}: this run folder is held by an ikd process of another host ({holder.describe()}); "
                    f"if it no longer runs (a crashed node), remove {self.path}"
                )
            if _alive(holder):
                raise IkdError(
                    f"{self.folder}: another ikd process is working in this run folder ({holder.describe()}); "
                    "wait for it to end or give another --out"
                )
            if self._remove_stale(holder):
                self.taken_over = holder
        raise IkdError(f"{self.path}: could not take the run folder's lock (other trainings keep taking it)")

    def _create(self, text: str) -> bool:
        """Write the lock file in one step; False if it exists."""
        fd, tmp = tempfile.mkstemp(prefix=f"{LOCK}.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            try:
                os.link(tmp, self.path)
                return True
            except FileExistsError:
                return False
            except OSError as e:
                if os.stat(tmp).st_nlink == 2:  # NFS: the link was made, its reply was lost
                    return True
                if e.errno not in _NO_LINKS:
                    raise
            try:  # a file system without hard links
                with open(self.path, "x", encoding="utf-8") as f:
                    f.write(text)
                return True
            except FileExistsError:
                return False
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def _remove_stale(self, holder: Holder) -> bool:
        """Remove the lock file if it still records `holder`. Two processes of this host taking over the same
        stale lock take turns under flock (the only takers: a lock of another host is never taken over); the
        second finds the file replaced and starts again."""
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return False
        with f:
            try:
                import fcntl

                # an empty file: taken over only if no process holds it (0.2.0's experiment lock is an flock)
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | (fcntl.LOCK_NB if holder is _UNHELD else 0))
            except BlockingIOError:
                return False
            except (OSError, ImportError):
                pass  # no flock here: same-host takers are then not serialised
            try:
                same = os.stat(self.path).st_ino == os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                return False
            if not same or read_holder(self.path) != holder:
                return False
            self.path.unlink()
            return True

    def check(self) -> None:
        """Raise IkdError unless this process still holds the lock (the file removed or taken by another
        training: writing on would mix two runs' checkpoints)."""
        if self.holder is None:
            return
        now = read_holder(self.path)
        if now != self.holder:
            whom = "removed" if now is None else "emptied" if now is _UNHELD else f"now held by {now.describe()}"
            raise IkdError(f"{self.path}: the run folder's lock was {whom}; this training stops without writing")

    def release(self) -> None:
        """Remove the lock if it is still ours (and the run folder, if this lock created it and it is empty)."""
        if self.holder is None:
            return
        self.holder = None
        holder, count = _HELD.pop(self._key, (None, 0))
        if count > 1:
            _HELD[self._key] = (holder, count - 1)
            return
        with contextlib.suppress(OSError, IkdError):
            if read_holder(self.path) == holder:
                self.path.unlink()
        if self._created_folder:
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only when nothing was written in it

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
