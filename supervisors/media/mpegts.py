"""MPEG-TS packet helpers: whole-packet alignment, PAT/PMT capture and keyframe finding.

Only what the fan-out needs: every chunk a viewer gets is a whole number of 188-byte
packets, and the hub knows where the last keyframe starts and which packets are the
current PAT and PMT. Keyframes are found from the adaptation field's
random_access_indicator, with the H.264 IDR/SPS or H.265 IRAP/VPS NAL in the first
packet of a PES as a fallback. Pure code; nothing here awaits.
"""

from __future__ import annotations

import attrs

PACKET = 188
SYNC = 0x47
PAT_PID = 0
H264, H265 = 0x1B, 0x24
VIDEO_TYPES = {0x01, 0x02, 0x10, H264, H265, 0x33}


class Aligner:
    """Turns a byte stream into runs of whole, sync-aligned TS packets."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, data: bytes) -> bytes:
        if self._rest:
            data = self._rest + data
        start = 0
        if data[:1] != b"\x47":
            start = _resync(data)
            if start < 0:
                self._rest = data[-(PACKET * 2) :]
                return b""
        end = start + (len(data) - start) // PACKET * PACKET
        self._rest = data[end:]
        return data[start:end] if start or end != len(data) else data


def _resync(data: bytes) -> int:
    """First offset where three packets in a row start with the sync byte, or -1."""
    pos = data.find(b"\x47")
    while 0 <= pos and pos + 2 * PACKET < len(data):
        if data[pos + PACKET] == SYNC and data[pos + 2 * PACKET] == SYNC:
            return pos
        pos = data.find(b"\x47", pos + 1)
    return -1


@attrs.define
class Index:
    """What the hub must know about one upstream's TS: PAT, PMT, video PID, keyframes."""

    pat: bytes | None = None
    pmt: bytes | None = None
    pmt_pid: int | None = None
    video_pid: int | None = None
    video_type: int | None = None
    pcr_pid: int | None = None
    other_pids: tuple[int, ...] = ()  # the PMT's other elementary streams (audio)

    @property
    def header(self) -> bytes | None:
        """PAT+PMT, ready to send before a keyframe; None until both are known."""
        if self.pat is None or self.pmt is None:
            return None
        return self.pat + self.pmt

    def scan(self, data: bytes) -> int | None:
        """Learn PAT/PMT from aligned packets; offset of the last keyframe start, or None.

        Only packets that start a payload unit (PUSI) are looked at beyond their header
        bytes, so the per-packet cost is one slice and two comparisons.
        """
        key = None
        for off in range(0, len(data), PACKET):
            b1 = data[off + 1]
            if not b1 & 0x40:  # no payload unit start: nothing to learn here
                continue
            pid = ((b1 & 0x1F) << 8) | data[off + 2]
            if pid == self.video_pid:
                if self._is_keyframe(data, off):
                    key = off
            elif pid == PAT_PID:
                self._learn_pat(data[off : off + PACKET])
            elif pid == self.pmt_pid:
                self._learn_pmt(data[off : off + PACKET])
                if self.video_pid is None and self.pmt is not None:
                    key = off if key is None else key  # no video: any point after PMT will do
        return key

    def _is_keyframe(self, data: bytes, off: int) -> bool:
        afc = (data[off + 3] >> 4) & 0x3
        payload = off + 4
        if afc & 0x2:  # adaptation field present
            length = data[off + 4]
            if length and data[off + 5] & 0x40:  # random_access_indicator
                return True
            payload += 1 + length
        if not afc & 0x1:
            return False
        return _has_key_nal(data[payload : off + PACKET], self.video_type)

    def _learn_pat(self, packet: bytes) -> None:
        section = _section(packet)
        if section is None or section[0] != 0x00:
            return
        end = min(len(section), 3 + (((section[1] & 0x0F) << 8) | section[2])) - 4
        for i in range(8, end - 3, 4):
            program = (section[i] << 8) | section[i + 1]
            if program != 0:
                self.pmt_pid = ((section[i + 2] & 0x1F) << 8) | section[i + 3]
                self.pat = bytes(packet)
                return

    def _learn_pmt(self, packet: bytes) -> None:
        section = _section(packet)
        if section is None or section[0] != 0x02:
            return
        end = min(len(section), 3 + (((section[1] & 0x0F) << 8) | section[2])) - 4
        i = 12 + (((section[10] & 0x0F) << 8) | section[11])
        video = None
        others = []
        while i + 5 <= end:
            stream_type = section[i]
            pid = ((section[i + 1] & 0x1F) << 8) | section[i + 2]
            if video is None and stream_type in VIDEO_TYPES:
                video = (pid, stream_type)
            else:
                others.append(pid)
            i += 5 + (((section[i + 3] & 0x0F) << 8) | section[i + 4])
        self.pmt = bytes(packet)
        self.video_pid, self.video_type = video if video else (None, None)
        self.other_pids = tuple(others)
        self.pcr_pid = ((section[8] & 0x1F) << 8) | section[9]


def _section(packet: bytes) -> bytes | None:
    afc = (packet[3] >> 4) & 0x3
    pos = 4 + (1 + packet[4] if afc & 0x2 else 0)
    if not afc & 0x1 or pos >= PACKET:
        return None
    pos += 1 + packet[pos]  # pointer_field
    return packet[pos:] if pos + 12 < PACKET else None


def _has_key_nal(payload: bytes, stream_type: int | None) -> bool:
    """Does this PES start (header + first bytes of ES) hold a keyframe NAL?"""
    if len(payload) < 9 or payload[:3] != b"\x00\x00\x01":
        return False
    es = payload[9 + payload[8] :]
    pos = es.find(b"\x00\x00\x01")
    while 0 <= pos < len(es) - 3:
        nal = es[pos + 3]
        if stream_type == H265:
            if 16 <= (nal >> 1) & 0x3F <= 21 or (nal >> 1) & 0x3F == 32:
                return True
        elif nal & 0x1F in (5, 7):
            return True
        pos = es.find(b"\x00\x00\x01", pos + 3)
    return False

