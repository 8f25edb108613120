"""Object-store URLs: what augforge reads and writes besides local paths (``s3://bucket/prefix``), parsed in one
place; every other scheme is refused in one line, and no URL is ever taken as a local path."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from augforge.errors import OptionError
from augforge.paths import is_url

#: the schemes augforge reads and writes (S3 and S3-compatible stores: MinIO, Ceph, R2, on-premises gateways)
SUPPORTED = ("s3",)
#: an S3 bucket name as S3 allows it (3-63 lower-case letters, digits, dots and hyphens)
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class StoreURL:
    """``scheme://bucket/prefix``: a dataset (or a file) in a bucket. ``prefix`` has no leading or trailing
    slash ("" for the bucket's root)."""

    scheme: str
    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.prefix}" if self.prefix else f"{self.scheme}://{self.bucket}"

    def key(self, name: str) -> str:
        """The object key of ``name`` under the prefix (``shards/part-00000.arrow`` -> ``prefix/shards/...``)."""
        name = name.strip("/")
        return f"{self.prefix}/{name}" if self.prefix else name

    def child(self, name: str) -> "StoreURL":
        """The URL of ``name`` under this one."""
        return StoreURL(self.scheme, self.bucket, self.key(name))

    def slug(self) -> str:
        """A short, stable, file-system-safe name for this URL (a cache directory's name)."""
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{self.bucket}_{self.prefix}")[-60:]
        return f"{readable}-{hashlib.sha256(str(self).encode()).hexdigest()[:12]}"


def url_problem(text: str) -> str | None:
    """Why ``text`` is not a URL augforge can use (a scheme it does not read, a bad bucket name, a bad key
    prefix), or None."""
    if not is_url(text):
        return "not a URL (expected s3://bucket/prefix)"
    scheme, rest = text.split("://", 1)
    if scheme.lower() not in SUPPORTED:
        schemes = ", ".join(f"{s}://" for s in SUPPORTED)
        return (f"the scheme {scheme.lower()}:// is not supported (augforge reads and writes local paths and "
                f"{schemes}); nothing was read or written")
    bucket, _, prefix = rest.partition("/")
    if not BUCKET.match(bucket):
        return f"{bucket!r} is not a valid bucket name (3-63 lower-case letters, digits, dots and hyphens)"
    prefix = prefix.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        return "the key prefix has an empty, '.' or '..' part"
    return None


def parse_url(value, option: str = "path") -> StoreURL:
    """``value`` as a ``StoreURL``; anything ``url_problem`` finds is an OptionError naming ``option``."""
    text = str(value)
    problem = url_problem(text)
    if problem:
        raise OptionError("{%s} {value}: {problem}" % option, value=text, problem=problem)
    scheme, rest = text.split("://", 1)
    bucket, _, prefix = rest.partition("/")
    return StoreURL(scheme.lower(), bucket, prefix.strip("/"))


def remote(value) -> bool:
    """Whether ``value`` names an object store rather than a local path (any URL: unsupported schemes are
    refused by ``parse_url``, never taken as paths)."""
    return value is not None and is_url(value)
