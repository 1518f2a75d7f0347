"""One error type for every user-facing failure, so the CLI and stage scripts can
print a single line and exit with code 2 instead of a traceback."""


class BaldistillError(Exception):
    """A problem with the user's input, params, data or environment.

    The message is one line that names the file and field at fault.
    """

    exit_code = 2
