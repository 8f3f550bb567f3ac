"""The camera's RTSP connection, opened by the server and relayed to FFmpeg on loopback.

FFmpeg follows a camera's RTSP redirect (a 3xx to OPTIONS or DESCRIBE) by itself and
connects to the target before anyone could check it. So FFmpeg never connects to a
camera: it gets `rtsp://[credentials@]127.0.0.1:<port><path>`, a listener of this relay
(one per attempt), and for each connection FFmpeg makes there, the relay connects to the
checked address of the current target and copies bytes both ways.

Until FFmpeg's PLAY has been answered, the relay reads the camera's side as FFmpeg does
(`rtsp.Reader`) and hands FFmpeg each message written back as it read it, so FFmpeg acts
on nothing the relay did not see:

- a 3xx response: its Location (as FFmpeg would take it, `rtsp.split_url`) is resolved
  and checked against the source policy. Refused (or no host, or a sixth redirect): the
  response never reaches FFmpeg, the relay records FORBIDDEN (`failure`) and ends the
  connection. Allowed: FFmpeg gets the response with Location pointing at the relay (the
  same credentials and path), and the relay's next connection goes to the checked
  address of the target;
- `Transport:` (SETUP's answer): `source=` is set to the camera's checked address, the
  only place FFmpeg then sends UDP (RTP and RTCP for `transport=udp`); a camera's own
  `source=` could have aimed those packets anywhere;
- interleaved packets before the PLAY answer are dropped, as FFmpeg would skip them.

After PLAY's answer both ways are copied untouched: interleaved RTP passes through as it
came (FFmpeg follows no redirect once it plays). rtsps:// cameras: the relay speaks TLS
to the camera (the URL's host as server name; certificates not verified, as FFmpeg's
default `tls_verify=0` did) and plain RTSP to FFmpeg.

Cancellation: leaving `open_relay` (or cancelling it) closes the listener and every
connection.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import trio

from ..events import ErrorCode, Failure, describe_os_error
from .addresses import Address
from .rtsp import MAX_LINE, Message, Oversized, Reader, UrlParts, join_url, split_url, starts
from .sources import SourcePolicy
from .urls import mask_url

log = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"
RELAY_CHUNK = 64 * 1024  # one socket read, either way
MAX_REDIRECTS = 5
MAX_CONNECTIONS = 8  # FFmpeg's connections to one attempt's relay (its own, and one per redirect)
UNREACHABLE_ERRNOS = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL,
                      errno.ECONNRESET, errno.EHOSTDOWN, errno.ENETDOWN}


@attrs.frozen
class Target:
    """Where the relay connects: a checked address, and the URL's view of it."""

    url: UrlParts
    address: Address

    @property
    def port(self) -> int:
        return self.url.connect_port


