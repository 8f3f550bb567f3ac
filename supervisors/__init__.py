"""The engine: one Trio supervisor per upstream, fanning FFmpeg's MPEG-TS out to viewers.

The web edge uses what is exported here (and a few named parts of `camera/`, `media/`,
`snapshot`, `ffmpeg`); nothing in this package imports `app`. The folders are described
in README's Code map.
"""

from .camera.urls import CONTROL, InvalidUrl, keep_masked, mask_text, mask_url, validate_url
from .config import EngineConfig
from .events import (
    HTTP_STATUS,
    Action,
    Close,
    CloseCode,
    ErrorCode,
    Event,
    Failure,
    Health,
    Media,
    MediaFormat,
    MessageType,
    Phase,
    RestCode,
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
from .viewer import Unfinished, Viewer

__all__ = [
    "CONTROL", "HTTP_STATUS", "Action", "Health", "Close", "CloseCode", "EngineConfig", "ErrorCode", "ErrorRecord", "Event", "Failure", "InvalidUrl",
    "Media", "MediaFormat", "MessageType", "Phase", "Profile", "Registry", "RegistryStatistics", "RestCode", "Source", "Status", "StreamPhase", "StreamTally", "Tally", "Transport",
    "Unfinished", "UpstreamStatus", "VideoMode", "Viewer", "keep_masked", "mask_text", "mask_url", "media_close_code", "validate_url",
]
