"""Fault injection on the real path: instant join, self-healing, dead peers, churn, no leaks."""

from __future__ import annotations

import os
import random
import signal
from contextlib import AsyncExitStack
from pathlib import Path

import attrs
import pytest
import trio
import trio.lowlevel
import trio_websocket

from app.cli.main import DEAD_AFTER, PING_INTERVAL
from tests.camera import Camera, Feed
from tests.helpers import (
    BIN,
    PACKET,
    Server,
    env,
    ffmpeg_children,
    pids_in_order,
    probe,
    rss_kib,
    spawn,
    start_server,
    wait_for,
    whole_frames,
)


@pytest.mark.parametrize("path", ["wire", "asgi"])
@pytest.mark.parametrize("batching", [False, True])
async def test_joining_mid_gop_starts_at_cached_keyframe_with_no_gap(
        request: pytest.FixtureRequest, camera: Camera, server: Server, batching: bool, path: str) -> None:
    """Every viewer's bytes are the upstream's from its join point on: batched or not, sent
    through the wire (express lane included) or through Quart's `websocket.send`."""
    if path == "asgi":
        request.getfixturevalue("asgi_path")
    if batching:  # as under load: FFmpeg's output is published in batches of up to a frame
        assert server.registry is not None
        server.registry.config = attrs.evolve(server.registry.config, batch_from=1)
    async with server.viewer(f"url={camera.url()}") as first:
        await first.play()
        await first.collect(1.5)  # the camera's GOP is 1 s: now somewhere inside one
        async with server.viewer(f"url={camera.url()}") as joiner:
            await joiner.play(within=2)
            await joiner.collect(1.0)
        await first.collect(0.3)
    joined = b"".join(joiner.media)
    pids = pids_in_order(joined)
    assert pids[:2] == [0, 0x1000], "PAT and PMT first"
    video, errors = probe(whole_frames(joined, 200))
    assert errors == "" and "h264" in video
    # after PAT+PMT, exactly the upstream's bytes from the cached keyframe on: no gap, no duplicate
    assert joined[2 * PACKET :] in b"".join(first.media)


@pytest.mark.own_camera
async def test_camera_stall_gives_timeout_then_recovers_by_itself(nursery: trio.Nursery, camera: Camera) -> None:
    server = await start_server(nursery, ffmpeg_timeout=2)
    async with server.viewer(f"url={camera.url()}") as viewer:
        await viewer.play()
        camera.stall()
        stalled = trio.current_time()
        await viewer.error("TIMEOUT", within=2 + 1)
        assert trio.current_time() - stalled <= 2 + 1
        await viewer.status("connecting")
        await trio.sleep(1)
        camera.resume()
        await viewer.status("playing", within=15)
        mark = len(viewer.media)
        await viewer.collect(1.0)
        assert len(viewer.media) > mark
        assert probe(b"".join(viewer.media[mark:]))[1] == ""


@pytest.mark.own_camera
async def test_camera_drop_recovers_by_itself(camera: Camera, server: Server) -> None:
    async with server.viewer(f"url={camera.url()}") as viewer:
        await viewer.play()
        camera.drop()
        await viewer.error("STREAM_ERROR")
        await viewer.status("connecting")
        await viewer.status("playing", within=10)


async def test_camera_restart_on_the_same_port_recovers(nursery: trio.Nursery, server: Server) -> None:
    old = Camera()
    await nursery.start(old.run)
    async with server.viewer(f"url={old.url()}") as viewer:
        await viewer.play()
        old.close()  # the camera goes away ...
        await viewer.expect({"type": "error"})
        await trio.sleep(1.5)
        new = Camera(port=old.port)  # ... and comes back on the same address
        await nursery.start(new.run)
        await viewer.status("playing", within=15)


