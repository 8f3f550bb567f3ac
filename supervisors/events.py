"""What a viewer's queue carries besides media bytes: status phases, errors and a close.

Frozen values, shared by the engine and the web edge, which turns them into JSON frames.
"""

from __future__ import annotations

import attrs

# error codes of SPEC §4
AUTH = "AUTH"
NOT_FOUND = "NOT_FOUND"
TIMEOUT = "TIMEOUT"
UNREACHABLE = "UNREACHABLE"
STREAM_ERROR = "STREAM_ERROR"
LIMIT = "LIMIT"
BAD_REQUEST = "BAD_REQUEST"
SLOW_CONSUMER = "SLOW_CONSUMER"

FINAL_CODES = frozenset({AUTH, NOT_FOUND})  # not retried: the viewer is stopped


@attrs.frozen
class Status:
    phase: str  # connected | connecting | playing | stopped


@attrs.frozen
class Failure(Exception):
    """An upstream or viewer failure; the message is already masked."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@attrs.frozen
class Close:
    """End the viewer's socket with this WebSocket close code."""

    code: int
    reason: str = ""


Event = Status | Failure | Close
