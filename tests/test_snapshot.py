"""`GET /api/streams/{id}/snapshot.jpg`: a real camera, a real server, FFmpeg's decoder."""

from __future__ import annotations

import subprocess
import tempfile

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from supervisors.snapshot import Gathered
from tests.camera import Camera, Feed, bundled_ffmpeg
from tests.fakes import frame, pat, pmt
from tests.helpers import start_server, wait_for


def jpeg_size(jpeg: bytes) -> str:
    """The JPEG's size as FFmpeg reads it ("640x360"); fails if it is not a JPEG."""
    assert jpeg.startswith(b"\xff\xd8") and jpeg.endswith(b"\xff\xd9")
    with tempfile.NamedTemporaryFile(suffix=".jpg") as f:
        f.write(jpeg)
        f.flush()
        info = subprocess.run([bundled_ffmpeg(), "-hide_banner", "-i", f.name], capture_output=True, text=True,
                              check=False).stderr
    line = next(ln for ln in info.splitlines() if "Video: mjpeg" in ln)
    return next(word.rstrip(",") for word in line.split() if "x" in word and word.rstrip(",").replace("x", "").isdigit())




@pytest.mark.own_camera
async def test_a_running_stream_gives_its_keyframe_without_a_new_camera_session(
        camera_640: Camera, nursery: trio.Nursery) -> None:
    server = await start_server(nursery)
    stream_id = await server.create(camera_640.url())
    async with server.viewer(f"id={stream_id}") as viewer, server.http() as http:
        await viewer.play()
        sessions = camera_640.describes
        full = await http.get(f"/api/streams/{stream_id}/snapshot.jpg")
        small = await http.get(f"/api/streams/{stream_id}/snapshot.jpg?width=160")
        assert camera_640.describes == sessions  # from the upstream's GOP cache
    assert full.status_code == 200 and full.headers["content-type"] == "image/jpeg"
    assert jpeg_size(full.content) == "640x360" and jpeg_size(small.content) == "160x90"


@pytest.mark.own_camera
async def test_an_idle_stream_connects_once_for_concurrent_requests_and_reuses_the_picture(
        camera_640: Camera, nursery: trio.Nursery) -> None:
    server = await start_server(nursery)
    stream_id = await server.create(camera_640.url())
    answers: list[tuple[int, bytes]] = []

    async def ask() -> None:
        async with server.http() as http:
            response = await http.get(f"/api/streams/{stream_id}/snapshot.jpg")
        answers.append((response.status_code, response.content))

    with trio.fail_after(server.settings.ffmpeg_timeout + 5):
        async with trio.open_nursery() as asking:
            for _ in range(3):
                asking.start_soon(ask)
    assert [status for status, _ in answers] == [200, 200, 200]
    assert len({jpeg for _, jpeg in answers}) == 1  # one decode, served three times
    assert camera_640.describes == 1  # one brief connection
    assert jpeg_size(answers[0][1]) == "640x360"


@pytest.mark.parametrize(("switch", "status", "code"), [
    ("wrong password", 403, "AUTH"), ("no such path", 404, "NOT_FOUND"), ("stalled", 504, "TIMEOUT"),
    ("nothing listening", 503, "UNREACHABLE")])
async def test_each_camera_failure_gives_its_code(nursery: trio.Nursery, switch: str, status: int, code: str) -> None:
    camera = Camera(auth="digest")
    await nursery.start(camera.run)
    server = await start_server(nursery, ffmpeg_timeout=2.0)
    url = {"wrong password": camera.url(password="wrong-pass-3"), "no such path": camera.url("nothing"),
           "stalled": camera.url(), "nothing listening": "rtsp://127.0.0.1:1/live"}[switch]
    if switch == "stalled":
        camera.stall()
    stream_id = await server.create(url)
    async with server.http() as http:
        with trio.fail_after(10):
            response = await http.get(f"/api/streams/{stream_id}/snapshot.jpg")
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code and "wrong-pass-3" not in response.text


