"""The engine's own settings, given to it by whoever starts it (the web edge does)."""

from __future__ import annotations

import attrs

from .camera.sources import ANY_SOURCE, SourcePolicy
from .hub import GOP_LIMIT

VIEWER_BUDGET = (2 << 20) + (256 << 10)  # a full GOP cache and then some


@attrs.frozen
class EngineConfig:
    ffmpeg: str
    ffmpeg_timeout: float = 10.0
    linger: float = 5.0
    max_streams: int = 10
    max_streams_per_client: int = 5
    viewer_budget: int = VIEWER_BUDGET
    gop_limit: int = GOP_LIMIT
    backoff_cap: float = 30.0
    healthy_after: float = 30.0  # seconds of media after which the backoff starts over
    batch_from: int = 32  # from this many viewers on, FFmpeg's output is published in batches ...
    batch_window: float = 0.04  # ... gathered for at most this long (one frame at 25 fps)
    reconnect_interval: float = 10.0  # at most one `reconnect` restart per upstream this often
    sources: SourcePolicy = ANY_SOURCE  # which camera addresses may be connected to
