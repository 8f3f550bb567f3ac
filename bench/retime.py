"""`python -m bench.retime`: what the Retimer costs per chunk, unshifted and shifted.

The Retimer runs once per chunk the upstream publishes (never per viewer): a pass over
the chunk's packets, and once a restart made a shift necessary, one copy of the chunk
with its PTS, DTS and PCR rewritten. Measured here on a 2 Mbit/s-like chunk (one frame
of 20 KB, 107 packets, a PES start and a PCR), against the work the hub already does on
it (Index.scan).
"""

from __future__ import annotations

import timeit

from supervisors.media.mpegts import Index
from supervisors.media.timeline import Retimer


def ts5(prefix: int, value: int) -> bytes:
    return bytes([prefix << 4 | ((value >> 30) & 7) << 1 | 1, (value >> 22) & 0xFF, ((value >> 15) & 0x7F) << 1 | 1,
                  (value >> 7) & 0xFF, (value & 0x7F) << 1 | 1])


def chunk(dts: int) -> bytes:
    """One 25 fps frame at `dts`: a PES start with PTS, DTS and a PCR, then 106 packets."""
    pes = b"\x00\x00\x01\xe0\x00\x00\x80\xc0\x0a" + ts5(3, dts) + ts5(1, dts)
    field = bytes([7, 0x10, (dts >> 25) & 0xFF, (dts >> 17) & 0xFF, (dts >> 9) & 0xFF, (dts >> 1) & 0xFF,
                   (dts & 1) << 7 | 0x7E, 0])
    first = (bytes([0x47, 0x41, 0x00, 0x30]) + field + pes + b"\x00\x00\x00\x01\x41" + b"\xaa" * 188)[:188]
    rest = b"".join((bytes([0x47, 0x01, 0x00, 0x10]) + b"\xbb" * 184) for _ in range(106))
    return first + rest


def main() -> None:
    pids = (0x100, 0x100)
    chunks = [chunk(i * 3600) for i in range(2000)]  # 80 s of frames, timestamps advancing
    index = Index(video_pid=0x100, pmt_pid=0x1000)

    def through(retimer: Retimer) -> None:
        for data in chunks:
            retimer.apply(data, pids, None)

    def shifted() -> Retimer:  # as after a restart: every chunk is moved by a shift
        retimer = Retimer()
        retimer.apply(chunks[0], pids, 0)
        retimer.restart()
        retimer.apply(chunk(5), pids, 0)
        return retimer

    cases = (("Index.scan (already done per chunk)", lambda: [index.scan(d) for d in chunks]),
             ("Retimer.apply, no restart yet (no copy)", lambda: through(Retimer())),
             ("Retimer.apply, after a restart (copy + rewrite)", lambda: through(shifted())))
    for name, call in cases:
        per = min(timeit.repeat(call, number=1, repeat=7)) / len(chunks)
        print(f"{name}: {per * 1e6:.1f} µs per chunk; at 25 chunks/s {per * 25 * 100:.3f} % of a core")


if __name__ == "__main__":
    main()
