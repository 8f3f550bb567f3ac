"""Snapshots: a stream's latest keyframe as a JPEG.

A snapshot is taken as a viewer would watch: a short-lived viewer attaches to the
stream's upstream. When the upstream runs, the hub hands it the cached GOP at once (no
new camera connection); otherwise the attach starts the upstream, under the usual limits
and source policy, and the first keyframe comes within FFMPEG_TIMEOUT (the upstream then
lingers as for any viewer, so a tile opened next joins it). The keyframe's access unit
(from PAT, PMT and the keyframe to the start of the next video frame) goes to one FFmpeg
that decodes it to JPEG.

At most one decode runs per stream at a time; a JPEG is reused for REUSE seconds, and a
request that arrives while one is being made waits for it. The stream's record is read
only once that wait is over (`Load`), so a snapshot never shows a source its record no
longer names, nor keeps a JPEG of one; and if the upstream restarts while the keyframe is
gathered (a new URL), gathering starts over with the new attempt's keyframe.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import attrs
import trio

from .events import Close, ErrorCode, Failure, Phase, Status, describe_os_error
from .ffmpeg import Source
from .locks import KeyedLocks
from .media.mpegts import PACKET, Aligner, Index
from .registry import Registry
from .viewer import Viewer

# the stream's source as its record says now (None: there is no such stream); the caller
# may hold its own lock on the record while the context is open (the attach happens in it)
Load = Callable[[], AbstractAsyncContextManager[Source | None]]

REUSE = 1.0  # seconds a snapshot is served again instead of decoding a new one
DECODE_WITHIN = 10.0  # seconds FFmpeg may take to decode one frame
MAX_KEYFRAME = 4 << 20  # bytes gathered at most for one keyframe's access unit


@attrs.define
class _Made:
    at: float
    jpeg: bytes
    source: Source  # what it was made from


@attrs.define
class Snapshots:
    """JPEG snapshots of the registry's streams (see module docstring)."""

    registry: Registry
    ffmpeg: str
    timeout: float  # FFMPEG_TIMEOUT: how long to wait for a keyframe
    clock: Callable[[], float] = trio.current_time
    _made: dict[tuple[str, int | None], _Made] = attrs.Factory(dict)
    _locks: KeyedLocks[str] = attrs.Factory(KeyedLocks)

    async def jpeg(self, key: str, load: Load, client: str, width: int | None = None) -> bytes:
        """The stream's latest keyframe as a JPEG, `width` pixels wide if given (the height
        keeps the aspect ratio), from the source `load` gives once this stream's turn has
        come.

        Raises Failure: NOT_FOUND when `load` finds no stream, LIMIT when a limit forbids
        starting the upstream, the upstream's failure (AUTH, NOT_FOUND, UNREACHABLE,
        TIMEOUT, FORBIDDEN, STREAM_ERROR), TIMEOUT when no keyframe came within `timeout`,
        STREAM_ERROR when it would not decode. Cancellation: the short-lived viewer leaves
        and FFmpeg is ended and reaped."""
        self._forget_old()
        async with self._locks.hold(key):
            with self.registry.open_viewer(client) as viewer:
                async with load() as source:
                    if source is None:
                        raise Failure(ErrorCode.NOT_FOUND, "no such stream")
                    made = self._made.get((key, width))
                    if made is not None and made.source == source and self.clock() - made.at <= REUSE:
                        return made.jpeg
                    self.registry.attach(viewer, key, source)  # raises Failure(LIMIT)
                keyframe = await self._keyframe(viewer)
            jpeg = await decode_jpeg(self.ffmpeg, keyframe, width)
            self._made[key, width] = _Made(self.clock(), jpeg, source)
            return jpeg

    def _forget_old(self) -> None:
        now = self.clock()
        for made_key in [k for k, made in self._made.items() if now - made.at > REUSE]:
            del self._made[made_key]

    async def _keyframe(self, viewer: Viewer) -> bytes:
        """The first whole keyframe the viewer gets within `timeout`, of the upstream's
        current attempt (a `connecting` starts over)."""
        gathered = Gathered()
        with trio.move_on_after(self.timeout):
            while not gathered.complete:
                item = await viewer.next()
                if isinstance(item, bytes):
                    gathered.add(item)
                elif isinstance(item, Status) and item.phase is Phase.CONNECTING:
                    gathered = Gathered()  # restarted (a new source): its keyframe, not the old one's
                elif isinstance(item, Failure):
                    raise item
                elif isinstance(item, Close):
                    raise Failure(ErrorCode.STREAM_ERROR, "the stream ended")
        if not gathered.complete:
            raise Failure(ErrorCode.TIMEOUT, f"no keyframe within {self.timeout:g} s")
        return gathered.data()


@attrs.define
class Gathered:
    """A viewer's media from its first byte (PAT, PMT, a keyframe) until the next video
    frame starts: then the keyframe's access unit is whole."""

    _parts: list[bytes] = attrs.Factory(list)
    _size: int = 0
    _aligner: Aligner = attrs.Factory(Aligner)
    _index: Index = attrs.Factory(Index)
    _frames: int = 0  # video PES starts seen
    complete: bool = False

    def add(self, chunk: bytes) -> None:
        data = self._aligner.feed(chunk)
        self._index.scan(data)
        video = self._index.video_pid
        for off in range(0, len(data), PACKET):
            if data[off + 1] & 0x40 and ((data[off + 1] & 0x1F) << 8 | data[off + 2]) == video:
                self._frames += 1
                if self._frames == 2:  # the next frame: the keyframe ends before this packet
                    data, self.complete = data[:off], True
                    break
        self._parts.append(data)
        self._size += len(data)
        if self._size > MAX_KEYFRAME:
            raise Failure(ErrorCode.STREAM_ERROR, f"no whole keyframe within {MAX_KEYFRAME >> 20} MiB")

    def data(self) -> bytes:
        return b"".join(self._parts)


async def decode_jpeg(ffmpeg: str, ts: bytes, width: int | None) -> bytes:
    """The first video frame of MPEG-TS bytes as a JPEG; raises Failure(STREAM_ERROR)."""
    scale = ["-vf", f"scale={width}:-2"] if width else []
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "mpegts", "-i", "pipe:0",
            "-frames:v", "1", *scale, "-q:v", "4", "-f", "mjpeg", "pipe:1"]
    try:
        with trio.move_on_after(DECODE_WITHIN) as waited:
            done = await trio.run_process(argv, stdin=ts, capture_stdout=True, stderr=subprocess.DEVNULL,
                                          check=False)
    except OSError as error:
        raise Failure(ErrorCode.STREAM_ERROR, f"cannot start {ffmpeg}: {describe_os_error(error)}") from None
    if waited.cancelled_caught:
        raise Failure(ErrorCode.STREAM_ERROR, f"the keyframe did not decode within {DECODE_WITHIN:g} s")
    if done.returncode != 0 or not done.stdout.startswith(b"\xff\xd8"):
        raise Failure(ErrorCode.STREAM_ERROR, "the keyframe did not decode")
    return bytes(done.stdout)
