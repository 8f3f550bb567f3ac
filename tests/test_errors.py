"""Each WebSocket error code from the matching camera switch or input (SPEC §4)."""

from __future__ import annotations

import json

import pytest
import trio

from tests.camera import Camera
from tests.helpers import Server, start_server


@pytest.mark.parametrize("auth", ["basic", "digest"])
async def test_wrong_password_is_auth_then_stopped(nursery: trio.Nursery, server: Server, auth: str) -> None:
    cam = Camera(auth=auth)
    await nursery.start(cam.run)
    async with server.viewer(f"url={cam.url(password='wrong-pass')}") as viewer:
        await viewer.send("start")
        await viewer.error("AUTH")
        await viewer.status("stopped")
    async with server.viewer(f"url={cam.url()}") as viewer:  # the right one plays
        await viewer.play()


async def test_unknown_camera_path_is_not_found(camera: Camera, server: Server) -> None:
    async with server.viewer(f"url={camera.url('nope')}") as viewer:
        await viewer.send("start")
        await viewer.error("NOT_FOUND")
        await viewer.status("stopped")


async def test_unknown_stream_id_is_not_found_and_closes_1008(server: Server) -> None:
    async with server.viewer("id=999") as viewer:
        message = await viewer.error("NOT_FOUND")
        assert "999" in str(message["message"])
        assert await viewer.closed() == 1008


async def test_refused_port_is_unreachable_then_retried(server: Server) -> None:
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with server.viewer(f"url=rtsp://127.0.0.1:{port}/live") as viewer:
        await viewer.send("start")
        await viewer.error("UNREACHABLE")
        await viewer.status("connecting", within=5)  # retry after about 1 s
        await viewer.error("UNREACHABLE")


async def test_unknown_host_is_unreachable(server: Server) -> None:
    async with server.viewer("url=rtsp://no-such-host.invalid/live") as viewer:
        await viewer.send("start")
        await viewer.error("UNREACHABLE")


async def test_silent_camera_is_timeout(nursery: trio.Nursery) -> None:
    server = await start_server(nursery, ffmpeg_timeout=1.5)
    cam = Camera()
    await nursery.start(cam.run)
    cam.stall()
    async with server.viewer(f"url={cam.url()}") as viewer:
        await viewer.send("start")
        start = trio.current_time()
        await viewer.error("TIMEOUT", within=10)
        assert trio.current_time() - start < 1.5 + 1.5
        await viewer.status("connecting", within=5)  # retried


async def test_garbage_server_is_stream_error(nursery: trio.Nursery, server: Server) -> None:
    async def babble(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        await stream.send_all(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n")
        with trio.move_on_after(0.2):
            await stream.receive_some(4096)
        await stream.send_all(b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Type: application/sdp\r\n"
                              b"Content-Length: 5\r\n\r\nhello")
        await stream.aclose()

    listeners = await nursery.start(trio.serve_tcp, babble, 0)
    port = listeners[0].socket.getsockname()[1]
    async with server.viewer(f"url=rtsp://127.0.0.1:{port}/x") as viewer:
        await viewer.send("start")
        message = await viewer.error("STREAM_ERROR")
        assert message["message"]


@pytest.mark.parametrize("frame", [
    "not json", "{}", '{"action": "dance"}', '{"action": 5}', "[1]", '"start"',
    json.dumps({"action": "start", "pad": "x" * 5000}),
])
async def test_bad_messages_are_bad_request_and_socket_stays_open(camera: Camera, server: Server,
                                                                  frame: str) -> None:
    async with server.viewer(f"url={camera.url()}") as viewer:
        await viewer.status("connected")
        await viewer.ws.send_message(frame)
        await viewer.error("BAD_REQUEST")
        await viewer.ws.send_message(b"\x00binary")
        await viewer.error("BAD_REQUEST")
        await viewer.play()


@pytest.mark.parametrize("query", ["", "id=1&url=rtsp://h/x", "id=abc", "id=-3", "url=http://h/x",
                                   "url=-rtsp://h", "url=rtsp://h:99999/x", "url=rtsp://h/x&transport=sctp",
                                   # hostile (issue 10): no 500 at the handshake
                                   "id=%C2%B2", "id=9223372036854775808", "id=1%00", "url=rtsp://h/%00",
                                   "url=rtsp://h/%E2%80%AEx", "id=1&id=2", "id="])
async def test_bad_query_is_bad_request_and_closes_1008(server: Server, query: str) -> None:
    async with server.viewer(query) as viewer:
        await viewer.error("BAD_REQUEST")
        assert await viewer.closed() == 1008


async def test_oversized_message_closes_1009_and_the_server_carries_on(camera: Camera, server: Server) -> None:
    async with server.viewer(f"url={camera.url()}") as viewer:
        await viewer.status("connected")
        await viewer.ws.send_message("x" * (100 * 1024))
        assert await viewer.closed() == 1009
    async with server.viewer(f"url={camera.url()}") as viewer:
        await viewer.play()
