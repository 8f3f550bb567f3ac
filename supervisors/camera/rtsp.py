"""RTSP as FFmpeg reads it: messages from a camera, and URLs as FFmpeg splits them.

The relay (`relay.py`) must see exactly what FFmpeg will act on, or a camera could show
it one thing and FFmpeg another. So this reads the camera's side byte for byte as
FFmpeg 9's `ff_rtsp_read_reply` does before PLAY (libavformat/rtsp.c): a line ends at
`\\n`; every `\\r` is dropped wherever it is; a line is a C string (it ends at a NUL) of
at most 4095 bytes (the rest is read and dropped); an empty line ends the header; a `$`
where a line would start is an interleaved packet (channel, 16-bit length, payload),
skipped; a first word that starts with `RTSP/` makes a response, whose status is
`atoi` of the second word; `Content-Length:` (any case, the last one) is `strtol`,
taken as a C int, and that many bytes (if above zero) are the body. `Message.data` is
the message written back the way it was read (lines with CRLF, no packet in between),
so FFmpeg reads from the relay exactly what this read from the camera.

`split_url` is FFmpeg's `av_url_split` as `ff_rtsp_connect` uses it (the protocol up to
the first `:`, the authority up to the first of `/?#`, the host after its last `@`, a
port by `atoi`), with FFmpeg's buffer sizes. Pure; nothing here awaits.
"""

from __future__ import annotations

import attrs

MAX_LINE = 4095  # FFmpeg's line buffer (4096 with its NUL)
MAX_HEADER = 64 * 1024  # more header than this is refused (FFmpeg would read on; no camera needs it)
MAX_BODY = 1 << 20  # an SDP is a few KiB (FFmpeg's SDP_MAX_SIZE is 16 KiB)
SPACE = b" \t\r\n"  # FFmpeg's SPACE_CHARS
C_SPACE = b" \t\n\v\f\r"  # what strtol and atoi skip


class Oversized(Exception):
    """The camera sent a header or a body past what the relay accepts."""


def c_int(text: bytes) -> int:
    """C's `(int)strtol(text, NULL, 10)` (and glibc's atoi): leading space, a sign,
    digits; a long that saturates, then cut to 32 bits."""
    text = text.lstrip(C_SPACE)
    sign = -1 if text[:1] == b"-" else 1
    if text[:1] in (b"-", b"+"):
        text = text[1:]
    digits = len(text) - len(text.lstrip(b"0123456789"))
    value = sign * int(text[:digits]) if digits else 0
    value = max(-(1 << 63), min((1 << 63) - 1, value))
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def starts(line: bytes, prefix: bytes) -> bytes | None:
    """FFmpeg's `av_stristart`: the rest of `line` after `prefix` in any ASCII case."""
    return line[len(prefix):] if line[:len(prefix)].lower() == prefix.lower() else None


def _word(text: bytes, at: int = 0) -> tuple[bytes, int]:
    """FFmpeg's `get_word` into a 1024-byte buffer: (the word, where it stopped)."""
    while at < len(text) and text[at] in SPACE:
        at += 1
    end = at
    while end < len(text) and text[end] not in SPACE:
        end += 1
    return text[at:end][:1023], end


@attrs.frozen
class Message:
    """One RTSP message as FFmpeg reads it: its lines (the start line first) and body."""

    lines: tuple[bytes, ...]
    body: bytes = b""

    @property
    def request(self) -> bool:
        """A request from the camera (FFmpeg answers it and reads on)."""
        return bool(self.lines) and not _word(self.lines[0])[0].startswith(b"RTSP/")

    @property
    def status(self) -> int:
        """A response's status as FFmpeg reads it (0 for a request or no start line)."""
        if not self.lines or self.request:
            return 0
        _, at = _word(self.lines[0])
        return c_int(_word(self.lines[0], at)[0])

    def values(self, name: bytes) -> list[bytes]:
        """Each header line's value for `name` (with its colon), in order."""
        return [rest for line in self.lines[1:] if (rest := starts(line, name)) is not None]

    @property
    def location(self) -> bytes:
        """Where a 3xx sends FFmpeg: the last `Location:`, its leading space skipped."""
        found = self.values(b"Location:")
        return found[-1].lstrip(SPACE) if found else b""

    @property
    def data(self) -> bytes:
        """The message written back (CRLF lines, an empty line, the body)."""
        return b"".join(line + b"\r\n" for line in self.lines) + b"\r\n" + self.body


