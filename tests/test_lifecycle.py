"""Limits, DELETE and PATCH on live streams, linger, and password masking everywhere."""

from __future__ import annotations

import logging

import pytest
import trio

from tests.camera import Camera
from tests.helpers import Server, ffmpeg_children, server_log, start_server, wait_for


async def test_max_concurrent_streams_counts_upstreams_not_joins(camera: Camera, nursery: trio.Nursery) -> None:
    server = await start_server(nursery, max_concurrent_streams=1)
    async with server.viewer(f"url={camera.url()}") as a, server.viewer(f"url={camera.url()}") as b:
        await a.play()
        await b.play()  # joining a running upstream never counts
        async with server.viewer(f"url={camera.url('other')}") as c:
            await c.send("start")
            message = await c.error("LIMIT")
            assert "MAX_CONCURRENT_STREAMS" in str(message["message"])
            assert len(ffmpeg_children()) == 1
            await c.send("stop")  # not subscribed; the socket still works
            await c.status("stopped")


async def test_max_streams_per_client_counts_distinct_streams_across_sockets(nursery: trio.Nursery) -> None:
    cam = Camera(feeds={"a": Camera().feeds["live"], "b": Camera().feeds["live"]})
    await nursery.start(cam.run)
    server = await start_server(nursery, max_streams_per_client=1)
    async with server.viewer(f"url={cam.url('a')}") as a1, server.viewer(f"url={cam.url('a')}") as a2, \
            server.viewer(f"url={cam.url('b')}") as b:
        await a1.play()
        await a2.play()  # the same stream on a second socket is still one stream
        await b.send("start")
        assert "MAX_STREAMS_PER_CLIENT" in str((await b.error("LIMIT"))["message"])
        await a1.send("stop")
        await a2.send("stop")
        await a2.status("stopped")
        await b.send("start")  # 'a' lingers (LINGER): it still counts against the client that started it
        assert "MAX_STREAMS_PER_CLIENT" in str((await b.error("LIMIT"))["message"])
        assert server.registry is not None
        await wait_for(lambda: server.registry.statistics().running == 0, within=5)  # type: ignore[union-attr]
        await b.play()  # the client watches nothing else now


async def test_delete_stops_viewers_and_upstream(camera: Camera, server: Server) -> None:
    stream_id = await server.create(camera.url())
    async with server.viewer(f"id={stream_id}") as viewer:
        await viewer.play()
        async with server.http() as http:
            assert (await http.delete(f"/api/streams/{stream_id}/")).status_code == 204
        message = await viewer.error("NOT_FOUND")
        assert message["message"] == "stream deleted"
        await viewer.status("stopped")
        await wait_for(lambda: not ffmpeg_children(), within=5)
        mark = len(viewer.media)
        await viewer.send("start")  # the id is gone now
        await viewer.error("NOT_FOUND")
        assert await viewer.closed() == 1008
        assert len(viewer.media) == mark


async def test_patch_restarts_a_running_upstream_with_the_new_url(nursery: trio.Nursery, server: Server) -> None:
    cam = Camera(feeds={"a": Camera().feeds["live"], "b": Camera().feeds["live"]})
    await nursery.start(cam.run)
    stream_id = await server.create(cam.url("a"))
    async with server.viewer(f"id={stream_id}") as viewer:
        await viewer.play()
        async with server.http() as http:
            await http.patch(f"/api/streams/{stream_id}/", json={"name": "renamed"})
            await viewer.collect(0.5)
            assert [t["phase"] for t in viewer.texts] == ["connected", "connecting", "playing"]
            await http.patch(f"/api/streams/{stream_id}/", json={"url": cam.url("b")})
        await viewer.status("connecting")
        await viewer.status("playing")
        assert len(await viewer.collect(0.5)) > 0
        assert cam.paths["b"].players, "now reading from the new URL"


async def test_linger_keeps_the_upstream_for_a_returning_viewer(camera: Camera, nursery: trio.Nursery) -> None:
    server = await start_server(nursery, linger=3)
    async with server.viewer(f"url={camera.url()}") as viewer:
        await viewer.play()
    [pid] = ffmpeg_children()
    await trio.sleep(1)
    async with server.viewer(f"url={camera.url()}") as viewer:
        await viewer.play()
        assert ffmpeg_children() == [pid]
    await wait_for(lambda: not ffmpeg_children(), within=3 + 3)


async def test_linger_zero_stops_at_once(camera: Camera, nursery: trio.Nursery) -> None:
    server = await start_server(nursery, linger=0)
    async with server.viewer(f"url={camera.url()}") as viewer:
        await viewer.play()
        await viewer.send("stop")
        await viewer.status("stopped")
        await wait_for(lambda: not ffmpeg_children(), within=2.5)


@pytest.mark.parametrize("auth", ["basic", "digest"])
async def test_password_never_in_responses_messages_or_logs(
        nursery: trio.Nursery, server: Server, caplog: pytest.LogCaptureFixture, auth: str) -> None:
    caplog.set_level(logging.DEBUG)
    cam = Camera(auth=auth, password="Hunter2-Pass")
    await nursery.start(cam.run)
    wrong = "Wr0ng-Pass!x"
    bad_id = await server.create(cam.url(password=wrong))
    good_id = await server.create(cam.url())
    seen: list[str] = []
    async with server.viewer(f"id={bad_id}") as bad, server.viewer(f"id={good_id}") as good, \
            server.viewer(f"url={cam.url(password=wrong)}") as by_url:
        await bad.send("start")
        await by_url.send("start")
        await bad.error("AUTH")
        await by_url.error("AUTH")
        await good.play()
        seen += [str(t) for v in (bad, good, by_url) for t in v.texts]
    async with server.http() as http:
        for path in ("/api/streams/", f"/api/streams/{bad_id}/", f"/api/streams/{good_id}/", "/api/health/"):
            seen.append((await http.get(path)).text)
        seen.append((await http.patch(f"/api/streams/{bad_id}/", json={"url": "rtsp://u:Wr0ng-Pass!x@h:0/"})).text)
    assert any("AUTH" in s for s in seen) and any("***" in s for s in seen)
    everything = "\n".join([*seen, server_log(caplog)])
    for secret in ("Hunter2-Pass", wrong, "Wr0ng-Pass%21x"):
        assert secret not in everything
