"""The relay between FFmpeg and the camera (supervisors/camera/relay.py, supervisors/camera/rtsp.py): a
redirect outside the policy is never knocked on, however the camera writes it."""

from __future__ import annotations

import ssl
from collections.abc import Callable

import attrs
import pytest
import trio
import trio.lowlevel
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisors import EngineConfig, Registry, Source
from supervisors.camera.rtsp import Message, Reader, split_url
from supervisors.camera.sources import SourcePolicy
from tests.camera import Camera, bundled_ffmpeg
from tests.helpers import queued_items

POLICY = SourcePolicy.parse(["127.0.0.1/32"])  # 127.0.0.2 is outside it: refused


@attrs.define
class Doorbell:
    """A TCP listener that counts who knocks (a refused redirect target)."""

    host: str = "127.0.0.2"
    port: int = 0
    knocks: int = 0

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        [listener] = await trio.open_tcp_listeners(0, host=self.host)
        self.port = listener.socket.getsockname()[1]
        task_status.started(self.port)
        async with listener:
            while True:
                stream = await listener.accept()
                self.knocks += 1
                await stream.aclose()


@attrs.define
class HostileCamera:
    """Answers every request on a connection with `answer(request number)`, cut into
    `chunks`, then closes when the answers run out."""

    answer: Callable[[int], bytes | None]
    chunks: list[int] = attrs.Factory(lambda: [1 << 20])
    port: int = 0
    connections: int = 0

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listener.socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._serve, [listener])

    async def _serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        buffer = b""
        n = 0
        async with stream:
            try:
                while chunk := await stream.receive_some():
                    buffer += chunk
                    while b"\r\n\r\n" in buffer:
                        _, _, buffer = buffer.partition(b"\r\n\r\n")
                        data = self.answer(n)
                        n += 1
                        if data is None:
                            return
                        at = 0
                        for size in self.chunks * (len(data) // max(1, sum(self.chunks)) + 1):
                            if at >= len(data):
                                break
                            await stream.send_all(data[at : at + size])
                            at += size
                            await trio.lowlevel.checkpoint()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass


async def play_once(nursery: trio.Nursery, url: str, policy: SourcePolicy = POLICY, seconds: float = 5) -> list[object]:
    """What one viewer of `url` hears within `seconds` (the real FFmpeg, through the relay)."""
    registry = Registry(EngineConfig(ffmpeg=bundled_ffmpeg(), ffmpeg_timeout=seconds, sources=policy))
    await nursery.start(registry.run)
    heard: list[object] = []
    with registry.open_viewer("c") as viewer:
        registry.attach(viewer, "k", Source(url))
        with trio.move_on_after(seconds):
            while not any(getattr(e, "code", None) or getattr(e, "phase", None) == "playing" for e in heard):
                heard += [e for e in queued_items(viewer) if not isinstance(e, bytes)]
                await trio.sleep(0.05)
    return heard


@pytest.mark.own_camera
async def test_a_refused_redirect_is_never_knocked_on(camera: Camera, nursery: trio.Nursery) -> None:
    """The camera answers 302 to a place outside ALLOWED_SOURCES: the attempt ends
    FORBIDDEN and that place gets no connection at all, in any spelling of its address
    (FFmpeg used to connect there once before the server saw the redirect)."""
    door = Doorbell()
    await nursery.start(door.run)
    camera.redirects = {"a": f"rtsp://127.0.0.2:{door.port}/live", "b": f"rtsp://[::ffff:127.0.0.2]:{door.port}/x",
                        "c": f"RTSP://user:pw@127.0.0.2:{door.port}/y?z", "d": f"rtsps://127.0.0.2:{door.port}/"}
    for path in camera.redirects:
        heard = await play_once(nursery, camera.url(path))
        failures = [e for e in heard if getattr(e, "code", None)]
        assert failures and failures[0].code == "FORBIDDEN", heard  # type: ignore[attr-defined]
        assert "redirect refused" in failures[0].message  # type: ignore[attr-defined]
    assert door.knocks == 0


@pytest.mark.own_camera
async def test_an_allowed_redirect_plays_through_the_relay(camera: Camera, nursery: trio.Nursery) -> None:
    camera.redirects = {"moved": camera.url("live").replace("127.0.0.1", "localhost")}
    heard = await play_once(nursery, camera.url("moved"), SourcePolicy.parse(["127.0.0.0/8"]))
    assert [getattr(e, "phase", None) for e in heard][-1] == "playing", heard


REFUSED = "rtsp://127.0.0.2:{port}/live"
OPTIONS = b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY\r\n\r\n"


@st.composite
def hostile_redirects(draw: st.DrawFn, port: int) -> bytes:
    """A 3xx answer to DESCRIBE that FFmpeg would follow to 127.0.0.2, written in one of
    the ways FFmpeg's reader still reads it."""
    target = draw(st.sampled_from([REFUSED, "rtsp://[::ffff:127.0.0.2]:{port}/", "rtsp://u:p@127.0.0.2:{port}/x",
                                   "tcp://127.0.0.2:{port}"])).format(port=port)
    status = draw(st.sampled_from([b"RTSP/1.0 302 Found", b"RTSP/1.0 0302 x", b"RTSP/2.0 301", b"  RTSP/1.0\t307 ",
                                   b"RTSP/1.0 399abc"]))
    name = draw(st.sampled_from([b"Location:", b"location:", b"LOCATION:", b"LoCaTiOn:"]))
    lines = [status, b"CSeq: 2", name + draw(st.sampled_from([b" ", b"", b"\t ", b"   "])) + target.encode()]
    if draw(st.booleans()):  # an allowed Location first: FFmpeg takes the last
        lines.insert(1, b"Location: rtsp://127.0.0.1/fine")
    if draw(st.booleans()):
        lines.insert(1, b"Content-Type: application/sdp")
    body = b""
    if draw(st.booleans()):
        body = b"v=0\r\n\r\nLocation: rtsp://127.0.0.1/not-a-header\r\n"
        lines.append(b"Content-Length: %d" % len(body))
    out = b""
    for line in lines:
        if draw(st.booleans()):  # a \r anywhere: FFmpeg drops it
            at = draw(st.integers(0, len(line)))
            line = line[:at] + b"\r" + line[at:]
        if draw(st.booleans()):  # an interleaved packet where a line starts: FFmpeg skips it
            out += b"$\x00" + bytes([0, 4]) + b"\n\r\n\n"
        out += line + draw(st.sampled_from([b"\r\n", b"\n", b"\r\r\n"]))
    return out + draw(st.sampled_from([b"\r\n", b"\n"])) + body


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(st.data())
def test_no_spelling_of_a_redirect_gets_ffmpeg_past_the_relay(data: st.DataObject) -> None:
    """For any of many spellings of a redirect that FFmpeg would follow, sent in any
    chunks, the real FFmpeg behind the relay never connects to the refused place."""

    async def main() -> tuple[int, list[object]]:
        async with trio.open_nursery() as nursery:
            door = Doorbell()
            await nursery.start(door.run)
            answer = data.draw(hostile_redirects(door.port))
            chunks = data.draw(st.lists(st.integers(1, 64), min_size=1, max_size=8))
            camera = HostileCamera(lambda n: OPTIONS if n == 0 else answer if n == 1 else None, chunks)
            await nursery.start(camera.run)
            heard = await play_once(nursery, f"rtsp://127.0.0.1:{camera.port}/live", seconds=3)
            nursery.cancel_scope.cancel()
        return door.knocks, heard

    knocks, heard = trio.run(main)
    assert knocks == 0, heard


# --- the reader, as FFmpeg reads -----------------------------------------------------

def messages(stream: bytes, chunks: list[int]) -> tuple[list[Message], bytes]:
    reader = Reader()
    found = []
    at = 0
    for size in [*chunks, len(stream)]:
        reader.feed(stream[at : at + size])
        at += size
        while (message := reader.next()) is not None:
            found.append(message)
    return found, reader.rest()


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(
    st.binary(max_size=60),
    st.builds(lambda n, body: b"$" + bytes([n]) + len(body).to_bytes(2, "big") + body,
              st.integers(0, 255), st.binary(max_size=40)),
    st.sampled_from([b"\r\n", b"\n", b"\r", b"\0", b"Content-Length: 5\r\n", b"RTSP/1.0 302 x\r\n",
                     b"Location: rtsp://a/\r\n", b"Content-Length: -1\n", b"content-length:+3\r\n"]),
), max_size=30), st.lists(st.integers(1, 50), max_size=20))
def test_any_camera_bytes_read_the_same_however_cut_and_the_same_again_when_written_back(
        parts: list[bytes], chunks: list[int]) -> None:
    """Whatever a camera sends, cut anywhere, the relay reads the same messages; and the
    messages it writes back to FFmpeg read as the very same messages (FFmpeg, reading as
    the relay does, acts on nothing the relay did not see)."""
    stream = b"".join(parts)
    whole, rest = messages(stream, [])
    assert messages(stream, chunks) == (whole, rest)
    written = b"".join(message.data for message in whole)
    again, again_rest = messages(written, [])
    assert again == whole and again_rest == b""


