"""This node in its cluster (see the package docstring).

Every server is a node, alone or not: with one node (the embedded default) every lease is
its own and nothing else changes. `run` keeps, for the app's lifetime:

- the heartbeat and the lease renewals, every LEASE_SECONDS / 3: a lease the database
  says went elsewhere fences the attempt that held it at once (its camera session ends;
  the upstream's next attempt reads the stream from the new owner). A database that
  cannot be reached fences nothing: what plays goes on playing, and for a lease after it
  failed this node takes no lease that ran out from another (`leases.place`'s `steal`):
  their holders renew them first;
- the changes: PostgreSQL's notifications (and, as a net, a read every LEASE_SECONDS),
  SQLite's read every POLL seconds: an upstream of this node whose stream changed
  restarts with its new source, one whose stream was deleted stops its viewers.
"""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import attrs
import trio

from supervisors import ErrorCode, Failure, Registry, Source
from supervisors.ffmpeg import Run, Runner

from ..db import Database, StorageError, Tx
from ..policy.tokens import Access
from ..store import Store
from ..targets import stream_key
from . import leases

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)
POLL = 0.5  # seconds between SQLite's reads of the streams this node plays
LOCATE_WAIT = 2.0  # seconds an attempt waits for the server to know its own address
REACH_AGAIN = 0.5  # seconds between tries of a camera's holder that does not answer


@attrs.frozen
class NodeView:
    """One node as `GET /api/cluster/` shows it."""

    id: str
    url: str
    alive: bool
    streams: list[int]
    viewers: int


def default_id(url: str) -> str:
    """A name stable across restarts: the node's host and port (this machine's name for a
    wildcard address)."""
    parts = urlsplit(url)
    host = parts.hostname if parts.hostname not in (None, "0.0.0.0", "::") else socket.gethostname()
    return f"{host}-{parts.port}".replace(":", "-")


class FencedRun:
    """A camera attempt under a lease: its failure says so when the lease was lost."""

    def __init__(self, run: Run, fence: trio.CancelScope) -> None:
        self._run = run
        self._fence = fence
        self.stdout = run.stdout

    async def finish(self) -> None:
        await self._run.finish()

    def failure(self) -> Failure:
        if self._fence.cancel_called:
            return Failure(ErrorCode.STREAM_ERROR, "another node holds the camera now (this node's lease went to it)")
        return self._run.failure()

    def video(self) -> dict[str, object] | None:
        return self._run.video()

    def cpu_seconds(self) -> float | None:
        return self._run.cpu_seconds()


