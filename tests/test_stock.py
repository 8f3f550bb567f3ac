"""The streams for stock players: `/ws/stream.ts` (binary MPEG-TS only) and
`GET /api/streams/{id}/stream.ts` (chunked MPEG-TS), through the real camera and FFmpeg."""

from __future__ import annotations

import pytest
import trio
import trio_websocket

from supervisors import HTTP_STATUS, ErrorCode
from supervisors.media.mpegts import PACKET
from tests.camera import Camera, bundled_ffmpeg
from tests.helpers import Server, ffmpeg_children, pids_in_order, probe, start_server, wait_for
from tests.lean import LeanViewer


def lean(server: Server, resource: str, **options: object) -> LeanViewer:
    host, port = server.base.removeprefix("http://").split(":")
    return LeanViewer(host, int(port), resource, **options)  # type: ignore[arg-type]


async def test_the_binary_socket_plays_at_once_and_sends_only_mpegts(camera: Camera, server: Server) -> None:
    stream_id = await server.create(camera.url())
    viewer = lean(server, f"/ws/stream.ts?id={stream_id}", keep=True)
    await viewer.connect()  # and sends nothing: a stock player does not
    async with trio.open_nursery() as nursery:
        nursery.start_soon(viewer.run)
        with trio.fail_after(15):
            while len(viewer.media) < 400 * PACKET:
                await viewer.got_media.wait()
                await trio.sleep(0.1)
        await viewer.aclose()
    assert viewer.texts == []  # no JSON at all
    assert pids_in_order(bytes(viewer.first_chunk))[:2] == [0, 0x1000]  # PAT, PMT
    video, errors = probe(bytes(viewer.media))
    assert errors == "" and "h264" in video and "320x240" in video


async def close_of(server: Server, query: str) -> tuple[int, str]:
    async with trio_websocket.open_websocket_url(f"{server.ws_base}/ws/stream.ts?{query}") as ws:
        try:
            with trio.fail_after(20):
                while True:
                    message = await ws.get_message()
                    assert isinstance(message, bytes), message
        except trio_websocket.ConnectionClosed as closed:
            return closed.reason.code, str(closed.reason.reason)
        finally:  # trio-websocket 0.12 leaves its TCP stream open when the server closes first
            with trio.CancelScope(shield=True):
                await ws._stream.aclose()
    raise AssertionError("unreachable")


async def test_the_binary_socket_reports_failures_as_4000_close_codes(nursery: trio.Nursery) -> None:
    server = await start_server(nursery, max_concurrent_streams=1)
    cam = Camera(auth="basic")
    await nursery.start(cam.run)
    assert await close_of(server, "id=999") == (4404, "NOT_FOUND")
    assert await close_of(server, "id=abc") == (4400, "BAD_REQUEST")
    assert await close_of(server, f"url={cam.url(password='wrong-pass')}") == (4403, "AUTH")
    assert await close_of(server, f"url={cam.url('nope')}") == (4404, "NOT_FOUND")
    async with server.viewer(f"url={cam.url()}") as playing:
        await playing.play()
        assert await close_of(server, f"url={cam.url('other')}") == (4429, "LIMIT")


async def test_http_stream_ts_plays_in_ffmpeg_and_shares_the_upstream(camera: Camera, server: Server) -> None:
    """What `ffmpeg -i http://…/stream.ts` (and VLC, ffplay) do: a chunked MPEG-TS
    response that decodes as the camera's video, from the upstream a socket uses too."""
    stream_id = await server.create(camera.url())
    async with server.viewer(f"id={stream_id}") as viewer:
        await viewer.play()
        done = await trio.run_process(
            [bundled_ffmpeg(), "-hide_banner", "-v", "error", "-i", f"{server.base}/api/streams/{stream_id}/stream.ts",
             "-t", "3", "-f", "framemd5", "-"], capture_stdout=True, capture_stderr=True, check=False)
        assert len(ffmpeg_children()) == 1  # one camera connection for both
    frames = [line for line in done.stdout.decode().splitlines() if line and not line.startswith("#")]
    assert done.returncode == 0 and done.stderr.decode().strip() == "", done.stderr
    assert len(frames) >= 60  # 3 s of a 25 fps camera, decoded from the first packet on
    assert server.registry is not None
    await wait_for(lambda: server.registry.statistics().viewers == 0, within=5)  # the reader left


def dechunk(body: bytes) -> bytes:
    """The data of an HTTP/1.1 chunked body, as far as it goes (the last chunk may be cut)."""
    data, pos = b"", 0
    while (eol := body.find(b"\r\n", pos)) >= 0:
        size = int(body[pos:eol], 16)
        data += body[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2
        if size == 0 or pos > len(body):
            break
    return data


async def test_http_stream_ts_starts_at_a_keyframe_and_ends_with_its_client(camera: Camera, server: Server) -> None:
    stream_id = await server.create(camera.url())
    host, port = server.base.removeprefix("http://").split(":")
    received = b""
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        await stream.send_all(f"GET /api/streams/{stream_id}/stream.ts HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        with trio.fail_after(15):
            while len(received) < 400 * PACKET:
                received += await stream.receive_some(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode().lower().split("\r\n")
    assert lines[0] == "http/1.1 200 " or lines[0].startswith("http/1.1 200")
    assert "content-type: video/mp2t" in lines and "transfer-encoding: chunked" in lines
    media = dechunk(body)
    whole = media[: len(media) // PACKET * PACKET]
    assert pids_in_order(whole)[:2] == [0, 0x1000]  # PAT, PMT, then video from a keyframe
    video, errors = probe(whole)
    assert errors == "" and "h264" in video
    assert server.registry is not None
    await wait_for(lambda: server.registry.statistics().viewers == 0, within=5)  # gone with its client


@pytest.mark.parametrize("case", ["unknown id", "auth", "limit", "silent camera"])
async def test_http_stream_ts_failures_before_media_are_error_bodies(nursery: trio.Nursery, case: str) -> None:
    server = await start_server(nursery, max_concurrent_streams=1, ffmpeg_timeout=1.5)
    cam = Camera(auth="basic")
    await nursery.start(cam.run)
    if case == "silent camera":
        cam.stall()
    code = {"unknown id": ErrorCode.NOT_FOUND, "auth": ErrorCode.AUTH, "limit": ErrorCode.LIMIT,
            "silent camera": ErrorCode.TIMEOUT}[case]
    stream_id = 999
    if case != "unknown id":
        url = {"auth": cam.url(password="wrong-pass"), "limit": cam.url("other"), "silent camera": cam.url()}[case]
        stream_id = await server.create(url)
    async with server.http() as http:
        if case == "limit":
            async with server.viewer(f"url={cam.url()}") as playing:
                await playing.play()  # the one upstream MAX_CONCURRENT_STREAMS allows
                response = await http.get(f"/api/streams/{stream_id}/stream.ts")
        else:
            response = await http.get(f"/api/streams/{stream_id}/stream.ts")
    assert response.status_code == HTTP_STATUS[code], response.text
    assert response.json()["error"]["code"] == code
    assert server.registry is not None
    await wait_for(lambda: server.registry.statistics().viewers == 0, within=5)  # nothing left behind
