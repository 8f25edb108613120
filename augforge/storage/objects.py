"""One bucket prefix seen through obstore (the Rust ``object_store`` crate): whole-object reads and writes,
conditional puts, listings, retries with backoff, and every failure as one line naming the object.

Why obstore and not fsspec/s3fs (measured in ``benchmarks/object_store.py``): its whole-shard reads from the
local S3 server were faster (396-524 MB/s against 101-318); it is one wheel with no Python dependencies,
where s3fs pulls aiobotocore, whose botocore pin downgraded the botocore that boto3 needs in this very
environment; and it exposes what augforge
relies on directly: puts that are atomic (a multipart upload completes or nothing is visible), conditional puts
(``If-None-Match: *`` for the lock, ``If-Match`` to renew it), user metadata on objects, and retries with
exponential backoff and jitter.

Credentials and the endpoint come from the standard environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``), and from an AWS profile
(``AWS_PROFILE``) through boto3 where it is installed; never from a recipe. An ``http://`` endpoint (a store on
the local network) is allowed because the user named it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from augforge.errors import AugforgeError, first_line
from augforge.storage.urls import StoreURL

#: environment variables that tune the retries (seconds; count)
RETRY_TIMEOUT_ENV = "AUGFORGE_STORE_RETRY_TIMEOUT"
RETRIES_ENV = "AUGFORGE_STORE_RETRIES"
#: parts of a multipart upload
PART_BYTES = 8 * 1024 * 1024


#: the process that first opened a client (a child forked from it cannot use one)
_FIRST_USED: dict[str, int] = {}


class StoreError(AugforgeError):
    """An object-store request that failed after its retries, as one line naming the object."""


class ObjectStore:
    """The objects under one ``StoreURL``'s prefix; names are relative to it (``manifest.json``,
    ``shards/part-00000.arrow``)."""

    def __init__(self, url: StoreURL) -> None:
        self.url = url
        self._client = self._open()

    def _open(self):
        """A client for the bucket, from the environment."""
        from obstore.store import S3Store  # lazy: the Rust client is only needed where a URL is used

        endpoint = _endpoint()
        retry = {"max_retries": int(os.environ.get(RETRIES_ENV, "6")),
                 "retry_timeout": timedelta(seconds=float(os.environ.get(RETRY_TIMEOUT_ENV, "60"))),
                 "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=8),
                             "base": 2.0}}
        client = {"allow_http": True} if endpoint and endpoint.startswith("http://") else {}
        config = {"endpoint": endpoint} if endpoint else {}
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            config["region"] = region
        _FIRST_USED.setdefault("pid", os.getpid())
        try:
            return S3Store(self.url.bucket, config=config, client_options=client or None, retry_config=retry,
                           credential_provider=_profile_credentials())
        except Exception as exc:  # a malformed endpoint or setting: one line, before any request
            raise StoreError(f"{self.url}: cannot open the store ({first_line(exc, 200)})") from None

    @property
    def _store(self):
        """The client of this process. obstore's runtime does not survive a fork: a process forked from one
        that used it (a DataLoader or DALI worker started by ``fork``) cannot reach the store, and would hang
        where this raises in one line."""
        if _FIRST_USED["pid"] != os.getpid():
            raise StoreError(f"{self.url}: this process was forked from one that had used the object store, and "
                             "its client cannot run after a fork: start worker processes with spawn (a DataLoader: "
                             "multiprocessing_context='spawn'), or use num_workers=0")
        return self._client

    def __getstate__(self) -> dict:  # pickled into a spawned worker: it opens its own client there
        return {"url": self.url}

    def __setstate__(self, state: dict) -> None:
        self.url = state["url"]
        self._client = self._open()

    # -- reads ---------------------------------------------------------------------------------------

    def get(self, name: str, missing_ok: bool = False) -> bytes | None:
        """The whole object ``name``; None where it does not exist and ``missing_ok`` (a missing bucket is an
        error either way: a GET's answer names it)."""
        import obstore

        with self._errors(name):
            try:
                return bytes(obstore.get(self._store, self.url.key(name)).bytes())
            except FileNotFoundError as exc:
                if missing_ok and _object_missing(exc):
                    return None
                raise

    def read_into(self, name: str, path: Path) -> None:
        """Object ``name`` streamed into the file ``path`` (the caller makes that file atomic)."""
        import obstore

        with self._errors(name), open(path, "wb") as fh:
            for chunk in obstore.get(self._store, self.url.key(name)):
                fh.write(chunk)

    def head(self, name: str) -> dict | None:
        """``{"size", "e_tag", "metadata"}`` of object ``name``, or None when it does not exist (a HEAD's
        answer has no body: a missing bucket reads as a missing object here)."""
        import obstore

        with self._errors(name):
            try:
                result = obstore.get(self._store, self.url.key(name), options={"head": True})
            except FileNotFoundError as exc:
                if _object_missing(exc):
                    return None
                raise
            meta = result.meta
            return {"size": int(meta["size"]), "e_tag": meta.get("e_tag"),
                    "metadata": {k: v for k, v in result.attributes.items() if not k[:1].isupper()}}

    def names(self, under: str = "") -> list[str]:
        """Names (relative to the prefix) of the objects under ``under``, sorted."""
        import obstore

        prefix = self.url.key(under) if under else self.url.prefix
        with self._errors(under or "/"):
            keys = [meta["path"] for page in obstore.list(self._store, prefix=prefix or None) for meta in page]
        cut = len(self.url.prefix) + 1 if self.url.prefix else 0
        return sorted(key[cut:] for key in keys if not self.url.prefix or key.startswith(self.url.prefix + "/"))

    # -- writes --------------------------------------------------------------------------------------

    def put(self, name: str, data: bytes | Path, metadata: dict | None = None, *, if_absent: bool = False,
            if_match: str | None = None) -> str | None:
        """Write object ``name`` whole (a file over one part goes up as a multipart upload, visible only once
        complete); with ``if_absent``, only where no object has the name, with ``if_match``, only over the
        object with that ETag: None when that condition fails. The new ETag otherwise."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        mode = "create" if if_absent else ({"e_tag": if_match} if if_match else None)
        attributes = {str(k): str(v) for k, v in (metadata or {}).items()} or None
        with self._errors(name):
            try:
                if isinstance(data, Path):
                    with open(data, "rb") as fh:
                        result = obstore.put(self._store, self.url.key(name), fh, attributes=attributes, mode=mode,
                                             chunk_size=PART_BYTES)
                else:
                    result = obstore.put(self._store, self.url.key(name), data, attributes=attributes, mode=mode)
            except (AlreadyExistsError, PreconditionError):
                return None
        return result.get("e_tag") or ""

    def delete(self, name: str) -> None:
        """Remove object ``name`` (nothing when it is not there)."""
        import obstore

        with self._errors(name):
            try:
                obstore.delete(self._store, self.url.key(name))
            except FileNotFoundError as exc:
                if not _object_missing(exc):
                    raise

    # -- errors --------------------------------------------------------------------------------------

    def _errors(self, name: str):
        return _Translated(self.url, name)


@dataclass
class _Translated:
    """A context that turns obstore's errors into one StoreError line naming the object."""

    url: StoreURL
    name: str

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None or isinstance(exc, AugforgeError) or not isinstance(exc, Exception):
            return False
        bucket_error = isinstance(exc, FileNotFoundError) and not _object_missing(exc)
        where = self.url.child(self.name) if self.name.strip("/") and not bucket_error else self.url
        raise StoreError(f"{where}: {why(exc)}") from None


def _object_missing(exc: FileNotFoundError) -> bool:
    """Whether obstore's not-found error is about the object, not the bucket."""
    return "NoSuchBucket" not in str(exc)


def _endpoint() -> str | None:
    """The S3 endpoint the environment names, if any."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def why(exc: BaseException) -> str:
    """What an obstore error means for the user, in a few words."""
    from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

    text = str(exc)
    if "NoSuchBucket" in text:
        return "no such bucket (create it, or check the URL and AWS_ENDPOINT_URL)"
    if isinstance(exc, FileNotFoundError):
        return "no such object"
    no_answer = (f"{_endpoint() or 'the S3 endpoint'} did not answer after {os.environ.get(RETRIES_ENV, '6')} "
                 "retries with backoff (is it running and reachable?)")
    if "error sending request" in text:  # checked first: a port or a time in the message may read "403"
        return no_answer
    if isinstance(exc, (PermissionDeniedError, UnauthenticatedError)) or any(
            code in text for code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403 Forbidden")):
        return "access denied (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_PROFILE)"
    return no_answer if "retries" in text else first_line(exc, 200)


def _profile_credentials():
    """Credentials of ``AWS_PROFILE`` through boto3 where the profile is named and boto3 is installed; None
    otherwise (obstore then reads the ``AWS_*`` variables itself)."""
    if not os.environ.get("AWS_PROFILE") or os.environ.get("AWS_ACCESS_KEY_ID"):
        return None
    import importlib.util

    if importlib.util.find_spec("boto3") is None:  # optional: only profiles need it
        return None
    from obstore.auth.boto3 import Boto3CredentialProvider

    return Boto3CredentialProvider()

