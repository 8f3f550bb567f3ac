"""`python -m bench.retime`: what the Retimer costs per chunk, unshifted and shifted.

The Retimer runs once per chunk the upstream publishes (never per viewer): a pass over
the chunk's packets, and once a restart made a shift necessary, one copy of the chunk
with its PTS, DTS and PCR rewritten. Measured here on a 2 Mbit/s-like chunk (one frame
of 20 KB, 107 packets, a PES start and a PCR), against the work the hub already does on
it (Index.scan).
"""

from __future__ import annotations

import timeit

from supervisors.mpegts import Index
from supervisors.timeline import Retimer


def chunk(dts: int) -> bytes:
    pes = b"\x00\x00\x01\xe0\x00\x00\x80\xc0\x0a"
    ts = bytes([0x31, 0, 1, 0, 1]) * 2
    field = bytes([7, 0x10, 0, 0, 0, 0, 0x7E, 0])
    first = (bytes([0x47, 0x41, 0x00, 0x30]) + field + pes + ts + b"\x00\x00\x00\x01\x41" + b"\xaa" * 188)[:188]
    rest = b"".join((bytes([0x47, 0x01, 0x00, 0x10]) + b"\xbb" * 184) for _ in range(106))
    return first + rest


def main() -> None:
    data = chunk(0)
    index = Index(video_pid=0x100, pmt_pid=0x1000)
    plain, shifted = Retimer(), Retimer()
    shifted.apply(data, (0x100, 0x100), 0)
    shifted.restart()  # a restart: from now on every chunk is shifted
    shifted.apply(data, (0x100, 0x100), 0)
    n = 20_000
    for name, call in (("Index.scan (already done per chunk)", lambda: index.scan(data)),
                       ("Retimer.apply, no restart yet (no copy)", lambda: plain.apply(data, (0x100, 0x100), None)),
                       ("Retimer.apply, after a restart (copy + rewrite)", lambda: shifted.apply(data, (0x100, 0x100), None))):
        per = min(timeit.repeat(call, number=n, repeat=5)) / n
        print(f"{name}: {per * 1e6:.1f} µs per chunk; at 25 chunks/s {per * 25 * 100:.3f} % of a core")


if __name__ == "__main__":
    main()
