"""One writer per output: a lock file beside what a run writes, naming the process that holds it.

The lock is an advisory `flock` on `<output>.lock`: the kernel releases it when the process ends in
any way (kill -9 included), so a lock file left behind by a dead process is simply taken over. The
file holds the holder's process id, host, start time and command line, for the message that a
second run gets.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

LOCK_SUFFIX = ".lock"
ACQUIRE_ATTEMPTS = 5  # the holder may remove the file between our open and our lock: try again this often
HELD = {errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK}
UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}


def lock_path(target: Path) -> Path:
    """The lock file of an output file or folder: `<name>.lock` beside it."""
    target = Path(target)
    return target.parent / f"{target.name}{LOCK_SUFFIX}"


def _holder_text(fd: int) -> str:
    """Who holds a lock, from what the holder wrote into the lock file."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        holder = json.loads(os.read(fd, 1 << 16).decode("utf-8"))
        return f"process {holder['pid']} on {holder['host']} (since {holder['since']}: {holder['command']})"
    except (OSError, ValueError, KeyError, TypeError):  # written just now, or not by us: say less
        return "another process"


def _write_holder(fd: int) -> None:
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join(sys.argv)[:500]}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(holder).encode("utf-8"))


def _same_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the file that `fd` has open (the previous holder may have removed it)."""
    try:
        return os.fstat(fd).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


def _try_lock(fd: int, target: Path, path: Path) -> bool:
    """Lock `fd`; False where the file system cannot lock (the run goes on, with a note)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in HELD:
            holder = _holder_text(fd)
            os.close(fd)
            raise UserError(f"{target} is being written by {holder}; wait until it ends, or write elsewhere "
                            f"(lock file {path})") from exc
        if exc.errno in UNSUPPORTED:
            print(f"note: {path}: this file system cannot lock files; make sure no other run writes {target}", file=sys.stderr)
            return False
        os.close(fd)
        raise UserError(f"{path}: cannot take the lock ({exc.strerror})") from exc


def acquire(target: Path) -> int:
    """Take the lock of `target` (creating its folder), or raise a UserError naming the process that holds it."""
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(ACQUIRE_ATTEMPTS):
        try:  # never through a link: the holder's line would overwrite the file it points to
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UserError(f"{path} is a symbolic link; a lock file is this project's own: remove the link") from exc
            raise
        if not _try_lock(fd, target, path) or _same_file(fd, path):
            _write_holder(fd)
            return fd
        os.close(fd)
    raise UserError(f"{path}: could not take the lock ({ACQUIRE_ATTEMPTS} attempts); is another run starting and ending here?")


def release(target: Path, fd: int) -> None:
    """Remove the lock file and let go of the lock (in this order, so that no one else holds a removed file)."""
    path = lock_path(target)
    if _same_file(fd, path):
        path.unlink(missing_ok=True)
    os.close(fd)


@contextmanager
def hold_lock(target: Path) -> Iterator[Path]:
    """Hold the lock of `target` (an output file or folder) for the duration of the block."""
    fd = acquire(target)
    try:
        yield lock_path(target)
    finally:
        release(target, fd)
