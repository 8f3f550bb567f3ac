"""The operator's CLI, run as a process against a real server and a real camera:
`rtsp-viewer check`, `rtsp-viewer streams …`, `rtsp-viewer probe`."""

from __future__ import annotations

import json
import os

import trio

from tests.camera import Camera, Feed
from tests.helpers import BIN, Server, start_server

TOKEN = "operator-token-0123456789"


async def cli(*args: str, token: str | None = None, **extra: str) -> tuple[int, str, str]:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("API_TOKEN", "RTSP_VIEWER_URL", "RTSP_VIEWER_USER", "RTSP_VIEWER_PASSWORD")} | extra
    if token:
        environ["API_TOKEN"] = token
    with trio.fail_after(60):
        done = await trio.run_process([str(BIN / "rtsp-viewer"), *args], capture_stdout=True, capture_stderr=True,
                                      check=False, env=environ)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_check_passes_end_to_end_and_leaves_nothing_behind(nursery: trio.Nursery) -> None:
    camera = Camera(auth="digest")
    await nursery.start(camera.run)
    server = await start_server(nursery, api_token=TOKEN)
    status, out, err = await cli("check", "--server", server.base, camera.url(), token=TOKEN)
    assert status == 0, out + err
    steps = [line.split(":")[0] for line in out.splitlines()]
    assert steps == ["ok   health", "ok   list", "ok   create", "ok   play", "ok   delete"], out
    assert camera.password not in out + err
    async with server.http() as http:
        assert (await http.get("/api/streams/", headers={"Authorization": f"Bearer {TOKEN}"})).json() == []


async def test_check_names_the_step_that_failed(nursery: trio.Nursery) -> None:
    camera = Camera(auth="digest")
    await nursery.start(camera.run)
    server = await start_server(nursery)
    status, out, _ = await cli("check", "--server", server.base, camera.url(password="wrong-pass-1"))
    assert status == 1 and "FAIL play: AUTH:" in out and "ok   delete" in out, out  # cleaned up anyway
    assert "wrong-pass-1" not in out
    status, out, _ = await cli("check", "--server", server.base, "http://not-rtsp/")
    assert status == 1 and "FAIL create: HTTP 400: VALIDATION" in out and "url: scheme must be rtsp" in out, out
    gone = server.base.rsplit(":", 1)[0] + ":1"  # nothing listens there: a stopped server
    status, out, _ = await cli("check", "--server", gone, camera.url())
    assert status == 1 and out.startswith("FAIL health: cannot reach"), out
    not_ours = f"http://127.0.0.1:{camera.port}"  # something else answers there (RTSP, not HTTP)
    status, out, err = await cli("check", "--server", not_ours, camera.url())
    assert status == 1 and out.startswith("FAIL health:") and "Traceback" not in err, out + err
    status, out, _ = await cli("check", "--server", server.base, camera.url(), token=None)
    assert status == 0  # no API_TOKEN on this server


async def test_streams_commands_drive_the_api(camera: Camera, server: Server) -> None:
    status, out, _ = await cli("streams", "add", "door", camera.url(), "--server", server.base)
    assert status == 0, out
    created = json.loads(out)
    status, out, _ = await cli("streams", "list", "--server", server.base)
    assert status == 0 and [s["id"] for s in json.loads(out)] == [created["id"]]
    status, out, _ = await cli("streams", "show", str(created["id"]), "--server", server.base)
    assert status == 0 and json.loads(out)["name"] == "door"
    status, out, _ = await cli("streams", "rm", str(created["id"]), "--server", server.base)
    assert status == 0 and out == ""
    status, _, err = await cli("streams", "show", str(created["id"]), "--server", server.base)
    assert status == 1 and "HTTP 404: NOT_FOUND" in err
    status, _, err = await cli("streams", "rm", "x", "--server", server.base)
    assert status == 2 and "usage" in err


async def test_probe_prints_what_the_camera_sends_or_its_error(nursery: trio.Nursery) -> None:
    camera = Camera(feeds={"live": Feed(size="640x360"), "sound": Feed(audio=True)}, auth="basic")
    await nursery.start(camera.run)
    status, out, err = await cli("probe", camera.url())
    assert status == 0, err
    found = json.loads(out)
    assert found["video"] == {"codec": "h264", "width": 640, "height": 360, "fps": 25.0}
    assert found["audio"] is None and camera.password not in out
    status, out, err = await cli("probe", camera.url("sound"))
    assert status == 0 and json.loads(out)["audio"]["codec"] == "aac", err
    for url, code in ((camera.url(password="wrong-pass-2"), "AUTH"), (camera.url("nothing"), "NOT_FOUND"),
                      ("rtsp://127.0.0.1:1/x", "UNREACHABLE")):
        status, out, err = await cli("probe", url, "--timeout", "3")
        assert status == 1 and f": {code}: " in err and "wrong-pass-2" not in err, err
    status, _, err = await cli("probe", "http://camera/")
    assert status == 2 and "scheme must be rtsp" in err


async def test_check_and_streams_sign_in_as_a_user(camera: Camera, nursery: trio.Nursery) -> None:
    """With users and no API_TOKEN, RTSP_VIEWER_USER and RTSP_VIEWER_PASSWORD sign the
    commands in (Basic, on REST and the socket); a viewer may list but not add."""
    server = await start_server(nursery)
    password = "correct horse battery"
    async with server.http() as http:
        for name, role in (("ada", "admin"), ("vera", "viewer")):
            made = await http.post("/api/users/", json={"username": name, "password": password, "role": role},
                                   auth=("ada", password))
            assert made.status_code == 201, made.text
    status, out, err = await cli("check", "--server", server.base, camera.url(),
                                 RTSP_VIEWER_USER="ada", RTSP_VIEWER_PASSWORD=password)
    assert status == 0, out + err
    status, out, _ = await cli("streams", "list", "--server", server.base,
                               RTSP_VIEWER_USER="vera", RTSP_VIEWER_PASSWORD=password)
    assert status == 0 and json.loads(out) == []
    status, _, err = await cli("streams", "add", "door", camera.url(), "--server", server.base,
                               RTSP_VIEWER_USER="vera", RTSP_VIEWER_PASSWORD=password)
    assert status == 1 and "HTTP 403: FORBIDDEN" in err
    status, _, err = await cli("streams", "list", "--server", server.base)
    assert status == 1 and "HTTP 401" in err
