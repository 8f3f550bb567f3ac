"""The registry of upstreams: the one object the web edge talks to.

It owns a nursery in which every upstream supervisor runs, maps sharing keys to the
upstream a viewer joins, attaches and detaches viewers, and enforces MAX_CONCURRENT_STREAMS
(upstreams alive; joining one never counts) and MAX_STREAMS_PER_CLIENT (distinct upstreams one
client address watches across its sockets). All methods but `run` are synchronous, so
a lookup and the attach that follows it can never interleave with a retiring upstream.

Cancellation: cancelling `run` cancels every upstream; each one's process is ended and
reaped before `run` returns.

An upstream's lifetime has one definition: it is alive exactly while its supervisor task
(`_guarded`) runs, from `_start` until its FFmpeg is reaped, retired or not. The limit,
`statistics()` (so `/metrics` and health) and `live()` count that set, `_alive`; the
sharing map `_upstreams` only says which one a new viewer of a key joins.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator

import attrs
import trio

from .config import EngineConfig
from .events import Close, CloseCode, ErrorCode, Failure, Phase, Status, StreamPhase
from .ffmpeg import Runner, Source, ffmpeg_runner
from .hub import HubStatistics
from .tally import Tally
from .upstream import Upstream, UpstreamStatus
from .viewer import Viewer

log = logging.getLogger(__name__)
REMEMBERED = 1024  # statuses of ended upstreams kept for the REST view


@attrs.frozen
class RegistryStatistics:
    running: int  # upstreams alive: supervisor tasks running (a retired one until its FFmpeg is reaped)
    max: int
    viewers: int  # open sockets
    transcoding: int = 0  # running upstreams whose profile decodes and encodes
    cpu_percent: float = 0.0  # of one core, by every upstream's FFmpeg processes (as last measured)


def camera_runner(config: EngineConfig) -> Runner:
    """The Runner that plays a source's camera with FFmpeg, as the settings say."""
    return ffmpeg_runner(config.ffmpeg, timeout=config.ffmpeg_timeout, sources=config.sources)


