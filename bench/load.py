"""The fan-out benchmark's load client: `wsload.c`, N viewers in one C process.

A Python load client spends about as much CPU as the server it measures, on the same two
cores; this one a small part of that (its CPU is printed beside the server's).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import attrs
import trio

SOURCE = Path(__file__).resolve().parent / "wsload.c"
BUILD = Path(__file__).resolve().parent / ".build"


def build() -> Path:
    """The client's binary, compiled when missing or older than its source.

    Raises RuntimeError when there is no C compiler."""
    binary = BUILD / "wsload"
    if binary.exists() and binary.stat().st_mtime >= SOURCE.stat().st_mtime:
        return binary
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("the C load client needs a C compiler (cc): use --client python")
    BUILD.mkdir(exist_ok=True)
    subprocess.run([compiler, "-O2", "-o", str(binary), str(SOURCE)], check=True)
    return binary


@attrs.frozen
class Stats:
    open: int  # connections open now
    messages: int  # binary messages received, all connections
    bytes: list[int]  # binary payload bytes received, per connection


@attrs.define
class LoadClient:
    """A running `wsload` and its N connections (see `wsload.c`)."""

    process: trio.Process
    _pending: bytes = b""

    @classmethod
    async def start(cls, host: str, port: int, resource: str, n: int, *, start: bool,
                    batch: bool = True) -> LoadClient:
        """N connections, each from its own loopback address, started (`start`) or idle.
        `batch`: the client runs under SCHED_BATCH, so that its wake-ups never preempt the
        server (a remote viewer's never do; see bench/README.md).

        Raises RuntimeError if some could not open."""
        argv = [str(build()), host, str(port), resource, str(n), "--spread", *(["--start"] if start else [])]
        if batch:
            argv = ["chrt", "--batch", "0", *argv]
        process = await trio.lowlevel.open_process(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        client = cls(process)
        with trio.fail_after(max(30, n / 50)):
            *_, failed = (await client._line()).split()
        if int(failed):
            await client.aclose()
            raise RuntimeError(f"{failed} of {n} connections failed to open")
        return client

    @property
    def pid(self) -> int:
        return self.process.pid

    async def _line(self) -> str:
        assert self.process.stdout is not None
        while b"\n" not in self._pending:
            data = await self.process.stdout.receive_some(1 << 20)
            if not data:
                raise RuntimeError("the load client ended")
            self._pending += data
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode()

    async def stats(self) -> Stats:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(b"stats\n")
        _, opened, messages, *counts = (await self._line()).split()
        return Stats(int(opened), int(messages), [int(c) for c in counts])

    async def aclose(self) -> None:
        self.process.kill()
        await self.process.wait()
