"""The FFmpeg process: its argv, its stderr, and how it is ended.

`run_process` owns the process; `terminate_then_kill` is its deliver_cancel: SIGTERM,
then SIGKILL after KILL_GRACE seconds; run_process reaps it either way, shielded, so a
cancelled upstream never leaves a process behind.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import attrs
import trio

from .classify import classify, video_info
from .events import ErrorCode, Failure, Transport
from .profile import DEFAULT, Profile
from .sources import ANY_SOURCE, SourcePolicy
from .urls import place, secrets_of, sharing_key

KILL_GRACE = 2.0
_REDIRECT = re.compile(rb"Redirecting to (\S+)")  # FFmpeg's own line when a camera redirects
READ_SIZE = 256 * 1024  # one pipe read; large reads keep the per-chunk cost down
STDERR_KEEP = 16 * 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@attrs.frozen
class Source:
    """Where an upstream reads from."""

    url: str
    transport: Transport = Transport.TCP
    profile: Profile = DEFAULT

    @property
    def key(self) -> str:
        return sharing_key(self.url)


def describe_os_error(error: BaseException) -> str:
    """What failed, for a person: "Too many open files (EMFILE)", without file paths."""
    if isinstance(error, OSError) and error.strerror:
        name = errno.errorcode.get(error.errno or 0)
        return f"{error.strerror} ({name})" if name else error.strerror
    return str(error) or type(error).__name__


class Run(Protocol):
    """One attempt's media process, as the supervisor sees it (FFmpeg, or a test fake)."""

    stdout: trio.abc.ReceiveStream

    async def finish(self) -> None: ...
    def failure(self) -> Failure: ...
    def video(self) -> dict[str, object] | None: ...
    def cpu_seconds(self) -> float | None: ...


# Entering a Runner's context starts one attempt; it raises Failure(STREAM_ERROR) when the
# process cannot be started. Leaving it (or cancelling it) ends and reaps the process.
Runner = Callable[["Source"], AbstractAsyncContextManager[Run]]


def build_argv(ffmpeg: str, source: Source, *, timeout: float) -> list[str]:
    """FFmpeg reading the source with the least start-up delay, writing MPEG-TS as the
    source's profile says (video copied by default; `profile.Profile`).

    `-probesize 32 -analyzeduration 0` starts output at the first keyframe instead of
    after about a second of probing; stream copy needs no more than the SDP's parameter
    sets. No `-fflags nobuffer`: with it FFmpeg dropped the keyframe a camera sends right
    after PLAY and waited for the next one (bench/README.md). Audio only when the profile
    asks for it: browsers' MPEG-TS players play video alone.
    """
    return [
        ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info",
        "-rtsp_transport", source.transport,
        "-timeout", str(int(timeout * 1_000_000)),
        "-probesize", "32", "-analyzeduration", "0",
        "-i", source.url,
        *source.profile.output_args(),
        "-f", "mpegts", "-muxdelay", "0", "-muxpreload", "0", "-flush_packets", "1",
        "pipe:1",
    ]


