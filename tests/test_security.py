"""Security (issue 10) through the real server: masking, access control, origins and
hosts, sources under policy, abuse limits, hostile input, data at rest."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import httpx
import pytest
import trio
import trio_websocket
from hypothesis import given, settings
from hypothesis import strategies as st

from app.policy.limits import client_address, parse_networks
from app.policy.origins import Policy
from app.sockets.session import parse_action
from supervisors import Action, ErrorCode, Failure
from tests.camera import Camera
from tests.helpers import Server, server_log, start_server, timestamps
from tests.test_stock import close_of

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
    everything = f"{listed.text} {viewer.texts} {server_log(caplog)}"
    assert SECRET not in everything and QUERY_SECRET not in everything
    assert "playing" in server_log(caplog)  # the log lines that name the URL were there to check


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


TOKEN = "admin-token-0123456789abcdef"


async def test_api_token_guards_every_route_but_health(camera: Camera, nursery: trio.Nursery,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = await start_server(nursery, api_token=TOKEN)
    admin = {"Authorization": f"Bearer {TOKEN}"}
    async with server.http() as http:
        created = await http.post("/api/streams/", json={"name": "cam", "url": camera.url()}, headers=admin)
        stream_id = created.json()["id"]
        routes = [("GET", "/api/streams/"), ("POST", "/api/streams/"), ("GET", f"/api/streams/{stream_id}/"),
                  ("PATCH", f"/api/streams/{stream_id}/"), ("DELETE", f"/api/streams/{stream_id}/"),
                  ("GET", f"/api/streams/{stream_id}/stream.ts"), ("POST", f"/api/streams/{stream_id}/play-token")]
        for method, path in routes:
            for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN},
                            {"Authorization": f"Basic {TOKEN}"}):
                response = await http.request(method, path, headers=headers, json={"name": "x"} if method != "GET" else None)
                assert response.status_code == 401, (method, path, headers, response.text)
                assert response.json()["error"]["code"] == "UNAUTHORIZED"
                assert response.headers["www-authenticate"] == "Bearer"
        anonymous = await http.get("/api/health/")
        operator = await http.get("/api/health/", headers=admin)
        page = await http.get("/")
        listed = await http.get("/api/streams/", headers=admin)
    assert anonymous.status_code == 200 and anonymous.json() == {"status": "ok"}
    assert operator.json()["ffmpeg"]["path"] and operator.json()["streams"]["max"] == 10
    assert page.status_code == 200 and b'type="application/json">null</script>' in page.content  # no list in it
    assert [s["id"] for s in listed.json()] == [stream_id]  # the anonymous DELETE deleted nothing
    assert TOKEN not in server_log(caplog)


@pytest.mark.own_camera
async def test_a_socket_needs_the_token_before_anything_starts(camera: Camera, nursery: trio.Nursery) -> None:
    server = await start_server(nursery, api_token=TOKEN)
    stream_id = await _create_as_admin(server, camera.url())
    assert server.registry is not None
    for query in (f"id={stream_id}", f"url={camera.url()}", f"id={stream_id}&token=wrong-token-0123456789"):
        async with server.viewer(query) as viewer:
            assert (await viewer.error("UNAUTHORIZED"))["message"]
            assert await viewer.closed() == 1008
    assert await close_of(server, f"id={stream_id}") == (4401, "UNAUTHORIZED")
    assert server.registry.statistics().running == 0 and camera.describes == 0
    async with server.viewer(f"id={stream_id}&token={TOKEN}") as viewer:
        await viewer.play()
    async with trio_websocket.open_websocket_url(f"{server.ws_base}/ws/stream?id={stream_id}",
                                                 subprotocols=["rtsp-viewer", f"bearer.{TOKEN}"]) as ws:
        assert ws.subprotocol == "rtsp-viewer"
        assert json.loads(await ws.get_message()) == {"type": "status", "phase": "connected"}


async def test_a_play_token_watches_its_stream_until_it_expires_and_nothing_else(
        camera: Camera, nursery: trio.Nursery) -> None:
    server = await start_server(nursery, api_token=TOKEN)
    stream_id = await _create_as_admin(server, camera.url())
    other_id = await _create_as_admin(server, camera.url(), name="other")
    admin = {"Authorization": f"Bearer {TOKEN}"}
    async with server.http() as http:
        issued = await http.post(f"/api/streams/{stream_id}/play-token", json={"ttl": 2}, headers=admin)
        assert issued.status_code == 201, issued.text
        token = issued.json()["token"]
        assert issued.json()["stream_id"] == stream_id and issued.json()["expires_at"].endswith("Z")
        for bad in ({"ttl": 0}, {"ttl": 10**9}, {"ttl": "60"}, {"ttl": True}, {"ttl": 60, "x": 1}, [60]):
            refused = await http.post(f"/api/streams/{stream_id}/play-token", json=bad, headers=admin)
            assert refused.status_code == 400 and refused.json()["error"]["code"] == "VALIDATION", (bad, refused.text)
        missing = await http.post("/api/streams/999/play-token", json={"ttl": 60}, headers=admin)
        assert missing.status_code == 404
        as_play = {"Authorization": f"Bearer {token}"}
        assert (await http.get("/api/streams/", headers=as_play)).status_code == 401
        assert (await http.get(f"/api/streams/{stream_id}/", headers=as_play)).status_code == 401
        assert (await http.get(f"/api/streams/{other_id}/stream.ts?token={token}")).status_code == 401
        head = await _first_bytes(server, f"/api/streams/{stream_id}/stream.ts?token={token}")
        assert head.startswith(b"HTTP/1.1 200") and b"video/mp2t" in head, head[:200]
    async with server.viewer(f"id={stream_id}&token={token}") as viewer:
        await viewer.play()
    for query in (f"id={other_id}&token={token}", f"url={camera.url()}&token={token}",
                  f"id={stream_id}&token={token[:-2]}xx"):
        async with server.viewer(query) as viewer:
            await viewer.error("UNAUTHORIZED")
            assert await viewer.closed() == 1008
    later = time.time() + 2.5
    assert server.services is not None
    server.services.access.clock = lambda: later  # past its expiry (no waiting on the wall clock)
    async with server.viewer(f"id={stream_id}&token={token}") as viewer:
        await viewer.error("UNAUTHORIZED")
        assert await viewer.closed() == 1008


async def _create_as_admin(server: Server, url: str, name: str = "cam") -> int:
    async with server.http() as http:
        response = await http.post("/api/streams/", json={"name": name, "url": url},
                                   headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def _first_bytes(server: Server, path: str, size: int = 2000, headers: str | None = None,
                       head_only: bool = False) -> bytes:
    """The start of a response (up to `size` bytes, or until the server closes), read from
    a plain TCP stream: httpx leaves a live stream it did not read to the end unclosed,
    and sets Host itself. `headers`: the request's header lines (default: Host)."""
    host, port = server.base.removeprefix("http://").split(":")
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\n{headers or f'Host: {host}'}\r\n\r\n".encode())
        data = b""
        with trio.fail_after(15):
            while len(data) < size:
                chunk = await stream.receive_some()
                if not chunk:
                    break
                data += chunk
                if head_only and b"\r\n\r\n" in data and b"BAD_REQUEST" not in data.split(b"\r\n\r\n")[0]:
                    break  # the status and headers are in (a 400 closes, with its body)
    return data


