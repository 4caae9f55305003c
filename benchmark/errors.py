"""The one exception type the CLI turns into a one-line message (exit code 2)."""


class UserError(Exception):
    """Bad input from the user: say which file or value, and what to do."""