class Relay:
    """One attempt's relay (see module docstring). `url` is what FFmpeg is given;
    `failure` what the relay saw go wrong (a refused redirect), if anything."""

    def __init__(self, target: Target, listener: trio.SocketListener, policy: SourcePolicy,
                 on_refused: Callable[[], None]) -> None:
        self._target = target
        self._listener = listener
        self._policy = policy
        self._on_refused = on_refused
        self._redirects = 0
        self._first: trio.abc.Stream | None = None
        self.port = listener.socket.getsockname()[1]
        self.url = join_url(target.url, LOOPBACK, self.port)
        self.failure: Failure | None = None
        self.copied = 0  # bytes handed to FFmpeg

    async def serve(self, first: trio.abc.Stream) -> None:
        """Accept FFmpeg's connections until cancelled: the first gets `first` (opened
        before FFmpeg started), each later one a new connection to the current target."""
        self._first = first
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(MAX_CONNECTIONS):
                    client = await self._listener.accept()
                    nursery.start_soon(self._pair, client)
                await trio.sleep_forever()  # more connections than an attempt makes: no more
        finally:
            if self._first is not None:  # FFmpeg never came for it
                await trio.aclose_forcefully(self._first)

    async def _pair(self, client: trio.SocketStream) -> None:
        camera, self._first = self._first, None
        async with client:
            if camera is None:  # (no deadline of its own: the attempt's watchdog bounds it)
                try:
                    camera = await connect(self._target)
                except Failure as failure:
                    self.failure = self.failure or failure
                    return
            async with camera, trio.open_nursery() as nursery:
                played = trio.Event()
                nursery.start_soon(self._to_camera, client, camera, played, nursery.cancel_scope)
                nursery.start_soon(self._to_ffmpeg, camera, client, played, nursery.cancel_scope)

    async def _to_camera(self, client: trio.abc.Stream, camera: trio.abc.Stream, played: trio.Event,
                         done: trio.CancelScope) -> None:
        """FFmpeg's requests (and RTCP) to the camera, untouched; watching for PLAY."""
        watch = PlayWatch()
        try:
            while data := await client.receive_some(RELAY_CHUNK):
                if not played.is_set() and watch.feed(data):
                    played.set()
                await camera.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()

    async def _to_ffmpeg(self, camera: trio.abc.Stream, client: trio.abc.Stream, played: trio.Event,
                         done: trio.CancelScope) -> None:
        """The camera's answers to FFmpeg: read as FFmpeg reads them until PLAY's answer,
        then copied untouched."""
        try:
            rest = await self._until_played(camera, client, played)
            if rest is not None:
                await client.send_all(rest)
                while data := await camera.receive_some(RELAY_CHUNK):
                    self.copied += len(data)
                    await client.send_all(data)
        except Refused:
            pass
        except Oversized as error:
            self.failure = self.failure or Failure(ErrorCode.STREAM_ERROR, f"the camera sent {error}")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()

    async def _until_played(self, camera: trio.abc.Stream, client: trio.abc.Stream,
                            played: trio.Event) -> bytes | None:
        """Hand FFmpeg the camera's messages (`_vetted`) until the answer to its PLAY:
        then what came after it (None: the camera closed first)."""
        reader = Reader()
        while data := await camera.receive_some(RELAY_CHUNK):
            reader.feed(data)
            while (message := reader.next()) is not None:
                await client.send_all(await self._vetted(message))
                if played.is_set() and not message.request:
                    return reader.rest()
        return None

    async def _vetted(self, message: Message) -> bytes:
        """The message as FFmpeg may have it: a redirect checked and pointed at the relay,
        `source=` set to the camera. Raises Refused (after recording why)."""
        lines = list(message.lines)
        if 300 <= message.status < 400 and not message.request:
            location = await self._redirect(message.location.decode("latin-1"))
            lines = [line for line in lines[1:] if starts(line, b"Location:") is None]
            lines = [message.lines[0], *lines, b"Location: " + location.encode("latin-1")]
        if not message.request:
            lines = [_sourced(line, self._target.address) for line in lines]
        if any(len(line) > MAX_LINE for line in lines):  # FFmpeg would cut it: what we set must stay whole
            self._refuse(Failure(ErrorCode.STREAM_ERROR, "the camera sent a header line too long to check"))
        return Message(tuple(lines), message.body).data

    async def _redirect(self, location: str) -> str:
        """Check a redirect's target; the Location FFmpeg gets instead (the relay)."""
        self._redirects += 1
        target = split_url(location)
        shown = mask_url(location)
        if self._redirects > MAX_REDIRECTS:
            self._refuse(Failure(ErrorCode.FORBIDDEN, f"redirect refused: more than {MAX_REDIRECTS} redirects"))
        if not target.host or not 0 < target.connect_port < 65536:
            self._refuse(Failure(ErrorCode.FORBIDDEN, f"redirect refused: {shown} names no host and port"))
        try:
            address = await self._policy.resolve(target.host, target.connect_port)
        except Failure as failure:
            self._refuse(Failure(failure.code, f"redirect refused: {failure.message}")
                         if failure.code is ErrorCode.FORBIDDEN else failure)
        log.info("camera redirects to %s (%s): allowed", shown, address, extra={"event": "relay.redirect"})
        self._target = Target(target, address)
        return join_url(target, LOOPBACK, self.port)

    def _refuse(self, failure: Failure) -> None:
        self.failure = self.failure or failure
        log.warning("camera connection ended: %s", failure, extra={"event": "relay.refused", "code": failure.code})
        self._on_refused()
        raise Refused


