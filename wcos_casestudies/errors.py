"""The errors this project raises on purpose."""

from __future__ import annotations


class UserError(Exception):
    """A mistake of the user's (bad flag, unknown model, unreadable file): one line on stderr, exit status 2."""
