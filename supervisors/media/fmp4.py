"""Fragmented MP4 as FFmpeg writes it: boxes, the init segment, fragments and keyframes.

A byte stream of top-level boxes (ISO/IEC 14496-12) is cut into whole boxes however it
is chunked (`Boxes`); `Fragments` turns them into the init segment (ftyp + moov, with
the codecs string MSE wants, read from the sample entries: avcC, hvcC, esds) and
`moof` + `mdat` fragments, each marked as starting with a video keyframe or not (the
sync-sample bit of its first video sample: trun, else tfhd, else trex). Pure code.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import attrs

MAX_BOX = 32 << 20  # a larger box is not what the remuxer writes: the stream is broken
NON_SYNC = 0x00010000  # sample_is_non_sync_sample in sample flags


class BrokenStream(ValueError):
    """Bytes that are not a stream of MP4 boxes."""


def boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """The child boxes of data[start:end] as (type, payload start, box end)."""
    end = len(data) if end is None else end
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, at)
        header = 8
        if size == 1 and at + 16 <= end:
            size, header = struct.unpack_from(">Q", data, at + 8)[0], 16
        if size < header or at + size > end:
            return
        yield kind, at + header, at + size
        at += size


def child(data: bytes, start: int, end: int, *path: bytes) -> tuple[int, int] | None:
    """The payload (start, end) of the first box down `path`, or None."""
    for name in path:
        for kind, start_, end_ in boxes(data, start, end):
            if kind == name:
                start, end = start_, end_
                break
        else:
            return None
    return start, end


class Boxes:
    """Whole top-level boxes from a byte stream, however it is chunked."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes | bytearray) -> list[tuple[bytes, bytes]]:
        """(type, whole box) of every box completed by `chunk`; raises BrokenStream."""
        self._buffer += chunk
        out = []
        at = 0
        buffer = self._buffer
        while len(buffer) - at >= 8:
            size, kind = struct.unpack_from(">I4s", buffer, at)
            header = 8
            if size == 1:
                if len(buffer) - at < 16:
                    break
                size, header = struct.unpack_from(">Q", buffer, at + 8)[0], 16
            if size < header or size > MAX_BOX:
                raise BrokenStream(f"box {kind!r} of {size} bytes")
            if len(buffer) - at < size:
                break
            out.append((bytes(kind), bytes(buffer[at : at + size])))
            at += size
        del buffer[:at]
        return out


@attrs.frozen
class Init:
    """The init segment, what its tracks are, and the MIME type with codecs."""

    data: bytes
    mime: str
    video_track: int | None
    trex_flags: dict[int, int]  # default sample flags by track id


@attrs.frozen
class Fragment:
    data: bytes  # moof + mdat
    key: bool  # starts with a video keyframe


def read_init(data: bytes) -> Init:
    """An init segment (ftyp + moov); raises BrokenStream if it has no moov."""
    moov = child(data, 0, len(data), b"moov")
    if moov is None:
        raise BrokenStream("init segment without moov")
    codecs, video_track, trex = [], None, {}
    for kind, start, end in boxes(data, *moov):
        if kind == b"trak":
            track, handler, codec = _track(data, start, end)
            if codec:
                codecs.append(codec)
            if handler == b"vide" and video_track is None:
                video_track = track
        elif kind == b"mvex":
            for kind_, start_, _ in boxes(data, start, end):
                if kind_ == b"trex":
                    track_id, flags = struct.unpack_from(">I12xI", data, start_ + 4)
                    trex[track_id] = flags
    mime = "video/mp4" if video_track is not None else "audio/mp4"
    return Init(data, f'{mime}; codecs="{",".join(codecs)}"', video_track, trex)


def _track(data: bytes, start: int, end: int) -> tuple[int, bytes, str | None]:
    tkhd = child(data, start, end, b"tkhd")
    track = 0
    if tkhd is not None:
        version = data[tkhd[0]]
        track = struct.unpack_from(">I", data, tkhd[0] + (20 if version == 1 else 12))[0]
    hdlr = child(data, start, end, b"mdia", b"hdlr")
    handler = bytes(data[hdlr[0] + 8 : hdlr[0] + 12]) if hdlr else b""
    stsd = child(data, start, end, b"mdia", b"minf", b"stbl", b"stsd")
    if stsd is None:
        return track, handler, None
    for kind, entry, entry_end in boxes(data, stsd[0] + 8, stsd[1]):
        return track, handler, _codec(data, kind, entry, entry_end)
    return track, handler, None


def _codec(data: bytes, kind: bytes, start: int, end: int) -> str:
    """The RFC 6381 codecs string of one sample entry."""
    name = kind.decode("latin-1")
    if kind in (b"avc1", b"avc3"):
        avcc = child(data, start + 78, end, b"avcC")
        if avcc is not None:
            return f"{name}.{data[avcc[0] + 1]:02x}{data[avcc[0] + 2]:02x}{data[avcc[0] + 3]:02x}"
    elif kind in (b"hvc1", b"hev1"):
        hvcc = child(data, start + 78, end, b"hvcC")
        if hvcc is not None:
            return _hevc(name, data[hvcc[0] : hvcc[1]])
    elif kind == b"mp4a":
        esds = child(data, start + 28, end, b"esds")
        if esds is not None:
            return _mp4a(data[esds[0] + 4 : esds[1]])
    return name


