"""The errors this project raises on purpose, and how a foreign exception is summed up in one line."""

from __future__ import annotations

import errno

MESSAGE_CHARS = 160  # at most this much of a foreign exception's message goes into a one-line error


# The OSErrors that come from the machine's state, not from a bug: a full disk, a read-only file system, a denied
# permission. errno -> what to do; they end a run with one line naming the path (`system_error_line`).
SYSTEM_ERRORS = {
    errno.ENOSPC: "free some space, or write to another folder, and run again",
    errno.EDQUOT: "free some space within your quota, or write to another folder, and run again",
    errno.EROFS: "write to a folder on a writable file system",
    errno.EACCES: "check the permissions of this path, or write to another folder",
    errno.EPERM: "check the permissions of this path, or write to another folder",
}


class UserError(Exception):
    """A mistake of the user's (bad flag, unknown model, unreadable file): one line on stderr, exit status 2."""


def first_line(exc: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message (which may be empty)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:MESSAGE_CHARS]}" if lines else type(exc).__name__


def system_error_line(exc: BaseException) -> str | None:
    """One line for an OSError of SYSTEM_ERRORS (a full disk, a read-only file system, a denied permission): the
    path, what happened and what to do; None for any other exception (a bug: its traceback is shown)."""
    if not isinstance(exc, OSError) or exc.errno not in SYSTEM_ERRORS:
        return None
    paths = " -> ".join(str(name) for name in (exc.filename, exc.filename2) if name is not None)
    what = f"{exc.strerror or 'system error'} ({errno.errorcode[exc.errno]})"
    return f"{paths or 'a file (the system named none)'}: {what}; {SYSTEM_ERRORS[exc.errno]}"
