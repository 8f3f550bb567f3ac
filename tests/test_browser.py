"""In a real headless Chromium: stock mpegts.js plays the streams for stock players.

Each test asserts on the `<video>` element: its width is the camera's, `currentTime`
advances at the real-time rate, and in steady state frames are presented and none is
dropped (in a `tests.browser.clean_window`). A screenshot of each lands in the test's
output folder.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from tests.browser import Watched, few_dropped, watch
from tests.camera import Camera
from tests.helpers import Server, start_server, wait_for

WATCH = 8.0  # seconds in the browser
STEADY = 3.0  # after this long a player is past its start




@pytest.mark.parametrize("how", ["websocket", "http"])
async def test_stock_mpegts_js_plays_with_its_stock_config(
        camera_640: Camera, nursery: trio.Nursery, tmp_path: Path, how: str) -> None:
    """`mpegts.createPlayer({type: 'mpegts', isLive: true, url})`, nothing more:
    app/static/minimal.html, on /ws/stream.ts or on the HTTP stream.ts."""
    server: Server = await start_server(nursery)
    stream_id = await server.create(camera_640.url())
    query = f"id={stream_id}" + ("&http" if how == "http" else "")
    watched = await watch(f"{server.base}/static/minimal.html?{query}", WATCH, tmp_path / f"stock-{how}.png")
    first, last = watched.steady(STEADY, 3.0)
    assert (last.width, last.height) == (640, 360), watched.console[-5:]
    rate = (last.position - first.position) / (last.at - first.at)
    assert 0.8 <= rate <= 1.2, f"currentTime advanced at {rate:.2f}x real time"
    assert last.presented - first.presented >= 0.8 * 25 * (last.at - first.at)  # a 25 fps camera
    assert few_dropped(last.dropped - first.dropped, last.presented - first.presented), \
        f"{last.dropped - first.dropped} frames dropped in {last.presented - first.presented}, in every window"


async def watch_interrupted(url: str, seconds: float, screenshot: Path,
                            interrupt: Callable[[], Awaitable[tuple[float, float]]]) -> tuple[Watched, float, float]:
    """Watch `url`; 2 s after it plays, run `interrupt`, which returns when (monotonic) the
    picture's source went away and when media flowed again."""
    watched: list[Watched] = []
    playing = trio.Event()

    async def browse() -> None:
        watched.append(await watch(url, seconds, screenshot, playing))

    async with trio.open_nursery() as browsing:
        browsing.start_soon(browse)
        with trio.fail_after(10):
            await playing.wait()
        await trio.sleep(2)
        gone, flowing = await interrupt()
    return watched[0], gone, flowing


def assert_resumed(watched: Watched, gone: float, flowing: float) -> None:
    """The picture moved again after media flowed, then at real-time rate for 2 s or more
    (how soon it moved is not asserted: a test waits for conditions, never times)."""
    at_gone = max((s for s in watched.samples if s.wall <= gone), key=lambda s: s.wall)
    after = watched.since(flowing)
    moved = [s for s in after if s.position > at_gone.position + 0.5]
    assert after and after[-1].wall - flowing >= 4, "the watch ended too early"
    assert moved, f"the picture did not move again: at {at_gone.position:.2f} s when it went, " \
                  f"then {[round(s.position, 2) for s in after]}"
    first, last = moved[0], after[-1]
    assert last.wall - first.wall >= 2, "the watch ended too early"
    rate = (last.position - first.position) / (last.wall - first.wall)
    assert 0.8 <= rate <= 1.2, f"after the restart currentTime advanced at {rate:.2f}x real time"
    assert last.presented > first.presented and last.width == 640


@pytest.mark.slow
async def test_stock_mpegts_js_plays_on_across_a_reconnect_with_one_player(
        camera_640: Camera, nursery: trio.Nursery, tmp_path: Path) -> None:
    """Another client's `reconnect` restarts the upstream: a new FFmpeg, whose timestamps
    the relay puts on the stream's timeline, so the same player instance keeps playing;
    the picture moves again and then at real-time rate."""
    server: Server = await start_server(nursery)
    stream_id = await server.create(camera_640.url())

    async def reconnect() -> tuple[float, float]:
        async with server.viewer(f"id={stream_id}") as other:
            await other.play()
            await other.send("reconnect")
            restarted = time.monotonic()
            await other.status("connecting")
            await other.status("playing")
            return restarted, time.monotonic()

    watched, gone, flowing = await watch_interrupted(
        f"{server.base}/static/minimal.html?id={stream_id}", 16, tmp_path / "reconnect.png", reconnect)
    assert_resumed(watched, gone, flowing)


@pytest.mark.own_camera
@pytest.mark.slow
async def test_the_protocol_loader_keeps_one_socket_and_player_through_a_camera_outage(
        camera_640: Camera, nursery: trio.Nursery, tmp_path: Path) -> None:
    """app/static/protocol.html: mpegts.js with protocol-loader.js on /ws/stream. The
    camera goes silent and drops its sessions until the server notices; the server reports
    the failure, retries and plays again on the same socket, and the same player shows
    the picture again once media flows."""
    server: Server = await start_server(nursery, ffmpeg_timeout=1.5)
    stream_id = await server.create(camera_640.url())
    assert server.registry is not None
    status = server.registry.status

    async def outage() -> tuple[float, float]:
        camera_640.stall()
        camera_640.drop()
        out = time.monotonic()
        # silent until the server has noticed (the dropped session, or FFMPEG_TIMEOUT 1.5 s)
        await wait_for(lambda: status(f"id:{stream_id}").phase != "playing", within=15)
        resumed = time.time()
        camera_640.resume()
        await wait_for(lambda: status(f"id:{stream_id}").phase == "playing"
                       and (status(f"id:{stream_id}").since or 0) >= resumed, within=10)
        return out, time.monotonic()

    watched, gone, flowing = await watch_interrupted(
        f"{server.base}/static/protocol.html?id={stream_id}", 24, tmp_path / "outage.png", outage)
    assert_resumed(watched, gone, flowing)
    kinds = [m.get("phase") or m.get("code") for m in watched.messages]
    assert kinds.count("connected") == 1, kinds  # one socket all along
    assert kinds[:3] == ["connected", "connecting", "playing"], kinds
    failed = next(i for i, kind in enumerate(kinds) if kind in ("STREAM_ERROR", "TIMEOUT"))
    assert "connecting" in kinds[failed:] and kinds[-1] == "playing", kinds
