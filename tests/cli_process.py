"""Run ``augforge`` commands in processes of their own, without paying the imports every time.

Tests of crashes and resumes need a real process that a SIGKILL ends: its memory, open files and locks die
with it. They do not need that process to import torch, DALI and pyarrow again (about 3 s each, twice per
kill point). The processes here are forked from one multiprocessing fork server that imported augforge's
command modules once; each command then runs ``augforge.cli.main`` in a fresh process with its own
environment, its stdout and stderr in files, and its exit status (-9 after a SIGKILL) as a subprocess's.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile

#: what the server imports before forking: the CLI and the writing jobs the fault tests run
PRELOAD = ["cli_process", "augforge.cli", "augforge.datasets.ingest", "augforge.balance.apply",
           "augforge.pipelines.build", "augforge.train.run", "augforge.experiments.ablate"]
_context = None


def _server():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _run_main(argv: list[str], env: dict, out_path: str, err_path: str) -> None:
    """The child: this environment, stdout/stderr into the files, ``augforge ARGV``'s status as the exit code."""
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out_path), (2, err_path)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(handle, fd)
        os.close(handle)
    sys.argv = ["augforge", *argv]
    from augforge.cli import main

    sys.exit(main(argv))


class CliProcess:
    """A running ``augforge`` command, with the parts of ``subprocess.Popen`` the tests use."""

    def __init__(self, argv: list[str], env: dict | None = None) -> None:
        self.argv = list(argv)
        folder = tempfile.mkdtemp(prefix="augforge-cli-")
        self._out, self._err = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
        environ = dict(os.environ if env is None else env)
        self._proc = _server().Process(target=_run_main, args=(self.argv, environ, self._out, self._err))
        self._proc.start()
        self.pid = self._proc.pid
        # the fork server, not this process, reaps the child, so its pid may be reused as soon as it exits:
        # a pidfd names this very process, and a signal sent through it never reaches another one
        self._pidfd = os.pidfd_open(self.pid)

    def kill(self) -> None:
        """SIGKILL the process if it is still running (never another process that took its pid)."""
        if self._pidfd is None:  # waited for: it has ended
            return
        try:
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        except ProcessLookupError:  # it had already ended
            pass

    def wait(self, timeout: float | None = None) -> int:
        """The exit status (-N after signal N), its outputs then in ``stdout`` and ``stderr``;
        ``subprocess.TimeoutExpired`` (the process killed) past ``timeout`` seconds."""
        self._proc.join(timeout)
        if self._proc.exitcode is None:
            self.kill()
            self._proc.join()
            raise subprocess.TimeoutExpired(["augforge", *self.argv], timeout)
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        if not hasattr(self, "stdout"):
            texts = []
            for path in (self._out, self._err):  # absent when the process died before it opened them
                if not os.path.exists(path):
                    texts.append("")
                    continue
                with open(path, encoding="utf-8", errors="replace") as handle:
                    texts.append(handle.read())
                os.remove(path)
            os.rmdir(os.path.dirname(self._out))
            self.stdout, self.stderr = texts
        return self._proc.exitcode

    def result(self, timeout: float | None = 600) -> subprocess.CompletedProcess:
        """Wait, then the status and both outputs as a ``CompletedProcess``."""
        code = self.wait(timeout)
        return subprocess.CompletedProcess(["augforge", *self.argv], code, self.stdout, self.stderr)


def start_cli(argv: list[str], env: dict | None = None) -> CliProcess:
    """Start ``augforge ARGV`` (with ``env``, default this process's) in a process forked from the server."""
    return CliProcess(argv, env)


def run_cli(argv: list[str], env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``augforge ARGV`` in its own process, like ``subprocess.run(..., capture_output=True, text=True)``."""
    return start_cli(argv, env).result(timeout)
