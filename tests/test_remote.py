"""Datasets in object storage, against a real S3 endpoint on 127.0.0.1 (moto's server, through a relay that the
tests take down and bring back): writes equal to local ones byte for byte, resumes from what the store holds,
a lock against a second writer, streaming through a bounded cache, and one line for every failure."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest
import torch

from augforge.cli import main
from augforge.datasets.manifest import MANIFEST, PROGRESS
from augforge.errors import AugforgeError
from augforge.pipelines.stream import open_loader
from augforge.storage import FileCache, ObjectStore, StoreLock, parse_url
from s3_server import S3Server, free_port

INGEST = ["--test-split", "0.25", "--shard-rows", "256", "-q"]


@pytest.fixture(scope="module")
def s3():
    """One S3 server for the module; the client environment set while it runs."""
    server = S3Server()
    before = server.activate()
    os.environ["SOURCE_DATE_EPOCH"] = "1700000000"  # manifests of equal content are equal bytes
    yield server
    server.stop()
    server.deactivate(before)
    del os.environ["SOURCE_DATE_EPOCH"]


@pytest.fixture(scope="module")
def local_digits(s3, tmp_path_factory) -> Path:
    """The digits ingested to a local directory: the bytes every remote write must equal."""
    out = tmp_path_factory.mktemp("local") / "digits"
    assert main(["ingest", "digits", str(out), *INGEST]) == 0
    return out


@pytest.fixture(scope="module")
def remote_digits(s3, local_digits) -> str:
    """The same digits ingested to the store."""
    url = f"s3://{s3.bucket()}/digits"
    assert main(["ingest", "digits", url, *INGEST]) == 0
    return url


def objects(url: str) -> dict[str, bytes]:
    """Every object under ``url``, by name."""
    store = ObjectStore(parse_url(url))
    return {name: store.get(name) for name in store.names()}


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_dataset_written_to_s3_is_the_local_bytes_and_a_rerun_writes_nothing(remote_digits, local_digits, capsys):
    assert objects(remote_digits) == files(local_digits)  # shards and manifest; no journal, no lock left
    assert main(["ingest", "digits", remote_digits, *INGEST[:-1]]) == 0
    assert f"{remote_digits}: already holds this dataset (1,797 rows); nothing to do" in capsys.readouterr().out
    assert main(["inspect", remote_digits, "--verify"]) == 0
    printed = capsys.readouterr().out
    assert f"{remote_digits}: image dataset, 1,797 rows, 10 classes, 8 shard(s)" in printed
    assert main(["report", remote_digits, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == json.loads((local_digits / MANIFEST).read_text())[
        "counts"]["train"]


def test_streaming_through_a_bounded_cache_gives_the_local_batches(remote_digits, local_digits, tmp_path):
    """Half the shards fit in the cache: a shard-block shuffle gives the same batches as the local dataset
    with the same settings, the cache never holds more than its limit, and each shard is downloaded once an
    epoch; a warm cache opens the split without downloading anything."""
    options = dict(seed=3, shuffle_block=2)
    limit = 4 * max(s["bytes"] for s in json.loads((local_digits / MANIFEST).read_text())["shards"])
    local = open_loader(local_digits, 64, **options)
    remote = open_loader(remote_digits, 64, cache_dir=str(tmp_path), cache_limit=limit, predownload=1, **options)
    cache = remote.dataset.remote.cache
    at_open = len(cache.downloaded)
    for epoch in range(2):
        for (x, y), (rx, ry) in zip(local, remote, strict=True):
            assert torch.equal(x, rx) and torch.equal(y, ry)
            assert cache.used() <= limit
        assert len(cache.downloaded) - at_open <= 8 * (epoch + 1) and cache.evictions > 0
    warm = open_loader(remote_digits, 64, cache_dir=str(tmp_path), cache_limit=limit, **options)
    assert warm.dataset.remote.cache.downloaded == [] and len(warm.dataset) == len(local.dataset)
    whole = open_loader(remote_digits, 256, split="test", shuffle=False, cache_dir=str(tmp_path), cache_limit=limit)
    assert torch.equal(torch.cat([y for _, y in whole]), torch.cat([y for _, y in open_loader(
        local_digits, 256, split="test", shuffle=False)]))


def test_a_cache_too_small_for_the_epoch_is_refused_in_one_line(remote_digits, tmp_path):
    shard = 47_000
    with pytest.raises(AugforgeError, match=r"^cache_limit 200000 bytes holds 4 of the 8 shards this split reads, "
                                            r"and a shuffled epoch reads them all at once: set shuffle_block to at "
                                            r"most 4"):
        open_loader(remote_digits, 64, cache_dir=str(tmp_path), cache_limit="200KB")
    with pytest.raises(AugforgeError, match=r"^shuffle_block 4 plus predownload 2 shards must fit in cache_limit"):
        open_loader(remote_digits, 64, cache_dir=str(tmp_path), cache_limit="200KB", shuffle_block=4)
    with pytest.raises(AugforgeError, match=r"\(23500 bytes holds 0 shards of up to \d+ bytes\)$"):
        open_loader(remote_digits, 64, cache_dir=str(tmp_path), cache_limit=shard // 2, shuffle_block=1)
    with pytest.raises(AugforgeError, match=r"^cache_limit 23500 bytes is smaller than s3://.*/shards/part-\d+\.arrow "
                                            r"\(\d+ bytes\): give at least the largest shard's size$"):
        next(iter(open_loader(remote_digits, 64, split="test", shuffle=False, cache_dir=str(tmp_path / "x"),
                              cache_limit=shard // 2)))
    with pytest.raises(AugforgeError, match="class-balanced draws take rows from every shard"):
        open_loader(remote_digits, 64, cache_dir=str(tmp_path), sampler="balanced", shuffle_block=2)
    with pytest.raises(AugforgeError, match=r"^cache_limit 20 parsecs: expected a size such as 20GB or 512MiB$"):
        open_loader(remote_digits, 64, cache_limit="20 parsecs")


def test_a_corrupt_object_is_named_and_never_cached(s3, local_digits, tmp_path, capsys):
    url = f"s3://{s3.bucket()}/digits"
    store = ObjectStore(parse_url(url))
    for name, data in files(local_digits).items():
        store.put(name, data)
    shard = bytearray(store.get("shards/part-00003.arrow"))
    shard[len(shard) // 2] ^= 0xFF  # one flipped byte, same size
    store.put("shards/part-00003.arrow", bytes(shard))
    with pytest.raises(AugforgeError, match=rf"^{url}/shards/part-00003\.arrow: checksum mismatch .*damaged"):
        for _ in open_loader(url, 64, shuffle=False, cache_dir=str(tmp_path)):  # opening the split reads it
            pass
    assert not list(tmp_path.rglob("part-00003*"))  # nothing under a final or temporary name
    assert main(["inspect", url, "--verify"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{url}/shards/part-00003.arrow: checksum mismatch" in err[0], err


def test_store_failures_are_one_line_naming_the_object(s3, remote_digits, capsys, monkeypatch):
    assert main(["inspect", "s3://no-such-bucket-here/data"]) == 1
    assert capsys.readouterr().err.strip() == ("augforge inspect: error: s3://no-such-bucket-here/data: "
                                               "no such bucket (create it, or check the URL and AWS_ENDPOINT_URL)")
    assert main(["inspect", f"{remote_digits}/shards"]) == 1
    assert "not an augforge dataset (no manifest.json" in capsys.readouterr().err
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    assert main(["ingest", "digits", remote_digits.replace("digits", "again"), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did not answer after 2 retries with backoff" in err[0] and "/again/" in err[0], err
    guarded = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port := free_port())],
                               env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        from s3_server import wait_for

        wait_for(port)
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")  # a store that knows no such key
        assert main(["report", "s3://some-bucket/data"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "access denied (check AWS_ACCESS_KEY_ID" in err[0], err
    finally:
        guarded.terminate()
        guarded.wait(timeout=30)


def test_a_second_writer_is_refused_and_an_expired_lock_is_taken_over(s3, local_digits, capsys):
    url = f"s3://{s3.bucket()}/digits"
    holder = StoreLock(ObjectStore(parse_url(url)))
    holder.acquire()
    assert main(["ingest", "digits", url, *INGEST]) == 1
    err = capsys.readouterr().err.strip()
    assert f"{url}: another job is writing here ({holder.owner}, its lock expires" in err
    assert objects(url).keys() == {".augforge.lock"}  # nothing else was written
    stale = StoreLock(ObjectStore(parse_url(url)), ttl=-1)  # a killed job's lock, already expired
    holder.release()
    stale.acquire()
    assert main(["ingest", "digits", url, *INGEST]) == 0
    assert objects(url) == files(local_digits)  # the expired lock was replaced, then released


def test_a_killed_remote_build_resumes_from_the_store_on_another_machine(s3, local_digits, tmp_path):
    """SIGKILL right after the 3rd shard; the rerun has another cache (another machine, whose staging holds
    nothing): it takes the journal and the 3 shards from the store, verifies them, and writes the rest."""
    url = f"s3://{s3.bucket()}/digits"
    command = [sys.executable, "-m", "augforge", "ingest", "digits", url, *INGEST[:-1]]
    first = subprocess.run(command, env={**os.environ, "AUGFORGE_FAULT": "shard@3",
                                         "AUGFORGE_CACHE": str(tmp_path / "one")}, capture_output=True, text=True)
    assert first.returncode == -9, first.stderr
    held = objects(url)
    assert MANIFEST not in held and len(json.loads(held[PROGRESS])["shards"]) == 3
    assert json.loads(held[".augforge.lock"])["expires"] > time.time()  # the killed job's lock, not expired: its
    # process is gone from this host, so the rerun takes it over at once
    second = subprocess.run(command, env={**os.environ, "AUGFORGE_CACHE": str(tmp_path / "two")},
                            capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert "(resumed after 768 rows)" in second.stdout
    assert objects(url) == files(local_digits)
    assert not (tmp_path / "two" / "staging").exists() or not any((tmp_path / "two" / "staging").iterdir())


def test_the_endpoint_going_away_mid_build_and_mid_epoch(s3, local_digits, tmp_path):
    """The store goes out of reach after 2 shards of a build: one line naming an object, and the rerun, with
    the store back, resumes to the local bytes. Mid-epoch: the loader fails in one line at the first shard it
    cannot fetch; a loader restored from the last state gives the rest of the epoch's batches."""
    from augforge.datasets.ingest import ingest
    from augforge.datasets.sources import open_source
    from augforge.datasets.splits import SplitSpec

    url = f"s3://{s3.bucket()}/digits"
    rows = []

    def cut(n):
        rows.append(n)
        if sum(rows) >= 512:
            s3.relay.down()

    try:
        with pytest.raises(AugforgeError, match=r"did not answer after 2 retries"):
            ingest(open_source("digits"), url, splits=SplitSpec(0.25), shard_rows=256, on_rows=cut)
    finally:
        s3.relay.up()
    assert main(["ingest", "digits", url, *INGEST]) == 0
    assert objects(url) == files(local_digits)

    reference = [y for _, y in open_loader(local_digits, 64, seed=5, shuffle_block=1)]
    loader = open_loader(url, 64, seed=5, shuffle_block=1, predownload=0, cache_dir=str(tmp_path / "c"),
                         cache_limit=3 * 47_200)
    seen, state = [], None
    with pytest.raises(AugforgeError, match=rf"{url}/shards/part-\d+\.arrow: .*did not answer"):
        for i, (_, y) in enumerate(loader):
            seen.append(y)
            state = loader.state_dict()
            if i == 6:
                s3.relay.down()
    s3.relay.up()
    resumed = open_loader(url, 64, seed=5, shuffle_block=1, cache_dir=str(tmp_path / "c"), cache_limit=3 * 47_200)
    resumed.load_state_dict(state)
    rest = [y for _, y in resumed]
    assert len(seen) < len(reference) and all(torch.equal(a, b) for a, b in zip(seen + rest, reference, strict=True))