WS_HEADERS = ("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")


@pytest.mark.parametrize(("allowed", "host", "ok"), [
    ((), "evil.example", False), ((), "evil.example:80", False), ((), "127.0.0.1.evil.example", False),
    ((), "localhost:8000", True), ((), "[::1]:1", True), ((), "127.0.0.1", True), ((), "LOCALHOST", True),
    (("cam.example.com",), "cam.example.com", True), (("cam.example.com",), "127.0.0.1", False),
    (("*",), "anything.example", True),
])
async def test_only_allowed_hosts_are_served(nursery: trio.Nursery, allowed: tuple[str, ...], host: str, ok: bool) -> None:
    """Bound to 127.0.0.1 (the tests' server), only loopback names by default: a DNS
    rebinding page's requests carry its own name and get 400, sockets included."""
    server = await start_server(nursery, allowed_hosts=allowed)
    for path, extra in (("/api/streams/", ""), ("/", ""), ("/ws/stream?id=1", f"\r\n{WS_HEADERS}")):
        head = await _first_bytes(server, path, headers=f"Host: {host}{extra}", head_only=ok)
        status = head.split(b"\r\n", 1)[0]
        if ok:
            assert status.split()[1] in (b"200", b"101"), (path, head[:300])
        else:
            assert status.split()[1] == b"400" and b'"BAD_REQUEST"' in head, (path, head[:300])