def _hevc(name: str, hvcc: bytes) -> str:
    """hvc1.<space><profile>.<compatibility, bits reversed>.<tier><level>.<constraints>."""
    space = "" if not hvcc[1] >> 6 else "ABC"[(hvcc[1] >> 6) - 1]
    compatibility = int(f"{int.from_bytes(hvcc[2:6], 'big'):032b}"[::-1], 2)
    tier = "H" if hvcc[1] & 0x20 else "L"
    constraints = bytes(hvcc[6:12]).rstrip(b"\0")
    parts = [name, f"{space}{hvcc[1] & 0x1F}", f"{compatibility:X}", f"{tier}{hvcc[12]}"]
    parts += [f"{byte:X}" for byte in constraints]
    return ".".join(parts)


def _mp4a(descriptors: bytes) -> str:
    """mp4a.<object type>[.<audio object type>] from an ES descriptor."""
    at, end = 0, len(descriptors)
    while at < end:
        tag = descriptors[at]
        at += 1
        size = 0
        for _ in range(4):
            if at >= end:
                return "mp4a"
            size = size << 7 | descriptors[at] & 0x7F
            at += 1
            if not descriptors[at - 1] & 0x80:
                break
        if tag == 0x03:  # ES_Descriptor: id, flags, optional fields, then its children
            flags = descriptors[at + 2] if at + 2 < end else 0
            at += 3 + (2 if flags & 0x80 else 0)
            if flags & 0x40 and at < end:  # URL_Flag: a length-prefixed URL
                at += 1 + descriptors[at]
            at += 2 if flags & 0x20 else 0
            continue
        if tag == 0x04 and at < end:  # DecoderConfigDescriptor: object type, 12 bytes, children
            object_type = descriptors[at]
            if object_type != 0x40:
                return f"mp4a.{object_type:02X}"
            at += 13
            continue
        if tag == 0x05 and size and at < end:  # DecoderSpecificInfo: AudioSpecificConfig
            return f"mp4a.40.{descriptors[at] >> 3}"
        at += size
    return "mp4a.40.2"


def fragment_key(moof: bytes, init: Init) -> bool:
    """Does this moof's video run start with a sync sample? False without video in it."""
    for kind, start, end in boxes(moof, 8):
        if kind != b"traf":
            continue
        tfhd = child(moof, start, end, b"tfhd")
        if tfhd is None:
            continue
        flags, track = struct.unpack_from(">II", moof, tfhd[0])
        if track != init.video_track:
            continue
        default = init.trex_flags.get(track, 0)
        if flags & 0x20:
            offset = tfhd[0] + 8 + (8 if flags & 0x01 else 0) + sum(4 for bit in (0x02, 0x08, 0x10) if flags & bit)
            default = struct.unpack_from(">I", moof, offset)[0]
        trun = child(moof, start, end, b"trun")
        if trun is None:
            return not default & NON_SYNC
        flags, count = struct.unpack_from(">II", moof, trun[0])
        if not count:
            return False
        at = trun[0] + 8 + (4 if flags & 0x01 else 0)
        if flags & 0x04:
            return not struct.unpack_from(">I", moof, at)[0] & NON_SYNC
        if flags & 0x400:
            at += (4 if flags & 0x100 else 0) + (4 if flags & 0x200 else 0)
            return not struct.unpack_from(">I", moof, at)[0] & NON_SYNC
        return not default & NON_SYNC
    return False


class Fragments:
    """The remuxer's output as an Init, then Fragments (see module docstring)."""

    def __init__(self) -> None:
        self._boxes = Boxes()
        self._head: list[bytes] = []  # ftyp (and anything else) before moov
        self._moof: bytes | None = None
        self.init: Init | None = None

    def feed(self, chunk: bytes | bytearray) -> list[Init | Fragment]:
        """What `chunk` completes; raises BrokenStream on bytes that are not fMP4."""
        out: list[Init | Fragment] = []
        for kind, box in self._boxes.feed(chunk):
            try:
                if kind == b"moov":
                    self.init = read_init(b"".join(self._head) + box)
                    self._head = []
                    out.append(self.init)
                elif self.init is None:
                    self._head.append(box)
                elif kind == b"moof":
                    self._moof = box
                elif kind == b"mdat" and self._moof is not None:
                    out.append(Fragment(self._moof + box, fragment_key(self._moof, self.init)))
                    self._moof = None
            except (IndexError, struct.error) as error:  # a box shorter than its fields
                raise BrokenStream(f"malformed {kind!r} box: {error}") from None
        return out
