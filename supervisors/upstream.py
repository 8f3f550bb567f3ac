"""The supervisor of one upstream: its media process, its watchdog, its restarts, its linger.

`run` is started in the registry's nursery and owns everything of this upstream:
one attempt at a time (a Runner: FFmpeg in production), a watchdog cancel scope whose
deadline moves with every chunk (TIMEOUT when nothing arrives within ffmpeg_timeout),
restarts with jittered backoff while it has viewers (not after AUTH or NOT_FOUND), and
the linger guard that ends the upstream `linger` seconds after its last viewer left.

Cancellation: cancelling `run` (or `retire`) cancels the attempt; the Runner ends and
reaps the process before `run` returns.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import cast

import attrs
import trio

from .backoff import Backoff
from .camera.urls import mask_url
from .config import EngineConfig
from .events import FINAL_CODES, ErrorCode, Failure, Phase, Status, StreamPhase, describe_os_error, first_of
from .ffmpeg import READ_SIZE, Run, Runner, Source
from .hub import Hub
from .linger import unwatched_for
from .remux import Remuxer
from .tally import Histogram, StreamTally
from .viewer import Viewer

log = logging.getLogger(__name__)


@attrs.frozen
class ErrorRecord:
    code: ErrorCode
    message: str
    at: float  # wall-clock seconds


@attrs.frozen
class UpstreamStatus:
    phase: StreamPhase
    viewers: int = 0
    since: float | None = None  # wall-clock seconds
    error: ErrorRecord | None = None
    video: dict[str, object] | None = None
    bytes_in: int = 0
    drops: int = 0
    restarts: int = 0
    transcoding: bool = False  # the profile decodes and encodes the video
    cpu_percent: float | None = None  # of one core, by this upstream's FFmpeg processes


class CpuMeter:
    """Percent of one core used between readings at least EVERY seconds apart (the last
    figure is repeated in between, so frequent status reads do not make it noisy)."""

    EVERY = 1.0

    def __init__(self) -> None:
        self._at: float | None = None
        self._seconds = 0.0
        self._percent: float | None = None

    def start(self) -> None:
        """A new process starts now, at 0 CPU seconds: its first reading is its average."""
        self._at, self._seconds = time.monotonic(), 0.0

    def percent(self, seconds: float | None) -> float | None:
        now = time.monotonic()
        if seconds is None:
            self._at, self._percent = None, None
        elif self._at is None or seconds < self._seconds:  # a process it did not see start, or one ended
            self._at, self._seconds = now, seconds
        elif now - self._at >= self.EVERY:
            self._percent = round(100 * (seconds - self._seconds) / (now - self._at), 1)
            self._at, self._seconds = now, seconds
        return self._percent


class Upstream:
    """One shared source and its viewers (see module docstring)."""

    def __init__(self, key: str, source: Source, config: EngineConfig, runner: Runner,
                 on_retire: Callable[[Upstream], None],
                 on_slow: Callable[[Viewer], None] = lambda viewer: None,
                 window: Callable[[], float] = lambda: 0.0, timeline: int | None = None,
                 tally: StreamTally | None = None, first_media: Histogram | None = None, label: str = "") -> None:
        self.key = key
        self.label = label or key  # the stream as logs and metrics name it (never a URL)
        self.source = source
        self._tally = tally or StreamTally()  # the stream's, which outlives this upstream
        # `timeline`: where the stream's last upstream left its timestamps (90 kHz)
        self.hub = Hub(gop_limit=config.gop_limit, on_slow=on_slow, timeline=timeline, tally=self._tally,
                       first_media=first_media)
        self.restarts = 0
        self._config = config
        self._runner = runner
        self._on_retire = on_retire
        self._window = window  # seconds to gather FFmpeg's output before a publish (0: none)
        self._backoff = Backoff(cap=config.backoff_cap)
        self._scope = trio.CancelScope()
        self._attempt_scope = trio.CancelScope()
        self._restart = trio.Event()
        self._changed = trio.Event()
        self._phase = StreamPhase.CONNECTING
        self._since: float | None = None
        self._error: ErrorRecord | None = None
        self._video: dict[str, object] | None = None  # last known; read from the run's stderr
        self._run: Run | None = None
        self._began = False  # the first attempt has announced itself
        self._announced = False  # the next attempt has been announced (by `restart`)
        self.retired = False
        self.restarted_at = -math.inf  # when restart() was last called
        self._cpu = CpuMeter()
        self._remuxer = Remuxer(config.ffmpeg, self.hub.fmp4, self.hub.feed_internal, self.hub.unfeed, self.label,
                                linger=config.linger)

    # --- called by the registry (synchronous) --------------------------------------------

    def viewers_changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def restart(self, source: Source | None = None) -> None:
        """Start over now (reconnect, or PATCH with a new source); backoff starts over too.

        At once, before the old process has ended: its media stops reaching the hub, the
        keyframe cache is dropped (a viewer or snapshot that joins now waits for the new
        attempt's keyframe) and every viewer hears `connecting`."""
        self.restarted_at = trio.current_time()
        if source is not None:
            self.source = source
        self._backoff.reset()
        self._restart.set()
        self._attempt_scope.cancel()
        if not self._announced:
            self._announce()

    def joined(self, viewer: Viewer) -> None:
        """A viewer was just attached: it hears the phase this upstream is in now (a new
        upstream's first attempt announces itself). Connecting: `connecting`; waiting to
        retry: `connecting` and the error it retries; playing: `playing` comes with the
        cached keyframe."""
        if not self._began:
            return
        if self._phase is StreamPhase.CONNECTING:
            viewer.notify(Status(Phase.CONNECTING))
        elif self._phase is StreamPhase.ERROR and self._error is not None:
            viewer.notify(Status(Phase.CONNECTING))
            viewer.notify(Failure(self._error.code, self._error.message))

    def _announce(self) -> None:
        """A new attempt begins: its phase, and every viewer hears `connecting` and drops
        the last attempt's media (`Hub.restart`)."""
        self._began = self._announced = True
        self._set_phase(StreamPhase.CONNECTING)
        self.hub.restart()

    def retire(self) -> None:
        """End this upstream: the registry forgets it now, its process ends soon."""
        if not self.retired:
            self.retired = True
            self._on_retire(self)
        self._scope.cancel()

    def _video_info(self) -> dict[str, object] | None:
        """Codec and size, from the running FFmpeg's stderr (parsed when asked, not per chunk:
        stderr and stdout are separate pipes, so the first media may come before the line)."""
        if self._run is not None:
            self._video = self._run.video() or self._video
        return self._video

    def status(self) -> UpstreamStatus:
        hub = self.hub.statistics()
        return UpstreamStatus(phase=self._phase, viewers=hub.viewers, since=self._since,
                              error=self._error, video=self._video_info(), bytes_in=hub.bytes_in,
                              drops=hub.drops, restarts=self.restarts, transcoding=self.source.profile.transcoded,
                              cpu_percent=self._cpu.percent(self._cpu_seconds()))

    def _cpu_seconds(self) -> float | None:
        """CPU seconds of the processes running for this upstream now."""
        run = self._run
        seconds = None if run is None else run.cpu_seconds()
        remux = self._remuxer.cpu_seconds()
        return seconds if remux is None else (seconds or 0.0) + remux

    # --- the supervisor -----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with self._scope:
                task_status.started()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._linger_guard)
                    nursery.start_soon(self._remuxer.run, self._viewers_changed)
                    await self._supervise()
                    nursery.cancel_scope.cancel()
        finally:
            if self._phase is not StreamPhase.ERROR:
                self._set_phase(StreamPhase.STOPPED)
            self.retire()
            self.hub.reset()  # drop the keyframe cache: an ended upstream holds no media

    async def _supervise(self) -> None:
        while True:
            self._restart = trio.Event()
            failure = await self._attempt()
            if failure is None:  # restarted on request
                self._restarted()
                continue
            self._set_phase(StreamPhase.ERROR)
            self.hub.reset()  # a failed attempt's last keyframe is not shown as if it played
            if failure.code in FINAL_CODES:  # not retried: retiring stops every viewer
                return
            with trio.move_on_after(self._backoff.next()):
                await self._restart.wait()
            self._restarted()

    def _restarted(self) -> None:
        self.restarts += 1
        self._tally.restarts += 1

    async def _attempt(self) -> Failure | None:
        """One run of the media process; the failure that ended it, None if restarted."""
        if not self._announced:  # else `restart` did it, when it was asked
            self._announce()
        self._announced = False
        self._log(logging.INFO, StreamPhase.CONNECTING, "upstream %s connecting (%s)", mask_url(self.source.url),
                  self.source.transport)
        timeout = self._config.ffmpeg_timeout
        started = trio.current_time()
        self._tally.starts += 1
        healthy_from: float | None = None
        failure: Failure | None = None
        with trio.CancelScope() as self._attempt_scope:
            try:
                async with self._runner(self.source) as run:
                    self._run = run
                    self._cpu.start()
                    try:
                        stalled, healthy_from = await self._pump(run)
                        if stalled:  # say so now: ending a process stuck in connect takes a while
                            failure = self._report(self._stall(timeout, started, healthy_from))
                        else:
                            await run.finish()
                    finally:
                        self._video_info()
                        self._run = None  # an ended upstream keeps no stderr around
            except* Failure as group:  # the runner could not start the media process
                failure = self._report(first_of(group))  # type: ignore[arg-type]
            except* OSError as group:  # the system failed us mid-attempt (fds, pipes)
                failure = self._report(Failure(ErrorCode.STREAM_ERROR, describe_os_error(first_of(group))))
        if self._attempt_scope.cancelled_caught:
            return None
        if healthy_from is not None and trio.current_time() - healthy_from >= self._config.healthy_after:
            self._backoff.reset()
        if failure is not None:
            return failure
        return self._report(run.failure())

    async def _pump(self, run: Run) -> tuple[bool, float | None]:
        """Feed the hub until the run's output ends: (stalled?, when media started).

        The watchdog is a cancel scope whose deadline moves with every chunk. Under load
        (`window` > 0) a read waits up to that long for what follows it and publishes
        them together: fewer, larger messages for every viewer, whatever it reads with.
        """
        timeout = self._config.ffmpeg_timeout
        first: float | None = None
        ended = False
        with trio.CancelScope(relative_deadline=timeout) as watchdog:
            while not ended and (chunk := cast(bytes, await run.stdout.receive_some(READ_SIZE))):
                watchdog.relative_deadline = timeout
                if first is None:
                    first = trio.current_time()
                    self._set_phase(StreamPhase.PLAYING)
                    self._log(logging.INFO, StreamPhase.PLAYING, "upstream %s playing", mask_url(self.source.url))
                elif window := self._window():
                    chunk, ended = await self._gather(run, chunk, window)
                if self._attempt_scope.cancel_called:  # restarted: not a byte more of this attempt
                    break
                self.hub.publish(chunk)
        return watchdog.cancelled_caught, first

    @staticmethod
    async def _gather(run: Run, chunk: bytes, window: float) -> tuple[bytes, bool]:
        """`chunk` and what FFmpeg writes within `window` after it: (data, output ended?)."""
        parts = [chunk]
        size = len(chunk)
        ended = False
        with trio.move_on_after(window):
            while size < READ_SIZE:
                more = cast(bytes, await run.stdout.receive_some(READ_SIZE - size))
                if not more:
                    ended = True
                    break
                parts.append(more)
                size += len(more)
        return (parts[0] if len(parts) == 1 else b"".join(parts)), ended

    @staticmethod
    def _stall(timeout: float, started: float, healthy_from: float | None) -> Failure:
        if healthy_from is None:
            return Failure(ErrorCode.TIMEOUT, f"no media within {timeout:g} s of the start")
        return Failure(ErrorCode.TIMEOUT, f"no bytes for {timeout:g} s while playing "
                                f"(after {trio.current_time() - started:.1f} s)")

    def _report(self, failure: Failure) -> Failure:
        self._error = ErrorRecord(failure.code, failure.message, time.time())
        self._tally.exits[failure.code] += 1
        self._log(logging.WARNING, "failed", "upstream %s failed: %s", mask_url(self.source.url), failure,
                  code=failure.code)
        self.hub.broadcast(failure)
        return failure

    async def _viewers_changed(self) -> None:
        await self._changed.wait()

    async def _linger_guard(self) -> None:
        await unwatched_for(self._config.linger, lambda: bool(self.hub.viewers), self._viewers_changed)
        self._log(logging.INFO, "lingered", "upstream %s has had no viewer for %g s: stopping",
                  mask_url(self.source.url), self._config.linger)
        self.retire()

    def _log(self, level: int, event: str, message: str, *args: object, **fields: object) -> None:
        """A log line with its event and stream as fields (LOG_FORMAT=json shows them)."""
        log.log(level, message, *args, extra={"event": f"upstream.{event}", "stream": self.label, **fields})

    def _set_phase(self, phase: StreamPhase) -> None:
        if phase != self._phase:
            self._phase = phase
            self._since = time.time()

