"""`rtsp-viewer serve --workers N`: N nodes on one host behind one port.

The parent opens the listening socket and starts N `rtsp-viewer serve` processes that
accept on it (the kernel hands each new connection to one of them) and each listen on a
port of their own too, the address the other nodes read streams from (NODE_URL's host, or
HOST, with that port). They are one cluster like any other: the same database (a SQLite
file, or PostgreSQL), the same SECRET_KEY (or the key kept beside the SQLite file, made
here before they start), one camera session per stream among them. The parent restarts a
worker that dies, and on SIGTERM or SIGINT passes SIGTERM on and waits for them (each
exits within 5 s); it serves nothing itself. A worker whose parent was killed shuts
itself down (`exit_with_parent`).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from types import FrameType
from urllib.parse import urlsplit

import trio

from ..policy.tokens import server_key
from ..settings import Settings

log = logging.getLogger(__name__)
LISTEN_FD = "RTSP_VIEWER_LISTEN_FD"  # the shared socket a worker accepts on
NODE_HOST = "RTSP_VIEWER_NODE_HOST"  # the host in a worker's own node URL
PARENT = "RTSP_VIEWER_PARENT"  # the parent's pid: a worker whose parent it no longer is shuts down
RESTART_AFTER = 1.0
STOP_WITHIN = 5.0


PARENT_CHECK = 1.0  # seconds between a worker's looks at whether its parent still runs


async def exit_with_parent(parent: int) -> None:
    """A worker whose parent is gone (killed: it could pass no signal on), even before the
    worker began to look, shuts itself down as on SIGTERM, so no worker outlives the
    `serve --workers` it belongs to. `parent`: the pid its parent gave it (PARENT)."""
    while os.getppid() == parent:  # noqa: ASYNC110 (nothing signals a parent's death but the OS's reparenting)
        await trio.sleep(PARENT_CHECK)
    log.warning("the workers' parent %d is gone: shutting down", parent, extra={"event": "server.orphaned"})
    os.kill(os.getpid(), signal.SIGTERM)


def worker_count(text: str) -> int:
    """`auto`: one per core; else a number 1-256 (ValueError otherwise)."""
    count = (os.cpu_count() or 1) if text == "auto" else int(text)
    if not 1 <= count <= 256:
        raise ValueError("--workers must be auto or 1-256")
    if count > 1 and os.name == "nt":  # the workers share the listening socket by its descriptor
        raise ValueError("--workers needs a POSIX system: on Windows run one process per port behind a proxy")
    return count


def node_host(settings: Settings) -> str:
    if settings.node_url:
        return urlsplit(settings.node_url).hostname or "127.0.0.1"
    return "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host


def run_workers(count: int, settings: Settings, environ: Mapping[str, str]) -> int:
    """Run `count` workers until SIGTERM or SIGINT; the exit status (0, or 2 when the
    port cannot be opened or the database is in memory)."""
    if settings.database_path == ":memory:":
        print("rtsp-viewer: --workers needs a database the workers share (a SQLite file or PostgreSQL), "
              "not sqlite:///:memory:", file=sys.stderr)
        return 2
    try:
        listener = socket.create_server((settings.host, settings.port), backlog=1024,
                                        family=socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
    except OSError as error:
        print(f"rtsp-viewer: cannot listen on {settings.host}:{settings.port}: {error.strerror}", file=sys.stderr)
        return 2
    listener.set_inheritable(True)
    if not settings.secret_key:
        server_key("", settings.database_path)  # made once, here, for every worker to read
    port = listener.getsockname()[1]
    env = {key: value for key, value in environ.items() if key != "NODE_URL"}
    env |= {LISTEN_FD: str(listener.fileno()), NODE_HOST: node_host(settings), PARENT: str(os.getpid()),
            "HOST": settings.host, "PORT": "0"}
    stopping = False

    def stop(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def start(index: int) -> subprocess.Popen[bytes]:
        worker_env = dict(env)
        if settings.node_id:
            worker_env["NODE_ID"] = f"{settings.node_id}-w{index}"
        return subprocess.Popen([sys.executable, "-m", "app.cli.main", "serve"], env=worker_env,
                                pass_fds=(listener.fileno(),), stdin=subprocess.DEVNULL)

    workers = [start(index) for index in range(count)]
    print(f"rtsp-viewer: serving on http://{settings.host}:{port} with {count} workers", file=sys.stderr, flush=True)
    while not stopping:
        time.sleep(0.2)
        for index, worker in enumerate(workers):
            if worker.poll() is not None and not stopping:
                log.error("worker %d exited with status %s: starting it again", index, worker.returncode)
                time.sleep(RESTART_AFTER)
                workers[index] = start(index)
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
    deadline = time.monotonic() + STOP_WITHIN
    for worker in workers:
        try:
            worker.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    listener.close()
    return 0
