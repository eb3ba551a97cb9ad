"""Errors meant for the user: the CLI prints their message on one line, without a traceback."""


class UserError(Exception):
    """Bad input, a missing file, an impossible option: something the user can fix."""