async def test_cors_is_off_by_default_any_with_star_and_credentials_only_for_a_list(nursery: trio.Nursery) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "DELETE",
                 "Access-Control-Request-Headers": "authorization"}
    seen = {}
    for cors in ((), ("*",), ("https://app.example",)):
        server = await start_server(nursery, cors_origins=cors)
        async with server.http() as http:
            get = await http.get("/api/streams/", headers={"Origin": "https://app.example"})
            other = await http.get("/api/streams/", headers={"Origin": "https://evil.example"})
            pre = await http.options("/api/streams/1/", headers=preflight)
        if cors != ("*",):
            assert "access-control-allow-origin" not in other.headers
        assert pre.status_code == 204 and "origin" in get.headers["vary"].lower()
        seen[cors] = (get.headers.get("access-control-allow-origin"), get.headers.get("access-control-allow-credentials"),
                      pre.headers.get("access-control-allow-methods"), pre.headers.get("access-control-allow-headers"))
    assert seen[()] == (None, None, None, None)
    assert seen[("*",)] == ("*", None, "GET, POST, PATCH, DELETE, OPTIONS", "Authorization, Content-Type")
    assert seen[("https://app.example",)] == ("https://app.example", "true", "GET, POST, PATCH, DELETE, OPTIONS",
                                              "Authorization, Content-Type")


@pytest.mark.own_camera
async def test_a_socket_from_a_foreign_origin_is_refused_before_anything_starts(
        camera: Camera, nursery: trio.Nursery) -> None:
    server = await start_server(nursery)
    stream_id = await server.create(camera.url())
    own = server.base  # the page's origin: http://127.0.0.1:<port>
    for origin, allowed in (("https://evil.example", False), ("http://127.0.0.1:1", False), ("null", False),
                            (own, True), (None, True)):
        headers = [] if origin is None else [("Origin", origin)]
        async with trio_websocket.open_websocket_url(f"{server.ws_base}/ws/stream?id={stream_id}",
                                                     extra_headers=headers) as ws:
            messages = [json.loads(await ws.get_message())]
            if not allowed:
                assert messages[0]["code"] == "FORBIDDEN", messages
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason.code == 1008
                assert camera.describes == 0
            else:
                assert messages == [{"type": "status", "phase": "connected"}]
            with trio.CancelScope(shield=True):
                await ws._stream.aclose()
    widened = await start_server(nursery, cors_origins=("https://app.example",))
    stream_id = await widened.create(camera.url())
    async with trio_websocket.open_websocket_url(f"{widened.ws_base}/ws/stream?id={stream_id}",
                                                 extra_headers=[("Origin", "https://app.example")]) as ws:
        assert json.loads(await ws.get_message()) == {"type": "status", "phase": "connected"}


def test_hosts_default_to_any_when_not_bound_to_loopback() -> None:
    assert Policy.of((), (), "0.0.0.0").host_allowed("cam.example.com")
    assert not Policy.of((), (), "127.0.0.1").host_allowed("cam.example.com")
    assert not Policy.of((), (), "::1").host_allowed(None)
    assert Policy.of((), ("cam.example.com",), "0.0.0.0").host_allowed("CAM.example.com:443")


