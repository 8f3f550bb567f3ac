"""The web edge's own counters, read by `app/metrics.py` at scrape time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import attrs

# a label's values must stay few: any other method a client sends counts as "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@attrs.define
class EdgeTally:
    """The web edge's counters: open sockets by endpoint and send path, HTTP requests."""

    sockets_open: Counter[str] = attrs.Factory(Counter)  # by endpoint
    sockets_total: Counter[str] = attrs.Factory(Counter)
    send_paths: Counter[str] = attrs.Factory(Counter)  # playing sockets by path
    requests: Counter[tuple[str, str, str]] = attrs.Factory(Counter)  # (route, method, status)

    @contextmanager
    def socket(self, endpoint: str) -> Iterator[None]:
        self.sockets_open[endpoint] += 1
        self.sockets_total[endpoint] += 1
        try:
            yield
        finally:
            self.sockets_open[endpoint] -= 1

    @contextmanager
    def sending(self, path: str) -> Iterator[None]:
        self.send_paths[path] += 1
        try:
            yield
        finally:
            self.send_paths[path] -= 1

    def request(self, route: str, method: str, status: int) -> None:
        """Count a response; `route` is the URL rule (or "unmatched"), never the path."""
        self.requests[route, method if method in METHODS else "other", str(status)] += 1
