"""The one exception type that reaches users as a single clear line (and its kind that names an option)."""

import string


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


class OptionError(AugforgeError):
    """A bad value of a named option, its message a ``str.format`` template: the ``values`` fill their
    fields, and every other field names an option. The library names it as the parameter (``workers``);
    the command line, through ``render``, as its flag (``--workers``), where the command has one.

    ``OptionError("{workers} {value}: expected at least 1", value=0)`` reads ``workers 0: expected at least 1``
    from Python and ``--workers 0: expected at least 1`` from ``augforge build``.
    """

    def __init__(self, template: str, **values) -> None:
        self.template, self.values = template, values
        fields = {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(template) if name}
        self.options = sorted(fields - set(values))
        super().__init__(self.render())

    def render(self, spell=lambda option: option) -> str:
        """The message with every option named by ``spell(option)`` (default: the parameter's own name)."""
        return self.template.format(**{option: spell(option) for option in self.options}, **self.values)


def require_at_least(option: str, value, least: int = 1) -> None:
    """Refuse ``value`` below ``least`` with an ``OptionError`` naming ``option`` (``workers 0: expected at
    least 1``)."""
    if value < least:
        raise OptionError("{%s} {value}: expected at least {least}" % option, value=value, least=least)
