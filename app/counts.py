"""The web edge's own counters and its send path, read by `app/http/metrics.py` at scrape
time and by `GET /api/health/`."""

from __future__ import annotations

import logging
from collections import Counter
from enum import StrEnum

import attrs

log = logging.getLogger(__name__)
# a label's values must stay few: any other method a client sends counts as "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@attrs.define
class EdgeTally:
    """The web edge's counters: open sockets by endpoint and send path, HTTP requests."""

    sockets_open: Counter[str] = attrs.Factory(Counter)  # by endpoint
    sockets_total: Counter[str] = attrs.Factory(Counter)
    send_paths: Counter[str] = attrs.Factory(Counter)  # playing sockets by path
    requests: Counter[tuple[str, str, str]] = attrs.Factory(Counter)  # (route, method, status)

    def socket(self, endpoint: str) -> Counted:
        """`with`: a socket of this endpoint is open while the block runs."""
        self.sockets_total[endpoint] += 1
        return Counted(self.sockets_open, endpoint)

    def sending(self, path: str) -> Counted:
        """`with`: a socket plays through this send path while the block runs."""
        return Counted(self.send_paths, path)

    def request(self, route: str, method: str, status: int) -> None:
        """Count a response; `route` is the URL rule (or "unmatched"), never the path."""
        self.requests[route, method if method in METHODS else "other", str(status)] += 1


class Counted:
    """`with`: `counter[key]` is one more while the block runs. A class, not a generator
    context manager: a socket holds these for its whole life, and a generator's frame is
    about ten times the size."""

    __slots__ = ("_counter", "_key")

    def __init__(self, counter: Counter[str], key: str) -> None:
        self._counter = counter
        self._key = key

    def __enter__(self) -> None:
        self._counter[self._key] += 1

    def __exit__(self, *_: object) -> None:
        self._counter[self._key] -= 1


class SendPath(StrEnum):
    WIRE = "wire"  # frames written here, straight to the socket
    ASGI = "asgi"  # frames through the ASGI send and Hypercorn (several times the CPU)


@attrs.define
class SendPathRecord:
    """Which send path this app's sockets use, for `GET /api/health/`: None before the
    first socket, ASGI from the first socket that fell back (logged once, as a WARNING,
    with the reason: it costs several times the CPU per viewer), else WIRE."""

    path: SendPath | None = None
    reason: str | None = None

    def attached(self) -> None:
        if self.path is None:
            self.path = SendPath.WIRE

    def fell_back(self, reason: str) -> None:
        if self.path is not SendPath.ASGI:
            self.path, self.reason = SendPath.ASGI, reason
            log.warning("WebSocket media goes through the ASGI send path, several times the CPU per "
                        "viewer of the lean one: %s", reason)
