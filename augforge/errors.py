"""The one exception type that reaches users as a single clear line."""


class AugforgeError(Exception):
    """Bad input or a refused operation.

    The message is one line that names the file, row, column or value at fault
    and says what to do; the command line prints it without a traceback and
    exits non-zero.
    """
