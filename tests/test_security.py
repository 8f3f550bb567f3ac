"""Security (issue 10) through the real server: masking, access control, origins and
hosts, sources under policy, abuse limits, hostile input, data at rest."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from tests.camera import Camera
from tests.helpers import Server, start_server

SECRET, QUERY_SECRET = "Sekr1tXy", "Qu3ryPw9"


async def test_a_user_name_with_at_and_query_credentials_stay_masked_and_an_edit_keeps_them(
        nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    """`rtsp://cam@site:Sekr1tXy@host/live?password=…` plays, and neither secret leaves in
    REST, WebSocket messages or logs; a PATCH that sends back the masked URL keeps both
    (the stream plays again after a reconnect), and one that moves it to another host
    must give the password itself."""
    caplog.set_level(logging.DEBUG)
    cam = Camera(auth="basic", user="cam@site", password=SECRET)
    await nursery.start(cam.run)
    server = await start_server(nursery)
    url = f"rtsp://cam@site:{SECRET}@127.0.0.1:{cam.port}/live?channel=1&PassWord={QUERY_SECRET}"
    stream_id = await server.create(url)
    async with server.http() as http:
        shown = (await http.get(f"/api/streams/{stream_id}/")).json()["url"]
        assert shown == f"rtsp://cam@site:***@127.0.0.1:{cam.port}/live?channel=1&PassWord=***"
        async with server.viewer(f"id={stream_id}") as viewer:
            await viewer.play()
            edited = await http.patch(f"/api/streams/{stream_id}/", json={"name": "porch", "url": shown})
            assert edited.status_code == 200 and edited.json()["url"] == shown, edited.text
            await viewer.send("reconnect")
            await viewer.status("connecting")
            await viewer.status("playing")
        moved = await http.patch(f"/api/streams/{stream_id}/", json={"url": shown.replace("127.0.0.1", "localhost")})
        listed = await http.get("/api/streams/")
        bad = await http.post("/api/streams/", json={"name": "copy", "url": shown})
    assert moved.status_code == 400 and "url" in moved.json()["error"]["fields"], moved.text
    assert bad.status_code == 400 and "masked" in bad.json()["error"]["fields"]["url"], bad.text
    everything = f"{listed.text} {viewer.texts} {caplog.text}"
    assert SECRET not in everything and QUERY_SECRET not in everything
    assert "playing" in caplog.text  # the log lines that name the URL were there to check


NESTED = "[" * 1000 + "]" * 1000
HOSTILE_BODIES = {
    "nested 1000 deep": NESTED,
    "nested object": '{"name":' + NESTED + ',"url":"rtsp://h/x"}',
    "lone surrogate in name": '{"name":"cam\\ud800","url":"rtsp://h/x"}',
    "lone surrogate in url": '{"name":"cam","url":"rtsp://h/x\\udfff"}',
    "bidi override in name": '{"name":"cam\\u202egpj.exe","url":"rtsp://h/x"}',
    "zero width in name": '{"name":"ca\\u200bm","url":"rtsp://h/x"}',
    "line separator in name": '{"name":"ca\\u2028m","url":"rtsp://h/x"}',
    "huge number": '{"name":"cam","url":"rtsp://h/x","transport":1e999}',
    "big integer": '{"name":"cam","url":"rtsp://h/x","transport":' + "9" * 5000 + "}",
    "not utf-8": b'{"name":"\xff\xfe","url":"rtsp://h/x"}',
    "NaN": '{"name":NaN,"url":"rtsp://h/x"}',
}


@pytest.mark.parametrize("case", sorted(HOSTILE_BODIES))
async def test_hostile_bodies_get_a_400_error_body_and_store_nothing(server: Server, case: str) -> None:
    body = HOSTILE_BODIES[case]
    async with server.http() as http:
        for method, path in (("POST", "/api/streams/"), ("PATCH", "/api/streams/1/")):
            if method == "PATCH":
                await server.create("rtsp://127.0.0.1:9/x", name="kept")
            response = await http.request(method, path, content=body, headers={"Content-Type": "application/json"})
            assert response.status_code == 400, (method, response.text)
            assert response.json()["error"]["code"] == "VALIDATION"
        assert [s["name"] for s in (await http.get("/api/streams/")).json()] == ["kept"]


@pytest.mark.parametrize("path", [
    "/api/streams/9223372036854775808/", "/api/streams/99999999999999999999999/", "/api/streams/-1/",
    "/api/streams/%C2%B2/", "/api/streams/%D9%A3/", "/api/streams/0x1/", "/api/streams/1e3/",
    "/api/streams/0/", f"/api/streams/{'9' * 5000}/"])
async def test_ids_out_of_range_are_404(server: Server, path: str) -> None:
    async with server.http() as http:
        for method in ("GET", "PATCH", "DELETE"):
            response = await http.request(method, path, json={"name": "x"} if method == "PATCH" else None)
            assert response.status_code == 404 and response.json()["error"]["code"] == "NOT_FOUND", response.text


@pytest.mark.parametrize("message", ["[" * 2000 + "]" * 2000, '{"action":' + "[" * 2040 + "]" * 2040 + "}",
                                     '{"action":"start\\ud800"}', '{"action":1e999}'])
async def test_a_hostile_message_gets_bad_request_and_the_socket_stays(server: Server, message: str) -> None:
    stream_id = await server.create("rtsp://127.0.0.1:9/x")
    async with server.viewer(f"id={stream_id}") as viewer:
        await viewer.ws.send_message(message)
        await viewer.error("BAD_REQUEST")
        await viewer.ws.send_message('{"action":"stop"}')
        await viewer.status("stopped")
    assert viewer.close_code in (None, 1000)


async def test_an_upper_case_scheme_is_normalised(camera: Camera, server: Server) -> None:
    url = camera.url().replace("rtsp://", "RTSP://")
    stream_id = await server.create(url)
    async with server.http() as http:
        assert (await http.get(f"/api/streams/{stream_id}/")).json()["url"].startswith("rtsp://127.0.0.1")
    async with server.viewer(f"id={stream_id}") as viewer:
        await viewer.play()
    async with server.viewer(f"url={url}") as viewer:
        await viewer.play()


async def test_the_database_is_private_and_forgets_replaced_passwords(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Created 0700/0600 (an old world-readable file is made private); a password replaced
    by PATCH or removed by DELETE is in none of the database's files afterwards."""
    folder = tmp_path / "data"
    old = tmp_path / "old" / "streams.db"
    old.parent.mkdir()
    old.touch(mode=0o644)
    old.chmod(0o644)
    for path in (folder / "streams.db", old):
        server = await start_server(nursery, database_url=f"sqlite:///{path}")
        first = await server.create("rtsp://admin:FirstPassw0rd@10.0.0.5/live")
        second = await server.create("rtsp://10.0.0.6/live?password=SecondPassw0rd")
        async with server.http() as http:
            assert (await http.patch(f"/api/streams/{first}/", json={"url": "rtsp://admin:Third3@10.0.0.5/live"})).status_code == 200
            assert (await http.delete(f"/api/streams/{second}/")).status_code == 204
        stored = b"".join(file.read_bytes() for file in path.parent.iterdir())
        assert b"FirstPassw0rd" not in stored and b"SecondPassw0rd" not in stored and b"Third3" in stored
        assert path.stat().st_mode & 0o777 == 0o600
    assert folder.stat().st_mode & 0o777 == 0o700
