"""The engine: one Trio supervisor per upstream, fanning FFmpeg's MPEG-TS out to viewers.

The web edge uses only what is exported here; nothing in this package imports `app`.
"""

from .config import EngineConfig
from .events import (
                     AUTH,
                     BAD_REQUEST,
                     LIMIT,
                     NOT_FOUND,
                     SLOW_CONSUMER,
                     STREAM_ERROR,
                     TIMEOUT,
                     UNREACHABLE,
                     Close,
                     Event,
                     Failure,
                     Status,
)
from .ffmpeg import Source
from .registry import Registry, RegistryStatistics
from .upstream import ErrorRecord, UpstreamStatus
from .urls import InvalidUrl, mask_text, mask_url, validate_url
from .viewer import Unfinished, Viewer

__all__ = [
    "AUTH", "BAD_REQUEST", "LIMIT", "NOT_FOUND", "SLOW_CONSUMER", "STREAM_ERROR", "TIMEOUT",
    "UNREACHABLE", "Close", "EngineConfig", "ErrorRecord", "Event", "Failure", "InvalidUrl",
    "Registry", "RegistryStatistics", "Source", "Status", "Unfinished", "UpstreamStatus", "Viewer",
    "mask_text", "mask_url", "validate_url",
]
