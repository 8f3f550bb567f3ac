"""One socket's outbound queue: a bounded memory channel with a byte budget.

The hub feeds it with `offer` (never blocks: `send_nowait`); the socket's single writer
task takes from it with `next`. Media that would overflow the budget empties the queue
(freeing its memory even if the socket never reads), counts a drop and marks the viewer
unsynced, so the hub resumes it at the next keyframe. A viewer that has not caught up
(emptied its queue) SLOW_AFTER seconds after an overflow gets SLOW_CONSUMER and a 1008
close (`give_up`; also used when even the room kept for events is full).

`next` also produces the per-viewer `playing` status: it is due before the first media
bytes after a start or a `connecting`. It coalesces: media queued behind the first chunk
goes out in the same message, so a writer that falls behind sends fewer, larger messages.

The express lane: the edge may give the viewer an `express` writer, which tries to put a
chunk on the wire at once, synchronously, from the hub's fan-out (no task switch, no
queue). It is used only when the viewer is idle: announced, nothing queued, and its
writer not holding anything, so order is kept. Express answers False (not taken: the
chunk is queued as usual), True (all written) or an `Unfinished` (written in part), which
is queued so that the writer finishes it before anything else; `clear_media` keeps it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import attrs
import trio

from .events import SLOW_CONSUMER, Close, Event, Failure, Status

MAX_MEDIA_ITEMS = 1024  # media chunks queued at most (the byte budget usually binds first)
EVENT_RESERVE = 64  # room kept for status/error events beyond the media items
COALESCE_LIMIT = 1 << 20  # one WebSocket message carries at most this much queued media
SLOW_AFTER = 10.0
CLOSE_POLICY = 1008


@attrs.frozen
class Unfinished:
    """A message the express lane began; what is left is the edge's business."""

    rest: object


Item = bytes | Event | Unfinished
Express = Callable[[bytes], bool | Unfinished]


@attrs.frozen
class ViewerStatistics:
    queued_bytes: int
    queued_items: int
    drops: int
    synced: bool


class Viewer:
    """A socket's subscription state and outbound queue (see module docstring)."""

    __slots__ = ("_announced", "_clock", "_holding", "_in_channel", "_media_items", "_overflow_since",
                 "_queued", "_ready", "_recv", "_send", "_slow_after", "budget", "client", "drops",
                 "express", "key", "slow", "synced")

    def __init__(self, client: str, *, budget: int, clock: Callable[[], float] = trio.current_time,
                 slow_after: float = SLOW_AFTER) -> None:
        self.client = client
        self.budget = budget
        self.key: str | None = None  # the upstream it is attached to
        self.synced = False  # has received PAT+PMT+keyframe of the current upstream process
        self.slow = False
        self.drops = 0
        self._clock = clock
        self._slow_after = slow_after
        self.express: Express | None = None  # set by the edge when its socket allows it
        self._send, self._recv = trio.open_memory_channel[Item](MAX_MEDIA_ITEMS + EVENT_RESERVE)
        self._queued = 0  # media bytes in the channel
        self._media_items = 0  # media chunks in the channel (events have their own room)
        self._in_channel = 0  # items of any kind sent into the channel and not yet taken
        self._ready: deque[Item] = deque()
        self._holding = False  # the writer has an item from `next` it has not finished sending
        self._announced = False
        self._overflow_since: float | None = None

    # --- producer side (hub, registry): synchronous, never blocks ------------------------

    def offer(self, *parts: bytes) -> bool:
        """Queue media; False if it overflowed (queue emptied, viewer unsynced)."""
        if self._overflow_since is not None and self._clock() - self._overflow_since > self._slow_after:
            self.give_up()
            return False
        # idle (nothing before this chunk still to send): it may go out at once; inline, as
        # this runs for every viewer of every chunk
        if (self.express is not None and len(parts) == 1 and self._announced and not self._holding
                and not self._in_channel and not self._ready and not self.slow):
            taken = self.express(parts[0])
            if taken is True:
                return True
            if taken is not False:
                self._put(taken)
                return True
        size = sum(len(p) for p in parts)
        if self._queued + size > self.budget or self._media_items + len(parts) > MAX_MEDIA_ITEMS:
            self._overflow()
            return False
        for part in parts:
            self._put(part)
        self._queued += size
        self._media_items += len(parts)
        return True

    def notify(self, event: Event) -> None:
        """Queue a status, error or close; a viewer whose event room is full is closed."""
        try:
            self._put(event)
        except trio.WouldBlock:
            self.give_up()

    def _put(self, item: Item) -> None:
        self._send.send_nowait(item)
        self._in_channel += 1

    def _take_nowait(self) -> Item:
        item = self._recv.receive_nowait()
        self._in_channel -= 1
        return item

    def stop(self) -> None:
        """Unsubscribed: nothing queued before reaches the socket; `stopped` is next."""
        self.clear_media()
        self.synced = False
        self.key = None
        self.notify(Status("stopped"))

    def clear_media(self) -> None:
        """Drop the queued media; events (and an unfinished message) stay, in order."""
        kept = [item for item in self._ready if not isinstance(item, bytes)]
        self._ready.clear()
        while True:
            try:
                item = self._take_nowait()
            except trio.WouldBlock:
                break
            if not isinstance(item, bytes):
                kept.append(item)
        self._queued = 0
        self._media_items = 0
        for item in kept:
            self._put(item)

    def _overflow(self) -> None:
        self.clear_media()
        self.synced = False
        self.drops += 1
        if self._overflow_since is None:
            self._overflow_since = self._clock()

    def give_up(self) -> None:
        """Too far behind: SLOW_CONSUMER and a 1008 close are all it gets from now on."""
        if self.slow:
            return
        self.slow = True
        self.clear_media()
        message = f"viewer stayed too far behind for over {self._slow_after:g} s"
        for event in (Failure(SLOW_CONSUMER, message), Close(CLOSE_POLICY, "slow consumer")):
            try:
                self._put(event)
            except trio.WouldBlock:  # full of events: make room, the close matters most
                self._take_nowait()
                self._put(event)

    # --- consumer side (the socket's writer task) ----------------------------------------

    async def next(self) -> Item:
        """The next thing to send: an event, or queued media coalesced into one message.

        Calling it again says the previous item has been sent."""
        self._holding = False
        if not self._ready:
            item = await self._recv.receive()
            self._in_channel -= 1
            self._ready.append(self._gather(item) if isinstance(item, bytes) else item)
        self._holding = True
        item = self._ready.popleft()
        if isinstance(item, bytes):
            if not self._announced:
                self._announced = True
                self._ready.appendleft(item)
                return Status("playing")
        elif isinstance(item, Status) and item.phase in ("connecting", "stopped"):
            self._announced = False
        return item

    def _gather(self, first: bytes) -> bytes:
        """One message of media: `first` and the media queued behind it."""
        self._took(first)
        parts = [first]
        size = len(first)
        while size < COALESCE_LIMIT:
            try:
                item = self._take_nowait()
            except trio.WouldBlock:
                break
            if not isinstance(item, bytes):
                self._ready.append(item)
                break
            self._took(item)
            parts.append(item)
            size += len(item)
        if self._queued == 0:
            self._overflow_since = None  # caught up
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _took(self, media: bytes) -> None:
        self._queued -= len(media)
        self._media_items -= 1

    @property
    def announced(self) -> bool:
        return self._announced

    def statistics(self) -> ViewerStatistics:
        return ViewerStatistics(queued_bytes=self._queued,
                                queued_items=self._send.statistics().current_buffer_used,
                                drops=self.drops, synced=self.synced)