@pytest.mark.own_camera
async def test_sources_under_policy(camera: Camera, nursery: trio.Nursery) -> None:
    """Link-local and metadata addresses are refused by default (FORBIDDEN, final, no
    retry); ALLOWED_SOURCES admits only its networks and names, checked after DNS."""
    server = await start_server(nursery)
    metadata = await server.create("rtsp://169.254.169.254/latest")
    async with server.viewer(f"id={metadata}") as viewer:
        await viewer.send("start")
        refused = await viewer.error("FORBIDDEN")
        await viewer.status("stopped")
    assert "link-local or metadata" in str(refused["message"])
    for allowed, url, plays in (
            (("10.0.0.0/8",), camera.url(), False),
            (("127.0.0.0/8",), camera.url(), True),
            (("localhost",), camera.url().replace("127.0.0.1", "localhost"), True),
            (("localhost",), camera.url(), False),
            ((".example.com",), camera.url(), False)):
        before = camera.describes
        server = await start_server(nursery, allowed_sources=allowed)
        stream_id = await server.create(url)
        async with server.viewer(f"id={stream_id}") as viewer:
            if plays:
                await viewer.play()
            else:
                await viewer.send("start")
                assert "ALLOWED_SOURCES" in str((await viewer.error("FORBIDDEN"))["message"])
                assert camera.describes == before  # never connected
        async with server.http() as http:
            status = (await http.get(f"/api/streams/{stream_id}/")).json()["status"]
        assert (status["error"] or {}).get("code") == (None if plays else "FORBIDDEN"), (allowed, url, status)


async def test_the_metadata_address_written_as_ipv6_is_refused_before_any_connection(
        camera: Camera, nursery: trio.Nursery) -> None:
    """IPv4-mapped, NAT64 and 6to4 addresses carry an IPv4 address and reach it: each is
    judged as that address (FORBIDDEN, final), by URL and by id, and a camera allowed by
    ALLOWED_SOURCES plays when its URL spells its address as IPv4-mapped."""
    server = await start_server(nursery)
    for host in ("::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1"):
        stream_id = await server.create(f"rtsp://[{host}]/latest")
        for query in (f"id={stream_id}", f"url=rtsp://[{host}]/latest"):
            async with server.viewer(query) as viewer:
                await viewer.send("start")
                await viewer.error("FORBIDDEN", within=3)
                await viewer.status("stopped")
    allowing = await start_server(nursery, allowed_sources=("127.0.0.0/8",))
    async with allowing.viewer(f"url={camera.url().replace('127.0.0.1', '[::ffff:127.0.0.1]')}") as viewer:
        await viewer.play()


async def test_a_proxy_seen_on_a_dual_stack_listener_is_trusted_and_ipv6_clients_count_by_their_64(
        nursery: trio.Nursery) -> None:
    """Bound to `::`, the server sees the IPv4 proxy at 127.0.0.1 as ::ffff:127.0.0.1: it is
    still the proxy of TRUSTED_PROXIES=127.0.0.1/32, so each client it names has its own
    RATE_LIMIT bucket; clients in one IPv6 /64 share one."""
    server = await start_server(nursery, host="::", trusted_proxies=("127.0.0.1/32",), rate_limit=(0.01, 2.0))
    port = server.base.rsplit(":", 1)[1]

    async def status(client: str) -> int:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            return (await http.get("/api/streams/", headers={"X-Forwarded-For": client})).status_code

    assert [await status("203.0.113.1") for _ in range(3)] == [200, 200, 429]
    assert await status("203.0.113.2") == 200  # another client behind the proxy
    assert [await status(f"2001:db8::{n}") for n in (1, 2, 3)] == [200, 200, 429]  # one /64
    assert await status("2001:db8:0:1::1") == 200  # the next /64
    assert await status("::ffff:203.0.113.2") == 200  # 203.0.113.2 as mapped: its second request


