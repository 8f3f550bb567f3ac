"""Fragmented MP4 (issue 12, point 1): `format=fmp4` on the sockets, and `stream.mp4`.

A real camera, the real server and its remux FFmpeg; the bytes are read by FFmpeg
(codec, size, frame rate, decode errors) and by a small box reader of the test's own.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import tempfile
from functools import cache
from itertools import pairwise
from pathlib import Path

import attrs
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisors import Phase, Status
from supervisors.events import Media
from supervisors.media.fmp4 import BrokenStream, Fragment, Fragments, Init, boxes, child
from supervisors.remux import FragmentHub, remux_argv
from supervisors.tally import StreamTally
from supervisors.viewer import Viewer as QueueViewer
from tests.camera import Camera, Feed, bundled_ffmpeg
from tests.helpers import Server, Viewer, queued_items, start_server, wait_for


def probe_mp4(data: bytes) -> tuple[str, str]:
    """(the video stream's description, decode errors) of MP4 bytes, by FFmpeg."""
    with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
        f.write(data)
        f.flush()
        info = subprocess.run([bundled_ffmpeg(), "-hide_banner", "-i", f.name], capture_output=True, text=True,
                              check=False).stderr
        decode = subprocess.run([bundled_ffmpeg(), "-hide_banner", "-v", "error", "-i", f.name, "-f", "null", "-"],
                                capture_output=True, text=True, check=False)
    video = next((ln.strip() for ln in info.splitlines() if "Video:" in ln), info)
    return video, decode.stderr.strip()


def parse(data: bytes) -> list[Init | Fragment]:
    return Fragments().feed(data)


def tfdts(data: bytes) -> list[int]:
    """baseMediaDecodeTime of the video track's runs, fragment by fragment."""
    times = []
    for item in parse(data):
        if isinstance(item, Init):  # the first, or again after a restart
            init = item
            continue
        for kind, start, end in boxes(item.data, 8, struct.unpack_from(">I", item.data)[0]):
            tfhd = child(item.data, start, end, b"tfhd") if kind == b"traf" else None
            if tfhd is None or struct.unpack_from(">I", item.data, tfhd[0] + 4)[0] != init.video_track:
                continue
            tfdt = child(item.data, start, end, b"tfdt")
            assert tfdt is not None
            version = item.data[tfdt[0]]
            times.append(struct.unpack_from(">Q" if version else ">I", item.data, tfdt[0] + 4)[0])
    return times


def sps_codec(init: bytes) -> str:
    """avc1.PPCCLL from the SPS NAL inside avcC (not from avcC's own copy of those bytes)."""
    at = init.index(b"avcC") + 4
    sps_length = struct.unpack_from(">H", init, at + 6)[0]
    sps = init[at + 8 : at + 8 + sps_length]
    assert sps[0] & 0x1F == 7, "an SPS NAL"
    return f"avc1.{sps[1]:02x}{sps[2]:02x}{sps[3]:02x}"


def first_media_text_then_init(viewer: Viewer) -> str:
    """The `media` message's MIME type; it comes before the first binary frame, which is
    the init segment."""
    kinds = [m.get("type") if isinstance(m, dict) else "binary" for m in viewer.log]
    assert "media" in kinds and kinds.index("media") < kinds.index("binary"), kinds
    assert viewer.media[0][4:8] == b"ftyp", viewer.media[0][:16]
    return str(next(m for m in viewer.texts if m.get("type") == "media")["mime"])


def remuxers() -> list[int]:
    """The remux FFmpeg processes of this test process (MPEG-TS from stdin)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if b"pipe:0" in argv and b"mp4" in argv and stat[0] != "Z" and int(stat[1]) == os.getpid():
            found.append(int(entry.name))
    return found


async def test_an_fmp4_session_is_the_camera_video_from_a_keyframe_with_the_codec_string_of_its_sps(
        camera: Camera, nursery: trio.Nursery) -> None:
    server = await start_server(nursery)
    stream_id = await server.create(camera.url())
    async with server.viewer(f"id={stream_id}&format=fmp4") as viewer:
        await viewer.play()
        await viewer.collect(2.5)
    mime = first_media_text_then_init(viewer)
    data = b"".join(viewer.media)
    items = parse(data)
    init, first = items[0], items[1]
    assert isinstance(init, Init) and isinstance(first, Fragment) and first.key
    assert mime == f'video/mp4; codecs="{sps_codec(init.data)}"', mime
    video, errors = probe_mp4(data)
    assert "h264" in video and "320x240" in video and "25 tbr" in video, video
    steps = sorted(b - a for a, b in pairwise(tfdts(data)))
    assert steps[len(steps) // 2] == 90_000 // 25  # the camera's frame rate, frame by frame
    assert not errors, errors
    assert len(items) > 50  # one fragment per frame: 25 fps for 2.5 s


@pytest.mark.own_camera
async def test_a_joiner_gets_the_gop_at_once_and_every_format_shares_one_camera_session(
        camera: Camera, nursery: trio.Nursery) -> None:
    """A TS viewer and two fMP4 viewers: one camera session, one remuxer; the joiner's
    first fragment is a keyframe, with the frames since it, at once. When the fMP4
    viewers leave, the remuxer ends while the TS viewer plays on."""
    server = await start_server(nursery)
    stream_id = await server.create(camera.url())
    async with server.viewer(f"id={stream_id}") as ts_viewer:
        await ts_viewer.play()
        async with server.viewer(f"id={stream_id}&format=fmp4") as first:
            await first.play()
            await trio.sleep(0.6)  # into the GOP (25 frames per second, one keyframe a second)
            async with server.viewer(f"id={stream_id}&format=fmp4") as joiner:
                sent_before = len(first.media)
                await joiner.send("start")
                await wait_for(lambda: len(joiner.media) >= 2, within=5, step=0.01)
                await joiner.collect(0.5)
            assert camera.describes == 1 and len(remuxers()) == 1
        items = parse(b"".join(joiner.media))
        assert isinstance(items[1], Fragment) and items[1].key
        # not the next keyframe: the cached one, which the first viewer had before the joiner came
        assert tfdts(b"".join(joiner.media[:2]))[0] in tfdts(b"".join(first.media[:sent_before]))
        assert sum(isinstance(i, Fragment) for i in items[:30]) > 10  # the GOP came along
        first_media_text_then_init(joiner)
        await wait_for(lambda: not remuxers(), within=10)
        before = len(ts_viewer.media)
        await wait_for(lambda: len(ts_viewer.media) > before, within=10)  # the mpegts viewer plays on


async def test_a_restart_keeps_fragment_times_increasing(camera: Camera, nursery: trio.Nursery) -> None:
    server = await start_server(nursery)
    stream_id = await server.create(camera.url())
    async with server.viewer(f"id={stream_id}&format=fmp4") as viewer:
        await viewer.play()
        await viewer.collect(1.5)
        await viewer.reconnect()
        await viewer.collect(1.5)
    times = tfdts(b"".join(viewer.media))
    steps = [b - a for a, b in pairwise(times)]
    assert len(times) > 50 and all(step > 0 for step in steps), steps
    assert max(steps) < 90_000 // 2, max(steps)  # the restart is no gap in the timeline either


async def test_a_camera_of_another_codec_or_size_gets_a_new_init_segment_and_media_message(
        camera: Camera, nursery: trio.Nursery) -> None:
    """The stream moves to a camera with another size (and H.264 level) and then to an
    H.265 one: after each `connecting`, the `media` message names the new codecs and the
    init segment that follows describes the new video (the remuxer kept the first one)."""
    big = Camera(feeds={"live": Feed(size="640x360")})
    hevc = Camera(feeds={"live": Feed(codec="h265")})
    for cam in (big, hevc):
        await nursery.start(cam.run)
    server = await start_server(nursery)
    stream_id = await server.create(camera.url())
    seen: list[tuple[str, str]] = []
    async with server.viewer(f"id={stream_id}&format=fmp4") as viewer, server.http() as http:
        for url in (None, big.url(), hevc.url()):
            mark = len(viewer.media)
            if url is None:
                await viewer.send("start")
            else:
                assert (await http.patch(f"/api/streams/{stream_id}/", json={"url": url})).status_code == 200
                await viewer.status("connecting")
                mark = len(viewer.media)
            media = await viewer.expect({"type": "media"})
            await viewer.status("playing")
            await wait_for(lambda mark=mark: len(viewer.media) > mark + 25)
            data = b"".join(viewer.media[mark:])
            assert data[4:8] == b"ftyp", data[:16]
            seen.append((str(media["mime"]), probe_mp4(data)[0]))
    (first_mime, first), (big_mime, bigger), (hevc_mime, h265) = seen
    assert "320x240" in first and "640x360" in bigger and "hevc" in h265, seen
    assert first_mime != big_mime and "avc1" in big_mime and ("hvc1" in hevc_mime or "hev1" in hevc_mime), seen


async def test_stream_mp4_over_http_plays_in_ffmpeg_and_mpeg1_is_refused(camera: Camera, nursery: trio.Nursery) -> None:
    """What `ffmpeg -i http://…/stream.mp4` (and VLC) do: a chunked fMP4 response that
    decodes as the camera's video from its first frame."""
    server = await start_server(nursery)
    stream_id = await server.create(camera.url())
    mpeg1 = await server.create(camera.url(), name="jsmpeg", video="mpeg1")
    done = await trio.run_process(
        [bundled_ffmpeg(), "-hide_banner", "-v", "error", "-i", f"{server.base}/api/streams/{stream_id}/stream.mp4",
         "-t", "2", "-f", "framemd5", "-"], capture_stdout=True, capture_stderr=True, check=False)
    frames = [line for line in done.stdout.decode().splitlines() if line and not line.startswith("#")]
    assert done.returncode == 0 and done.stderr.decode().strip() == "", done.stderr
    assert len(frames) >= 40
    async with server.http() as http:
        refused = await http.get(f"/api/streams/{mpeg1}/stream.mp4")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "BAD_REQUEST", refused.text
    async with server.viewer(f"id={mpeg1}&format=fmp4") as viewer:
        await viewer.send("start")
        assert "fmp4" in str((await viewer.error("BAD_REQUEST"))["message"])
    async with server.viewer(f"id={stream_id}&format=webm") as viewer:
        assert "format" in str((await viewer.error("BAD_REQUEST"))["message"])
        assert await viewer.closed() == 1008  # refused at the handshake (and not raced by our own close)


@cache
def recorded() -> bytes:
    """A few seconds of FFmpeg's fMP4 with video and audio, as the remuxer writes it."""
    return subprocess.run([
        bundled_ffmpeg(), "-hide_banner", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "3", "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-c:a", "aac",
        "-f", "mp4", "-movflags", remux_argv("ffmpeg")[-4], "pipe:1"],
        capture_output=True, check=True).stdout


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40_000), min_size=1, max_size=60))
def test_fragments_are_the_same_however_the_bytes_are_chunked(cuts: list[int]) -> None:
    data = recorded()
    whole = parse(data)
    assert isinstance(whole[0], Init) and whole[0].mime.startswith('video/mp4; codecs="avc1.')
    assert whole[0].mime.endswith(',mp4a.40.2"') and sum(isinstance(i, Fragment) and i.key for i in whole) == 3
    fragments, got, at = Fragments(), [], 0
    for size in cuts:
        got += fragments.feed(data[at : at + size])
        at += size
    got += fragments.feed(data[at:])
    assert got == whole


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_bytes_that_are_not_fmp4_are_refused_or_waited_for_never_a_crash(junk: bytes) -> None:
    try:
        Fragments().feed(junk)
    except BrokenStream:
        pass


