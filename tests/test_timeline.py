"""One timeline per stream: the Retimer's rewriting (a property test over generated
streams), then through the real camera and FFmpeg across a reconnect and a killed FFmpeg."""

from __future__ import annotations

import itertools
import os
import signal

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisors.media.timeline import FRAME, HZ, WRAP, Retimer
from tests.camera import Camera
from tests.helpers import ffmpeg_children, start_server, timestamps, ts_packets, wait_for

VIDEO = 0x100


def ts5(prefix: int, value: int) -> bytes:
    return bytes([prefix << 4 | ((value >> 30) & 7) << 1 | 1, (value >> 22) & 0xFF, ((value >> 15) & 0x7F) << 1 | 1,
                  (value >> 7) & 0xFF, (value & 0x7F) << 1 | 1])


def frame(dts: int, pts: int, *, pcr: bool, packets: int) -> bytes:
    """A video PES with PTS and DTS (and a PCR in its first packet), spread over packets."""
    pes = b"\x00\x00\x01\xe0\x00\x00\x80\xc0\x0a" + ts5(3, pts) + ts5(1, dts) + b"\x00\x00\x00\x01\x65"
    if pcr:
        field = bytes([7, 0x10, (dts >> 25) & 0xFF, (dts >> 17) & 0xFF, (dts >> 9) & 0xFF, (dts >> 1) & 0xFF,
                       (dts & 1) << 7 | 0x7E, 0x00])
        first = bytes([0x47, 0x41, 0x00, 0x30]) + field + pes
    else:
        first = bytes([0x47, 0x41, 0x00, 0x10]) + pes
    out = (first + b"\xaa" * 188)[:188]
    for i in range(1, packets):
        out += bytes([0x47, 0x01, 0x00, 0x10 | (i & 0xF)]) + bytes([i & 0xFF]) * 184
    return out