class Cluster:
    """See module docstring. `edits(stream_id)` holds a stream's record still while a
    change is applied (`Services.editing`)."""

    def __init__(self, store: Store, access: Access, *, lease_seconds: float,
                 node_url: str = "", node_id: str = "",
                 edits: Callable[[int], AbstractAsyncContextManager[None]]) -> None:
        self._db: Database = store.db
        self._store = store
        self._access = access
        self.lease_seconds = lease_seconds
        self.url = node_url
        self.id = node_id or (default_id(node_url) if node_url else "")
        self._edits = edits
        self._located = trio.Event()
        if self.url:
            self._located.set()
        self._held: dict[int, tuple[int, trio.CancelScope]] = {}  # stream → (epoch, its attempt's fence)
        self._changed = trio.Event()
        self._unavailable_at = -math.inf  # when the database last failed this node
        self._client: httpx.AsyncClient | None = None  # made when a stream is first read from a peer
        self.registry: Registry | None = None

    def locate(self, url: str) -> None:
        """The server listens at `url` (when NODE_URL did not say)."""
        if not self._located.is_set():
            self.url = url.rstrip("/")
            self.id = self.id or default_id(self.url)
            self._located.set()

    # --- the engine's Runner ------------------------------------------------------------

    def runner(self, camera: Runner) -> Runner:
        """`camera` where this node holds the stream's lease, the owner's stream elsewhere;
        a source of no registered stream (`?url=`) plays here."""

        @asynccontextmanager
        async def run(source: Source) -> AsyncIterator[Run]:
            if source.stream is None:
                async with camera(source) as played:
                    yield played
                return
            placement, response = await self._reach(source.stream)
            if response is not None:
                from . import peer

                async with peer.reading(response, placement.node) as read:
                    yield read
                return
            with trio.CancelScope() as fence:
                self._held[source.stream] = (placement.epoch, fence)
                try:
                    async with camera(source) as played:
                        yield FencedRun(played, fence)
                finally:
                    if self._held.get(source.stream, (None, None))[1] is fence:
                        del self._held[source.stream]

        return run

    async def _reach(self, stream_id: int) -> tuple[leases.Placement, httpx.Response | None]:
        """Where the stream's camera is: here (no response), or another node, whose stream
        answered. A run-out lease is taken from its holder only once the holder did not
        answer (`peer.Unreachable`: dead or frozen, not merely cut off from the database),
        and not within a lease of this node's database failing (`_may_steal`). A holder
        that does not answer is asked again every REACH_AGAIN seconds, placing again each
        time, until its lease has run out and the camera went to a live node: the attempt
        stays `connecting` meanwhile, without the backoff of failed attempts. Raises
        Failure when that takes over a lease, or when the holder refuses."""
        from . import peer  # httpx (4 MiB) only in a node that reads from another

        deadline = trio.current_time() + self.lease_seconds + LOCATE_WAIT + peer.ANSWER_WITHIN
        holder_silent = False
        while True:
            placement = await self._place(stream_id, steal=holder_silent and self._may_steal())
            if placement.node == self.id:
                return placement, None
            if self._client is None:
                self._client = peer.client()
            token = self._access.node_token(self.id)
            try:
                return placement, await peer.connect(self._client, placement.node, placement.url, stream_id, token)
            except peer.Unreachable as unreachable:
                if trio.current_time() >= deadline:
                    raise Failure(ErrorCode.STREAM_ERROR, str(unreachable)) from None
                holder_silent = True
            await trio.sleep(REACH_AGAIN)

    def _may_steal(self) -> bool:
        """Not within a lease of the database failing this node: every lease ran out while
        nobody could renew it, and their holders renew them first."""
        return trio.current_time() - self._unavailable_at >= self.lease_seconds

    async def _place(self, stream_id: int, *, steal: bool) -> leases.Placement:
        with trio.move_on_after(LOCATE_WAIT):
            await self._located.wait()
        if not self._located.is_set():
            raise Failure(ErrorCode.STREAM_ERROR, "this node does not know its own address yet (NODE_URL)")
        try:
            return await self._db.run(lambda tx: leases.place(tx, stream_id, self.id, self.url, self.lease_seconds,
                                                              steal=steal), write=True)
        except StorageError as error:
            self._unavailable_at = trio.current_time()
            raise Failure(ErrorCode.STREAM_ERROR, f"the cluster's database is unavailable: {error}") from None

    # --- the loops ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The heartbeat, the renewals and the changes, until cancelled (see module docstring)."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._beating)
                nursery.start_soon(self._db.listen, self.changed)
                nursery.start_soon(self._polling)
                nursery.start_soon(self._syncing)
                task_status.started()
        finally:
            if self._client is not None:
                with trio.CancelScope(shield=True):
                    await self._client.aclose()

    def changed(self) -> None:
        """Streams may have changed: look at the ones this node plays."""
        self._changed.set()

    async def _beating(self) -> None:
        await self._located.wait()
        quiet = False
        while True:
            viewers = self.registry.statistics().viewers if self.registry is not None else 0
            held = {stream: epoch for stream, (epoch, _) in self._held.items()}
            try:
                lost = await self._db.run(partial(self._beat, viewers=viewers, held=held), write=True)
            except StorageError as error:
                self._unavailable_at = trio.current_time()
                if not quiet:
                    log.warning("cannot renew this node's leases (%s): what plays goes on", error,
                                extra={"event": "cluster.database_unavailable"})
                quiet = True
            else:
                quiet = False
                for stream in lost:
                    self._fence(stream, held[stream])
            await trio.sleep(self.lease_seconds / 3)

    def _beat(self, tx: Tx, *, viewers: int, held: dict[int, int]) -> set[int]:
        leases.beat(tx, self.id, self.url, viewers)
        return leases.renew(tx, self.id, held, self.lease_seconds)

    def _fence(self, stream_id: int, epoch: int) -> None:
        found = self._held.get(stream_id)
        if found is not None and found[0] == epoch:
            log.warning("stream %d: this node's lease (epoch %d) went to another node: ending its camera session",
                        stream_id, epoch, extra={"event": "cluster.fenced", "stream": str(stream_id)})
            found[1].cancel()

    async def leave(self) -> None:
        """This node goes away (a graceful shutdown): its leases end now, so other nodes
        take its cameras over at once. Bounded: one second at most."""
        if not self._located.is_set():
            return
        with trio.move_on_after(1.0):
            try:
                await self._db.run(lambda tx: leases.leave(tx, self.id), write=True)
            except StorageError:
                pass

    async def _polling(self) -> None:
        every = POLL if self._db.dialect.notify is None else self.lease_seconds
        while True:
            await trio.sleep(every)
            self.changed()

    async def _syncing(self) -> None:
        while True:
            await self._changed.wait()
            self._changed = trio.Event()
            try:
                await self.sync()
            except StorageError:
                pass  # the next poll tries again

    async def sync(self) -> None:
        """Bring every change of a stream this node plays to its upstream: a new source
        restarts it, a deleted stream stops its viewers (as PATCH and DELETE do on the
        node that took them). Raises StorageError."""
        if self.registry is None:
            return
        playing = {source.stream: source for source in self.registry.sources() if source.stream is not None}
        if not playing:
            return
        stored = await self._store.records(list(playing))
        for stream_id, source in playing.items():
            record = stored.get(stream_id)
            if record is not None and record.source == source:
                continue
            async with self._edits(stream_id):  # read again under the hold: a change made here wins
                record = await self._store.get(stream_id)
                now = self.registry.source(stream_key(stream_id))
                if now is None:
                    continue
                if record is None:
                    self.registry.remove(stream_key(stream_id), Failure(ErrorCode.NOT_FOUND, "stream deleted"))
                elif record.source != now:
                    self.registry.restart(stream_key(stream_id), record.source)

    async def view(self) -> list[NodeView]:
        """Every node the database knows (`GET /api/cluster/`). Raises StorageError."""
        rows = await self._db.run(lambda tx: leases.nodes(tx, self.lease_seconds))
        return [NodeView(node, url, alive, streams, viewers) for node, url, alive, viewers, streams in rows]
