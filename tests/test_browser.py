"""In a real headless Chromium: stock mpegts.js plays the streams for stock players.

Each test asserts on the `<video>` element: its width is the camera's, `currentTime`
advances at the real-time rate, and in steady state frames are presented and none is
dropped. A screenshot of each lands in the test's output folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.browser import watch
from tests.camera import Camera, Feed
from tests.helpers import Server, start_server

WATCH = 8.0  # seconds in the browser
STEADY = 3.0  # after this long a player is past its start


@pytest.fixture
async def camera_640(nursery: trio.Nursery) -> Camera:
    cam = Camera(feeds={"live": Feed(size="640x360", bitrate="1M")})
    await nursery.start(cam.run)
    return cam


@pytest.mark.parametrize("how", ["websocket", "http"])
async def test_stock_mpegts_js_plays_with_its_stock_config(
        camera_640: Camera, nursery: trio.Nursery, tmp_path: Path, how: str) -> None:
    """`mpegts.createPlayer({type: 'mpegts', isLive: true, url})`, nothing more:
    app/static/minimal.html, on /ws/stream.ts or on the HTTP stream.ts."""
    server: Server = await start_server(nursery)
    stream_id = await server.create(camera_640.url())
    query = f"id={stream_id}" + ("&http" if how == "http" else "")
    watched = await watch(f"{server.base}/static/minimal.html?{query}", WATCH, tmp_path / f"stock-{how}.png")
    first, last = watched.steady(STEADY)
    assert (last.width, last.height) == (640, 360), watched.console[-5:]
    rate = (last.position - first.position) / (last.at - first.at)
    assert 0.8 <= rate <= 1.2, f"currentTime advanced at {rate:.2f}x real time"
    assert last.presented - first.presented >= 0.8 * 25 * (last.at - first.at)  # a 25 fps camera
    assert last.dropped == first.dropped, "frames dropped in steady state"
