"""Errors a user can cause.

Anything raised as :class:`InputError` is the user's to fix (a wrong path, an unreadable or
unsupported file, an inconsistent series). The CLI prints its message as one line on stderr and
exits with status 2. Every other exception is a bug in covidct.
"""

from __future__ import annotations


class InputError(Exception):
    """A problem with the input the user gave; the message names the input and what to do."""

    def __init__(self, message: str) -> None:
        # One line, always: the CLI prints it as is.
        super().__init__(" ".join(str(message).split()))