@pytest.mark.own_camera
async def test_playing_by_url_is_off_with_a_token_or_off_loopback_and_its_errors_are_generic(
        camera: Camera, nursery: trio.Nursery) -> None:
    for options in ({"api_token": TOKEN}, {"allow_url_streams": "false"}):
        server = await start_server(nursery, **options)
        async with server.viewer(f"url={camera.url()}&token={TOKEN}") as viewer:
            assert "ALLOW_URL_STREAMS" in str((await viewer.error("FORBIDDEN"))["message"])
            assert await viewer.closed() == 1008
    assert camera.describes == 0
    server = await start_server(nursery, ffmpeg_timeout=1.0)
    closed = trio.socket.socket()
    await closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]  # bound, never listening: connection refused
    messages = []
    for url in (f"rtsp://127.0.0.1:{port}/x", "rtsp://169.254.169.254/x"):
        async with server.viewer(f"url={url}") as viewer:
            await viewer.send("start")
            messages.append((await viewer.expect({"type": "error"}))["message"])
    closed.close()
    assert messages == ["camera unreachable", "source refused by policy"]


@pytest.mark.own_camera
async def test_a_reconnect_storm_from_another_client_leaves_the_victim_playing(
        camera: Camera, server: Server) -> None:
    """A second viewer of the stream sends reconnect 10 times a second for 8 s: the upstream
    restarts at most once per RECONNECT interval (10 s), so exactly once here: the victim
    loses one restart's worth of frames and the camera sees one more session."""
    stream_id = await server.create(camera.url())
    async with server.viewer(f"id={stream_id}") as victim, server.viewer(f"id={stream_id}") as attacker:
        await victim.play()
        await attacker.play()
        await trio.sleep(1)
        sessions = camera.describes
        start = len(victim.media)
        async with trio.open_nursery() as storm:
            async def hammer() -> None:
                for _ in range(80):
                    await attacker.ws.send_message('{"action":"reconnect"}')
                    await trio.sleep(0.1)
            storm.start_soon(hammer)
        media = b"".join(victim.media[start:])
    frames = sum(1 for kind, _ in timestamps(media) if kind == "dts")
    assert camera.describes - sessions == 1, camera.describes - sessions  # the first, and no other
    assert frames >= 0.85 * 25 * 8, frames  # 25 fps for 8 s, less one restart's gap


async def test_lingering_upstreams_count_against_the_client_that_started_them(
        camera: Camera, nursery: trio.Nursery) -> None:
    """One address opening and closing `?url=` sockets cannot fill MAX_CONCURRENT_STREAMS
    with lingering upstreams: they count against it until they end."""
    server = await start_server(nursery, linger=30, max_streams_per_client=2)
    for n in range(2):
        async with server.viewer(f"url={camera.url()}?n={n}") as viewer:
            await viewer.play()
    async with server.viewer(f"url={camera.url()}?n=9") as viewer:
        await viewer.send("start")
        assert "MAX_STREAMS_PER_CLIENT" in str((await viewer.error("LIMIT"))["message"])
    assert server.registry is not None and server.registry.statistics().running == 2


def later(server: Server, seconds: float) -> None:
    """Move the server's rate-limit clock `seconds` on (no waiting for the refill)."""
    assert server.services is not None
    rates = server.services.rates
    now = rates.clock()
    rates.clock = lambda: now + seconds


