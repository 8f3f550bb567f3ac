"""Playing through the real path: camera → FFmpeg → hub → WebSocket → decoded by FFmpeg."""

from __future__ import annotations

import pytest
import trio

from supervisors.media.mpegts import PACKET
from tests.camera import Camera, Feed
from tests.helpers import Server, ffmpeg_children, pids_in_order, probe, start_server, wait_for


def assert_starts_decodable(data: bytes) -> None:
    """PAT and PMT before the first media packet, and the whole thing decodes cleanly."""
    pids = pids_in_order(data)
    assert pids[0] == 0, "first packet is the PAT"
    first_media = next(i for i, pid in enumerate(pids) if pid not in (0, 0x1000, 0x11))
    assert 0 in pids[:first_media] and 0x1000 in pids[:first_media]
    video, errors = probe(data)
    assert errors == ""
    assert "h264" in video


async def test_play_by_id_gives_whole_packets_that_decode(camera: Camera, server: Server) -> None:
    stream_id = await server.create(camera.url())
    async with server.viewer(f"id={stream_id}") as viewer:
        await viewer.status("connected")
        await viewer.send("start")
        await viewer.status("connecting")
        await viewer.status("playing")
        data = await viewer.collect(2.0)
    assert all(len(m) % PACKET == 0 for m in viewer.media)
    assert len(data) > 20 * PACKET
    assert_starts_decodable(b"".join(viewer.media))
    assert "320x240" in probe(data)[0]


async def test_play_by_url(camera: Camera, server: Server) -> None:
    async with server.viewer(f"url={camera.url()}") as viewer:
        await viewer.status("connected")
        await viewer.play()
        await viewer.collect(1.0)
    assert_starts_decodable(b"".join(viewer.media))


async def test_udp_transport(camera: Camera, server: Server) -> None:
    stream_id = await server.create(camera.url(), transport="udp")
    async with server.viewer(f"id={stream_id}") as viewer:
        await viewer.play()
        await viewer.collect(1.0)
    assert "h264" in probe(b"".join(viewer.media))[0]


async def test_stop_means_no_binary_after_stopped_until_next_start(camera: Camera, server: Server) -> None:
    async with server.viewer(f"url={camera.url()}") as viewer:
        await viewer.play()
        await viewer.collect(0.5)
        await viewer.send("stop")
        await viewer.status("stopped")
        after = len(viewer.media)
        await viewer.collect(1.5)
        assert len(viewer.media) == after, "binary frame after stopped"
        await viewer.play()  # the socket stayed open: start again works
        assert len(await viewer.collect(1.0)) > 0
        assert_starts_decodable(b"".join(viewer.media[after:]))


@pytest.mark.own_camera
async def test_start_twice_says_playing_again(camera: Camera, server: Server) -> None:
    """A second start while playing answers `playing` again and starts nothing more: one
    camera session, one FFmpeg."""
    async with server.viewer(f"url={camera.url()}") as viewer:
        await viewer.play()
        await viewer.send("start")
        await viewer.status("playing")
        assert len(ffmpeg_children()) == 1 and camera.describes == 1


async def test_reconnect_restarts_the_upstream_for_every_viewer(camera: Camera, server: Server) -> None:
    async with server.viewer(f"url={camera.url()}") as a, server.viewer(f"url={camera.url()}") as b:
        await a.play()
        await b.play()
        [before] = ffmpeg_children()
        await a.send("reconnect")
        for viewer in (a, b):
            await viewer.status("connecting")
            await viewer.status("playing")
        [after] = ffmpeg_children()
        assert after != before
        mark = len(b.media)
        await b.collect(1.0)
        assert_starts_decodable(b"".join(b.media[mark:]))


@pytest.mark.own_camera
async def test_a_reconnect_from_a_socket_that_watches_nothing_restarts_nothing_and_says_why(
        camera: Camera, nursery: trio.Nursery) -> None:
    """Before its first start (and after a stop) a socket's `reconnect` gets BAD_REQUEST:
    no new camera session, nothing for the viewer who watches, and it does not stand in
    for the start that START_WITHIN asks for."""
    server = await start_server(nursery, start_within=3.0)
    stream_id = await server.create(camera.url())
    async with server.viewer(f"id={stream_id}") as watching, server.viewer(f"id={stream_id}") as idle:
        await watching.play()
        sessions, heard = camera.describes, len(watching.texts)
        await idle.send("reconnect")
        assert "send start" in str((await idle.error("BAD_REQUEST"))["message"])
        assert await idle.closed(within=10) == 1008  # no start within START_WITHIN
        assert [t["code"] for t in idle.texts if t["type"] == "error"] == ["BAD_REQUEST", "BAD_REQUEST"]
        await watching.send("stop")
        await watching.status("stopped")
        await watching.send("reconnect")
        await watching.error("BAD_REQUEST")
        await watching.play()
        assert camera.describes == sessions  # the upstream lingered and was never restarted
        assert [t for t in watching.texts[heard:] if t.get("phase") == "connecting"] == []


async def test_viewers_of_one_stream_share_one_ffmpeg(camera: Camera, server: Server) -> None:
    stream_id = await server.create(camera.url())
    async with server.viewer(f"id={stream_id}") as a, server.viewer(f"id={stream_id}") as b, \
            server.viewer(f"id={stream_id}") as c:
        for viewer in (a, b, c):
            await viewer.play()
        assert len(ffmpeg_children()) == 1
        async with server.viewer(f"url={camera.url()}") as d:  # another key: its own upstream
            await d.play()
            assert len(ffmpeg_children()) == 2
        for viewer in (a, b, c):
            assert len(await viewer.collect(0.3)) > 0


async def test_no_ffmpeg_left_after_last_viewer_leaves(camera: Camera, server: Server) -> None:
    async with server.viewer(f"url={camera.url()}") as viewer:
        await viewer.play()
        assert len(ffmpeg_children()) == 1
    # LINGER is 0.5 s here; then SIGTERM and reaping
    await wait_for(lambda: not ffmpeg_children(), within=5)


async def test_no_ffmpeg_left_after_server_stops(camera: Camera) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, linger=30)
        async with server.viewer(f"url={camera.url()}") as viewer:
            await viewer.play()
            assert len(ffmpeg_children()) == 1
            nursery.cancel_scope.cancel()
    assert ffmpeg_children() == []


@pytest.mark.parametrize(("codec", "audio", "name"), [
    ("h265", False, "hevc"), ("h265", True, "hevc"), ("h264", True, "h264")])
async def test_other_cameras_play(nursery: trio.Nursery, server: Server, codec: str, audio: bool,
                                  name: str) -> None:
    """H.265, and cameras with an AAC track: video only reaches the viewer, decodable."""
    cam = Camera(feeds={"live": Feed(codec=codec, audio=audio)})
    await nursery.start(cam.run)
    async with server.viewer(f"url={cam.url()}") as viewer:
        await viewer.play(within=5)
        await viewer.collect(1.0)
    data = b"".join(viewer.media)
    video, errors = probe(data)
    assert name in video and errors == ""
    assert set(pids_in_order(data)) <= {0, 0x11, 0x1000, 0x100}, "no audio PID"
