"""The one exception type the engine raises for bad input a user can fix."""


class PlaygroundError(Exception):
    """A problem with the user's input or environment, worded for the user.

    CLIs print it as one line and exit non-zero; the UI shows it as an error message. Anything else
    that escapes is a bug.
    """
