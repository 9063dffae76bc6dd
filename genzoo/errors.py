"""Errors that a user can cause and fix; the CLI prints them in one line and exits with code 2."""


class UserError(Exception):
    """Bad input from the user: a path, flag, config or file that is not what was expected.

    The message must name the offending file or flag and say what was expected.
    """


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so ``finally`` blocks remove temporaries before exiting (the CLI
    exits with 143); a training run stopped by SIGTERM raises it after saving its checkpoint."""
