"""One timeline per stream: PTS, DTS and PCR never jump across upstream restarts.

Each FFmpeg run starts its timestamps afresh, near 0 or wherever the camera's burst puts
them. A player that keeps its decoder (mpegts.js, MSE) then freezes on a jump back, or
stalls at a gap forward. The `Retimer` keeps what every viewer receives on one
timeline: every later attempt is shifted so that its first keyframe comes one frame
after the last frame sent, and all its PTS, DTS and PCR move by that same shift (modulo
2^33, as the fields wrap), so their relations within the attempt are kept exactly. A
jump within an attempt is smoothed the same way: in its first SETTLING frames any step
but about one frame (FFmpeg leaves the timestamps of its first packet unset when it
starts with little probing, so the second frame comes 0.5-3 s "later"), after that a
DTS that goes back, comes less than MIN_STEP after the last, less than half a frame after
it once (not twice in a row: that is a new frame rate), or more than a second forward.
FFmpeg's copy makes each DTS that did not go forward the last one plus a tick, and when
the camera's timeline catches up the next step is short: an H.265 camera's first frames,
whose first packet FFmpeg leaves without timestamps, do that under load. Until a shift
is needed, chunks pass through untouched (no copy).

The cost is per chunk, never per viewer: one pass over the packets of the video PID,
and, once shifted, one copy of the chunk. Pure code; nothing here awaits.
"""

from __future__ import annotations

from .mpegts import PACKET

WRAP = 1 << 33  # PTS, DTS and the PCR base are 33-bit, 90 kHz
HZ = 90_000
FRAME = HZ // 25  # assumed frame step until two timestamps have been seen
SETTLING = 2  # an attempt's first frames: any step but about one frame is a jump
MIN_STEP = HZ // 1000  # 1 ms: no camera sends 1000 frames a second; FFmpeg's fix of a DTS that went back is 1 tick


class Retimer:
    """Shifts the timestamps of one stream's attempts onto one timeline (module docstring)."""

    __slots__ = ("_last", "_others", "_settling", "_shift", "_short", "_start", "_step")

    def __init__(self, start: int | None = None, step: int = FRAME) -> None:
        self._start = start  # where the current attempt must begin; None: where it likes
        self._shift: int | None = 0 if start is None else None  # None: not known yet
        self._last: int | None = None  # the last DTS (or PTS) sent, on the timeline
        self._step = step
        self._settling = SETTLING  # frames of this attempt still held to the frame step
        self._short = False  # the last step was under half the frame step
        self._others: dict[int, list[int]] = {}  # audio PID -> [last PTS sent, its step, extra shift]

    def restart(self) -> None:
        """A new attempt follows: its first timestamp goes one frame after the last sent."""
        if self._last is not None:
            self._start = (self._last + self._step) % WRAP
        self._shift = None if self._start is not None else 0
        self._settling = SETTLING
        self._short = False
        for state in self._others.values():
            state[2] = 0

    @property
    def step(self) -> int:
        """The frame step last seen, 90 kHz."""
        return self._step

    def end(self) -> int | None:
        """Where a next attempt would begin (90 kHz), or None if nothing was timed yet."""
        return None if self._last is None else (self._last + self._step) % WRAP

    def apply(self, data: bytes, pids: tuple[int | None, ...], key: int | None) -> bytes:
        """`data` (whole packets) with the timestamps on `pids` (video, PCR, then any others,
        such as audio, which are shifted alike but do not set the timeline) on the stream's
        timeline. `key` is the offset of a keyframe in `data`, if any: a new attempt's
        shift is fixed there, as viewers resume an attempt at its first keyframe (what
        comes before it reaches nobody and is passed through as it is)."""
        if pids[0] is None:
            return data
        if self._shift is None:
            if key is None or (first := _decoding_ts(data, key)) is None:
                return data
            self._shift = (self._start - first) % WRAP  # type: ignore[operator]
        out: bytearray | None = None
        for off in range(0, len(data), PACKET):
            if not (self._shift or data[off + 1] & 0x40):  # unshifted: only PES starts matter
                continue
            pid = (data[off + 1] & 0x1F) << 8 | data[off + 2]
            if pid not in pids:
                continue
            decoding = _decoding_ts(data, off) if data[off + 1] & 0x40 else None
            if decoding is not None and pid not in pids[:2]:  # audio: shifted alike, not timed
                if shift := self._other(pid, decoding):
                    out = out if out is not None else bytearray(data)
                    _shift_pes(out, _pes(data, off) + 9, shift)
                continue
            if decoding is not None:
                decoding = (decoding + self._shift) % WRAP
                if self._last is not None:
                    step = (decoding - self._last) % WRAP
                    short = MIN_STEP <= step < self._step // 2
                    if self._settling:
                        usual = self._step // 2 <= step <= self._step * 2
                    else:  # a lone short step is a catch-up; two in a row, a new frame rate
                        usual = MIN_STEP <= step < HZ and (not short or self._short)
                    self._short = short
                    if usual:
                        self._step = step
                    else:  # a jump within the attempt (after FFmpeg's first packet): smooth it
                        self._shift = (self._shift + self._last + self._step - decoding) % WRAP
                        decoding = (self._last + self._step) % WRAP
                    self._settling = max(0, self._settling - 1)
                self._last = decoding
            shift = self._shift
            if not shift:
                continue
            if data[off + 3] & 0x20 and data[off + 4] >= 7 and data[off + 5] & 0x10:  # a PCR
                out = out if out is not None else bytearray(data)
                _put_pcr(out, off + 6, (_pcr(data, off + 6) + shift) % WRAP)
            if decoding is not None:
                out = out if out is not None else bytearray(data)
                at = _pes(data, off) + 9
                _put_ts(out, at, (_ts(data, at) + shift) % WRAP)
                if data[at - 2] & 0x40:  # and a DTS
                    _put_ts(out, at + 5, decoding)
        return data if out is None else bytes(out)


    def _other(self, pid: int, stamp: int) -> int:
        """The shift for a PES of another PID (audio): the video's, and as much more as keeps
        that PID going forward (a new attempt's first audio may begin a little before the
        last audio sent: it then follows it by its own step, a few ms off the video)."""
        moved = (stamp + self._shift) % WRAP  # type: ignore[operator]
        state = self._others.get(pid)
        if state is None:
            self._others[pid] = [moved, 0, 0]
            return self._shift or 0
        last, step, extra = state
        moved = (moved + extra) % WRAP
        delta = (moved - last) % WRAP
        if delta == 0 or delta >= WRAP // 2:  # not after the last one sent: put it right after
            extra = (extra + last + max(step, 1) - moved) % WRAP
            moved = (last + max(step, 1)) % WRAP
        elif delta < HZ:
            step = delta
        state[:] = [moved, step, extra]
        return (self._shift + extra) % WRAP  # type: ignore[operator]