async def test_ffmpeg_killed_from_outside_is_restarted(camera: Camera, server: Server) -> None:
    stream_id = await server.create(camera.url())
    async with server.viewer(f"id={stream_id}") as a, server.viewer(f"id={stream_id}") as b:
        await a.play()
        await b.play()
        [pid] = ffmpeg_children()
        os.kill(pid, signal.SIGKILL)
        for viewer in (a, b):
            await viewer.error("STREAM_ERROR")
            await viewer.status("connecting")
            await viewer.status("playing", within=10)
        assert ffmpeg_children() != [pid] and len(ffmpeg_children()) == 1
        async with server.http() as http:
            status = (await http.get(f"/api/streams/{stream_id}/")).json()["status"]
        assert status["phase"] == "playing" and status["viewers"] == 2 and status["restarts"] == 1
        assert status["error"]["code"] == "STREAM_ERROR" and status["bytes_in"] > 0
        assert status["video"] == {"codec": "h264", "width": 320, "height": 240}


@pytest.mark.parametrize(("ping_interval", "dead_after"), [(0.5, 2), (PING_INTERVAL, DEAD_AFTER)],
                         ids=["scaled", "defaults"])
@pytest.mark.slow
async def test_vanished_client_is_removed_and_its_ffmpeg_ends(camera: Camera, nursery: trio.Nursery,
                                                              ping_interval: float, dead_after: int) -> None:
    """A client that stops answering (no close frame, no pong) is gone within dead_after (< 30 s)."""
    server = await start_server(nursery, ping_interval=ping_interval, dead_after=dead_after)
    host, port = server.base.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    request = (f"GET /ws/stream?url={camera.url()} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n")
    await stream.send_all(request.encode())
    assert b"101" in await stream.receive_some(4096)
    # a masked text frame {"action":"start"}, then silence: no reads, no pongs, no close
    payload = b'{"action":"start"}'
    mask = b"\x01\x02\x03\x04"
    await stream.send_all(bytes([0x81, 0x80 | len(payload)]) + mask
                          + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    await wait_for(lambda: len(ffmpeg_children()) == 1, within=10)
    silent = trio.current_time()  # from here on the client neither reads nor writes
    assert server.registry is not None
    await wait_for(lambda: server.registry.statistics().viewers == 0, within=dead_after + 5)
    assert trio.current_time() - silent < min(dead_after + 1.5, 30)
    await wait_for(lambda: not ffmpeg_children(), within=0.5 + 3)
    await stream.aclose()


def open_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


@pytest.mark.slow
async def test_churn_leaves_no_process_fd_or_task(nursery: trio.Nursery) -> None:
    feeds = {name: Camera().feeds["live"] for name in ("a", "b", "c")}
    camera = Camera(feeds=feeds)
    await nursery.start(camera.run)
    # the default ping interval (15 s): a gone client's socket is closed when its handler
    # ends (`Wire.end`), not when Hypercorn's ping task next wakes
    server = await start_server(nursery, linger=0.3, max_streams_per_client=10)
    registry = server.registry
    assert registry is not None
    fds_before = open_fds()
    rng = random.Random(7)
    cycles = 0

    async def client(seed: int) -> None:
        nonlocal cycles
        r = random.Random(seed)
        while cycles < 500:
            cycles += 1
            url = camera.url(r.choice("abc"))
            # (trio-websocket's own close can wait forever on a stream closed under it)
            with trio.move_on_after(5):
                await one_client(url, r)

    async def one_client(url: str, r: random.Random) -> None:
        try:
            async with trio_websocket.open_websocket_url(f"{server.ws_base}/ws/stream?url={url}") as ws:
                try:
                    for _ in range(r.randint(1, 4)):
                        action = r.choice(["start", "start", "stop", "reconnect", "vanish"])
                        if action == "vanish":
                            break
                        await ws.send_message(f'{{"action":"{action}"}}')
                        with trio.move_on_after(r.uniform(0, 0.3)):
                            while True:
                                await ws.get_message()
                    if r.random() < 0.5:
                        await ws._stream.aclose()  # abrupt: no close frame
                finally:
                    with trio.CancelScope(shield=True):
                        await ws._stream.aclose()
        except (trio_websocket.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass


    async with trio.open_nursery() as clients:
        for i in range(8):
            clients.start_soon(client, rng.randrange(1 << 30) + i)
    assert cycles >= 500
    await wait_for(lambda: registry.statistics().viewers == 0 and registry.statistics().running == 0, within=15)
    await wait_for(lambda: not ffmpeg_children(), within=5)
    await wait_for(lambda: open_fds() <= fds_before, within=5)
    assert registry.statistics().running == 0


SLOW_TEST_SECONDS = 45  # at most: SLOW_CONSUMER comes about 19 s after the viewer stops reading
async def non_reading_client(nursery: trio.Nursery, base: str, resource: str) -> trio_websocket.WebSocketConnection:
    """A WebSocket client on a small receive window (a phone on a bad link) that stops reading."""
    host, port = base.removeprefix("http://").split(":")
    sock = trio.socket.socket()
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 64 * 1024)
    await sock.connect((host, int(port)))
    return await trio_websocket.wrap_client_stream(nursery, trio.SocketStream(sock), host, resource,
                                                   message_queue_size=1)


# What a non-reading viewer may cost the server: its queue (VIEWER_BUDGET, 4 MiB, of bytes
# shared with the others), the GOP cache (4 MiB) and slack for allocator noise.
MEMORY_BOUND_KIB = 48 * 1024


@pytest.mark.slow
async def test_non_reading_viewer_is_bounded_and_cut_off_while_others_keep_full_rate(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    camera = Camera(feeds={"live": Feed(size="640x360", bitrate="2M", noise=True, gop=50)})
    await nursery.start(camera.run)
    server = await spawn(nursery, [str(BIN / "rtsp-viewer"), "serve", "--port", "0"], env(tmp_path))
    try:
        remote = Server(await server.url(), settings=None)  # type: ignore[arg-type]
        stream_id = await remote.create(camera.url())
        async with AsyncExitStack() as stack:
            normal = [await stack.enter_async_context(remote.viewer(f"id={stream_id}")) for _ in range(5)]
            for viewer in normal:
                await viewer.play()
            slow = await non_reading_client(nursery, remote.base, f"/ws/stream?id={stream_id}")
            await slow.send_message('{"action":"start"}')  # and never read again
            await trio.sleep(5)
            baseline = rss_kib(server.process.pid)
            async with remote.http() as http:
                bytes_before = (await http.get(f"/api/streams/{stream_id}/")).json()["status"]["bytes_in"]
                marks = [sum(len(m) for m in v.media) for v in normal]
                peak = baseline
                start = trio.current_time()
                with trio.fail_after(SLOW_TEST_SECONDS):
                    while "SLOW_CONSUMER" not in server.stderr:
                        await trio.sleep(1)
                        peak = max(peak, rss_kib(server.process.pid))
                        # it says it is alive (an unsolicited pong, RFC 6455 5.5.3) without
                        # reading: the server's dead-peer time (25 s without a byte) is not
                        # what ends it; SLOW_CONSUMER is
                        await slow.pong()
                measured = trio.current_time() - start
                status = (await http.get(f"/api/streams/{stream_id}/")).json()["status"]
            upstream = status["bytes_in"] - bytes_before
            for viewer, mark in zip(normal, marks, strict=True):
                got = sum(len(m) for m in viewer.media) - mark
                assert got >= 0.95 * upstream, (got, upstream)
            assert peak - baseline < MEMORY_BOUND_KIB, (baseline, peak)
            assert status["viewers"] == 5, "the slow viewer was cut off"
            assert status["drops"] >= 1
            print(f"SLOW_CONSUMER {5 + measured:.1f} s after it stopped reading; upstream "
                  f"{upstream * 8 / measured / 1e6:.2f} Mbit/s, RSS {baseline / 1024:.1f} -> peak {peak / 1024:.1f} MiB")
            # Reading again at once, it finds what the server queued last: SLOW_CONSUMER,
            # then a 1008 close (the clean close of the contract; a 1006 would be a bug)
            texts: list[str] = []
            with trio.fail_after(30):
                try:
                    while True:
                        message = await slow.get_message()
                        if isinstance(message, str):
                            texts.append(message)
                except trio_websocket.ConnectionClosed as closed:
                    assert closed.reason.code == 1008, (closed.reason, texts)
            assert "SLOW_CONSUMER" in texts[-1], texts
            await slow._stream.aclose()
    finally:
        server.process.terminate()
        with trio.move_on_after(10, shield=True):
            await server.process.wait()


async def test_an_open_media_socket_holds_nothing_of_quart(nursery: trio.Nursery) -> None:
    """The media sockets are served from ASGI before Quart (`app/sockets/asgi.py`): Quart's
    per-socket tasks, channel, headers and context were about 12 KiB of each viewer's
    50 (tracemalloc). 50 sockets, open and not started, hold nothing allocated in Quart,
    quart-trio or Werkzeug code (through Quart: 380 KB, about 7.6 KiB a socket)."""
    import gc
    import tracemalloc

    from tests.lean import LeanViewer

    server = await start_server(nursery, max_connections_per_client=100)
    host, port = server.base.removeprefix("http://").split(":")
    under = [tracemalloc.Filter(True, pattern) for pattern in ("*/quart/*", "*/quart_trio/*", "*/werkzeug/*")]
    tracemalloc.start(1)
    try:
        before = tracemalloc.take_snapshot().filter_traces(under)
        viewers = []
        for _ in range(50):
            viewer = LeanViewer(host, int(port), "/ws/stream?url=rtsp://127.0.0.1:9/x")
            await viewer.connect()
            nursery.start_soon(viewer.run)
            viewers.append(viewer)
        await wait_for(lambda: all(any('"connected"' in t for t in v.texts) for v in viewers), within=10)
        gc.collect()
        grown = sum(stat.size_diff for stat in tracemalloc.take_snapshot().filter_traces(under).compare_to(
            before, "filename"))
    finally:
        tracemalloc.stop()
    assert grown < 50 * 1024, f"{grown} bytes held by Quart for 50 open sockets"
    for viewer in viewers:
        await viewer.aclose()


async def test_a_playing_viewer_keeps_no_copy_of_the_gop_it_joined_with(nursery: trio.Nursery) -> None:
    """A joiner's first message is PAT, PMT and the cached GOP joined into one (hundreds of
    KB at 2 Mbit/s). Once it is sent, nothing of it may stay: with the express lane the
    socket's writer waits for minutes, and it used to hold its last message meanwhile
    (about 250 KB a viewer, found with tracemalloc; this test failed with 10 viewers
    holding 3.9 MB)."""
    import gc
    import tracemalloc

    from tests.lean import LeanViewer

    camera = Camera(feeds={"live": Feed(size="640x360", bitrate="2M", noise=True, gop=50)})
    await nursery.start(camera.run)
    server = await start_server(nursery, max_connections_per_client=100)
    stream_id = await server.create(camera.url())
    host, port = server.base.removeprefix("http://").split(":")
    tracemalloc.start(1)
    try:
        viewers = []
        for _ in range(10):
            viewer = LeanViewer(host, int(port), f"/ws/stream?id={stream_id}")
            await viewer.connect()
            nursery.start_soon(viewer.run)
            await viewer.send_action("start")
            viewers.append(viewer)
            await trio.sleep(0.1)  # each joins at another point of the GOP
        # playing: media now goes out through the express lane
        await wait_for(lambda: all(v.media_bytes > 200_000 for v in viewers), within=20)
        gc.collect()
        held = sum(stat.size for stat in tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, "*supervisors/viewer.py")]).statistics("filename"))
    finally:
        tracemalloc.stop()
    assert all(v.media_bytes > 200_000 for v in viewers)  # they got their GOP and played on
    assert held < 500_000, f"{held} bytes of queued or sent media held by 10 viewers"
    for viewer in viewers:
        await viewer.aclose()