async def test_the_openapi_document_names_stream_mp4(server: Server) -> None:
    async with server.http() as http:
        paths = (await http.get("/api/openapi.json")).json()["paths"]
    assert "/api/streams/{stream_id}/stream.mp4" in paths


async def test_a_new_remuxer_goes_on_with_the_stream_timeline(camera: Camera, nursery: trio.Nursery) -> None:
    """A player that keeps its MediaSource across sockets (the page after a stop and a
    start) must not get times behind what it has played: each remuxer's `tfdt` follows
    the stream's timeline, not its own start (it failed with every remuxer at 0)."""
    server = await start_server(nursery)
    stream_id = await server.create(camera.url())
    async with server.viewer(f"id={stream_id}&format=fmp4") as first:
        await first.play()
        await first.collect(1.0)
    await wait_for(lambda: not remuxers(), within=10)
    async with server.viewer(f"id={stream_id}&format=fmp4") as second:
        await second.play()
        await second.collect(1.0)
    before, after = tfdts(b"".join(first.media)), tfdts(b"".join(second.media))
    assert after[0] > before[-1], (before[-1], after[0])


def _token(kind: str, number: int, size: int) -> bytes:
    return f"<{kind}{number}>".encode().ljust(size, b".")


@settings(max_examples=500, deadline=None)
@given(budget=st.integers(min_value=600, max_value=6000), gop_limit=st.integers(min_value=200, max_value=5000),
       steps=st.lists(st.one_of(
           st.just(("init", 0, 0)), st.tuples(st.just("fragment"), st.integers(0, 1), st.integers(10, 900)),
           st.tuples(st.just("join"), st.integers(0, 2), st.just(0)),
           st.tuples(st.just("leave"), st.integers(0, 2), st.just(0)),
           st.tuples(st.just("read"), st.integers(0, 2), st.integers(1, 6)),
           st.just(("restart", 0, 0)), st.just(("end", 0, 0))), max_size=120))
