"""One writer per output folder: an operating-system lock on ``<folder>/.s4vision.lock``.

Training holds ``train.output_dir`` and feature extraction its output folder for as long as they
write there, so a second run into the same folder refuses to start instead of mixing its files
with the first one's.

The lock is ``fcntl.flock`` (``msvcrt.locking`` on Windows). The operating system releases it
when the process holding it exits, however it exits (an exception, Ctrl-C, SIGKILL, the
out-of-memory killer), so a killed run never leaves its folder stuck: there is no stale-lock
file to delete. The file also records the holder's PID and host name, for the message a second
run gets. Data-loader worker processes inherit the lock with the file descriptor and exit within
seconds of their parent.

Caveat: on network file systems ``flock`` may lock only against processes on the same machine.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

from ..errors import S4VisionError

__all__ = ["LOCK_NAME", "RunFolderLockedError", "RunLock"]

LOCK_NAME = ".s4vision.lock"


class RunFolderLockedError(S4VisionError, RuntimeError):
    """Another process is writing into the same output folder.

    Attributes: ``folder``, ``holder`` (``"PID 123"``, ``"PID 123 on host"`` for another
    machine, or ``"an unknown process"``).
    """

    def __init__(self, folder: Path, holder: str, what: str = "train.output_dir"):
        self.folder, self.holder = folder, holder
        super().__init__(f"{what} {folder} is in use by another s4vision run ({holder}); "
                         f"wait for it to finish, or choose another {what}")


try:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

except ImportError:  # Windows
    import msvcrt

    _REGION = 1 << 30  # lock a byte far past the PID text, so others can still read it

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, _REGION, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, _REGION, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


class RunLock:
    """Exclusive, non-blocking lock on a run folder; use as a context manager or call
    :meth:`acquire` / :meth:`release`. :meth:`acquire` creates the folder and raises
    :class:`RunFolderLockedError` naming the holder when another process has it; ``what``
    names the folder in that message (the config key or option that chose it)."""

    def __init__(self, folder: str | os.PathLike, what: str = "train.output_dir"):
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        if self._fd is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            holder = _read_holder(fd)
            os.close(fd)
            raise RunFolderLockedError(self.folder, holder, self.what)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        # The file stays: deleting it would let a third process lock a new file while a
        # second one still waits on the old one.
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            _unlock(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            self.release()


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        pid, _, host = os.read(fd, 256).decode(errors="replace").strip().partition(" ")
    except OSError:
        pid = ""
    if not pid.isdigit():
        return "an unknown process"
    return f"PID {pid}" + (f" on {host}" if host and host != socket.gethostname() else "")