class Reader:
    """The camera's side of an RTSP connection before PLAY, as FFmpeg reads it: `feed`
    bytes, take whole messages with `next`. Raises Oversized past MAX_HEADER or MAX_BODY."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes | bytearray) -> None:
        self._buffer += data

    def rest(self) -> bytes:
        """What is buffered and not read as a message (then nothing is)."""
        rest, self._buffer = bytes(self._buffer), bytearray()
        return rest

    def next(self) -> Message | None:
        """The next whole message, or None until more bytes come."""
        buffer, at = self._buffer, 0
        lines: list[bytes] = []
        while True:
            line = bytearray()
            while True:
                if at >= len(buffer):
                    if at > MAX_HEADER:
                        raise Oversized(f"an RTSP header over {MAX_HEADER} bytes")
                    return None
                byte = buffer[at]
                at += 1
                if byte == 0x0A:  # \n
                    break
                if byte == 0x24 and not line:  # $ where a line starts: a packet FFmpeg skips
                    if at + 3 > len(buffer):
                        return None
                    at += 3 + (buffer[at + 1] << 8 | buffer[at + 2])
                    if at > len(buffer):
                        return None
                elif byte != 0x0D and len(line) < MAX_LINE:  # \r is dropped
                    line.append(byte)
            text = bytes(line).partition(b"\0")[0]  # a C string
            if not text:
                break
            lines.append(text)
            if at > MAX_HEADER:
                raise Oversized(f"an RTSP header over {MAX_HEADER} bytes")
        message = Message(tuple(lines))
        length = c_int(message.values(b"Content-Length:")[-1]) if message.values(b"Content-Length:") else 0
        if length > MAX_BODY:
            raise Oversized(f"an RTSP body of {length} bytes")
        if length > 0:
            if at + length > len(buffer):
                return None
            message = Message(message.lines, bytes(buffer[at : at + length]))
            at += length
        del buffer[:at]
        return message


@attrs.frozen
class UrlParts:
    """A URL as FFmpeg's `av_url_split` cuts it (buffer sizes of `ff_rtsp_connect`)."""

    proto: str
    auth: str  # user[:password], "" for none
    host: str  # "" for none
    port: int  # -1 for none
    path: str  # from the first of /?# on

    @property
    def tls(self) -> bool:
        return self.proto == "rtsps"

    @property
    def connect_port(self) -> int:
        """The port FFmpeg connects to: the URL's, else 322 for rtsps, 554 otherwise."""
        return self.port if self.port >= 0 else (322 if self.tls else 554)


def split_url(url: str) -> UrlParts:
    colon = url.find(":")
    if colon < 0:  # "a plain filename"
        return UrlParts("", "", "", -1, url[:1023])
    proto, at = url[:colon][:127], colon + 1
    for _ in range(2):
        if url[at : at + 1] == "/":
            at += 1
    ends = [i for i in (url.find(c, at) for c in "/?#") if i >= 0]
    authority_end = min(ends, default=len(url))
    path = url[authority_end:][:1023]
    auth = host = ""
    port = -1
    if authority_end != at:
        start = at
        while (sign := url.find("@", at)) >= 0 and sign < authority_end:
            auth = url[start:sign][:127]
            at = sign + 1
        bracket = url.find("]", at)
        colon = url.find(":", at)
        if url[at : at + 1] == "[" and 0 <= bracket < authority_end:
            host = url[at + 1 : bracket]
            if url[bracket + 1 : bracket + 2] == ":":
                port = c_int(url[bracket + 2 :].encode("latin-1", "replace"))
        elif 0 <= colon < authority_end:
            host = url[at:colon]
            port = c_int(url[colon + 1 :].encode("latin-1", "replace"))
        else:
            host = url[at:authority_end]
    return UrlParts(proto, auth, host[:1023], port, path)


def join_url(parts: UrlParts, host: str, port: int) -> str:
    """`rtsp://[auth@]host:port<path>`: the URL's credentials and path at another place."""
    auth = f"{parts.auth}@" if parts.auth else ""
    return f"rtsp://{auth}{host}:{port}{parts.path}"
