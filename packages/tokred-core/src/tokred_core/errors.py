"""The one error type users see.

Every mistake a user can make (bad config, bad data, bad arguments, an unsupported model)
raises `TokredError` with a message that names the bad value and, where possible, the fix.
The CLI prints it on one line and exits with status 2, without a traceback.
"""

from __future__ import annotations

__all__ = ["TokredError"]


class TokredError(ValueError):
    """A user-facing error: the message names the bad value and how to fix it."""