def _shift_pes(out: bytearray, at: int, shift: int) -> None:
    """Move the PTS at `at`, and the DTS after it if there is one, by `shift`."""
    _put_ts(out, at, (_ts(out, at) + shift) % WRAP)
    if out[at - 2] & 0x40:
        _put_ts(out, at + 5, (_ts(out, at + 5) + shift) % WRAP)


def _pes(data: bytes, off: int) -> int:
    """Where the payload of the packet at `off` starts."""
    return off + 4 + (1 + data[off + 4] if data[off + 3] & 0x20 else 0)


def _decoding_ts(data: bytes, off: int) -> int | None:
    """The DTS (else the PTS) of the PES that the packet at `off` starts, or None."""
    payload = _pes(data, off)
    if payload + 19 > off + PACKET or data[payload : payload + 3] != b"\x00\x00\x01":
        return None
    flags = data[payload + 7]
    if not flags & 0x80:
        return None
    return _ts(data, payload + 14) if flags & 0x40 else _ts(data, payload + 9)


def _ts(data: bytes | bytearray, at: int) -> int:
    """A 33-bit PTS or DTS field (5 bytes with marker bits)."""
    return ((data[at] >> 1) & 0x07) << 30 | data[at + 1] << 22 | (data[at + 2] >> 1) << 15 | \
        data[at + 3] << 7 | data[at + 4] >> 1


def _put_ts(out: bytearray, at: int, value: int) -> None:
    out[at] = (out[at] & 0xF1) | ((value >> 30) & 0x07) << 1  # keeps the prefix and marker
    out[at + 1] = (value >> 22) & 0xFF
    out[at + 2] = ((value >> 15) & 0x7F) << 1 | 1
    out[at + 3] = (value >> 7) & 0xFF
    out[at + 4] = (value & 0x7F) << 1 | 1


def _pcr(data: bytes | bytearray, at: int) -> int:
    """The 33-bit base of a PCR (the 9-bit extension is left as it is)."""
    return data[at] << 25 | data[at + 1] << 17 | data[at + 2] << 9 | data[at + 3] << 1 | data[at + 4] >> 7


def _put_pcr(out: bytearray, at: int, base: int) -> None:
    out[at] = (base >> 25) & 0xFF
    out[at + 1] = (base >> 17) & 0xFF
    out[at + 2] = (base >> 9) & 0xFF
    out[at + 3] = (base >> 1) & 0xFF
    out[at + 4] = (base & 1) << 7 | (out[at + 4] & 0x7F)
