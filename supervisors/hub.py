"""Fan-out of one upstream's MPEG-TS to its viewers, with the keyframe (GOP) cache.

`publish` is synchronous and never awaits a viewer: each chunk (whole TS packets, one
bytes object shared by every viewer) goes to each synced viewer with `offer`. A viewer
that is not synced (just joined, overflowed, or the upstream restarted) gets PAT+PMT and
the media from a keyframe on: at once from the cache when the upstream is running, else
at the next keyframe. `restart` starts a new attempt: nothing of the old one reaches a
viewer after its `connecting`. The cache holds PAT, PMT and the packets since the last keyframe,
up to `gop_limit` bytes (beyond that only PAT/PMT, and joiners wait for a keyframe).
fMP4 viewers are fed by `self.fmp4` (`remux.FragmentHub`) from the remuxer, which takes
this TS as a viewer of its own (`feed`); every viewer, of either format, gets the events.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from .events import Event, MediaFormat
from .media.mpegts import Aligner, Index
from .media.timeline import Retimer
from .remux import FragmentHub
from .tally import Histogram, StreamTally
from .viewer import Viewer

GOP_LIMIT = 2 << 20


@attrs.frozen
class HubStatistics:
    viewers: int
    bytes_in: int
    drops: int  # of every viewer since this upstream started
    viewer_drops: int  # of the viewers attached now


class Hub:
    """Viewers of one upstream, and what a joining viewer needs to start at a keyframe."""

    def __init__(self, *, gop_limit: int = GOP_LIMIT, on_slow: Callable[[Viewer], None] = lambda v: None,
                 timeline: int | None = None, tally: StreamTally | None = None,
                 first_media: Histogram | None = None) -> None:
        self.viewers: set[Viewer] = set()  # the sockets' viewers, of either format
        self._ts: set[Viewer] = set()  # who receives the TS: MPEG-TS viewers and the fMP4 remuxer
        self._internal: set[Viewer] = set()  # of those, the remuxer's: not a viewer in the tally
        self._tally = tally or StreamTally()  # the stream's, which outlives this upstream
        self.fmp4 = FragmentHub(gop_limit=gop_limit, on_slow=on_slow, tally=self._tally)
        self._first_media = first_media or Histogram()
        self._retimer = Retimer(timeline)  # outlives `reset`: one timeline per stream
        self.bytes_in = 0
        self._gop_limit = gop_limit
        self._on_slow = on_slow
        self._drops_gone = 0
        self.reset()

    def reset(self) -> None:
        """A new upstream process: its TS starts afresh, every viewer resyncs."""
        self._aligner = Aligner()
        self._index = Index()
        self._gop: list[bytes] = []
        self._gop_bytes = 0
        self.fmp4.reset()
        for viewer in self.viewers | self._ts:
            viewer.synced = False

    def timeline_end(self) -> int | None:
        """Where the next attempt's timestamps begin (90 kHz), None before any media."""
        return self._retimer.end()

    def restart(self) -> None:
        """A new attempt starts: the old one's media still queued for a viewer is dropped,
        each viewer gets `connecting`, and its next media is PAT, PMT and a new keyframe,
        its timestamps going on from the last ones sent (`timeline.Retimer`)."""
        self._retimer.restart()
        self.reset()
        for viewer in self.viewers | self._ts:
            viewer.restart()

    def attach(self, viewer: Viewer) -> None:
        """Add a viewer; it starts from the cached keyframe, or waits for the next one.
        An fMP4 viewer gets fragments from `self.fmp4` (the upstream runs the remuxer)."""
        self.viewers.add(viewer)
        if viewer.format is MediaFormat.FMP4:
            viewer.retimer = None
            self.fmp4.attach(viewer)
        else:
            self.feed(viewer)

    def feed(self, viewer: Viewer) -> None:
        """Give a viewer this upstream's TS, from the cached keyframe or the next one.
        A socket that played before (stop and start, or another stream) goes on with its
        own timeline: its media pass through a Retimer of its own (a copy per chunk for
        it alone) so that its timestamps never jump."""
        self._ts.add(viewer)
        viewer.synced = False
        viewer.retimer = None if viewer.resume_at is None else Retimer(viewer.resume_at, self._retimer.step)
        header = self._index.header
        if header is not None and self._gop:
            gop = self._gop
            if (retimer := viewer.retimer) is not None:
                pids = self._pids()
                gop = [retimer.apply(part, pids, 0 if i == 0 else None) for i, part in enumerate(gop)]
            viewer.synced = viewer.offer(header, *gop)
            if viewer.synced:
                self._sent(viewer, len(header) + sum(len(part) for part in gop))

    def feed_internal(self, viewer: Viewer) -> None:
        """`feed` the remuxer: its bytes are not counted as given to viewers."""
        self._internal.add(viewer)
        self.feed(viewer)

    def unfeed(self, viewer: Viewer) -> None:
        """No more TS for a viewer given it with `feed_internal` (the remuxer)."""
        self._ts.discard(viewer)
        self._internal.discard(viewer)

    def detach(self, viewer: Viewer) -> None:
        if viewer in self.viewers:
            self.viewers.discard(viewer)
            self._ts.discard(viewer)
            self.fmp4.detach(viewer)
            self._drops_gone += viewer.drops
            self._tally.drops += viewer.drops
            end = viewer.retimer.end() if viewer.retimer is not None else None
            viewer.resume_at = end if end is not None else self._retimer.end()

    def _pids(self) -> tuple[int | None, ...]:
        return self._index.video_pid, self._index.pcr_pid, *self._index.other_pids

    def broadcast(self, event: Event) -> None:
        for viewer in self.viewers:
            viewer.notify(event)

    def _sent(self, viewer: Viewer, size: int) -> None:
        """A viewer that was not synced got `size` bytes from a keyframe on."""
        if viewer in self._internal:
            return
        self._tally.bytes_out += size
        if (waited := viewer.waited()) is not None:
            self._first_media.observe(waited)

    def publish(self, chunk: bytes) -> None:
        self.bytes_in += len(chunk)
        self._tally.bytes_in += len(chunk)
        data = self._aligner.feed(chunk)
        if not data:
            return
        key = self._index.scan(data)
        pids = self._pids()
        data = self._retimer.apply(data, pids, key)
        if key is not None:
            self._gop = [data[key:] if key else data]
            self._gop_bytes = len(self._gop[0])
        elif self._gop:
            self._gop.append(data)
            self._gop_bytes += len(data)
            if self._gop_bytes > self._gop_limit:
                self._gop, self._gop_bytes = [], 0
        header = self._index.header
        offered = 0  # viewers that took `data` as it is (counted once per chunk, below)
        internal = [viewer for viewer in self._internal if viewer.synced]  # at most one: the remuxer
        for viewer in list(self._ts):
            retimer = viewer.retimer
            if viewer.synced:
                viewer.synced = viewer.offer(data if retimer is None else retimer.apply(data, pids, key))
                offered += viewer.synced
            elif key is not None and header is not None:
                first = self._gop[0]
                viewer.synced = viewer.offer(header, first if retimer is None else retimer.apply(first, pids, 0))
                if viewer.synced:
                    self._sent(viewer, len(header) + len(first))
            if viewer.slow:
                self._on_slow(viewer)
        offered -= sum(viewer.synced for viewer in internal)  # the remuxer's share is not a viewer's
        self._tally.bytes_out += offered * len(data)

    def statistics(self) -> HubStatistics:
        attached = sum(v.drops for v in self.viewers)
        return HubStatistics(viewers=len(self.viewers), bytes_in=self.bytes_in, drops=self._drops_gone + attached,
                             viewer_drops=attached)
