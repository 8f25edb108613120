"""Path helpers shared by the recipe, the sources and the build fingerprint."""

from __future__ import annotations

from pathlib import Path


def resolved(path: str) -> str:
    """An existing path as an absolute path without links or ``..``; anything else (a bundled name) as it is."""
    return str(Path(path).resolve()) if Path(path).exists() else path
