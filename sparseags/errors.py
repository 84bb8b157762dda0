"""The base class of every error a user can cause (bad input, missing weights, bad config).

The CLI prints such errors as one line (``error: <message>``) and exits with status 2; anything
else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input or environment, described in one line."""


class RunInterrupted(Exception):
    """SIGINT / SIGTERM stopped a run after its checkpoint was written: the one line to print and the exit
    status (130 / 143). The CLI prints it as is."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
