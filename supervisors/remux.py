"""Fragmented MP4 for a stream's fMP4 viewers: one copy-only FFmpeg, from the stream's TS.

No second camera connection: while a stream has fMP4 viewers, a `Remuxer` feeds the
upstream's own MPEG-TS (PAT, PMT and a keyframe first, its timestamps already on the
stream's one timeline) through `ffmpeg -c copy -f mp4` with one fragment per frame,
and a `FragmentHub` fans the init segment and the fragments out to those viewers: a
joiner gets a `Media` event (the MIME type with the codecs string), the init segment and
the fragments since the last keyframe at once. Each upstream attempt gets a remux process
of its own, started on the attempt's first keyframe, so the init segment always describes
the camera as it is now (another codec or size after a restart or an edit: the `media`
message says so), and its `tfdt` times go on with the TS timestamps (`-copyts`). The
remuxer ends LINGER seconds (the upstreams' setting) after its last fMP4 viewer left.

Cancellation: cancelling `Remuxer.run` ends the remux FFmpeg; it is reaped before it returns.
"""

from __future__ import annotations

import enum
import logging
import math
import subprocess
from collections.abc import Awaitable, Callable
from functools import partial

import trio

from .events import ErrorCode, Failure, Media, Phase, Status
from .ffmpeg import KILL_GRACE, READ_SIZE, StderrTail, process_cpu_seconds, terminate_then_kill
from .linger import unwatched_for
from .media.fmp4 import BrokenStream, Fragment, Fragments, Init
from .tally import StreamTally
from .viewer import Viewer

log = logging.getLogger(__name__)

RETRY = 1.0  # seconds before a remuxer that failed is started again
FEED_BUDGET = 8 << 20  # TS bytes queued for the remuxer at most (beyond: resume at a keyframe)


def remux_argv(ffmpeg: str) -> list[str]:
    """MPEG-TS on stdin to fragmented MP4 on stdout, every stream copied.

    One fragment per frame (`frag_every_frame`) for low latency; `empty_moov` with
    `delay_moov` so the init segment comes with the first fragment, once the parameter
    sets are known; `default_base_moof` as MSE wants; `-copyts` with `frag_discont`
    keeps the TS timeline in `tfdt` (without it the MP4 muxer starts every remuxer at 0,
    and a player that keeps its buffer across a new remuxer would stall behind its past).
    A small probe suffices: the input begins with PAT, PMT and a keyframe."""
    return [ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error",
            "-probesize", "4096", "-analyzeduration", "0", "-f", "mpegts", "-i", "pipe:0",
            "-map", "0", "-c", "copy", "-bsf:a", "aac_adtstoasc", "-copyts",
            "-f", "mp4", "-movflags", "empty_moov+default_base_moof+frag_every_frame+delay_moov+frag_discont",
            "-flush_packets", "1", "pipe:1"]


class FragmentHub:
    """The fMP4 viewers of one upstream, and what a joiner needs to start at a keyframe."""

    def __init__(self, *, gop_limit: int, on_slow: Callable[[Viewer], None], tally: StreamTally) -> None:
        self.viewers: set[Viewer] = set()
        self._gop_limit = gop_limit
        self._on_slow = on_slow
        self._tally = tally
        self._init: Init | None = None
        self._gop: list[bytes] = []
        self._gop_bytes = 0

    def attach(self, viewer: Viewer) -> None:
        self.viewers.add(viewer)
        viewer.synced = False
        if self._init is not None and self._gop:
            self._start(viewer, self._gop)

    def detach(self, viewer: Viewer) -> None:
        self.viewers.discard(viewer)

    def reset(self) -> None:
        """A new upstream attempt: its fragments start afresh at its first keyframe."""
        self._gop, self._gop_bytes = [], 0

    def end(self) -> None:
        """The remuxer ended: the next one begins with a new init segment."""
        self._new_init(None)

    def _new_init(self, init: Init | None) -> None:
        """Every viewer starts over with this init segment at the next keyframe."""
        self._init = init
        self.reset()
        for viewer in self.viewers:
            viewer.synced = False

    def publish(self, item: Init | Fragment) -> None:
        if isinstance(item, Init):
            self._new_init(item)
            return
        data = item.data
        if item.key:
            self._gop, self._gop_bytes = [data], len(data)
        elif self._gop:
            self._gop.append(data)
            self._gop_bytes += len(data)
            if self._gop_bytes > self._gop_limit:
                self.reset()
        for viewer in list(self.viewers):
            if viewer.synced:
                viewer.synced = viewer.offer(data)
                self._tally.bytes_out += len(data) if viewer.synced else 0
            elif item.key and self._init is not None:
                self._start(viewer, [data])
            if viewer.slow:
                self._on_slow(viewer)

    def _start(self, viewer: Viewer, fragments: list[bytes]) -> None:
        assert self._init is not None
        viewer.notify(Media(self._init.mime))
        viewer.synced = viewer.offer(self._init.data, *fragments)
        if viewer.synced:
            self._tally.bytes_out += len(self._init.data) + sum(len(f) for f in fragments)


