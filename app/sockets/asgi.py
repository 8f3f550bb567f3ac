"""The media sockets' WebSocket, straight from ASGI: what `app/sockets/session.py` needs and no more.

Quart gives each WebSocket two tasks of its own, a nursery, a memory channel, a copy of
its headers and a request context: about 12 KiB a connection, a fifth of what a viewer
costs (tracemalloc, bench/README.md). The two media sockets need none of it: `route`
serves them before Quart (after the Host check), and everything else still goes to Quart.

The same front door shields the end of every HTTP response (see `_finishing`).

Semantics kept from Quart: the path is matched with or without a trailing slash, below
`root_path` (as a whole path prefix); a handler that returns with the socket accepted and not closed closes it
with 1000; when the client goes away, `receive` raises Disconnected (the handler ends
its tasks, as quart-trio cancels them); any other exception reaches Hypercorn, which
logs it and ends the connection.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any
from urllib.parse import parse_qsl

import trio
import werkzeug.urls  # noqa: F401  # registers the "werkzeug.url_quote" codec error handler
from werkzeug.datastructures import MultiDict

from supervisors import CloseCode
from supervisors.camera.addresses import UNKNOWN_CLIENT

ASGIApp = Callable[[Any, Any, Any], Coroutine[Any, Any, None]]


class Disconnected(Exception):
    """The client went away (ASGI `websocket.disconnect`)."""


class Socket:
    """One WebSocket connection as its ASGI scope, receive and send (see module docstring)."""

    __slots__ = ("_accepted", "_closed", "_gone", "_receive", "scope", "send_event")

    def __init__(self, scope: Any, receive: Callable[[], Awaitable[Any]],
                 send: Callable[[Any], Awaitable[None]]) -> None:
        self.scope = scope
        self._receive = receive
        self.send_event = send  # the server's own ASGI send (`Wire.attach` finds the socket behind it)
        self._accepted = False
        self._closed = False
        self._gone = False  # the client went away: nothing more is sent

    @property
    def path(self) -> str:
        return str(self.scope["path"])

    @property
    def remote_addr(self) -> str:
        client = self.scope.get("client")
        return str(client[0]) if client else UNKNOWN_CLIENT

    def headers(self, name: str) -> list[str]:
        """Every value of a request header, in order (names are case-insensitive)."""
        key = name.lower().encode("latin-1")
        return [value.decode("latin-1") for header, value in self.scope["headers"] if header.lower() == key]

    def header(self, name: str) -> str | None:
        """A request header's first value, or None."""
        values = self.headers(name)
        return values[0] if values else None

    def args(self) -> MultiDict[str, str]:
        """The query parameters, parsed as Quart (Werkzeug) parses them: a percent-escape
        that is not UTF-8 stays as it was (a camera password may be any bytes)."""
        query = bytes(self.scope.get("query_string", b"")).decode(errors="replace")
        return MultiDict(parse_qsl(query, keep_blank_values=True, errors="werkzeug.url_quote"))

    async def reject(self, status: int, body: object) -> None:
        """Answer the handshake with an HTTP response (a JSON body) instead of a socket,
        where the server can (the ASGI `websocket.http.response` extension); else close
        it with 1008 before accepting."""
        if "websocket.http.response" not in self.scope.get("extensions", {}):
            await self.send_event({"type": "websocket.close", "code": CloseCode.POLICY})
            return
        data = json.dumps(body).encode()
        await self.send_event({"type": "websocket.http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
            (b"connection", b"close")]})
        await self.send_event({"type": "websocket.http.response.body", "body": data})
        self._closed = True

    async def accept(self, subprotocol: str | None = None) -> None:
        if not self._accepted:
            self._accepted = True
            await self.send_event({"type": "websocket.accept", "subprotocol": subprotocol, "headers": []})

    async def receive(self) -> str | bytes:
        """The client's next message. Raises Disconnected when the client has gone."""
        while True:
            event = await self._receive()
            if event["type"] == "websocket.receive":
                text = event.get("text")
                return text if text is not None else bytes(event.get("bytes") or b"")
            if event["type"] == "websocket.disconnect":
                self._gone = True
                raise Disconnected

    async def send(self, data: str | bytes) -> None:
        """A text (str) or binary (bytes) message, through the server's ASGI send."""
        if isinstance(data, str):
            await self.send_event({"type": "websocket.send", "bytes": None, "text": data})
        else:
            await self.send_event({"type": "websocket.send", "bytes": data, "text": None})

    async def close(self, code: int, reason: str = "") -> None:
        if not (self._closed or self._gone):
            self._closed = True
            await self.send_event({"type": "websocket.close", "code": code, "reason": reason})

    async def finish(self) -> None:
        """The handler returned: an accepted socket not closed yet is closed with 1000."""
        if self._accepted and not self._closed:
            await self.close(CloseCode.NORMAL)


Handler = Callable[[Socket], Awaitable[None]]


def route(asgi_app: ASGIApp, handlers: dict[str, Handler], *,
          connected: Callable[[Any], None] = lambda send: None) -> ASGIApp:
    """ASGI middleware: a WebSocket to one of `handlers`' paths (below `root_path`) is
    served by it, with a `Socket`; anything else goes on to `asgi_app`, HTTP with the end
    of each response shielded (`_finishing`). `connected` sees each request's and each
    socket's ASGI send first (the server's connection behind it: `app/factory.py`)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        handler = None
        if scope["type"] in ("http", "websocket"):
            connected(send)
        if scope["type"] == "websocket":
            path = below(str(scope["path"]), scope.get("root_path", "") or "")
            if path is not None:
                handler = handlers.get(path.removesuffix("/") if path != "/" else path)
        elif scope["type"] == "http":
            send = _finishing(send)
        if handler is None:
            await asgi_app(scope, receive, send)
            return
        socket = Socket(scope, receive, send)
        await handler(socket)
        await socket.finish()

    return app


def below(path: str, root_path: str) -> str | None:
    """`path` relative to `root_path` when it is that path or below it (a whole path
    prefix: `/cam` holds `/cam/ws/stream`, not `/camera/ws/stream`), else None."""
    root = root_path.rstrip("/")
    if not root:
        return path
    if path == root:
        return "/"
    return path[len(root):] if path.startswith(root + "/") else None


def _finishing(send: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    """An HTTP response's ASGI send whose last message is shielded. Under Hypercorn that
    message ends the response and, for a `Connection: close` one, closes the connection
    in the same call; quart-trio cancels the sending task as soon as the client side
    reports the close, which cut Hypercorn's close short and left the connection open
    (a 400 for a foreign Host, a 413 or 415 sent before the body was read). Hypercorn's
    own socket writes are shielded already: this adds only the close."""

    async def finishing(message: Any) -> None:
        if message.get("type") == "http.response.body" and not message.get("more_body", False) \
                and not message.get("body"):
            with trio.CancelScope(shield=True):
                await send(message)
        else:
            await send(message)

    return finishing
