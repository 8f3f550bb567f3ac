"""A real PostgreSQL server for the tests: `initdb` and `pg_ctl` in a temp folder, run as
the `postgres` user when the tests run as root (PostgreSQL refuses root), on 127.0.0.1
and a free port, password-protected (the tests' DATABASE_URLs carry the password), ended
by its own data folder (`pg_ctl stop`), never by name.

`pg_ctl` detaches the server from the test process, so a test process that is killed
would leave it running: a guard (`python -m tests.postgres FOLDER`, in a session of its
own) holds the other end of a pipe from the test process, and stops the server and
removes its folder when that pipe closes, however the test process ended."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg

USER = "postgres"


def available() -> bool:
    return shutil.which("initdb") is not None and shutil.which("pg_ctl") is not None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Postgres:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="rtsp-viewer-pg-"))
        self.data = self.folder / "data"
        self.password = secrets.token_urlsafe(12)
        self.port = _free_port()
        self._made = 0
        self._guard: subprocess.Popen[bytes] | None = None

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return _as_owner(*argv)

    def start(self) -> None:
        if self._guard is None:
            root = Path(__file__).resolve().parent.parent
            self._guard = subprocess.Popen([sys.executable, "-m", "tests.postgres", str(self.folder)], cwd=root,
                                           stdin=subprocess.PIPE, start_new_session=True)
        if not self.data.exists():
            if AS_ROOT:
                user = pwd.getpwnam(USER)
                os.chown(self.folder, user.pw_uid, user.pw_gid)
            secret = self.folder / "pw"
            secret.write_text(self.password)
            if AS_ROOT:
                os.chown(secret, pwd.getpwnam(USER).pw_uid, -1)
            self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=scram-sha-256", f"--pwfile={secret}",
                      "-E", "UTF8", "--no-sync", "--no-instructions")
            secret.unlink()
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off " \
                  "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "-t", "30",
                  "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database's URL."""
        self._made += 1
        name = f"t{os.getpid()}_{self._made}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def close(self) -> None:
        """Stop the server and remove its folder (the guard does it, and is waited for)."""
        if self._guard is not None and self._guard.stdin is not None:
            self._guard.stdin.close()
            self._guard.wait(timeout=60)


AS_ROOT = os.geteuid() == 0


def _as_owner(*argv: str) -> subprocess.CompletedProcess[str]:
    command = ["runuser", "-u", USER, "--", *argv] if AS_ROOT else list(argv)
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)


def _guard(folder: Path) -> None:
    """Wait until the test process's end of stdin closes, then stop the server (if it
    runs) and remove its folder."""
    sys.stdin.buffer.read()
    if (folder / "data" / "postmaster.pid").exists():
        try:
            _as_owner("pg_ctl", "-D", str(folder / "data"), "-m", "immediate", "-w", "-t", "30", "stop")
        except subprocess.CalledProcessError:
            pass
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    _guard(Path(sys.argv[1]))
