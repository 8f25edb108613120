"""Write build/manpages.csv: real, imbalanced short English texts, the one-line summaries of Debian's manual
pages, classed by manual section.

Each row is the description in a page's NAME line (``ls - list directory contents`` gives "list directory
contents"; the command names are left out) and its class is the page's section: 1 user commands, 2
system calls, 3 library functions, 4 special files, 5 file formats, 7 overviews and conventions, 8
administration. Section 6 (one page) is left out. The summaries were written by the pages' authors;
the sections keep their own sizes (about 21:1, library functions to special files). Only the pages of
the packages in ``PACKAGES`` are read, so that the file does not depend on what else a machine has
installed. Redirect pages (``.so``) and links are skipped; a summary found in two sections is dropped.
Licences: the Linux man-pages project's pages (``manpages``, ``manpages-dev``) are under the licences
listed in /usr/share/doc/manpages/copyright (mostly "verbatim" and GPL); the others under their
packages' licences. Nothing is downloaded:

    apt-get install manpages manpages-dev
    python examples/make_manpages.py [--out build/manpages.csv]
"""

from __future__ import annotations

import argparse
import gzip
import re
import subprocess
from pathlib import Path

from text_corpus import unique_texts, write_corpus

PACKAGES = ("manpages", "manpages-dev", "coreutils", "util-linux", "man-db", "findutils", "procps", "e2fsprogs",
            "dpkg", "apt", "passwd", "login", "mount", "bash", "tar", "grep", "sed")
CLASSES = ("1", "2", "3", "4", "5", "7", "8")
_PAGE = re.compile(r"^/usr/share/man/man(\d)/[^/]+\.gz$")
_NAME = re.compile(r'^\.S[Hh]\s+"?NAME"?\s*$(.*?)^\.S[Hh]\s', re.M | re.S)
_MACRO = re.compile(r"(^|\s)\.(B|I|BR|IR|RB|RI|BI|IB|PP|P|LP|br|nh|ad\s+\w|hy\s+\d)(?=\s|$)")
_FONT = re.compile(r"\\f[BIRP]|\\f\(..|\\&|\\%")
_ESCAPES = {"\\-": "-", "\\(em": "-", "\\(aq": "'", "\\*(Aq": "'", "\\'": "'", "\\ ": " ", '"': ""}


def package_pages(package: str) -> list[Path]:
    """The manual pages (section 1-8, gzipped) that ``dpkg -L package`` lists; none when it is not installed."""
    listed = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=False).stdout.split()
    return [Path(p) for p in listed if _PAGE.match(p)]


def summary(page: Path) -> str | None:
    """The description after the dash in the page's NAME section; None for a redirect, a link or no NAME."""
    if page.is_symlink() or not page.is_file():
        return None
    text = gzip.decompress(page.read_bytes()).decode("utf-8", "replace")
    found = None if text.lstrip().startswith(".so ") else _NAME.search(text)
    if found is None:
        return None
    lines = [ln for ln in found.group(1).splitlines() if not ln.startswith(('.\\"', "'\\\""))]
    body = _FONT.sub("", _MACRO.sub(" ", " ".join(lines)))
    for escape, plain in _ESCAPES.items():
        body = body.replace(escape, plain)
    body = " ".join(body.split())
    return body.split(" - ", 1)[1].strip() if " - " in body else None


def main() -> None:
    """Write the corpus (atomically)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "build" / "manpages.csv"))
    args = parser.parse_args()
    pages = sorted({page for package in PACKAGES for page in package_pages(package)})
    if not any(_PAGE.match(str(p)).group(1) == "2" for p in pages):
        raise SystemExit("no section-2 manual pages found (apt-get install manpages manpages-dev)")
    rows = []
    for page in pages:
        section, text = _PAGE.match(str(page)).group(1), summary(page)
        if text and section in CLASSES:
            rows.append((f"{page.name.removesuffix('.gz')}", text, section))
    write_corpus(args.out, unique_texts(rows), CLASSES)


if __name__ == "__main__":
    main()
