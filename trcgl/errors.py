"""The one base class of every error a user can cause and fix (a bad option, a missing file,
stale chapters, a device that is not there).

The command line prints such an error as one line (what, where, how to fix) and exits with
code 2, without a traceback (``--debug`` shows it). Anything else is a bug and keeps its
traceback. Each layer defines its own subclass (``ConfigError`` in :mod:`trcgl.config`,
``DataError`` in :mod:`trcgl.data.padchest`, ...), so lower layers never import higher ones.
"""
from __future__ import annotations


class TrcglError(Exception):
    """A user-facing error: its message alone tells what went wrong, where, and how to fix it."""
