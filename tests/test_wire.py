"""The lean send path (`app/sockets/wire.py`): frames on the real socket, as clients parse them."""

from __future__ import annotations

import math
import os

import attrs
import pytest
import trio
from wsproto.frame_protocol import FrameProtocol, Opcode

from app.sockets import wire
from supervisors import Unfinished
from supervisors.media.mpegts import PACKET
from tests.camera import Camera, Feed
from tests.helpers import Server, probe, start_server, wait_for
from tests.lean import LeanViewer


def lean(server: Server, query: str, **options: object) -> LeanViewer:
    host, port = server.base.removeprefix("http://").split(":")
    return LeanViewer(host, int(port), f"/ws/stream?{query}", **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 300_000])
@pytest.mark.parametrize("opcode", [wire.TEXT, wire.BINARY])
def test_frames_parse_as_one_whole_message(size: int, opcode: int) -> None:
    """What a client's parser (wsproto's) makes of a header from `frame_header` and its payload."""
    payload: bytes | str = b"\x47" * size if opcode == wire.BINARY else "é" * (size // 2)
    data = payload if isinstance(payload, bytes) else payload.encode()
    client = FrameProtocol(client=True, extensions=[])
    client.receive_bytes(wire.frame_header(len(data), opcode) + data + wire.frame_header(1) + b"!")
    first, second = client.received_frames()
    assert first.opcode == Opcode(opcode) and first.message_finished and first.payload == payload
    assert second.opcode == Opcode.BINARY and second.payload == b"!"


async def test_a_server_without_a_wire_is_told_why() -> None:
    async def some_send(message: object) -> None:
        pass

    for send in (some_send, None):
        with pytest.raises(wire.NoWire, match="not served by Hypercorn"):
            await wire.Wire.attach(send)


@pytest.mark.parametrize("path", ["wire", "asgi"])
async def test_a_browser_like_client_that_offers_deflate_is_declined_and_gets_plain_media(
        request: pytest.FixtureRequest, camera: Camera, server: Server, path: str) -> None:
    """Browsers offer permessage-deflate; the server declines it (RFC 7692: video does not
    compress), so on Quart's path too no media message is deflated for each viewer (it
    was, at six times the CPU, before `wire.decline_deflate`)."""
    if path == "asgi":
        request.getfixturevalue("asgi_path")
    viewer = lean(server, f"url={camera.url()}", deflate=True, keep=True)
    await viewer.connect()
    assert b"permessage-deflate" not in viewer.handshake.lower()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(viewer.run)
        await viewer.send_action("start")
        with trio.fail_after(15):
            await viewer.wait_text('"playing"')
            while len(viewer.media) < 300 * PACKET:
                await viewer.got_media.wait()
                await trio.sleep(0.1)
        await viewer.aclose()
    assert '"connected"' in viewer.texts[0]
    assert viewer.compressed == 0
    video, errors = probe(bytes(viewer.media))
    assert errors == "" and "h264" in video


@pytest.mark.slow
async def test_a_client_that_reads_in_bursts_gets_every_byte_through_partial_writes(
        nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that stops reading for longer than the socket buffers hold makes the
    kernel take express frames in part; the writer finishes each before anything else, so
    the client's bytes are exactly the upstream's (a steady viewer's) with no frame torn."""
    camera = Camera(feeds={"live": Feed(size="640x360", bitrate="2M", noise=True, gop=50)})
    await nursery.start(camera.run)
    server = await start_server(nursery)
    # Linux takes a write whole while its send buffer has any room, one segment (64 KiB on
    # loopback) at a time: messages larger than that, as a keyframe of a high-rate camera
    # is, can be taken in part. Here: batches of half a second of this 2 Mbit/s camera.
    assert server.registry is not None
    server.registry.config = attrs.evolve(server.registry.config, batch_from=1, batch_window=0.5)
    taken: list[object] = []
    express = wire.Wire.express

    def counting(self: wire.Wire, media: bytes) -> bool | Unfinished:
        result = express(self, media)
        taken.append(result)
        return result

    monkeypatch.setattr(wire.Wire, "express", counting)
    steady = lean(server, f"url={camera.url()}", keep=True)
    bursty = lean(server, f"url={camera.url()}", keep=True)
    await steady.connect()
    await bursty.connect(receive_buffer=16 * 1024)
    async with trio.open_nursery() as clients:
        for viewer in (steady, bursty):
            clients.start_soon(viewer.run)
            await viewer.send_action("start")
            with trio.fail_after(15):
                await viewer.got_media.wait()
        for _ in range(3):
            bursty.pause_until = trio.current_time() + 3.5
            await trio.sleep(4)
        await trio.sleep(1)  # it has read all that was sent; the steady one has it too
        await bursty.aclose()
        await trio.sleep(0.5)
        await steady.aclose()
    partial = [t for t in taken if isinstance(t, Unfinished)]
    assert partial, "the kernel never took a frame in part: nothing was tested"
    assert any(t is True for t in taken) and bursty.compressed == 0
    print(f"express: {sum(t is True for t in taken)} whole, {taken.count(False)} not taken, {len(partial)} in part; "
          f"{len(bursty.media)} bytes")
    assert len(bursty.media) > 1_000_000
    assert bytes(bursty.media)[2 * PACKET :] in bytes(steady.media)


async def half_written_frame(nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, client: trio.Nursery,
                             **server_options: object) -> tuple[Server, LeanViewer, int]:
    """A playing client of a 2 Mbit/s camera, with messages of half a second (~125 KB)
    and a 16 KiB receive window, read in bursts until the kernel takes a frame in part;
    then it stops reading, so the rest of that frame stays unsent (the client runs in
    `client`; `resume` reads again). Also the server process's open fds before the client."""
    camera = Camera(feeds={"live": Feed(size="640x360", bitrate="2M", noise=True, gop=50)})
    await nursery.start(camera.run)
    server = await start_server(nursery, **server_options)  # type: ignore[arg-type]
    assert server.registry is not None
    server.registry.config = attrs.evolve(server.registry.config, batch_from=1, batch_window=0.5)
    fds = len(os.listdir("/proc/self/fd"))
    viewer = lean(server, f"url={camera.url()}", raw=bytearray())
    await viewer.connect(receive_buffer=16 * 1024)
    express = wire.Wire.express
    partial = trio.Event()

    def stalling(self: wire.Wire, media: bytes) -> bool | Unfinished:
        result = express(self, media)
        if isinstance(result, Unfinished) and not partial.is_set():
            viewer.pause_until = math.inf  # the client stops reading: the rest stays unsent
            partial.set()
        return result

    monkeypatch.setattr(wire.Wire, "express", stalling)
    client.start_soon(viewer.run)
    await viewer.send_action("start")
    with trio.fail_after(40):
        while not partial.is_set():  # read in bursts until the kernel takes a frame in part
            viewer.pause_until = trio.current_time() + 3.5
            await trio.sleep(4)
    return server, viewer, fds


async def test_a_client_gone_in_the_middle_of_a_frame_leaves_nothing_behind(
        nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rest of a frame taken in part holds the connection's lock; a client that goes
    away before reading it must not leave Hypercorn's ping (or close) waiting for it."""
    async with trio.open_nursery() as client:
        server, viewer, fds = await half_written_frame(nursery, monkeypatch, client, ping_interval=1)
        await trio.sleep(2.5)  # Hypercorn's pings (every 1 s here) now wait for the lock
        client.cancel_scope.cancel()
    await viewer.aclose()  # gone without a close frame
    assert server.registry is not None
    await wait_for(lambda: server.registry.statistics().viewers == 0, within=10)
    await wait_for(lambda: len(os.listdir("/proc/self/fd")) <= fds, within=10)


async def test_a_close_from_the_client_never_lands_inside_a_half_written_frame(
        nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that reads slowly sends a close while a large media frame is half on the
    wire. The rest of the frame must come before Hypercorn's close reply (or the socket
    must end): wsproto, given every byte the client received, finds only whole frames,
    each a whole number of TS packets, and the close last."""
    async with trio.open_nursery() as client:
        _, viewer, _ = await half_written_frame(nursery, monkeypatch, client)
        await trio.sleep(0.5)
        await viewer.send_close()
        await trio.sleep(1)  # Hypercorn has read the close and wants to answer it
        viewer.resume()  # read everything, to the end of the connection
        await wait_for(lambda: viewer.closed, within=15)
    await viewer.aclose()
    assert viewer.raw is not None
    parser = FrameProtocol(client=True, extensions=[])
    parser.receive_bytes(bytes(viewer.raw))
    frames = list(parser.received_frames())  # raises ParseFailed on a torn or foreign frame
    media = [f for f in frames if f.opcode is Opcode.BINARY]
    assert len(media) > 2 and all(f.frame_finished and f.message_finished for f in frames)
    assert all(len(f.payload) % PACKET == 0 and f.payload[::PACKET] == b"\x47" * (len(f.payload) // PACKET)
               for f in media), "a media frame with foreign bytes inside"
    assert frames[-1].opcode is Opcode.CLOSE, [f.opcode for f in frames[-3:]]
    before_close = sum(len(wire.frame_header(len(f.payload))) + len(f.payload) for f in frames[:-1])
    raw = bytes(viewer.raw)
    assert raw[before_close] == 0x88 and before_close + 2 + raw[before_close + 1] == len(raw), \
        "the close is not one whole frame at the very end"
