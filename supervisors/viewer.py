"""One socket's outbound queue: one ordered deque, a byte budget, one drop counter, one wake-up.

Producers (the hub, the upstream, the registry) call synchronous methods that never
block: `offer` (media), `notify` (a status, an error or a close), `restart` (the upstream
started over), `stop` and `clear_media`. The socket's single writer takes items with
`next` in exactly the order they were queued. What the queue guarantees:

- Order. Media, events and an unfinished express message share one deque; nothing is
  ever moved ahead of anything queued before it. Media may be dropped, never reordered.
- Budget. Queued media never exceeds `budget` bytes. Media that would exceed it empties
  the queue of media (its memory is freed even if the socket never reads), counts one
  drop and unsyncs the viewer, so the hub resumes it with PAT, PMT and the next keyframe.
  A viewer that has not caught up (no media queued) `slow_after` seconds after its first
  overflow, or that lets MAX_ITEMS items pile up, gets SLOW_CONSUMER and a 1008 close
  (`give_up`), and nothing else from then on.
- Restarts. `restart` drops the media of the previous attempt still queued and queues
  `connecting`: after it, only the new attempt's media follows, from PAT, PMT and a
  keyframe (the hub unsyncs the viewer).
- `playing`. `next` yields a `playing` status before the first media after a start or a
  `connecting`. Media queued back to back goes out as one message (at most
  COALESCE_LIMIT bytes of it), never past an event.

The express lane: the edge may give the viewer an `express` writer, which tries to put a
chunk on the wire at once, synchronously, from the hub's fan-out (no task switch, no
queue). It is used only when the viewer is idle: announced, nothing queued and its writer
not holding an item, so order is kept. Express answers False (not taken: the chunk is
queued as usual), True (all written) or an `Unfinished` (written in part), which is
queued so that the writer finishes it before anything else; no drop ever removes it.

Cancellation: `next` is a checkpoint; cancelled, it has taken nothing from the queue.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import attrs
import trio

from .events import Close, CloseCode, ErrorCode, Event, Failure, MediaFormat, Phase, Status
from .media.timeline import Retimer

MAX_ITEMS = 8192  # items queued at most: media overflows at MAX_ITEMS - EVENT_ROOM, an event
EVENT_ROOM = 64  # beyond MAX_ITEMS gives up (the byte budget usually binds long before)
COALESCE_LIMIT = 1 << 20  # one WebSocket message carries at most this much queued media
SLOW_AFTER = 10.0


@attrs.frozen
class Unfinished:
    """A message the express lane began; what is left is the edge's business."""

    rest: object


Item = bytes | Event | Unfinished
Express = Callable[[bytes], bool | Unfinished]


@attrs.frozen
class ViewerStatistics:
    queued_bytes: int  # media bytes in the queue
    queued_items: int  # items of any kind in the queue
    drops: int  # overflows: each emptied the queue of media
    synced: bool
    slow: bool