async def test_rate_limit_answers_429_with_retry_after_on_rest_and_rate_limited_on_sockets(
        nursery: trio.Nursery) -> None:
    """RATE_LIMIT 0.5/s, burst 4 (slow refills keep this deterministic on a busy machine),
    a fresh server (bucket) for REST, for socket actions and for socket connects."""
    server = await start_server(nursery, rate_limit=(0.5, 4.0))
    async with server.http() as http:
        statuses = [(await http.get("/api/streams/")).status_code for _ in range(6)]
        limited = await http.get("/api/streams/")
        health = [(await http.get("/api/health/")).status_code for _ in range(10)]  # exempt
        later(server, 2.2)  # a token is back (0.5/s)
        again = await http.get("/api/streams/")
    assert statuses == [200] * 4 + [429] * 2, statuses
    assert limited.json()["error"]["code"] == "RATE_LIMITED" and int(limited.headers["retry-after"]) >= 1
    assert health == [200] * 10 and again.status_code == 200
    server = await start_server(nursery, rate_limit=(0.5, 4.0))
    async with server.viewer("url=rtsp://127.0.0.1:9/x") as viewer:  # the connect spends one
        for _ in range(5):  # actions spend them too: the socket stays, with RATE_LIMITED
            await viewer.send("stop")
        await viewer.error("RATE_LIMITED")
        later(server, 2.2)
        await viewer.send("stop")
        await viewer.status("stopped")
        assert viewer.close_code is None
    server = await start_server(nursery, rate_limit=(0.5, 4.0))
    opened = []
    for _ in range(6):  # connects spend them as well
        async with server.viewer("url=rtsp://127.0.0.1:9/x") as viewer:
            message = await viewer.expect({"type": "status"}, {"type": "error"})
            opened.append(message.get("code", message.get("phase")))
            if message["type"] == "error":
                assert await viewer.closed() == 1008
            else:  # let Hypercorn's first ping be answered: trio-websocket fails to answer one once closing
                await trio.sleep(0.1)
    assert opened == ["connected"] * 4 + ["RATE_LIMITED"] * 2, opened


async def test_connections_per_client_and_sockets_that_never_start(camera: Camera, nursery: trio.Nursery) -> None:
    server = await start_server(nursery, max_connections_per_client=2, start_within=1.0)
    stream_id = await server.create(camera.url())
    async with server.viewer(f"id={stream_id}") as first, server.viewer(f"id={stream_id}") as second:
        await first.play()
        async with server.viewer(f"id={stream_id}") as third:
            assert "MAX_CONNECTIONS_PER_CLIENT" in str((await third.error("LIMIT"))["message"])
            assert await third.closed() == 1008
        async with server.http() as http:
            refused = await http.get(f"/api/streams/{stream_id}/stream.ts")
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "LIMIT"
        # the second never sends start: closed after START_WITHIN; the first, playing, stays
        assert "no start within" in str((await second.error("BAD_REQUEST", within=5))["message"])
        assert await second.closed() == 1008
        await trio.sleep(0.5)
        assert first.close_code is None and len(await first.collect(0.5)) > 0
    async with server.viewer(f"id={stream_id}") as fourth:  # its share was given back
        await fourth.play()


async def test_health_answers_when_the_server_holds_all_the_sockets_it_may(nursery: trio.Nursery) -> None:
    server = await start_server(nursery, max_connections_per_client=100)
    assert server.services is not None
    server.services.connections.total = 3  # as if the file-descriptor limit were near
    stream_id = await server.create("rtsp://127.0.0.1:9/x")
    async with server.viewer(f"id={stream_id}"), server.viewer(f"id={stream_id}"), server.viewer(f"id={stream_id}"):
        async with server.viewer(f"id={stream_id}") as refused:
            assert "as many sockets" in str((await refused.error("LIMIT"))["message"])
            assert await refused.closed() == 1008
        async with server.http() as http:
            assert (await http.get("/api/health/")).status_code == 200


@settings(max_examples=300, deadline=None)
@given(untrusted=st.lists(st.ip_addresses(v=4).map(str), min_size=1, max_size=4),
       proxies=st.lists(st.sampled_from(["10.0.0.1", "10.0.0.2", "10.1.2.3"]), max_size=3),
       split=st.booleans())
