"""The one exception type for mistakes a user can fix (bad files, wrong names, missing weights).

The CLIs print it as a one-line message and exit non-zero; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""