class Refused(Exception):
    """The relay ended the connection (`Relay.failure` says why)."""


def _sourced(line: bytes, address: Address) -> bytes:
    """A `Transport:` line with `source=` set to the checked address in each transport
    (appended: FFmpeg takes the last); any other line as it is."""
    rest = starts(line, b"Transport:")
    if rest is None:
        return line
    specs = rest.split(b",")
    return line[: len(line) - len(rest)] + b",".join(spec + b";source=" + str(address).encode() for spec in specs)


class PlayWatch:
    """FFmpeg's side, read just enough to see its PLAY request go by (FFmpeg writes whole
    CRLF messages and `$` packets; it waits for each answer before its next request)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes | bytearray) -> bool:
        """True once a PLAY request has been seen."""
        self._buffer += data
        buffer = self._buffer
        while buffer:
            if buffer[0] == 0x24:  # $ channel length payload
                if len(buffer) < 4 or len(buffer) < 4 + (buffer[2] << 8 | buffer[3]):
                    return False
                del buffer[: 4 + (buffer[2] << 8 | buffer[3])]
                continue
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return False
            head = bytes(buffer[:end])
            if head.startswith(b"PLAY "):
                return True
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            if len(buffer) < end + 4 + length:
                return False
            del buffer[: end + 4 + length]
        return False


async def checked(url: str, policy: SourcePolicy) -> Target:
    """Where FFmpeg would connect for `url`, resolved and checked against the policy;
    raises Failure (FORBIDDEN, or UNREACHABLE when the name does not resolve)."""
    parts = split_url(url)
    return Target(parts, await policy.resolve(parts.host, parts.connect_port))


async def connect(target: Target) -> trio.abc.Stream:
    """A connection to the target's checked address (TLS for rtsps); raises Failure:
    UNREACHABLE, or STREAM_ERROR (TLS, or another error). Cancellation: nothing is
    left open."""
    where = f"{target.url.host}:{target.port}"
    family = socket.AF_INET6 if target.address.version == 6 else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    stream: trio.abc.Stream | None = None
    try:
        await sock.connect((str(target.address), target.port))
        stream = plain = trio.SocketStream(sock)
        plain.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        if target.url.tls:
            stream = tls = trio.SSLStream(plain, _tls_context(), server_hostname=target.url.host)
            await tls.do_handshake()
    except BaseException as error:
        if stream is not None:
            await trio.aclose_forcefully(stream)
        sock.close()
        if isinstance(error, OSError):
            code = ErrorCode.UNREACHABLE if error.errno in UNREACHABLE_ERRNOS else ErrorCode.STREAM_ERROR
            raise Failure(code, f"camera unreachable: connection to {where} failed: {describe_os_error(error)}") \
                from None
        if isinstance(error, trio.BrokenResourceError | ssl.SSLError):
            raise Failure(ErrorCode.STREAM_ERROR, f"TLS with the camera ({where}) failed: {error}") from None
        raise
    return stream


def _tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # as FFmpeg's rtsps (tls_verify=0) did
    return context


@asynccontextmanager
async def open_relay(target: Target, camera: trio.abc.Stream, policy: SourcePolicy, *,
                     on_refused: Callable[[], None] = lambda: None) -> AsyncIterator[Relay]:
    """The relay for one attempt: FFmpeg's first connection gets `camera` (connected to
    `target`, which it now owns); `on_refused` is called when a redirect is refused (to
    end FFmpeg at once)."""
    try:
        [listener] = await trio.open_tcp_listeners(0, host=LOOPBACK)
    except BaseException:
        await trio.aclose_forcefully(camera)
        raise
    async with listener, trio.open_nursery() as nursery:
        relay = Relay(target, listener, policy, on_refused)
        nursery.start_soon(relay.serve, camera)
        try:
            yield relay
        finally:
            nursery.cancel_scope.cancel()
