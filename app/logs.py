"""Logging: text or one JSON object per line (LOG_FORMAT), every line masked, and an
access log of HTTP requests (`app.access`) with the client as TRUSTED_PROXIES tell it.

Masking happens on the formatted line (message, arguments, fields and traceback alike),
so no call site can leak a source password by forgetting to mask it. Hypercorn's and
Quart's loggers go to the same handler, so their lines are JSON too.

A JSON line: `time`, `level`, `logger`, `event`, `message`, and what the line is about
when it has it: `stream` (an id, or `url` for a socket playing its own URL), `client`,
`request` (an HTTP request's id: X-Request-ID from the proxy, else made here) or
`connection` (a WebSocket's id), `code`, and an access line's `method`, `path` (never the
query string: it may hold tokens), `status` and `duration_ms`.

Every change of a stream or a user writes one audit line (`audit`, event `audit`): who
(`actor`: a user's name, `api-token`, `anyone` with no access control, or `cli:<login>`),
`action` (`stream.create`, `user.password`, …), `target`, the changed `fields` (names
only: never a password or a URL), `client` and `time`.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import sys
import time

from quart import Quart, Response, g, request

from supervisors import mask_text

FIELDS = ("stream", "client", "request", "connection", "code", "method", "path", "status", "duration_ms",
          "actor", "action", "target", "fields")
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")  # what a proxy's X-Request-ID may be to be kept
access_log = logging.getLogger("app.access")
audit_log = logging.getLogger("app.audit")
_ids = itertools.count(1)


class MaskingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask_text(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name,
            "event": getattr(record, "event", record.name),
            "message": mask_text(record.getMessage()),
        }
        for field in FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = mask_text(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = mask_text(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("hypercorn.error", "hypercorn.access", "quart.app", "quart.serving"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def next_id(prefix: str) -> str:
    """A process-unique id: `r42` for a request, `c7` for a WebSocket connection."""
    return f"{prefix}{next(_ids)}"


def install(app: Quart) -> None:
    """One access line per HTTP response (with `g.client`, set by `app/http/doors.py`)."""

    @app.before_request
    async def _begin() -> None:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if REQUEST_ID.fullmatch(given) else next_id("r")
        g.started = time.monotonic()

    @app.after_request
    async def _access(response: Response) -> Response:
        started = g.get("started")
        access_log.info("%s %s %d", request.method, request.path, response.status_code, extra={
            "event": "http.request", "client": g.get("client"), "request": g.get("request_id"),
            "method": request.method, "path": request.path, "status": response.status_code,
            "duration_ms": None if started is None else round((time.monotonic() - started) * 1000, 1)})
        return response


def audit(action: str, target: str, *, actor: str, client: str | None, fields: list[str] | None = None) -> None:
    """One audit line: `actor` did `action` to `target` from `client` (see module docstring)."""
    audit_log.info("%s %s %s", actor, action, target, extra={
        "event": "audit", "actor": actor, "action": action, "target": target, "client": client,
        "fields": fields, "request": _request_id()})


def _request_id() -> str | None:
    try:
        found: str | None = g.get("request_id")
    except RuntimeError:  # not in a request (the command line)
        return None
    return found
