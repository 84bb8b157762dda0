"""The base class of every error a user can cause (bad input, missing weights, bad config).

The CLI prints such errors as one line (``error: <message>``) and exits with status 2; anything
else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input or environment, described in one line."""