def test_the_client_is_the_rightmost_hop_no_trusted_proxy_wrote(untrusted: list[str], proxies: list[str],
                                                              split: bool) -> None:
    """X-Forwarded-For as proxies append to it (over one header or several): whatever a
    client puts first, the address is the hop just before the trusted proxies."""
    hops = [h for h in untrusted if not h.startswith("10.")] or ["203.0.113.7"]
    chain = [*hops, *proxies]
    headers = [", ".join(chain)] if not split else chain
    trusted = parse_networks(["10.0.0.0/8"])
    assert client_address("10.9.9.9", headers, trusted) == hops[-1]
    assert client_address("192.0.2.1", headers, trusted) == "192.0.2.1"  # not from a proxy: XFF ignored
    assert client_address("10.9.9.9", [], trusted) == "10.9.9.9"
    assert client_address("10.9.9.9", ["not-an-ip"], trusted) == "10.9.9.9"


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    st.text(max_size=5000),
    st.binary(max_size=5000),
    st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
                 lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                 max_leaves=40).map(json.dumps),
    st.integers(1, 3000).map(lambda depth: '{"action":' + "[" * depth + "]" * depth + "}"),
    st.sampled_from(["start", "stop", "reconnect"]).map(lambda a: json.dumps({"action": a})),
))
def test_any_client_message_is_an_action_or_bad_request(message: str | bytes) -> None:
    """Whatever a client sends on the socket parses to an action or to BAD_REQUEST, never
    an exception (Hypercorn closes frames over 64 KiB with 1009 before they reach it)."""
    parsed = parse_action(message)
    assert isinstance(parsed, Action) or (isinstance(parsed, Failure) and parsed.code == ErrorCode.BAD_REQUEST)


async def test_a_frame_over_64_kib_closes_with_1009(server: Server) -> None:
    stream_id = await server.create("rtsp://127.0.0.1:9/x")
    async with server.viewer(f"id={stream_id}") as viewer:
        await viewer.status("connected")
        await viewer.ws.send_message("x" * (65 * 1024))
        assert await viewer.closed() == 1009


@pytest.mark.own_camera
async def test_a_camera_redirect_is_checked_against_the_policy_too(camera: Camera, nursery: trio.Nursery) -> None:
    """A camera that answers 302 to an allowed place plays there; to a place outside
    ALLOWED_SOURCES (127.0.0.2 here, to keep the test's traffic on loopback), the attempt
    ends FORBIDDEN and is not retried."""
    camera.redirects = {"moved": camera.url(), "elsewhere": f"rtsp://127.0.0.2:{camera.port}/live"}
    server = await start_server(nursery, allowed_sources=("127.0.0.1/32",))
    moved = await server.create(camera.url("moved"))
    async with server.viewer(f"id={moved}") as viewer:
        await viewer.play()
    elsewhere = await server.create(camera.url("elsewhere"))
    async with server.viewer(f"id={elsewhere}") as viewer:
        await viewer.send("start")
        refused = await viewer.error("FORBIDDEN")
        await viewer.status("stopped")
    assert "redirect refused" in str(refused["message"]) and "127.0.0.2" in str(refused["message"])
    async with server.http() as http:
        status = (await http.get(f"/api/streams/{elsewhere}/")).json()["status"]
    assert status["error"]["code"] == "FORBIDDEN" and status["restarts"] == 0, status


async def test_an_http_stream_left_before_its_first_byte_gives_its_connection_back(nursery: trio.Nursery) -> None:
    """A client that leaves GET .../stream.ts while the camera has not answered yet must
    not keep its share of MAX_CONNECTIONS_PER_CLIENT: three such, then two sockets open."""
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()  # a camera that accepts and never answers
    listeners = await nursery.start(trio.serve_tcp, silent, 0)
    port = listeners[0].socket.getsockname()[1]
    server = await start_server(nursery, max_connections_per_client=2, ffmpeg_timeout=5.0)
    stream_id = await server.create(f"rtsp://127.0.0.1:{port}/x")
    host, app_port = server.base.removeprefix("http://").split(":")
    for _ in range(3):
        async with await trio.open_tcp_stream(host, int(app_port)) as stream:
            await stream.send_all(f"GET /api/streams/{stream_id}/stream.ts HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            await trio.sleep(0.3)  # waiting for the first byte: leave
    await trio.sleep(0.3)
    async with server.viewer(f"id={stream_id}") as first, server.viewer(f"id={stream_id}") as second:
        assert (await first.expect({"type": "status"}, {"type": "error"})).get("phase") == "connected"
        assert (await second.expect({"type": "status"}, {"type": "error"})).get("phase") == "connected"
        await trio.sleep(0.1)  # Hypercorn's first ping answered before we close
