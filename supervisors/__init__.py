"""The engine: one Trio supervisor per upstream, fanning FFmpeg's MPEG-TS out to viewers.

The web edge uses only what is exported here; nothing in this package imports `app`.
"""

from .config import EngineConfig
from .events import (
    HTTP_STATUS,
    Action,
    Close,
    CloseCode,
    ErrorCode,
    Event,
    Failure,
    Media,
    MediaFormat,
    Phase,
    Status,
    StreamPhase,
    Transport,
    VideoMode,
    media_close_code,
)
from .ffmpeg import Source
from .profile import Profile
from .registry import Registry, RegistryStatistics
from .tally import StreamTally, Tally
from .upstream import ErrorRecord, UpstreamStatus
from .urls import CONTROL, InvalidUrl, keep_masked, mask_text, mask_url, validate_url
from .viewer import Unfinished, Viewer

__all__ = [
    "CONTROL", "HTTP_STATUS", "Action", "Close", "CloseCode", "EngineConfig", "ErrorCode", "ErrorRecord", "Event", "Failure", "InvalidUrl",
    "Media", "MediaFormat", "Phase", "Profile", "Registry", "RegistryStatistics", "Source", "Status", "StreamPhase", "StreamTally", "Tally", "Transport",
    "Unfinished", "UpstreamStatus", "VideoMode", "Viewer", "keep_masked", "mask_text", "mask_url", "media_close_code", "validate_url",
]