def test_any_interleaving_gives_each_fmp4_viewer_media_init_a_keyframe_then_every_fragment_in_order(
        budget: int, gop_limit: int, steps: list[tuple[str, int, int]]) -> None:
    """Joins, leaves, slow reads (overflows), new init segments, upstream restarts and
    remuxer ends in any order: a viewer's bytes are runs that each begin with the `media`
    event, the init segment and a keyframe fragment, then the fragments published after
    it, none missing, none reordered, and none from before a restart after its `connecting`."""
    hub = FragmentHub(gop_limit=gop_limit, on_slow=lambda viewer: None, tally=StreamTally())
    viewers = [QueueViewer(f"v{i}", budget=budget, clock=lambda: 0.0) for i in range(3)]
    checks = [RunCheck() for _ in viewers]
    inits = fragments = 0
    since = 1  # the first fragment of the current attempt (after the last restart or remuxer end)
    for kind, a, b in steps:
        if kind == "init":
            inits += 1
            hub.publish(Init(_token("I", inits, 30), f'video/mp4; codecs="avc1.{inits}"', 1, {}))
        elif kind == "fragment":
            fragments += 1
            hub.publish(Fragment(_token("K" if a else "F", fragments, b), bool(a)))
        elif kind == "join" and viewers[a] not in hub.viewers:
            checks[a].at_least = since  # a joiner gets nothing of an attempt that is over
            hub.attach(viewers[a])
        elif kind == "leave":
            hub.detach(viewers[a])
            viewers[a].clear_media()
        elif kind == "read":
            for _ in range(b):
                try:
                    checks[a].take(viewers[a].next_nowait())
                except trio.WouldBlock:
                    break
        elif kind == "restart":  # as Hub.restart: every viewer starts over after `connecting`
            since = fragments + 1
            hub.reset()
            for i, viewer in enumerate(viewers):
                if viewer in hub.viewers:
                    viewer.restart()
                    checks[i].restarts.append(fragments + 1)
        elif kind == "end":
            since = fragments + 1
            hub.end()
    for viewer, check in zip(viewers, checks, strict=True):  # and whatever is still queued
        for item in queued_items(viewer):
            check.take(item)


