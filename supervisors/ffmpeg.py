"""The FFmpeg process: its argv, its stderr, and how it is ended.

`run_process` owns the process; `terminate_then_kill` is its deliver_cancel: SIGTERM,
then SIGKILL after KILL_GRACE seconds; run_process reaps it either way, shielded, so a
cancelled upstream never leaves a process behind. FFmpeg never connects to a camera
itself: it reads the camera through the attempt's relay on loopback (`relay.py`), which
checks the address, and every redirect, against the source policy first.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Protocol

import attrs
import trio

from .camera.relay import Relay, checked, connect, open_relay
from .camera.sources import ANY_SOURCE, SourcePolicy
from .camera.urls import secrets_of, sharing_key
from .classify import classify, video_info
from .events import ErrorCode, Failure, Transport, describe_os_error
from .profile import DEFAULT, Profile

KILL_GRACE = 2.0
READ_SIZE = 256 * 1024  # one pipe read; large reads keep the per-chunk cost down
STDERR_KEEP = 16 * 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@attrs.frozen
class Source:
    """Where an upstream reads from."""

    url: str
    transport: Transport = Transport.TCP
    profile: Profile = DEFAULT
    stream: int | None = None  # the registered stream it plays, if any (a cluster places its camera by it)

    @property
    def key(self) -> str:
        return sharing_key(self.url)


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
    """A running FFmpeg: its stdout to read, and what its stderr (or its relay) says
    about it. A relay that ended the camera's connection (a refused redirect) knows
    better than FFmpeg's stderr why the attempt failed."""

    def __init__(self, stdout: trio.abc.ReceiveStream, tail: StderrTail, secrets: tuple[str, ...], *,
                 relay: Relay | None = None, pid: int | None = None) -> None:
        self.stdout = stdout
        self._pid = pid
        self._tail = tail
        self._secrets = secrets
        self._relay = relay
        self._stderr_done = trio.Event()

    async def _drain(self, stderr: trio.abc.ReceiveStream) -> None:
        try:
            async for chunk in stderr:
                self._tail.add(chunk)
        finally:
            self._stderr_done.set()

    async def finish(self) -> None:
        """After stdout ended: let FFmpeg print its last words and exit (bounded)."""
        with trio.move_on_after(KILL_GRACE):
            await self._stderr_done.wait()

    def failure(self) -> Failure:
        if self._relay is not None and self._relay.failure is not None:
            return self._relay.failure
        return classify(self._tail.tail, secrets=self._secrets)

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
    """A Runner that starts the real FFmpeg for a source its policy allows: the camera's
    address is resolved and checked, and the camera connected (within `timeout`), before
    FFmpeg starts and reads it through the relay."""

    @asynccontextmanager
    async def run(source: Source) -> AsyncIterator[FFmpegRun]:
        target = await checked(source.url, sources)
        with trio.move_on_after(timeout) as waited:
            camera = await connect(target)
        if waited.cancelled_caught:
            raise Failure(ErrorCode.TIMEOUT, f"no connection to the camera within {timeout:g} s")
        started: list[trio.Process] = []

        def end_ffmpeg() -> None:  # the relay refused a redirect: FFmpeg has nothing left to do
            for process in started:
                process.kill()

        async with trio.open_nursery() as nursery:
            async with open_relay(target, camera, sources, on_refused=end_ffmpeg) as relay:
                argv = build_argv(ffmpeg, attrs.evolve(source, url=relay.url), timeout=timeout)
                try:
                    process: trio.Process = await nursery.start(partial(
                        trio.run_process, argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, check=False, deliver_cancel=terminate_then_kill))
                except OSError as error:
                    raise Failure(ErrorCode.STREAM_ERROR, f"cannot start {ffmpeg}: {describe_os_error(error)}") from None
                assert process.stdout is not None and process.stderr is not None
                started.append(process)
                handle = FFmpegRun(process.stdout, StderrTail(), secrets_of(source.url), relay=relay, pid=process.pid)
                nursery.start_soon(handle._drain, process.stderr)
                try:
                    yield handle
                finally:
                    nursery.cancel_scope.cancel()  # ends FFmpeg if it still runs; reaped by run_process

    return run
