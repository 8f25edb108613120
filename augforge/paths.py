"""Path helpers shared by the recipe, the sources and the build fingerprint."""

from __future__ import annotations

import re
from pathlib import Path

from augforge.errors import OptionError

#: a URL: a scheme and "://" (s3://, gs://, hdfs://, ftp://, file://, ...)
URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: what a URL is told where only a local path will do (run directories, exports, reports)
URL_REFUSED = ("is a URL, and this takes a local path (datasets, their sources and build outputs may be s3:// "
               "URLs); nothing was read or written")


def is_url(value) -> bool:
    """Whether ``value`` is a URL rather than a local path."""
    return bool(URL.match(str(value)))


def local_path(value, option: str):
    """``value`` as it is, or an OptionError naming ``option`` when it is a URL: a URL is never taken as a local
    path (``s3://bucket/x`` would otherwise become a folder ``./s3:/bucket/x``)."""
    if value is not None and is_url(value):
        raise OptionError("{%s} {value} %s" % (option, URL_REFUSED), value=str(value))
    return value


def resolved(path: str) -> str:
    """An existing path as an absolute path without links or ``..``; anything else (a bundled name) as it is."""
    return str(Path(path).resolve()) if Path(path).exists() else path
