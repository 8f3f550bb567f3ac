"""In-process stand-ins for FFmpeg, for timing tests on trio's autojump clock.

`FakeSource` plays a script, one behaviour per start of the media process:
"play" (a chunk of MPEG-TS every 40 ms, keyframe every second, forever; the frames of
the n-th start are numbered from n * ATTEMPT, see `frame_number`),
"play:N" (the same for N seconds, then exit), "freeze:N" (plays N seconds, then goes
silent without exiting), "stall" (no output), "refused"/"auth"/
"not_found" (exit at once with that FFmpeg stderr). The last behaviour repeats.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from supervisors.classify import classify
from supervisors.events import Failure
from supervisors.ffmpeg import Source

VIDEO_PID = 0x100
ATTEMPT = 1_000_000  # frames of the n-th start of a FakeSource are numbered from n * ATTEMPT
STDERR = {
    "refused": "[tcp @ 0x1] Connection to tcp://10.0.0.5:554 failed: Connection refused\n",
    "auth": "[rtsp @ 0x1] method DESCRIBE failed: 401 Unauthorized\n",
    "not_found": "[rtsp @ 0x1] method DESCRIBE failed: 404 Not Found\n",
    "eof": "[rtsp @ 0x1] Failed reading RTSP data: End of file\n",
}


def packet(pid: int, payload: bytes, *, start: bool = False, key: bool = False, counter: int = 0) -> bytes:
    header = bytes([0x47, (0x40 if start else 0) | (pid >> 8), pid & 0xFF])
    if key:  # adaptation field with random_access_indicator, then payload
        body = bytes([0x30 | (counter & 0xF), 1, 0x40]) + payload
    else:
        body = bytes([0x10 | (counter & 0xF)]) + payload
    return (header + body + b"\xff" * 188)[:188]


def pat() -> bytes:
    section = bytes([0x00, 0xB0, 0x0D, 0x00, 0x01, 0xC1, 0x00, 0x00, 0x00, 0x01, 0xF0, 0x00]) + b"\0" * 4
    return packet(0, b"\x00" + section, start=True)


def pmt() -> bytes:
    section = bytes([0x02, 0xB0, 0x12, 0x00, 0x01, 0xC1, 0x00, 0x00, 0xE1, 0x00, 0xF0, 0x00,
                     0x1B, 0xE1, 0x00, 0xF0, 0x00]) + b"\0" * 4
    return packet(0x1000, b"\x00" + section, start=True)


def frame_number(packet: bytes) -> int | None:
    """The `index` a packet of `frame` carries, None for any other packet."""
    if ((packet[1] & 0x1F) << 8 | packet[2]) != VIDEO_PID:
        return None
    start = 4 + (1 + packet[4] if packet[3] & 0x20 else 0)
    if packet[1] & 0x40:  # the PES start: header and NAL before the number
        start += 14
    return int.from_bytes(packet[start : start + 4], "big")


def frame(index: int, *, key: bool, size: int = 4) -> bytes:
    """One video frame: a PES start packet (keyframes flagged) and size-1 more packets."""
    pes = b"\x00\x00\x01\xe0\x00\x00\x80\x00\x00" + bytes([0, 0, 0, 1, 0x65 if key else 0x41])
    first = packet(VIDEO_PID, pes + index.to_bytes(4, "big"), start=True, key=key, counter=index)
    rest = b"".join(packet(VIDEO_PID, index.to_bytes(4, "big"), counter=index + i) for i in range(1, size))
    return first + rest


@attrs.define
class FakeRun:
    behaviour: str
    chunks: trio.MemoryReceiveChannel[bytes]
    stdout: FakeRun = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.stdout = self

    async def receive_some(self, _max_bytes: int | None = None) -> bytes:
        try:
            return await self.chunks.receive()
        except trio.EndOfChannel:
            return b""

    async def finish(self) -> None:
        pass

    def failure(self) -> Failure:
        return classify(STDERR.get(self.behaviour.split(":")[0], STDERR["eof"]))

    def cpu_seconds(self) -> float | None:
        return None

    def video(self) -> dict[str, object] | None:
        return {"codec": "h264", "width": 320, "height": 240}


@attrs.define
class FakeSource:
    script: list[str]
    starts: list[float] = attrs.Factory(list)
    sources: list[Source] = attrs.Factory(list)
    running: int = 0
    frames: int = 0
    reap: float = 0.0  # seconds a process takes to die once told to (a real FFmpeg: up to KILL_GRACE)

    @asynccontextmanager
    async def runner(self, source: Source) -> AsyncIterator[FakeRun]:
        behaviour = self.script[min(len(self.starts), len(self.script) - 1)]
        self.starts.append(trio.current_time())
        self.sources.append(source)
        send, receive = trio.open_memory_channel[bytes](1000)
        self.running += 1
        try:
            async with trio.open_nursery() as nursery:
                if behaviour.startswith(("play", "freeze")):
                    seconds = float(behaviour.split(":")[1]) if ":" in behaviour else float("inf")
                    nursery.start_soon(self._play, send, seconds, behaviour.startswith("freeze"))
                elif behaviour != "stall":
                    send.close()
                yield FakeRun(behaviour, receive)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(self.reap)  # (sleep(0) still checkpoints, as reaping does)
            self.running -= 1

    async def _play(self, send: trio.MemorySendChannel[bytes], seconds: float, freeze: bool) -> None:
        async with send:
            end = trio.current_time() + seconds
            index = 0
            attempt = len(self.starts) - 1
            while trio.current_time() < end:
                key = index % 25 == 0
                chunk = (pat() + pmt() if key else b"") + frame(attempt * ATTEMPT + index, key=key)
                await send.send(chunk)
                index += 1
                self.frames += 1
                await trio.sleep(0.04)
            if freeze:
                await trio.sleep_forever()
