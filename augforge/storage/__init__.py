"""Object storage: ``s3://`` URLs parsed in one place (``urls``), one client for a bucket prefix (``objects``,
on obstore), the lock that keeps a second writer out (``lock``), and the local file cache with a size limit
that remote shards are read through (``cache``). Datasets use them in ``augforge.datasets.publish`` (writing)
and ``augforge.datasets.remote`` (reading)."""

from augforge.storage.cache import FileCache, cache_root, parse_size
from augforge.storage.lock import StoreLock
from augforge.storage.objects import ObjectStore, StoreError
from augforge.storage.urls import StoreURL, parse_url, remote

__all__ = ["FileCache", "ObjectStore", "StoreError", "StoreLock", "StoreURL", "cache_root", "parse_size",
           "parse_url", "remote"]