async def _pinned(source: Source, sources: SourcePolicy) -> Source:
    """The source with its host replaced by the address the policy checked (rtsp:// only:
    rtsps:// keeps the name its certificate is for). Raises Failure."""
    scheme, host, port = place(source.url)
    address = await sources.resolve(host, port)
    if scheme != "rtsp" or host == str(address):
        return source
    parts = urlsplit(source.url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{userinfo}{at}{literal}" + (f":{parts.port}" if parts.port else "")
    return attrs.evolve(source, url=urlunsplit(parts._replace(netloc=netloc)))


async def terminate_then_kill(process: trio.Process) -> None:
    process.terminate()
    with trio.move_on_after(KILL_GRACE):
        await process.wait()
        return
    process.kill()


class StderrTail:
    """What a process printed on stderr: its head and its tail (the run drains the pipe)."""

    def __init__(self) -> None:
        self.head = ""
        self._tail = bytearray()

    def add(self, chunk: bytes | bytearray) -> None:
        if len(self.head) < STDERR_KEEP:
            self.head += chunk.decode("utf-8", "replace")
        self._tail += chunk
        del self._tail[:-STDERR_KEEP]

    @property
    def tail(self) -> str:
        return self._tail.decode("utf-8", "replace")


class FFmpegRun:
    """A running FFmpeg: its stdout to read, and what its stderr says about it.

    FFmpeg follows a camera's RTSP redirect by itself, and says so on stderr ("Status 302:
    Redirecting to <url>") just before it connects there. The target is checked against
    the source policy as that line arrives; a refused one kills FFmpeg and the attempt
    fails FORBIDDEN (not retried). FFmpeg has already begun that one connection by then:
    the check stops the session, not its first connection attempt."""

    def __init__(self, stdout: trio.abc.ReceiveStream, tail: StderrTail, secrets: tuple[str, ...], *,
                 sources: SourcePolicy = ANY_SOURCE, kill: Callable[[], None] = lambda: None,
                 pid: int | None = None) -> None:
        self.stdout = stdout
        self._pid = pid
        self._tail = tail
        self._secrets = secrets
        self._sources = sources
        self._kill = kill
        self._refused: Failure | None = None
        self._stderr_done = trio.Event()

    async def _drain(self, stderr: trio.abc.ReceiveStream) -> None:
        try:
            async for chunk in stderr:
                self._tail.add(chunk)
                for match in _REDIRECT.finditer(chunk):
                    await self._check_redirect(match.group(1).decode("utf-8", "replace"))
        finally:
            self._stderr_done.set()

    async def _check_redirect(self, url: str) -> None:
        try:
            _, host, port = place(url)
        except ValueError:
            return  # FFmpeg cannot follow it either
        try:
            await self._sources.resolve(host, port)
        except Failure as failure:
            if failure.code is ErrorCode.FORBIDDEN:
                self._refused = Failure(ErrorCode.FORBIDDEN, f"redirect refused: {failure.message}")
                self._kill()

    async def finish(self) -> None:
        """After stdout ended: let FFmpeg print its last words and exit (bounded)."""
        with trio.move_on_after(KILL_GRACE):
            await self._stderr_done.wait()

    def failure(self) -> Failure:
        return self._refused or classify(self._tail.tail, secrets=self._secrets)

    def video(self) -> dict[str, object] | None:
        return video_info(self._tail.head)

    def cpu_seconds(self) -> float | None:
        """CPU time FFmpeg has used so far (user + system), or None where it cannot be read."""
        return None if self._pid is None else process_cpu_seconds(self._pid)


def process_cpu_seconds(pid: int) -> float | None:
    """A process's user + system CPU seconds, from /proc (None elsewhere, or once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def ffmpeg_runner(ffmpeg: str, *, timeout: float, sources: SourcePolicy = ANY_SOURCE) -> Runner:
    """A Runner that starts the real FFmpeg for a source its policy allows (checked after
    DNS resolution at every start; FFmpeg gets the checked address for rtsp://)."""

    @asynccontextmanager
    async def run(source: Source) -> AsyncIterator[FFmpegRun]:
        argv = build_argv(ffmpeg, await _pinned(source, sources), timeout=timeout)
        async with trio.open_nursery() as nursery:
            try:
                process: trio.Process = await nursery.start(partial(
                    trio.run_process, argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, check=False, deliver_cancel=terminate_then_kill))
            except OSError as error:
                raise Failure(ErrorCode.STREAM_ERROR, f"cannot start {ffmpeg}: {describe_os_error(error)}") from None
            assert process.stdout is not None and process.stderr is not None
            handle = FFmpegRun(process.stdout, StderrTail(), secrets_of(source.url), sources=sources, kill=process.kill,
                               pid=process.pid)
            nursery.start_soon(handle._drain, process.stderr)
            try:
                yield handle
            finally:
                nursery.cancel_scope.cancel()  # ends FFmpeg if it still runs; reaped by run_process

    return run
