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
  (`finish`) before anything else is sent;
- Hypercorn's per-connection `send_lock` is swapped for a `trio.Semaphore(1)` that every
  Hypercorn write still takes (pings, pongs, close), so frames never interleave, and the
  task that finishes a partial frame may differ from the one that began it.

Whole frames: a new frame starts only while the WebSocket is open. Once its first byte is
on the socket, the rest follows before anything else (a close the client sent meanwhile
is answered after it), or, if that cannot be (the writer is cancelled, the socket
breaks, the handler ends with the rest unsent), the socket is shut down: the client sees
the connection end, never a torn frame or a frame inside another.

Anything else (TLS in Hypercorn, HTTP/2, another server or Hypercorn layout) makes
`attach` raise NoWire with the reason, and the socket sends through the ASGI send.

This module relies on Hypercorn's and wsproto's internals: both are pinned in
pyproject.toml to the versions it was tested with, and `attach` checks each attribute.
"""

from __future__ import annotations

import logging
import os
import socket as stdsocket
import struct

import trio
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
from hypercorn.trio.tcp_server import TCPServer
from wsproto.connection import ConnectionState

from supervisors import Unfinished

log = logging.getLogger(__name__)


def decline_deflate(send: object) -> None:
    """Answer this WebSocket's handshake without permessage-deflate (RFC 7692 lets a server
    decline it): compressed video is no smaller, and on the ASGI path (TLS in Hypercorn,
    another layout) wsproto would deflate every message, at 50 browser viewers six times
    the CPU (bench/README.md). Call before accepting; a no-op outside Hypercorn 0.18."""
    stream = getattr(send, "__self__", None)
    handshake = getattr(stream, "handshake", None) if isinstance(stream, WSStream) else None
    if handshake is not None and hasattr(handshake, "extensions"):
        handshake.extensions = None  # what the client offered: now nothing


SEND_BUFFER = 256 * 1024  # kernel send buffer per client: backlog belongs in the viewer's queue
DEAD_AFTER = 25  # seconds: Hypercorn's read_timeout when none is set (deploy/hypercorn.toml's)


def tune_socket(send: object) -> bool:
    """Give the client connection behind this ASGI send (Hypercorn 0.18's trio worker, TLS
    or not) the two socket options every way of serving needs; False where there is no
    such socket (another server: README says what is lost).

    SO_SNDBUF: Linux autotunes a socket's send buffer up to megabytes; a viewer that falls
    behind would hide seconds of video there, where nothing can skip it to a keyframe.
    TCP_USER_TIMEOUT: a peer that takes no data for Hypercorn's read_timeout (zero window,
    or gone) is aborted by the kernel. Hypercorn shields its socket writes from
    cancellation, so without this a client that stops reading would hold its connection,
    and a server shutdown, for as long as it likes. Setting them on the connection (not
    the listener) is what plain `hypercorn` serving the app gets too."""
    stream = getattr(send, "__self__", None)
    protocol = getattr(getattr(stream, "send", None), "__self__", None)
    server = getattr(getattr(protocol, "send", None), "__self__", None)
    if not isinstance(server, TCPServer):
        return False
    transport = getattr(server.stream, "transport_stream", server.stream)  # under TLS: the TCP stream
    sock = getattr(transport, "socket", None)
    if sock is None or sock.family not in (stdsocket.AF_INET, stdsocket.AF_INET6):
        return False
    timeout = getattr(getattr(server, "config", None), "read_timeout", None) or DEAD_AFTER
    try:
        sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_SNDBUF, SEND_BUFFER)
        if hasattr(stdsocket, "TCP_USER_TIMEOUT"):  # Linux only: elsewhere a stuck peer waits for TCP's own timeout
            sock.setsockopt(stdsocket.IPPROTO_TCP, stdsocket.TCP_USER_TIMEOUT, int(timeout * 1000))
    except OSError:  # closed meanwhile
        return False
    return True


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


class NoWire(Exception):
    """The connection has no raw socket this module can write to; str() says why."""


class Wire:
    """One WebSocket connection's raw socket, shared with Hypercorn (see module docstring)."""

    __slots__ = ("_aborted", "_mutex", "_owed", "_socket", "_stream")

    def __init__(self, stream: WSStream, socket: trio.socket.SocketType, mutex: trio.Semaphore) -> None:
        self._stream = stream
        self._socket = socket
        self._mutex = mutex
        self._owed = False  # an express message was written in part: the mutex is held for it
        self._aborted = False

    @classmethod
    async def attach(cls, send: object) -> Wire:
        """The wire behind an accepted connection's ASGI send.

        Every attribute used later is checked here, so another Hypercorn layout falls
        back to the ASGI send instead of failing mid-stream.

        Raises NoWire (saying why) when this connection cannot have one."""
        if not hasattr(os, "writev"):
            raise NoWire("sockets are not file descriptors here (Windows): frames go through Hypercorn")
        stream = getattr(send, "__self__", None)
        if not isinstance(stream, WSStream):
            raise NoWire("not served by Hypercorn (0.18) over HTTP/1.1")
        protocol = getattr(getattr(stream, "send", None), "__self__", None)
        if not isinstance(protocol, H11Protocol):
            raise NoWire(f"the WebSocket runs over {type(protocol).__name__}, not HTTP/1.1 (H11Protocol)")
        server = getattr(getattr(protocol, "send", None), "__self__", None)
        if not isinstance(server, TCPServer):
            raise NoWire("not Hypercorn's trio worker (asyncio or another worker class)")
        if not isinstance(getattr(server, "stream", None), trio.SocketStream):
            raise NoWire("TLS is terminated in Hypercorn (--certfile/--keyfile): frames must go through its SSLStream")
        lock = getattr(server, "send_lock", None)
        if not (isinstance(lock, trio.Lock)
                and all(hasattr(stream, name) for name in ("closed", "state", "connection"))):
            raise NoWire("this Hypercorn version's connection layout is not the one tested")
        while lock.locked():  # Hypercorn is writing (its first ping): swap once nobody is
            async with lock:
                pass
        mutex = trio.Semaphore(1)
        server.send_lock = mutex  # type: ignore[assignment]  # only ever used with `async with`
        return cls(stream, server.stream.socket, mutex)

    def _open_fd(self) -> int:
        """The socket's fd while a new frame may start (the WebSocket is open), else -1."""
        stream = self._stream
        if (self._aborted or stream.closed or stream.state is not ASGIWebsocketState.CONNECTED
                or stream.connection.state is not ConnectionState.OPEN):
            return -1
        return self._socket.fileno()

    def express(self, media: bytes) -> bool | Unfinished:
        """Write a message now if the socket takes it: True, False (nothing written) or
        Unfinished (part written; the mutex stays held until `finish` or `end`)."""
        if self._mutex.value == 0 or (fd := self._open_fd()) < 0:
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
        """Write one message (str: text, bytes: binary), waiting for room as needed.

        Nothing is written once the WebSocket is closing. Cancellation: if part of the
        frame was written, the socket is shut down (see module docstring)."""
        if isinstance(message, str):
            payload, opcode = message.encode(), TEXT
        else:
            payload, opcode = message, BINARY
        async with self._mutex:
            if self._open_fd() >= 0:
                await self._write(frame_header(len(payload), opcode), payload)

    async def finish(self, unfinished: Unfinished) -> None:
        """Write the rest of an express message, whatever the client sent meanwhile, and
        let others write again. Cancellation: the socket is shut down."""
        assert isinstance(unfinished.rest, memoryview)
        try:
            await self._write(unfinished.rest, begun=True)
        finally:
            self._owed = False
            self._mutex.release()

    def end(self) -> None:
        """The socket's handler is done. A frame left unfinished shuts the socket down
        before Hypercorn may write again. If the client is gone, close its socket now:
        Hypercorn keeps it (and its fd) until the connection's ping task next wakes, up to
        a ping interval later; Hypercorn's own close of it later is a no-op."""
        if self._owed:
            self._abort()
            self._owed = False
            self._mutex.release()
        if self._stream.closed:
            self._socket.close()

    def _abort(self) -> None:
        """Half a frame is on the wire and the rest never will be: end the connection."""
        self._aborted = True
        try:
            self._socket.shutdown(stdsocket.SHUT_RDWR)
        except OSError:  # not connected any more
            pass

    async def _write(self, *parts: bytes | memoryview, begun: bool = False) -> None:
        """All of parts, or the socket is shut down if part of a frame went out (`begun`:
        some already had); only a socket already closed under us ends it early.

        Cancellation: if part of a frame was written, the socket is shut down."""
        rest: memoryview | None = None
        try:
            while True:
                fd = self._socket.fileno()
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
                except OSError:  # broken: the connection is over (its reader ends the socket)
                    self._abort()
                    return
                try:
                    await trio.lowlevel.wait_writable(self._socket)
                except trio.ClosedResourceError:
                    return
        except BaseException:  # cancelled: no one will finish this frame
            if begun or rest is not None:
                self._abort()
            raise
