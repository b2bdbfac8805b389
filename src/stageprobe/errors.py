"""Errors that carry a message meant for the user.

The CLI turns a `UserInputError` into one clear line and exit code 2; anything else is an
internal error (exit code 1).
"""


class UserInputError(ValueError):
    """Bad input from the user: the message says what is wrong and what to do."""