class Viewer:
    """A socket's subscription state and outbound queue (see module docstring)."""

    __slots__ = ("_announced", "_bytes", "_clock", "_holding", "_items", "_lot", "_overflow_since",
                 "_slow_after", "asked_at", "budget", "client", "drops", "express", "format", "key", "resume_at", "retimer",
                 "slow", "synced")

    def __init__(self, client: str, *, budget: int, clock: Callable[[], float] = trio.current_time,
                 slow_after: float = SLOW_AFTER) -> None:
        self.client = client
        self.budget = budget
        self.key: str | None = None  # the upstream it is attached to
        self.format = MediaFormat.MPEGTS  # what its binary frames carry (set before attach)
        self.synced = False  # has received PAT+PMT+keyframe of the current upstream attempt
        self.slow = False
        self.drops = 0
        self.express: Express | None = None  # set by the edge when its socket allows it
        # this socket's own timeline, once it has left an upstream: where it ended (90 kHz),
        # and the Retimer the hub passes its media through from the next attach on
        self.resume_at: int | None = None
        self.retimer: Retimer | None = None
        self.asked_at: float | None = None  # when it was attached, until its first media
        self._clock = clock
        self._slow_after = slow_after
        self._items: deque[Item] = deque()
        self._bytes = 0  # media bytes in `_items`
        self._lot = trio.lowlevel.ParkingLot()  # the writer, waiting for an item
        self._holding = False  # the writer has an item from `next` it has not finished sending
        self._announced = False  # `playing` was sent since the last start or `connecting`
        self._overflow_since: float | None = None

    # --- producer side (hub, upstream, registry): synchronous, never blocks ---------------

    def asked(self) -> None:
        """It was just attached: `waited` will tell how long its first media took."""
        self.asked_at = self._clock()

    def waited(self) -> float | None:
        """Seconds from `asked` to now, once (None after that, or if never asked)."""
        if self.asked_at is None:
            return None
        waited, self.asked_at = self._clock() - self.asked_at, None
        return waited

    def offer(self, *parts: bytes) -> bool:
        """Queue media (all of `parts` or none); False if it overflowed or the viewer gave up."""
        if self.slow:
            return False
        if self._overflow_since is not None and self._clock() - self._overflow_since > self._slow_after:
            self.give_up()
            return False
        # idle (nothing before this chunk still to send): it may go out at once; inline, as
        # this runs for every viewer of every chunk
        if (self.express is not None and len(parts) == 1 and self._announced and not self._holding
                and not self._items):
            taken = self.express(parts[0])
            if taken is True:
                return True
            if taken is not False:
                self._append(taken)
                return True
        size = sum(len(p) for p in parts)
        if self._bytes + size > self.budget or len(self._items) + len(parts) > MAX_ITEMS - EVENT_ROOM:
            self._overflow()
            return False
        self._items.extend(parts)
        self._bytes += size
        if self._lot:
            self._lot.unpark()
        return True

    def notify(self, event: Event) -> None:
        """Queue a status, an error or a close; ignored once the viewer gave up. A viewer
        that lets MAX_ITEMS items pile up is given up on."""
        if self.slow:
            return
        if len(self._items) >= MAX_ITEMS:
            self.give_up()
            return
        self._append(event)

    def restart(self) -> None:
        """Its upstream starts a new attempt: drop the old attempt's media, queue `connecting`."""
        self.clear_media()
        self.synced = False
        self.notify(Status(Phase.CONNECTING))

    def stop(self) -> None:
        """Unsubscribed: nothing queued before reaches the socket; `stopped` is next."""
        self.clear_media()
        self.synced = False
        self.key = None
        self.notify(Status(Phase.STOPPED))

    def clear_media(self) -> None:
        """Drop the queued media; events (and an unfinished message) stay, in order."""
        self._items = deque(item for item in self._items if not isinstance(item, bytes))
        self._bytes = 0

    def give_up(self) -> None:
        """Too far behind: SLOW_CONSUMER and a 1008 close are all it gets from now on."""
        if self.slow:
            return
        self.clear_media()
        self._append(Failure(ErrorCode.SLOW_CONSUMER,
                             f"viewer stayed too far behind for over {self._slow_after:g} s"))
        self._append(Close(CloseCode.POLICY, "slow consumer"))
        self.slow = True

    def _overflow(self) -> None:
        self.clear_media()
        self.synced = False
        self.drops += 1
        if self._overflow_since is None:
            self._overflow_since = self._clock()

    def _append(self, item: Item) -> None:
        self._items.append(item)
        if self._lot:
            self._lot.unpark()

    # --- consumer side (the socket's writer task) ----------------------------------------

    async def next(self) -> Item:
        """The next thing to send: an event, or queued media coalesced into one message.

        Calling it again says the previous item has been sent. Waits until there is one.
        Cancellation: a checkpoint; if cancelled, nothing was taken."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            item = self.next_nowait()
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return item
        while True:
            await self._lot.park()
            try:
                return self.next_nowait()
            except trio.WouldBlock:  # woken, and another call took it first
                continue

    def next_nowait(self) -> Item:
        """Like `next`, without waiting: raises trio.WouldBlock when nothing is queued."""
        self._holding = False
        if not self._items:
            raise trio.WouldBlock
        item = self._items[0]
        if isinstance(item, bytes):
            if not self._announced:
                self._announced = True
                item = Status(Phase.PLAYING)
            else:
                item = self._gather()
        else:
            self._items.popleft()
            if isinstance(item, Status) and item.phase in (Phase.CONNECTING, Phase.STOPPED):
                self._announced = False
        self._holding = True
        return item

    def _gather(self) -> bytes:
        """One message of the media at the head of the queue, up to COALESCE_LIMIT bytes."""
        items = self._items
        first = items.popleft()
        assert isinstance(first, bytes)
        parts = [first]
        size = len(first)
        while size < COALESCE_LIMIT and items and isinstance(items[0], bytes):
            part = items.popleft()
            assert isinstance(part, bytes)
            parts.append(part)
            size += len(part)
        self._bytes -= size
        if not self._bytes:
            self._overflow_since = None  # caught up
        return first if len(parts) == 1 else b"".join(parts)

    @property
    def announced(self) -> bool:
        return self._announced

    def statistics(self) -> ViewerStatistics:
        return ViewerStatistics(queued_bytes=self._bytes, queued_items=len(self._items),
                                drops=self.drops, synced=self.synced, slow=self.slow)
