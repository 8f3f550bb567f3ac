"""What the engine has done since it started, per stream, for the metrics at the edge.

Plain integers bumped where things happen: per chunk (bytes), per FFmpeg run, per
failure, per eviction, once per viewer (its time to first media). Nothing per viewer per
message, nothing that awaits, and no metrics library: the edge reads these at scrape
time (`app/http/metrics.py`). A stream's tally outlives its upstreams (a counter never goes
back) and is forgotten when the stream is deleted.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable

import attrs

# seconds from `start` to the viewer's first media: a joiner's comes from the GOP cache
# (milliseconds), a cold start's waits for FFmpeg and the camera (tenths of seconds)
FIRST_MEDIA_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@attrs.define(slots=True)
class Histogram:
    """Observations counted in FIRST_MEDIA_BUCKETS (each bucket counts those ≤ its bound,
    not cumulative; the edge sums them as Prometheus wants)."""

    bounds: tuple[float, ...] = FIRST_MEDIA_BUCKETS
    counts: list[int] = attrs.field(init=False)
    total: float = 0.0

    def __attrs_post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value


@attrs.define(slots=True)
class StreamTally:
    """One stream's counters (its key: `id:N`, or `url:…` for a socket's own URL)."""

    bytes_in: int = 0  # MPEG-TS read from FFmpeg
    bytes_out: int = 0  # queued to viewers (a viewer that overflows loses some of it)
    starts: int = 0  # FFmpeg processes started
    restarts: int = 0  # new attempts after a failure, a reconnect or a PATCH
    exits: Counter[str] = attrs.Factory(Counter)  # attempts that ended in an error, by its code
    drops: int = 0  # queue overflows of viewers that have left (the live ones count their own)
    evictions: int = 0  # viewers cut off as SLOW_CONSUMER


@attrs.define(slots=True)
class Tally:
    """Every stream's tally, by `group(key)`, and the engine-wide time to first media.

    `group` names the tally an upstream's key counts in: the edge makes it the metrics
    label, so that sockets playing their own URLs share one tally (and one label) instead
    of keeping one per URL for ever."""

    group: Callable[[str], str] = lambda key: key
    streams: dict[str, StreamTally] = attrs.Factory(dict)  # by group
    first_media: Histogram = attrs.Factory(Histogram)

    def stream(self, key: str) -> StreamTally:
        group = self.group(key)
        found = self.streams.get(group)
        if found is None:
            found = self.streams[group] = StreamTally()
        return found

    def forget(self, key: str) -> None:
        self.streams.pop(self.group(key), None)