class Registry:
    """Running upstreams by key, and every open viewer (see module docstring)."""

    def __init__(self, config: EngineConfig, runner: Runner | None = None, *,
                 group: Callable[[str], str] = lambda key: key) -> None:
        """`group`: which tally (`self.tally`) an upstream's key counts in."""
        self.config = config
        self._runner = runner or camera_runner(config)
        self.tally = Tally(group)  # what every stream has done, for the metrics
        self._upstreams: dict[str, Upstream] = {}  # the one a viewer of each key joins
        self._alive: set[Upstream] = set()  # every upstream whose supervisor task runs
        self._ended: OrderedDict[str, Upstream] = OrderedDict()
        self._viewers: set[Viewer] = set()
        self._clients: dict[str, Counter[str]] = {}
        self._starters: dict[str, str] = {}  # upstream key -> the client that started it
        self._nursery: trio.Nursery | None = None
        self._no_viewers = trio.Event()
        self._no_viewers.set()
        self._no_supervisors = trio.Event()
        self._no_supervisors.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # --- viewers --------------------------------------------------------------------------

    def open_viewer(self, client: str) -> ViewerLease:
        """`with`: a viewer for one socket; leaving the block detaches it from any upstream."""
        return ViewerLease(self, client)

    def _opened(self, viewer: Viewer) -> None:
        self._viewers.add(viewer)
        if self._no_viewers.is_set():
            self._no_viewers = trio.Event()

    def _closed(self, viewer: Viewer) -> None:
        self._viewers.discard(viewer)
        self._detach(viewer)
        if not self._viewers:
            self._no_viewers.set()

    def _batch_window(self) -> float:
        """Under load, fewer and larger messages: per-message cost dominates the fan-out
        (global, as the cost is the process's)."""
        return self.config.batch_window if len(self._viewers) >= self.config.batch_from else 0.0

    async def wait_no_viewers(self) -> None:
        await self._no_viewers.wait()

    async def wait_no_upstreams(self) -> None:
        """Until every supervisor task (and so every FFmpeg it owned) has ended."""
        await self._no_supervisors.wait()

    def attach(self, viewer: Viewer, key: str, source: Source, *, peer: bool = False) -> None:
        """Subscribe a viewer to the upstream for key, starting one if needed.

        Raises Failure(LIMIT) when a limit forbids it: MAX_CONCURRENT_STREAMS, and
        MAX_STREAMS_PER_CLIENT unless the viewer is another node of the cluster (`peer`:
        it reads for all of its own viewers). Attaching where it already is repeats
        `playing` if it has been announced.
        """
        if viewer.key == key:
            if viewer.announced:
                viewer.notify(Status(Phase.PLAYING))
            return
        if viewer.key is not None:
            self.detach(viewer)
        watched = set(self._clients.get(viewer.client, ())) | self._lingering(viewer.client)
        if not peer and key not in watched and len(watched) >= self.config.max_streams_per_client:
            raise Failure(ErrorCode.LIMIT, f"MAX_STREAMS_PER_CLIENT ({self.config.max_streams_per_client}) "
                                 "reached for this client")
        upstream = self._upstreams.get(key)
        if upstream is None:
            if len(self._alive) >= self.config.max_streams:
                raise Failure(ErrorCode.LIMIT, f"MAX_CONCURRENT_STREAMS ({self.config.max_streams}) reached")
            upstream = self._start(key, source, viewer.client)
        self._clients.setdefault(viewer.client, Counter())[key] += 1
        viewer.key = key
        viewer.asked()
        upstream.joined(viewer)
        upstream.hub.attach(viewer)
        upstream.viewers_changed()

    def detach(self, viewer: Viewer) -> None:
        """Unsubscribe (the `stop` action): the viewer's next message is `stopped`."""
        self._detach(viewer)
        viewer.stop()

    def forget(self, viewer: Viewer) -> None:
        """The viewer's client is gone: unsubscribe it and drop what it had queued."""
        self._detach(viewer)
        viewer.clear_media()

    def _detach(self, viewer: Viewer) -> None:
        key = viewer.key
        if key is None:
            return
        viewer.key = None
        watched = self._clients.get(viewer.client)
        if watched is not None:
            watched[key] -= 1
            if watched[key] <= 0:
                del watched[key]
            if not watched:
                del self._clients[viewer.client]
        upstream = self._upstreams.get(key)
        if upstream is not None:
            upstream.hub.detach(viewer)
            upstream.viewers_changed()

    # --- upstreams ------------------------------------------------------------------------

    def _lingering(self, client: str) -> set[str]:
        """Upstreams this client started that still run: they count against it until they
        end, so opening and closing sockets cannot fill MAX_CONCURRENT_STREAMS."""
        return {key for key, starter in self._starters.items() if starter == client}

    def _start(self, key: str, source: Source, client: str) -> Upstream:
        if self._nursery is None:
            raise RuntimeError("registry is not running")
        ended = self._ended.pop(key, None)  # its timestamps go on: players keep their decoders
        upstream = Upstream(key, source, self.config, self._runner, self._retired, self._too_slow,
                            self._batch_window, timeline=ended.hub.timeline_end() if ended else None,
                            tally=self.tally.stream(key), first_media=self.tally.first_media,
                            label=self.tally.group(key))
        self._upstreams[key] = upstream
        self._starters[key] = client
        self._alive.add(upstream)  # alive from here: a task started with start_soon always runs
        if self._no_supervisors.is_set():
            self._no_supervisors = trio.Event()
        self._nursery.start_soon(self._guarded, upstream)
        return upstream

    def _too_slow(self, viewer: Viewer) -> None:
        label = self.tally.group(viewer.key) if viewer.key is not None else None
        log.warning("viewer %s of stream %s cut off: SLOW_CONSUMER (%d drops)", viewer.client, label, viewer.drops,
                    extra={"event": "viewer.slow_consumer", "stream": label, "client": viewer.client})
        if viewer.key is not None:
            self.tally.stream(viewer.key).evictions += 1
        self._detach(viewer)

    async def _guarded(self, upstream: Upstream) -> None:
        """An upstream's supervisor task: the upstream is alive (counted by limits,
        statistics and metrics) exactly until this returns."""
        try:
            await upstream.run()
        except* Exception:  # a bug in one upstream must not end every other one
            log.exception("upstream of stream %s crashed", upstream.label,
                          extra={"event": "upstream.crashed", "stream": upstream.label})
        finally:
            self._alive.discard(upstream)
            if not self._alive:
                self._no_supervisors.set()

    def _retired(self, upstream: Upstream) -> None:
        if self._upstreams.get(upstream.key) is upstream:
            del self._upstreams[upstream.key]
            self._starters.pop(upstream.key, None)
            for viewer in list(upstream.hub.viewers):  # still attached: its stream ended
                self._detach(viewer)
                upstream.hub.detach(viewer)  # (no longer among the running: _detach skipped it)
                viewer.stop()
            self._ended[upstream.key] = upstream
            while len(self._ended) > REMEMBERED:
                self._ended.popitem(last=False)

    def reconnect(self, viewer: Viewer) -> bool:
        """The `reconnect` action: restart the upstream this viewer is attached to, at most
        once per `reconnect_interval` seconds whatever the number of requests (one client
        must not keep everyone's camera restarting). False if the viewer is attached to
        none, or a restart ran too recently (the viewer sees that one)."""
        upstream = self._upstreams.get(viewer.key) if viewer.key is not None else None
        if upstream is None or trio.current_time() - upstream.restarted_at < self.config.reconnect_interval:
            return False
        upstream.restart()
        return True

    def restart(self, key: str, source: Source | None = None) -> bool:
        """Restart the upstream for key (reconnect / PATCH); False if none runs."""
        upstream = self._upstreams.get(key)
        if upstream is None:
            return False
        upstream.restart(source)
        return True

    def remove(self, key: str, failure: Failure) -> None:
        """The stream is gone (DELETE): its viewers get the failure and `stopped`; its tally
        is forgotten."""
        self._ended.pop(key, None)
        self.tally.forget(key)
        upstream = self._upstreams.get(key)
        if upstream is None:
            return
        for viewer in list(upstream.hub.viewers):
            viewer.notify(failure)
            self.detach(viewer)
        upstream.retire()
        self._ended.pop(key, None)

    def sources(self) -> list[Source]:
        """What each upstream a viewer would join plays."""
        return [upstream.source for upstream in self._upstreams.values()]

    def source(self, key: str) -> Source | None:
        """What the upstream a viewer of `key` would join plays; None if there is none."""
        upstream = self._upstreams.get(key)
        return None if upstream is None else upstream.source

    def status(self, key: str) -> UpstreamStatus:
        upstream = self._upstreams.get(key) or self._ended.get(key)
        return upstream.status() if upstream is not None else UpstreamStatus(phase=StreamPhase.IDLE)

    def live(self) -> Iterator[tuple[str, HubStatistics]]:
        """Each alive upstream's key and fan-out statistics."""
        for upstream in list(self._alive):
            yield upstream.key, upstream.hub.statistics()

    def statistics(self) -> RegistryStatistics:
        statuses = [upstream.status() for upstream in list(self._alive)]
        return RegistryStatistics(running=len(self._alive), max=self.config.max_streams,
                                  viewers=len(self._viewers),
                                  transcoding=sum(status.transcoding for status in statuses),
                                  cpu_percent=round(sum(status.cpu_percent or 0.0 for status in statuses), 1))

    def shutdown(self) -> None:
        """Server going away: every viewer gets `stopped` and a 1001 close; upstreams end."""
        for viewer in list(self._viewers):
            self._detach(viewer)
            viewer.clear_media()
            viewer.notify(Status(Phase.STOPPED))
            viewer.notify(Close(CloseCode.GOING_AWAY, "server shutting down"))
        for upstream in list(self._upstreams.values()):
            upstream.retire()


class ViewerLease:
    """A socket's viewer while a `with` block runs (`Registry.open_viewer`). A class, not
    a generator context manager: a socket holds it for its whole life, and a generator's
    frame is about ten times the size."""

    __slots__ = ("_client", "_registry", "_viewer")

    def __init__(self, registry: Registry, client: str) -> None:
        self._registry = registry
        self._client = client
        self._viewer: Viewer | None = None

    def __enter__(self) -> Viewer:
        self._viewer = Viewer(self._client, budget=self._registry.config.viewer_budget)
        self._registry._opened(self._viewer)
        return self._viewer

    def __exit__(self, *_: object) -> None:
        if self._viewer is not None:
            self._registry._closed(self._viewer)
