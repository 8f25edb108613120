"""A real S3 endpoint on 127.0.0.1 for the object-storage tests: moto's server (its S3 API over HTTP, the same
requests a user's S3 gets) behind a TCP relay that a test can take down and bring back, as a network outage or
a restarted server looks to a client, without losing what the store holds."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(port: int, timeout: float = 30.0) -> None:
    """Until something accepts connections on ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


class Relay:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target``; ``down()`` closes the listener and every open
    connection (connection refused from then on), ``up()`` listens again on the same port."""

    def __init__(self, target: int) -> None:
        self.target, self.port = target, free_port()
        self._server: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.up()

    def up(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def down(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        with self._lock:
            for sock in list(self._open):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._open.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class S3Server:
    """moto's S3 server in a subprocess, reached through a ``Relay``; ``env`` is what a client needs (also set
    in ``os.environ`` by ``activate``)."""

    def __init__(self) -> None:
        self.moto_port = free_port()
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                         str(self.moto_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.moto_port)
        self.relay = Relay(self.moto_port)
        self.endpoint = f"http://127.0.0.1:{self.relay.port}"
        self.env = {"AWS_ACCESS_KEY_ID": "augforge-test", "AWS_SECRET_ACCESS_KEY": "augforge-secret",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint,
                    "AUGFORGE_STORE_RETRIES": "2", "AUGFORGE_STORE_RETRY_TIMEOUT": "3"}

    def bucket(self) -> str:
        """A new, empty bucket's name."""
        import urllib.request

        name = f"t-{uuid.uuid4().hex[:12]}"
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{self.moto_port}/{name}", method="PUT"))
        return name

    def activate(self) -> dict:
        """Set the client environment; returns what it replaced (for ``deactivate``)."""
        before = {key: os.environ.get(key) for key in self.env}
        os.environ.update(self.env)
        return before

    @staticmethod
    def deactivate(before: dict) -> None:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def stop(self) -> None:
        self.relay.down()
        self.process.terminate()
        self.process.wait(timeout=30)


@contextmanager
def s3_workspace(prefix: str):
    """For a benchmark: a scratch directory (augforge's cache inside it) and a running ``S3Server`` whose
    client environment is set; both gone afterwards. Yields (server, directory)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["AUGFORGE_CACHE"] = str(work / "cache")
    server = S3Server()
    before = server.activate()
    try:
        yield server, work
    finally:
        server.stop()
        server.deactivate(before)
        shutil.rmtree(work, ignore_errors=True)
