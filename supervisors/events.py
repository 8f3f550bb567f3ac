"""The protocol's vocabulary, in one place, and what a viewer's queue carries besides media.

Phases, error codes, close codes, actions and transports are enums (SPEC §3, §4); `Status`,
`Failure` and `Close` are frozen values shared by the engine and the web edge, which
turns them into JSON frames and close frames.
"""

from __future__ import annotations

import errno
import os
from enum import IntEnum, StrEnum

import attrs


class Phase(StrEnum):
    """`{"type":"status","phase":...}` sent to one viewer."""

    CONNECTED = "connected"
    CONNECTING = "connecting"
    PLAYING = "playing"
    STOPPED = "stopped"


class Health(StrEnum):
    """`GET /api/health/`'s `status`."""

    OK = "ok"
    DEGRADED = "degraded"  # storage or FFmpeg has a problem (listed in `problems`)


class StreamPhase(StrEnum):
    """An upstream's `status.phase` in REST."""

    IDLE = "idle"
    CONNECTING = "connecting"
    PLAYING = "playing"
    STOPPED = "stopped"
    ERROR = "error"


class ErrorCode(StrEnum):
    """The error codes of SPEC §4."""

    AUTH = "AUTH"
    NOT_FOUND = "NOT_FOUND"
    TIMEOUT = "TIMEOUT"
    UNREACHABLE = "UNREACHABLE"
    STREAM_ERROR = "STREAM_ERROR"
    LIMIT = "LIMIT"
    BAD_REQUEST = "BAD_REQUEST"
    SLOW_CONSUMER = "SLOW_CONSUMER"
    UNAUTHORIZED = "UNAUTHORIZED"  # no valid API_TOKEN or play token (the web edge's)
    FORBIDDEN = "FORBIDDEN"  # a source the policy refuses (ALLOW_URL_STREAMS, ALLOWED_SOURCES)
    RATE_LIMITED = "RATE_LIMITED"  # RATE_LIMIT or a coalesced reconnect


class RestCode(StrEnum):
    """The error codes only REST answers carry (SPEC §3), besides ErrorCode's."""

    VALIDATION = "VALIDATION"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    PRECONDITION_FAILED = "PRECONDITION_FAILED"  # If-Match names another version
    CONFLICT = "CONFLICT"  # a user that exists, or a change that would leave no admin
    TOO_LARGE = "TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    STORAGE_UNAVAILABLE = "STORAGE_UNAVAILABLE"
    INTERNAL = "INTERNAL"


FINAL_CODES = frozenset({ErrorCode.AUTH, ErrorCode.NOT_FOUND, ErrorCode.FORBIDDEN})  # not retried: the viewer is stopped

# The stock-player streams (`/ws/stream.ts`, `.../stream.ts`) speak no JSON: a failure is an
# HTTP status before the first byte, and after it (or on the socket) a close code of
# 4000 + that status, with the error code as the reason.
HTTP_STATUS = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.AUTH: 403,  # the camera refused our credentials: not the client's (no 401 prompt)
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.SLOW_CONSUMER: 408,
    ErrorCode.LIMIT: 429,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.STREAM_ERROR: 502,
    ErrorCode.UNREACHABLE: 503,
    ErrorCode.TIMEOUT: 504,
}


def media_close_code(code: ErrorCode) -> int:
    """The WebSocket close code a stock-player socket ends with on this failure."""
    return 4000 + HTTP_STATUS[code]


class CloseCode(IntEnum):
    """WebSocket close codes this server sends (RFC 6455 §7.4.1); Hypercorn sends 1009
    (message too big) itself."""

    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY = 1008
    INTERNAL = 1011


class MessageType(StrEnum):
    """`{"type":...}` of a JSON frame the server sends on `/ws/stream`."""

    STATUS = "status"
    MEDIA = "media"  # the fMP4 MIME type, before the init segment
    ERROR = "error"


class Action(StrEnum):
    """`{"action":...}` a client sends on its socket."""

    START = "start"
    STOP = "stop"
    RECONNECT = "reconnect"


class Transport(StrEnum):
    """How FFmpeg carries RTP from the camera."""

    TCP = "tcp"
    UDP = "udp"


class VideoMode(StrEnum):
    """A stream's video profile: what FFmpeg makes of the camera's video."""

    COPY = "copy"  # as the camera sends it
    H264 = "h264"  # transcoded with libx264 (H.265 or odd cameras)
    MPEG1 = "mpeg1"  # mpeg1video without B-frames (JSMpeg players)


class MediaFormat(StrEnum):
    """What a viewer's binary frames carry (`format=` on the sockets)."""

    MPEGTS = "mpegts"
    FMP4 = "fmp4"  # fragmented MP4 for native MSE: init segment, then moof+mdat fragments


@attrs.frozen
class Status:
    phase: Phase


@attrs.frozen
class Failure(Exception):
    """An upstream or viewer failure; the message is already masked."""

    code: ErrorCode
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@attrs.frozen
class Close:
    """End the viewer's socket with this WebSocket close code."""

    code: CloseCode
    reason: str = ""


@attrs.frozen
class Media:
    """What the binary frames that follow are: sent before the first of them (fMP4), with
    the MIME type and codecs string MSE's addSourceBuffer takes."""

    mime: str


Event = Status | Failure | Close | Media


def describe_os_error(error: BaseException) -> str:
    """What failed, for a person: "Too many open files (EMFILE)", without file paths
    or addresses (the system's own text for the error number)."""
    if isinstance(error, OSError) and error.errno:
        name = errno.errorcode.get(error.errno)
        text = os.strerror(error.errno)
        return f"{text} ({name})" if name else text
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def first_of(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception of a group (nurseries nest them: a group of groups)."""
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found