attempts = st.lists(st.tuples(
    st.integers(0, WRAP - 1),  # where FFmpeg's timestamps start
    st.sampled_from([1500, 3000, 3600, 9000, 18000]),  # its frame step: 60, 30, 25, 10, 5 fps
    st.booleans(),  # its first packet's timestamps are off (FFmpeg leaves them unset)
    st.integers(1, 30),  # frames
    st.integers(1, 4),  # frames per chunk
), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(attempts, st.integers(0, 3))
def test_every_attempt_goes_on_one_timeline(runs: list[tuple[int, int, bool, int, int]], b_frames: int) -> None:
    """Whatever each attempt's timestamps start at (wrapping at 2^33 included), what comes
    out has DTS going up by one frame step everywhere, PTS - DTS and PCR - DTS as they came
    in, and every byte that is not a timestamp unchanged."""
    retimer = Retimer()
    out_dts: list[int] = []
    for start, step, unset_first, frames, per_chunk in runs:
        retimer.restart()
        sent = []
        for i in range(frames):
            dts = (start + i * step + (WRAP // 2 if unset_first and i == 0 else 0)) % WRAP
            sent.append(frame(dts, (dts + b_frames * step) % WRAP, pcr=i % 2 == 0, packets=1 + i % 3))
        for c in range(0, frames, per_chunk):
            chunk = b"".join(sent[c : c + per_chunk])
            key = 0 if c == 0 else None  # the attempt's first chunk starts with its keyframe
            got = retimer.apply(chunk, (VIDEO, VIDEO), key)
            assert len(got) == len(chunk)
            for a, b in zip(ts_packets(chunk), ts_packets(got), strict=True):
                if not a[1] & 0x40:
                    assert a == b  # no timestamp here: untouched
                    continue
                for kind, value in timestamps(b, VIDEO):
                    if kind == "dts":
                        out_dts.append(value)
                found = dict(timestamps(b, VIDEO))
                pes = b.index(b"\x00\x00\x01\xe0")
                p = b[pes + 9 : pes + 14]
                pts_out = ((p[0] >> 1) & 7) << 30 | p[1] << 22 | (p[2] >> 1) << 15 | p[3] << 7 | p[4] >> 1
                assert (pts_out - found["dts"]) % WRAP == b_frames * step
                if "pcr" in found:
                    assert found["pcr"] == found["dts"]
    steps = [(b - a) % WRAP for a, b in itertools.pairwise(out_dts)]
    assert set(steps) <= {FRAME} | {step for _, step, *_ in runs}, "a jump, or a step no attempt had"


@settings(max_examples=300, deadline=None)
@given(st.integers(0, WRAP - 1), st.sampled_from([1500, 3000, 3600, 9000, 18000]), st.integers(2, 20),
       st.integers(1, 18000), st.integers(1, 4))
def test_a_dts_that_went_back_reaches_no_viewer_as_a_tick(start: int, step: int, glitch: int, back: int,
                                                         per_chunk: int) -> None:
    """A camera whose timeline goes back within an attempt (`back` ticks behind the last
    frame, at any frame after the first two): FFmpeg's copy makes each DTS that did not
    go forward the last one plus a tick, and then the camera's timeline catches up with
    a short step. What viewers get still steps forward by at least half a frame (so at
    least MIN_STEP) and less than a second: no frame shown for a tick, none that a muxer
    or player takes for a duplicate."""
    sent_dts: list[int] = []
    for i in range(glitch + 6):
        dts = start + i * step - (step + back if i >= glitch else 0)
        if sent_dts and dts <= sent_dts[-1]:
            dts = sent_dts[-1] + 1  # what FFmpeg's copy does with a DTS that did not go forward
        sent_dts.append(dts)
    frames = [frame(d % WRAP, d % WRAP, pcr=i % 2 == 0, packets=1 + i % 3) for i, d in enumerate(sent_dts)]
    retimer = Retimer()
    out = b"".join(retimer.apply(b"".join(frames[c : c + per_chunk]), (VIDEO, VIDEO), 0 if c == 0 else None)
                   for c in range(0, len(frames), per_chunk))
    got = [value for kind, value in timestamps(out, VIDEO) if kind == "dts"]
    steps = [(b - a) % WRAP for a, b in itertools.pairwise(got)]
    assert all(min(step, FRAME) // 2 <= s < HZ for s in steps), steps  # (FRAME: assumed while settling)


def test_a_new_frame_rate_is_taken_after_one_smoothed_frame() -> None:
    """A camera that goes from 5 to 30 frames a second: its first short step is taken
    for a catch-up (smoothed to the old step), the second for the new rate, which the
    timeline then keeps."""
    dts = [i * 18000 for i in range(6)] + [5 * 18000 + i * 3000 for i in range(1, 11)]
    retimer = Retimer()
    out = b"".join(retimer.apply(frame(d, d, pcr=True, packets=1), (VIDEO, VIDEO), 0 if i == 0 else None)
                   for i, d in enumerate(dts))
    got = [value for kind, value in timestamps(out, VIDEO) if kind == "dts"]
    assert [(b - a) % WRAP for a, b in itertools.pairwise(got)][-10:] == [18000] + [3000] * 9


async def test_a_reconnect_and_a_killed_ffmpeg_keep_the_timestamps_going(
        camera: Camera, nursery: trio.Nursery) -> None:
    """What one socket receives across two upstream restarts: DTS up by about a frame
    each time, PCR never back (a player keeps its decoder and plays on)."""
    server = await start_server(nursery)
    async with server.viewer(f"url={camera.url()}") as viewer, server.viewer(f"url={camera.url()}") as other:
        await viewer.play()
        await other.play()
        await trio.sleep(2)
        await other.send("reconnect")
        await viewer.status("connecting")
        await viewer.status("playing")
        await trio.sleep(2)
        os.kill(ffmpeg_children()[0], signal.SIGKILL)
        await viewer.status("connecting")
        await viewer.status("playing", within=10)
        await trio.sleep(2)
        data = b"".join(viewer.media)
    found = timestamps(data)
    dts = [t for kind, t in found if kind == "dts"]
    pcr = [t for kind, t in found if kind == "pcr"]
    steps = [(b - a) % WRAP for a, b in itertools.pairwise(dts)]
    assert len(dts) > 100 and all(0 < s <= HZ // 10 for s in steps), [s / HZ for s in steps if not 0 < s <= HZ // 10]
    assert all(0 <= (b - a) % WRAP < HZ for a, b in itertools.pairwise(pcr))


@pytest.mark.parametrize("pause", [0.2, 1.5], ids=["within LINGER", "beyond LINGER"])
async def test_a_socket_that_stops_and_starts_again_keeps_its_timestamps_going(
        camera: Camera, nursery: trio.Nursery, pause: float) -> None:
    """Stop, then start on the same socket: from the cached keyframe of the same upstream
    (within LINGER) or from a new upstream (beyond it), the socket's DTS go on one frame
    after the last it got, never back and never ahead by the time it was away."""
    server = await start_server(nursery, linger=0.5)
    async with server.viewer(f"url={camera.url()}") as viewer:
        for _ in range(2):
            await viewer.play()
            await trio.sleep(2)
            await viewer.send("stop")
            await viewer.status("stopped")
            if pause > server.settings.linger:  # until the upstream has ended (LINGER 0.5 s)
                assert server.registry is not None
                await wait_for(lambda: server.registry.statistics().running == 0, within=10)
            else:
                await trio.sleep(pause)
        await viewer.play()
        await trio.sleep(2)
        data = b"".join(viewer.media)
    dts = [t for kind, t in timestamps(data) if kind == "dts"]
    steps = [(b - a) % WRAP for a, b in itertools.pairwise(dts)]
    assert len(dts) > 100 and all(0 < s <= HZ // 10 for s in steps), [s / HZ for s in steps if not 0 < s <= HZ // 10]
