"""The one exception type that reaches users as a single clear line."""


class AugforgeError(Exception):
    """Bad input or a refused operation.

    The message is one line that names the file, row, column or value at fault
    and says what to do; the command line prints it without a traceback and
    exits non-zero.
    """


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first non-empty line of ``exc``'s message (its type's name when the message is empty), cut to
    ``limit`` characters: what an error from a library says, fit for one line of augforge's own."""
    line = next((text.strip() for text in str(exc).splitlines() if text.strip()), type(exc).__name__)
    return line if limit is None else line[:limit]
