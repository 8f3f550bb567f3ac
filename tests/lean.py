"""A lean WebSocket viewer: raw trio socket, minimal frame parsing, byte counters.

The benchmark's load client, and the tests' client where the wire itself matters. It can
offer permessage-deflate as browsers do (and inflates what comes compressed), answers
pings (so the server never takes it for gone), counts media bytes and messages, notes
when the first binary frame arrived after `start`, can keep the media (`keep`) and can
stop reading for a while (`pause_until`).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import zlib

import attrs
import trio

READ = 256 * 1024


def _frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@attrs.define(eq=False)
class LeanViewer:
    host: str
    port: int
    resource: str
    deflate: bool = False  # offer permessage-deflate, as browsers do
    keep: bool = False  # keep the media bytes in `media`
    raw: bytearray | None = None  # if given, every byte received after the handshake, as it came
    tls: ssl.SSLContext | None = None  # WSS: TLS over the socket first
    stream: trio.abc.Stream | None = None
    handshake: bytes = b""  # the server's 101 response head
    media: bytearray = attrs.Factory(bytearray)
    pause_until: float = 0.0  # trio time before which `run` does not read
    media_bytes: int = 0
    messages: int = 0
    texts: list[str] = attrs.Factory(list)
    first_media: float | None = None
    first_chunk: bytes = b""
    started_at: float | None = None
    closed: bool = False
    got_media: trio.Event = attrs.Factory(trio.Event)
    _buf: bytearray = attrs.Factory(bytearray)
    _pause: trio.CancelScope = attrs.Factory(trio.CancelScope)
    _text: trio.Event = attrs.Factory(trio.Event)
    _inflate: zlib._Decompress = attrs.Factory(lambda: zlib.decompressobj(-15))
    compressed: int = 0  # messages that came deflated

    async def connect(self, receive_buffer: int | None = None) -> None:
        sock = trio.socket.socket()
        if receive_buffer is not None:  # a small window, as on a poor link
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, receive_buffer)
        await sock.connect((self.host, self.port))
        self.stream = trio.SocketStream(sock)
        if self.tls is not None:
            self.stream = trio.SSLStream(self.stream, self.tls, server_hostname=self.host)
            await self.stream.do_handshake()
        key = base64.b64encode(os.urandom(16)).decode()
        extensions = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        await self.stream.send_all((
            f"GET {self.resource} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"{extensions if self.deflate else ''}\r\n").encode())
        while b"\r\n\r\n" not in self._buf:
            self._buf += await self.stream.receive_some(4096)
        head, _, rest = bytes(self._buf).partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(head[:80])
        self.handshake = head
        self._buf = bytearray(rest)
        if self.raw is not None:
            self.raw += rest

    async def send_action(self, action: str) -> None:
        assert self.stream is not None
        if action == "start":
            self.started_at = trio.current_time()
            self.first_media = None
            self.got_media = trio.Event()
        await self.stream.send_all(_frame(1, json.dumps({"action": action}).encode()))

    async def wait_text(self, needle: str) -> None:
        while not any(needle in t for t in self.texts):
            await self._text.wait()

    async def run(self) -> None:
        """Read until the connection ends; `reading = False` stops reading (a stuck client)."""
        assert self.stream is not None
        try:
            self._parse()
            while True:
                if self.pause_until > trio.current_time():
                    with trio.CancelScope() as self._pause:  # `resume` ends it early
                        await trio.sleep_until(self.pause_until)
                data = await self.stream.receive_some(READ)
                if not data:
                    break
                self._buf += data
                if self.raw is not None:
                    self.raw += data
                await self._respond(self._parse())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.closed = True
            self._text.set()

    async def _respond(self, pings: list[bytes]) -> None:
        assert self.stream is not None
        for payload in pings:
            await self.stream.send_all(_frame(0xA, payload))

    def _parse(self) -> list[bytes]:
        buf = self._buf
        pings = []
        pos = 0
        view = memoryview(buf)
        while len(buf) - pos >= 2:
            opcode = buf[pos] & 0x0F
            n = buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if len(buf) - pos < head + n:
                break
            start = pos + head
            payload = view[start : start + n]  # no copy
            if buf[pos] & 0x40:  # RSV1: a deflated message (the context carries over between messages)
                self.compressed += 1
                payload = memoryview(self._inflate.decompress(bytes(payload) + b"\x00\x00\xff\xff"))
            if opcode == 2:
                self.messages += 1
                self.media_bytes += len(payload)
                if self.keep:
                    self.media += payload
                if self.first_media is None:
                    self.first_media = trio.current_time()
                    self.first_chunk = bytes(payload)
                    self.got_media.set()
            elif opcode == 1:
                self.texts.append(bytes(payload).decode())
                self._text.set()
                self._text = trio.Event()
            elif opcode == 9:
                pings.append(bytes(payload))
            elif opcode == 8:
                self.closed = True
            pos = start + n
            payload.release()
        view.release()
        del buf[:pos]
        return pings

    def resume(self) -> None:
        """Read again now, whatever `pause_until` said."""
        self.pause_until = 0.0
        self._pause.cancel()

    async def send_close(self, code: int = 1000) -> None:
        assert self.stream is not None
        await self.stream.send_all(_frame(0x8, code.to_bytes(2, "big")))

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()
