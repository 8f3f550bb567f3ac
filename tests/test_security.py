"""Security (issue 10) through the real server: masking, access control, origins and
hosts, sources under policy, abuse limits, hostile input, data at rest."""

from __future__ import annotations

import logging

import pytest
import trio

from tests.camera import Camera
from tests.helpers import start_server

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