def test_a_table_at_a_url_is_a_source_for_report_ingest_and_a_recipe(s3, tmp_path, capsys):
    bucket = s3.bucket()
    table = tmp_path / "reviews.csv"
    pl.DataFrame({"review": [f"review number {i} {'good' if i % 4 else 'bad'}" for i in range(40)],
                  "sentiment": ["pos" if i % 4 else "neg" for i in range(40)]}).write_csv(table)
    ObjectStore(parse_url(f"s3://{bucket}")).put("in/reviews.csv", table.read_bytes())
    source = f"s3://{bucket}/in/reviews.csv"
    assert main(["report", source, "--text-col", "review", "--label-col", "sentiment", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == {"neg": 10, "pos": 30}
    assert main(["ingest", source, f"s3://{bucket}/out", "--text-col", "review", "--label-col", "sentiment",
                 "-q"]) == 0
    manifest = json.loads(ObjectStore(parse_url(f"s3://{bucket}/out")).get(MANIFEST))
    assert manifest["source"]["location"] == source and manifest["num_rows"] == 40
    assert main(["ingest", str(table), str(tmp_path / "local"), "--text-col", "review", "--label-col", "sentiment",
                 "-q"]) == 0
    remote_text = open_loader(f"s3://{bucket}/out", 8, shuffle=False, cache_dir=str(tmp_path / "cache"))
    local_text = open_loader(tmp_path / "local", 8, shuffle=False)  # short texts: the same token ids and labels
    for ((ids, lengths), y), ((lids, llengths), ly) in zip(remote_text, local_text, strict=True):
        assert torch.equal(ids, lids) and torch.equal(lengths, llengths) and torch.equal(y, ly)


def test_a_shared_cache_downloads_each_file_once_and_never_uses_a_half_download(s3, remote_digits, tmp_path):
    """Two "ranks" (threads with their own cache objects on one directory) fetch the same shards at once: each
    is downloaded once. A temporary file that a killed download left is removed, never read."""
    store = ObjectStore(parse_url(remote_digits))
    entries = json.loads(store.get(MANIFEST))["shards"]
    root = tmp_path / "shared"
    (root / "shards").mkdir(parents=True)
    (root / "shards" / ".tmp-part-00000.arrow.killed").write_bytes(b"half a shard")
    caches = [FileCache(root), FileCache(root)]

    def rank(cache):
        for entry in entries:
            path = cache.fetch(entry["file"], entry["bytes"], lambda tmp, e=entry: store.read_into(e["file"], tmp))
            assert path.read_bytes() == store.get(entry["file"])

    threads = [threading.Thread(target=rank, args=(c,)) for c in caches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(caches[0].downloaded + caches[1].downloaded) == sorted(e["file"] for e in entries)
    assert not list((root / "shards").glob(".tmp-*"))
    shutil.rmtree(root)


def test_train_builds_to_s3_and_streams_from_it_as_from_a_local_copy(s3, tmp_path, capsys):
    """`output.dir: s3://...`: `augforge train` builds there and streams it through a cache that holds half
    the shards (a shard-block shuffle); the same run on a local copy of the data gives the same metrics, and
    `evaluate` reads the test split from the URL."""
    import yaml

    url = f"s3://{s3.bucket()}/aug"
    recipe = {"seed": 0, "source": {"path": "digits", "test_split": 0.25}, "output": {"dir": url, "shard_rows": 400},
              "augment": {"copies": 1, "color": "gray", "image": [{"op": "pad", "padding": 1},
                                                                  {"op": "random_crop", "size": 8}]},
              "train": {"model": "simple_cnn", "epochs": 1, "batch_size": 64, "lr": 0.003}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    stream = ["--cache-dir", str(tmp_path / "cache"), "--cache-limit", "500KB", "--shuffle-block", "2",
              "--predownload", "1"]
    assert main(["train", str(path), "--run-dir", str(tmp_path / "remote"), *stream]) == 0
    printed = capsys.readouterr().out
    assert f"data: {url} (built" in printed
    local = tmp_path / "copy"
    for name, data in objects(url).items():
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(data)
    assert main(["train", str(path), "--run-dir", str(tmp_path / "local"), "--data", str(local),
                 "--shuffle-block", "2"]) == 0
    remote_summary, local_summary = (json.loads((tmp_path / run / "summary.json").read_text())
                                     for run in ("remote", "local"))
    assert remote_summary["data"] == url
    for key in ("accuracy", "macro_f1", "balanced_accuracy", "rows"):
        assert remote_summary[key] == local_summary[key], key
    cached = sum(p.stat().st_size for p in (tmp_path / "cache").rglob("*.arrow") if ".meta" not in p.parts)
    assert 0 < cached <= 500_000
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "remote" / "model.pt"), url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == remote_summary["accuracy"]


def test_audit_reads_a_dataset_at_a_url(remote_digits, local_digits, capsys):
    """The same findings from the store as from the local copy (near-duplicates on the digits' pixels)."""
    results = []
    for where in (remote_digits, str(local_digits)):
        assert main(["audit", where, "--no-labels", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        results.append({key: report[key] for key in ("rows", "near_duplicates")})
    assert results[0] == results[1] and results[0]["rows"] == 1797


def test_balance_reads_a_dataset_at_a_url_and_writes_to_another(remote_digits, local_digits, tmp_path):
    """`augforge balance s3://... s3://...` equals `augforge balance` on the local copy into a directory."""
    out = remote_digits.replace("/digits", "/balanced")
    assert main(["balance", remote_digits, out, "--strategy", "under", "-q"]) == 0
    assert main(["balance", str(local_digits), str(tmp_path / "balanced"), "--strategy", "under", "-q"]) == 0
    remote, local = objects(out), files(tmp_path / "balanced")
    assert remote.keys() == local.keys() and all(remote[k] == local[k] for k in local if k != MANIFEST)
    counts = json.loads(remote[MANIFEST])["counts"]["train"]
    assert len(set(counts.values())) == 1  # under-sampled to the smallest class
    assert json.loads(remote[MANIFEST])["source"]["location"] == remote_digits


def test_dali_reader_processes_read_a_remote_dataset_through_the_shared_cache(remote_digits, local_digits, tmp_path):
    """`reader_workers=1`: DALI's reader process reopens the dataset by its URL with the same cache options and
    gives the local loader's batches, pixel for pixel; the cache stays under its limit."""
    limit = 4 * max(s["bytes"] for s in json.loads((local_digits / MANIFEST).read_text())["shards"])
    options = dict(seed=2, shuffle_block=2)
    local = list(open_loader(local_digits, 64, **options))
    remote = list(open_loader(remote_digits, 64, reader_workers=1, cache_dir=str(tmp_path), cache_limit=limit,
                              predownload=1, **options))
    assert len(local) == len(remote)
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(local, remote))
    cached = [p for p in tmp_path.rglob("*.arrow") if ".meta" not in p.parts]
    assert cached and sum(p.stat().st_size for p in cached) <= limit


def test_a_torch_dataloader_reads_a_remote_split_in_spawned_workers_and_a_fork_says_why_it_cannot(
        remote_digits, tmp_path):
    """`Dataset.torch_dataset()` of a URL in a DataLoader: spawned workers open their own client and read
    every row through the cache; obstore's client does not survive a fork, so a forked worker that must
    download says so in one line instead of hanging."""
    from augforge.datasets import open_dataset
    from augforge.datasets.remote import CacheOptions

    def rows(context: str, cache: str) -> int:
        view = open_dataset(remote_digits, cache=CacheOptions(str(tmp_path / cache), cache_limit=100_000))
        loader = torch.utils.data.DataLoader(view.torch_dataset(), batch_size=128, num_workers=1,
                                             multiprocessing_context=context)
        return sum(len(y) for _, y in loader)

    assert rows("spawn", "a") == 1347
    with pytest.raises(AugforgeError, match="forked from one that had used the object store.*multiprocessing_context"):
        rows("fork", "b")


def test_overwrite_replaces_a_remote_dataset_and_leaves_none_of_its_shards(s3, tmp_path, capsys):
    """Another dataset under the URL is refused without --overwrite (naming the URL); with it, the new
    dataset's objects are exactly a local build's: the old manifest goes before the first new shard, the old
    shards after the new manifest."""
    url = f"s3://{s3.bucket()}/digits"
    assert main(["ingest", "digits", url, "--test-split", "0.25", "--shard-rows", "200", "-q"]) == 0
    assert main(["ingest", "digits", url, *INGEST]) == 1
    assert capsys.readouterr().err.strip().startswith(f"augforge ingest: error: {url}: holds another dataset")
    assert main(["ingest", "digits", url, *INGEST, "--overwrite"]) == 0
    assert main(["ingest", "digits", str(tmp_path / "local"), *INGEST]) == 0
    assert objects(url) == files(tmp_path / "local")


def test_credentials_from_an_aws_profile(s3, tmp_path, monkeypatch):
    """No AWS_* keys in the environment, a profile in an AWS config file: augforge hands boto3's credentials of
    that profile to obstore, and the write goes through. (Whether a request without any credentials fails
    depends on the machine's instance metadata service, so that half is not asserted here.)"""
    config = tmp_path / "config"
    config.write_text("[profile team]\naws_access_key_id = augforge-test\naws_secret_access_key = augforge-secret\n"
                      "region = us-east-1\n")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", "team")
    url = f"s3://{s3.bucket()}/digits"
    assert main(["ingest", "digits", url, "-q"]) == 0
    assert json.loads(ObjectStore(parse_url(url)).get(MANIFEST))["num_rows"] == 1797


def test_an_endpoint_that_does_not_answer_is_never_read_as_access_denied(monkeypatch):
    """A port or a time in obstore's message may read "403" (this made a CI run say "access denied" for a
    closed port): only a 403 answer, or S3's own codes, mean access denied."""
    from augforge.storage.objects import why

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:40312")
    closed = Exception("Generic S3 error: Error performing PUT http://127.0.0.1:40312/b/k in 403.2ms, after 2 "
                       "retries, max_retries: 2 - HTTP error: error sending request")
    assert why(closed).startswith("http://127.0.0.1:40312 did not answer after")
    refused = Exception("Server returned non-2xx status code: 403 Forbidden: <Code>InvalidAccessKeyId</Code>")
    assert why(refused).startswith("access denied")
