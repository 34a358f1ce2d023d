"""The one error type users see, and the interrupt that ends a run on a signal.

Every mistake a user can make (bad config, bad data, bad arguments, an unsupported model)
raises `TokredError` with a message that names the bad value and, where possible, the fix.
The CLI prints it on one line and exits with status 2, without a traceback.

`RunInterrupted` is not a mistake: SIGINT or SIGTERM stopped a run (after saving, where it
could). It is a KeyboardInterrupt, so code that knows nothing of it still stops; the CLI
prints its message (where the run was saved, how to resume) and exits 128 + the signal
number (130 for SIGINT, 143 for SIGTERM), as shells and cluster schedulers expect.
"""

from __future__ import annotations

__all__ = ["TokredError", "RunInterrupted"]


class TokredError(ValueError):
    """A user-facing error: the message names the bad value and how to fix it."""


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by a signal; `exit_code` is 128 + the signal number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.message = message
        self.signum = signum

    def __reduce__(self) -> tuple[type, tuple[str, int]]:
        # A run in a worker process (`tokred study --jobs`) sends it back pickled.
        return (type(self), (self.message, self.signum))

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