@pytest.mark.parametrize(("url", "host", "port", "auth", "path"), [
    ("rtsp://cam/live", "cam", -1, "", "/live"),
    ("rtsp://a@b@cam:8554/x?y", "cam", 8554, "a@b", "/x?y"),
    ("rtsp://[::ffff:1.2.3.4]:99/", "::ffff:1.2.3.4", 99, "", "/"),
    ("rtsp://cam:80abc/x", "cam", 80, "", "/x"),
    ("rtsp:cam", "cam", -1, "", ""),
    ("rtsp:///x", "", -1, "", "/x"),
    ("no-scheme", "", -1, "", "no-scheme"),
    ("http://evil?x@cam/", "evil", -1, "", "?x@cam/"),
])
def test_urls_are_split_as_ffmpeg_splits_them(url: str, host: str, port: int, auth: str, path: str) -> None:
    parts = split_url(url)
    assert (parts.host, parts.port, parts.auth, parts.path) == (host, port, auth, path)


@attrs.define
class TlsFront:
    """rtsps:// in front of the test camera: TLS ends here, plain RTSP goes on to it."""

    camera_port: int
    port: int = 0

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
        [tcp] = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = tcp.socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._pipe, [trio.SSLListener(tcp, context)])

    async def _pipe(self, tls: trio.SSLStream[trio.SocketStream]) -> None:
        async def copy(source: trio.abc.Stream, sink: trio.abc.Stream, done: trio.CancelScope) -> None:
            try:
                while data := await source.receive_some():
                    await sink.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            done.cancel()

        try:
            async with tls, await trio.open_tcp_stream("127.0.0.1", self.camera_port) as plain, \
                    trio.open_nursery() as nursery:
                nursery.start_soon(copy, tls, plain, nursery.cancel_scope)
                nursery.start_soon(copy, plain, tls, nursery.cancel_scope)
        except trio.BrokenResourceError:  # a handshake that did not finish
            pass


@pytest.mark.own_camera
async def test_an_rtsps_camera_plays_through_the_relays_tls(camera: Camera, nursery: trio.Nursery) -> None:
    """The relay speaks TLS to an rtsps:// camera (its certificate not checked, as FFmpeg's
    default did) and plain RTSP to FFmpeg."""
    front = TlsFront(camera.port)
    await nursery.start(front.run)
    heard = await play_once(nursery, f"rtsps://127.0.0.1:{front.port}/live", SourcePolicy.parse(["127.0.0.0/8"]))
    assert [getattr(e, "phase", None) for e in heard][-1] == "playing", heard