class Remuxer:
    """Runs the remux FFmpeg of one upstream while it has fMP4 viewers (module docstring)."""

    def __init__(self, ffmpeg: str, fragments: FragmentHub, feed: Callable[[Viewer], None],
                 unfeed: Callable[[Viewer], None], label: str, linger: float) -> None:
        self._ffmpeg = ffmpeg
        self._linger_for = linger
        self._hub = fragments
        self._feed = feed  # attach a TS viewer to the upstream's hub
        self._unfeed = unfeed
        self._label = label
        self._pid: int | None = None

    def cpu_seconds(self) -> float | None:
        return None if self._pid is None else process_cpu_seconds(self._pid)

    async def run(self, changed: Callable[[], Awaitable[None]]) -> None:
        """Forever: wait for fMP4 viewers, remux while they (and `linger` s after them) last.
        `changed` returns when the upstream's viewers change."""
        while True:
            while not self._hub.viewers:
                await changed()
            ended = Ended.LINGERED  # when the linger ends it
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._linger, nursery.cancel_scope, changed)
                ended = await self._once()
                nursery.cancel_scope.cancel()
            self._hub.end()
            if ended is Ended.FAILED:
                for viewer in self._hub.viewers:
                    viewer.notify(Failure(ErrorCode.STREAM_ERROR, "the fMP4 remuxer failed; starting it again"))
                await trio.sleep(RETRY)

    async def _linger(self, scope: trio.CancelScope, changed: Callable[[], Awaitable[None]]) -> None:
        await unwatched_for(self._linger_for, lambda: bool(self._hub.viewers), changed)
        scope.cancel()

    async def _once(self) -> Ended:
        """One remux process, until it exits, the upstream starts a new attempt, or it is
        cancelled (then LINGERED, from `run`)."""
        feeder = Viewer("remux", budget=FEED_BUDGET, slow_after=math.inf)
        tail = StderrTail()
        fragments = Fragments()
        async with trio.open_nursery() as nursery:
            try:
                process: trio.Process = await nursery.start(partial(
                    trio.run_process, remux_argv(self._ffmpeg), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, check=False, deliver_cancel=terminate_then_kill))
            except OSError as error:
                log.warning("stream %s: cannot start the fMP4 remuxer: %s", self._label, error,
                            extra={"event": "remux.failed", "stream": self._label})
                return Ended.FAILED
            assert process.stdin is not None and process.stdout is not None and process.stderr is not None
            self._pid = process.pid
            nursery.start_soon(_drain, process.stderr, tail)
            self._feed(feeder)
            restarted = trio.Event()

            def restart() -> None:
                """The upstream began a new attempt: this process's output is of the last
                one (and a SIGTERM would wait on its blocked read of stdin): kill it."""
                restarted.set()
                process.kill()
                nursery.cancel_scope.cancel()

            try:
                nursery.start_soon(_write, feeder, process.stdin, restart)
                while chunk := await process.stdout.receive_some(READ_SIZE):
                    for item in fragments.feed(chunk):
                        self._hub.publish(item)
            except BrokenStream as error:
                log.warning("stream %s: the fMP4 remuxer wrote %s", self._label, error,
                            extra={"event": "remux.failed", "stream": self._label})
                nursery.cancel_scope.cancel()
                return Ended.FAILED
            finally:
                self._unfeed(feeder)
                self._pid = None
            with trio.move_on_after(KILL_GRACE):
                await process.wait()
            nursery.cancel_scope.cancel()
        if restarted.is_set():
            return Ended.RESTARTED
        log.warning("stream %s: the fMP4 remuxer ended (%s): %s", self._label, process.returncode,
                    tail.tail.strip()[-300:], extra={"event": "remux.failed", "stream": self._label})
        return Ended.FAILED


class Ended(enum.Enum):
    """Why a remux process ended."""

    FAILED = "failed"  # it exited, or wrote what is not fMP4: viewers are told, it starts again
    RESTARTED = "restarted"  # the upstream began a new attempt: a new process, at once
    LINGERED = "lingered"  # no fMP4 viewer for LINGER seconds


async def _write(feeder: Viewer, stdin: trio.abc.SendStream, restart: Callable[[], None]) -> None:
    """The upstream's TS into the remuxer (its events are for sockets, not for FFmpeg),
    until the upstream starts a new attempt (`connecting`): then `restart`, as the new
    attempt needs a remux process (and an init segment) of its own."""
    try:
        while True:
            item = await feeder.next()
            if isinstance(item, bytes):
                await stdin.send_all(item)
            elif isinstance(item, Status) and item.phase is Phase.CONNECTING:
                restart()
                return
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return  # the remuxer exited: its stdout ends too


async def _drain(stderr: trio.abc.ReceiveStream, tail: StderrTail) -> None:
    async for chunk in stderr:
        tail.add(chunk)