async def test_bad_requests_for_a_snapshot_get_the_error_body(camera_640: Camera, nursery: trio.Nursery) -> None:
    server = await start_server(nursery, api_token="snapshot-token-0123456789")
    admin = {"Authorization": "Bearer snapshot-token-0123456789"}
    async with server.http() as http:
        first = (await http.post("/api/streams/", json={"name": "a", "url": camera_640.url()}, headers=admin)).json()
        other = (await http.post("/api/streams/", json={"name": "b", "url": camera_640.url()}, headers=admin)).json()
        for width in ("0", "x", "99999", "1e3", "-5"):
            response = await http.get(f"/api/streams/{first['id']}/snapshot.jpg?width={width}", headers=admin)
            assert response.status_code == 400 and "width" in response.json()["error"]["fields"]
        assert (await http.get("/api/streams/999/snapshot.jpg", headers=admin)).status_code == 404
        assert (await http.get(f"/api/streams/{first['id']}/snapshot.jpg")).status_code == 401
        play = (await http.post(f"/api/streams/{first['id']}/play-token", json={"ttl": 60}, headers=admin)).json()
        mine = await http.get(f"/api/streams/{first['id']}/snapshot.jpg?width=64&token={play['token']}")
        theirs = await http.get(f"/api/streams/{other['id']}/snapshot.jpg?token={play['token']}")
    assert mine.status_code == 200 and jpeg_size(mine.content) == "64x36"
    assert theirs.status_code == 401


@given(st.lists(st.integers(min_value=1, max_value=3000), max_size=30), st.integers(min_value=1, max_value=12))
def test_the_keyframe_is_cut_at_the_next_frame_whatever_the_chunks(cuts: list[int], size: int) -> None:
    """However FFmpeg's output is chunked (mid-packet too), what is gathered is PAT, PMT
    and the keyframe's packets, whole, and nothing of the frame after it."""
    keyframe = pat() + pmt() + frame(0, key=True, size=size)
    ts = keyframe + frame(1, key=False) + frame(2, key=False)
    gathered = Gathered()
    at = 0
    for cut in [*cuts, len(ts)]:
        if gathered.complete or at >= len(ts):
            break
        gathered.add(ts[at:at + cut])
        at += cut
    assert gathered.complete and gathered.data() == keyframe


async def test_a_snapshot_waiting_its_turn_shows_the_camera_the_record_names_after_an_edit(
        camera_640: Camera, nursery: trio.Nursery) -> None:
    """A snapshot that waits for another one's decode reads the record when its turn comes:
    after an edit that moved the stream to another camera, it shows that camera, and the
    old camera gets no new session. (It used the record read before it waited.)"""
    small = Camera(feeds={"live": Feed(gop=100)}, burst=False)  # 320x240; a keyframe every 4 s, not at PLAY
    await nursery.start(small.run)
    server = await start_server(nursery, linger=0)
    stream_id = await server.create(small.url())
    async with server.http() as http:
        answers: dict[str, bytes] = {}

        async def snapshot(name: str, width: str) -> None:
            answers[name] = (await http.get(f"/api/streams/{stream_id}/snapshot.jpg{width}")).content

        async with trio.open_nursery() as requests:
            requests.start_soon(snapshot, "first", "")
            await wait_for(lambda: small.describes)  # the first one is under way, holding its turn
            requests.start_soon(snapshot, "waiting", "?width=160")
            locks = server.services.snapshots._locks._locks  # type: ignore[union-attr]
            await wait_for(lambda: any(lock.statistics().tasks_waiting for lock in locks.values()))  # its turn
            edited = await http.patch(f"/api/streams/{stream_id}/", json={"url": camera_640.url()})
            assert edited.status_code == 200
            sessions = small.describes
    assert jpeg_size(answers["waiting"]) == "160x90"  # 640x360 scaled: the camera the record names
    assert small.describes == sessions  # no session to the camera it no longer names


async def test_a_jpeg_is_not_reused_for_another_source(camera_640: Camera, nursery: trio.Nursery) -> None:
    """The JPEG kept for REUSE seconds is for the source it was made from: right after an
    edit moves the stream to another camera, a snapshot shows the new one."""
    small = Camera()
    await nursery.start(small.run)
    server = await start_server(nursery)
    stream_id = await server.create(small.url())
    async with server.http() as http:
        before = (await http.get(f"/api/streams/{stream_id}/snapshot.jpg")).content
        assert (await http.patch(f"/api/streams/{stream_id}/", json={"url": camera_640.url()})).status_code == 200
        after = (await http.get(f"/api/streams/{stream_id}/snapshot.jpg")).content
    assert (jpeg_size(before), jpeg_size(after)) == ("320x240", "640x360")
