"""The lean send path for media: WebSocket frames written straight to Hypercorn's socket.

Through ASGI one binary message costs 100-200 µs: Quart's send, Hypercorn's `WSStream`
(a copy of the payload, wsproto framing: another copy, and deflating it when a browser
negotiated permessage-deflate), then the connection's lock, a shielded cancel scope and
`send_all`. At 200 viewers x 25 frames/s that is most of a core (bench/README.md).

When the app runs under Hypercorn's trio worker over plain TCP and HTTP/1.1 (as
`rtsp-viewer serve` and `deploy/` run it), `Wire.attach` finds the connection behind the
ASGI `send` callable and media frames skip all that:

- frames are built here, once per chunk for all its viewers (`Framer`), and go out with
  `os.write` (no compression: RFC 7692 lets any message go uncompressed, RSV1 = 0); the
  socket's status messages go the same way, so wsproto never allocates a compressor
  (about 256 KiB per connection);
- `express` writes synchronously from the hub's fan-out when the viewer is idle; if the
  kernel takes only part, it returns an `Unfinished` that the socket's writer finishes
  (`finish`) before anything else is sent (`end` gives the lock back if the socket
  ends first, and closes a gone client's socket at once);
- Hypercorn's per-connection `send_lock` is swapped for a `trio.Semaphore(1)` that every
  Hypercorn write still takes (pings, pongs, close), so frames never interleave, and the
  task that finishes a partial frame may differ from the one that began it.

Anything else (TLS, HTTP/2, another server or Hypercorn layout) gets None from `attach`,
and the socket uses Quart's `websocket.send`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Coroutine
from typing import Any

import trio
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
from hypercorn.trio.tcp_server import TCPServer
from wsproto.connection import ConnectionState

from supervisors import Unfinished

SEND_KEY = "rtsp_viewer.asgi_send"  # where `capture_send` puts the ASGI send in the scope
ASGIApp = Callable[[Any, Any, Any], Coroutine[Any, Any, None]]


def capture_send(asgi_app: ASGIApp) -> ASGIApp:
    """ASGI middleware: WebSocket scopes carry the server's own `send` for `Wire.attach`."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope = {**scope, SEND_KEY: send}
        await asgi_app(scope, receive, send)

    return app


TEXT, BINARY = 0x1, 0x2


def frame_header(size: int, opcode: int = BINARY) -> bytes:
    """The header of a final, unmasked frame of `size` bytes (RFC 6455 §5.2)."""
    if size < 126:
        return struct.pack("!BB", 0x80 | opcode, size)
    if size < 1 << 16:
        return struct.pack("!BBH", 0x80 | opcode, 126, size)
    return struct.pack("!BBQ", 0x80 | opcode, 127, size)


class Framer:
    """The frame of the last chunk: the viewers of one publish all get the same bytes
    object, so the header and the copy are paid once per chunk, not once per viewer."""

    __slots__ = ("frame", "media")

    def __init__(self) -> None:
        self.media = b""
        self.frame = frame_header(0)

    def build(self, media: bytes) -> bytes:
        self.media, self.frame = media, frame_header(len(media)) + media
        return self.frame


_framed = Framer()


class Wire:
    """One WebSocket connection's raw socket, shared with Hypercorn (see module docstring)."""

    __slots__ = ("_mutex", "_owed", "_socket", "_stream")

    def __init__(self, stream: WSStream, socket: trio.socket.SocketType, mutex: trio.Semaphore) -> None:
        self._stream = stream
        self._socket = socket
        self._mutex = mutex
        self._owed = False  # an express message was written in part: the mutex is held for it

    @classmethod
    async def attach(cls, send: object) -> Wire | None:
        """The wire behind an accepted connection's ASGI send, if this server has one.

        Every attribute used later is checked here, so another Hypercorn layout falls
        back to Quart's send instead of failing mid-stream."""
        stream = getattr(send, "__self__", None)
        protocol = getattr(getattr(stream, "send", None), "__self__", None)
        server = getattr(getattr(protocol, "send", None), "__self__", None)
        if not (isinstance(stream, WSStream) and isinstance(protocol, H11Protocol)
                and isinstance(server, TCPServer)
                and all(hasattr(stream, name) for name in ("closed", "state", "connection"))
                and isinstance(getattr(server, "stream", None), trio.SocketStream)
                and isinstance(lock := getattr(server, "send_lock", None), trio.Lock)):
            return None
        while lock.locked():  # Hypercorn is writing (its first ping): swap once nobody is
            async with lock:
                pass
        mutex = trio.Semaphore(1)
        server.send_lock = mutex  # type: ignore[assignment]  # only ever used with `async with`
        return cls(stream, server.stream.socket, mutex)

    def _fd(self) -> int:
        """The socket's fd while the connection is open for data, else -1."""
        stream = self._stream
        if (stream.closed or stream.state is not ASGIWebsocketState.CONNECTED
                or stream.connection.state is not ConnectionState.OPEN):
            return -1
        return self._socket.fileno()

    def express(self, media: bytes) -> bool | Unfinished:
        """Write a message now if the socket takes it: True, False (nothing written) or
        Unfinished (part written; the mutex stays held until `finish`)."""
        if self._mutex.value == 0 or (fd := self._fd()) < 0:
            return False
        frame = _framed.frame if media is _framed.media else _framed.build(media)
        try:
            written = os.write(fd, frame)
        except OSError:  # full (EAGAIN) or broken: the writer's path deals with it
            return False
        if written == len(frame):
            return True
        self._mutex.acquire_nowait()
        self._owed = True
        return Unfinished(memoryview(frame)[written:])

    async def send(self, message: bytes | str) -> None:
        """Write one message (str: text, bytes: binary), waiting for room as needed."""
        if isinstance(message, str):
            payload, opcode = message.encode(), TEXT
        else:
            payload, opcode = message, BINARY
        async with self._mutex:
            await self._write(frame_header(len(payload), opcode), payload)

    async def finish(self, unfinished: Unfinished) -> None:
        """Write the rest of an express message and let others write again."""
        assert isinstance(unfinished.rest, memoryview)
        try:
            await self._write(unfinished.rest)
        finally:
            self.abandon()

    def abandon(self) -> None:
        """The rest was written, or the socket is done: let Hypercorn write again, so that
        its pings and close never wait for a message that nobody will finish."""
        if self._owed:
            self._owed = False
            self._mutex.release()

    def end(self) -> None:
        """The socket's handler is done. If the client is gone, close its socket now:
        Hypercorn keeps it (and its fd) until the connection's ping task next wakes, up to
        a ping interval later; Hypercorn's own close of it later is a no-op."""
        self.abandon()
        if self._stream.closed:
            self._socket.close()

    async def _write(self, *parts: bytes | memoryview) -> None:
        """All of parts, unless the connection ends first (its reader then ends the socket)."""
        rest: memoryview | None = None
        while True:
            fd = self._fd()
            if fd < 0:
                return
            try:
                if rest is None:
                    written = os.writev(fd, parts)
                    if written == sum(len(p) for p in parts):
                        return
                    rest = memoryview(b"".join(parts))[written:]  # a copy, only when the kernel is full
                else:
                    rest = rest[os.write(fd, rest):]
                    if not rest:
                        return
            except BlockingIOError:
                pass
            except OSError:
                return
            try:
                await trio.lowlevel.wait_writable(self._socket)
            except trio.ClosedResourceError:
                return