@attrs.define
class RunCheck:
    """What one viewer has sent, checked as it goes (see the property test)."""

    restarts: list[int] = attrs.Factory(list)  # per `connecting` queued: the first fragment after it
    expect_init: bool = False
    last: int | None = None
    at_least: int = 0

    def take(self, item: object) -> None:
        if isinstance(item, Media):
            self.expect_init, self.last = True, None
        elif isinstance(item, Status) and item.phase is Phase.CONNECTING:
            self.at_least, self.last = self.restarts.pop(0), None
        elif isinstance(item, bytes):
            for kind, number in re.findall(rb"<([IKF])(\d+)>", item):
                n = int(number)
                if kind == b"I":
                    assert self.expect_init, "an init segment comes right after its media event"
                    self.expect_init = False
                elif self.last is None:
                    assert kind == b"K" and not self.expect_init, "a run starts with its init and a keyframe"
                    assert n >= self.at_least, "nothing of before the restart after its connecting"
                    self.last = n
                else:
                    assert n == self.last + 1, "nothing missing or reordered within a run"
                    self.last = n


def test_the_ts_given_to_the_remuxer_is_not_counted_as_given_to_viewers() -> None:
    """rtsp_bytes_out_total counts what viewers got: the remuxer's copy of the TS is not one."""
    from supervisors.hub import Hub
    from tests.fakes import frame, pat, pmt

    tally = StreamTally()
    hub = Hub(tally=tally)
    viewer, remuxer = (QueueViewer(name, budget=1 << 20, clock=lambda: 0.0) for name in ("v", "remux"))
    hub.attach(viewer)
    hub.feed_internal(remuxer)
    for index in range(6):
        hub.publish((pat() + pmt() if index == 0 else b"") + frame(index, key=index % 3 == 0))
    given = sum(len(item) for item in queued_items(viewer) if isinstance(item, bytes))
    assert sum(len(item) for item in queued_items(remuxer) if isinstance(item, bytes)) == given > 0
    assert tally.bytes_out == given  # once, not twice
