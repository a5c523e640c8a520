"""The errors this project raises on purpose, and how a foreign exception is summed up in one line."""

from __future__ import annotations

MESSAGE_CHARS = 160  # at most this much of a foreign exception's message goes into a one-line error


class UserError(Exception):
    """A mistake of the user's (bad flag, unknown model, unreadable file): one line on stderr, exit status 2."""


def first_line(exc: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message (which may be empty)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:MESSAGE_CHARS]}" if lines else type(exc).__name__
