"""One writer per run store: an OS-level lock on a file beside the store.

The lock is ``fcntl.flock`` on ``.NAME.lock`` in the store's parent directory (beside the
store, not inside it: a run is renamed into place and the run it replaces is renamed away, so
a file inside would move with them). The kernel releases a ``flock`` when the process that
holds it ends, however it ends, so a killed run never leaves a stale lock: at most an empty
lock file, which the next writer takes over. The holder writes its pid into the file, so the
error a second writer gets names it.

A lock belongs to one open file description: a second :class:`StoreLock` on the same store
fails in the same process too, and child processes started with ``spawn`` (as distributed's
workers are) do not inherit it (Python opens files non-inheritable).
"""

from __future__ import annotations

import os

from daskie.errors import StoreLockedError, StorePathError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock (documented in RunStore)
    fcntl = None

__all__ = ["StoreLock", "lock_path"]


def lock_path(path: str) -> str:
    """The lock file of the store at the absolute ``path``: ``PARENT/.NAME.lock``."""
    parent, name = os.path.split(path)
    return os.path.join(parent, f".{name}.lock")


class StoreLock:
    """The exclusive, non-blocking write lock of the store at ``path``.

    Parameters
    ----------
    path : str
        The store's absolute path; its parent directory must exist.

    Raises
    ------
    StoreLockedError
        Another process (or another :class:`StoreLock` in this one) holds the lock; the
        message names the store and the holder's pid.
    StorePathError
        The lock file cannot be made (no permission, a read-only or virtual file system).
    """

    def __init__(self, path: str):
        self.path = path
        self.file = lock_path(path)
        self._fd: int | None = None
        if fcntl is None:  # pragma: no cover
            return
        while True:
            try:
                fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise StorePathError(f"cannot write a store at {self.path!r}: its lock file "
                                     f"{self.file!r} cannot be made: {exc.strerror or exc}"
                                     ) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise StoreLockedError(self._held_message()) from None
            except BaseException:
                os.close(fd)
                raise
            # A holder removes the file when it lets go: a lock taken on a file that is no
            # longer at its name guards nothing, so take the one at the name again.
            try:
                same = os.stat(self.file).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def _held_message(self) -> str:
        try:
            with open(self.file) as fh:
                pid = fh.read().strip()
        except OSError:
            pid = ""
        who = f"process {pid}" if pid.isdigit() else "another process"
        if pid.isdigit() and int(pid) == os.getpid():
            who += " (this process: another RunStore is open on it for writing)"
        return (f"the run store at {self.path} is being written by {who}; one writer per "
                f"store: wait for that run to end, or choose another store")

    @property
    def held(self) -> bool:
        """Whether this lock is still held."""
        return self._fd is not None

    def release(self) -> None:
        """Let the lock go and remove its file (removed while held, so no one loses a lock
        to the removal). Releasing again does nothing."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.unlink(self.file)
        except OSError:
            pass
        os.close(fd)  # closing the last descriptor of the file releases the flock

    def __del__(self):  # a RunStore dropped without close() must not keep its store locked
        try:
            self.release()
        except Exception:  # noqa: BLE001 - at interpreter exit os may be half torn down;
            pass           # the kernel releases the lock with the process anyway
