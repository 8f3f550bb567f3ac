"""The viewer page at `/` in a real headless Chromium: the list, the form and the tiles."""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from app.cli.main import DEAD_AFTER
from tests.browser import clean_window, drive, few_dropped, sample
from tests.camera import Camera, Feed
from tests.helpers import Server, start_server, wait_for
from tests.lean import LeanViewer

TILE_MESSAGES = "() => [...window.tiles.values()][0].messages.map(m => m.phase || m.code)"




def until(page: Any, expression: str, within: float = 10) -> None:
    page.wait_for_function(expression, timeout=within * 1000)


def moves_on(page: Any, seconds: float, video: str = ".tile video", within: float = 15) -> float:
    """Wait until the video's position has moved `seconds` from where it is now (a
    condition with a generous deadline, not a fixed sleep); how far it moved."""
    before = page.evaluate(f"document.querySelector({video!r}).currentTime")
    until(page, f"document.querySelector({video!r}).currentTime >= {before + seconds}", within=within)
    return float(page.evaluate(f"document.querySelector({video!r}).currentTime")) - before


def plays_on(page: Any, seconds: float = 3) -> tuple[float, int, int]:
    """(rate of currentTime to real time, frames presented, frames dropped) over a
    `clean_window` of `seconds`, looked for during at most three times as long."""
    samples = [sample(page)]
    while (window := clean_window(samples, seconds)) is None and samples[-1].wall - samples[0].wall < 3 * seconds:
        time.sleep(0.25)
        samples.append(sample(page))
    first, last = window or (samples[0], samples[-1])
    return ((last.position - first.position) / (last.wall - first.wall), last.presented - first.presented,
            last.dropped - first.dropped)


@pytest.mark.parametrize("start", ["cold", "joining"])
async def test_a_tile_plays_its_stream(camera_640: Camera, nursery: trio.Nursery, tmp_path: Path, start: str) -> None:
    server = await start_server(nursery)
    stream_id = await server.create(camera_640.url(), name="front door")
    if start == "joining":  # the camera's upstream already runs for another viewer
        host, port = server.base.removeprefix("http://").split(":")
        other = LeanViewer(host, int(port), f"/ws/stream.ts?id={stream_id}")
        await other.connect()
        nursery.start_soon(other.run)
        with trio.fail_after(15):
            await other.got_media.wait()

    def script(page: Any) -> tuple[str, str, int, str, tuple[float, int, int]]:
        until(page, "document.querySelector('.tile video').videoWidth > 0")
        moves_on(page, 1.5)  # past the start
        steady = plays_on(page)
        name = page.text_content(".tile h2")
        phase = page.text_content(".tile .phase")
        poster = page.evaluate("""fetch(document.querySelector('.tile video').poster)
            .then(r => `${r.status} ${r.headers.get('content-type')}`)""")  # the tile's poster: a snapshot
        return name, phase, page.evaluate("document.querySelector('.tile video').videoWidth"), poster, steady

    name, phase, width, poster, (rate, presented, dropped) = await drive(
        f"{server.base}/", script, tmp_path / f"tile-{start}.png")
    if start == "joining":
        await other.aclose()
    assert (name, phase, width, poster) == ("front door", "playing", 640, "200 image/jpeg")
    assert 0.8 <= rate <= 1.2 and presented >= 0.8 * 25 * 3 and few_dropped(dropped, presented), \
        (rate, presented, dropped)


# One fragment of the page's native player is corrupted (the size of its first box: the
# browser's MP4 parser refuses it, the MediaSource ends with a decode error, code 3); the
# page's sockets are counted.
CORRUPT_ONE_FRAGMENT = """
window.sockets = 0;
const NativeSocket = window.WebSocket;
window.WebSocket = class extends NativeSocket {
  constructor(...args) { super(...args); window.sockets += 1; }
};
window.corrupted = 0;
const realAppend = SourceBuffer.prototype.appendBuffer;
let appends = 0;
SourceBuffer.prototype.appendBuffer = function (data) {
  const bytes = new Uint8Array(data);
  const fragment = bytes[4] === 0x6d && bytes[5] === 0x6f && bytes[6] === 0x6f && bytes[7] === 0x66;  // moof
  appends += 1;
  if (fragment && appends >= 30 && !window.corrupted) {
    const broken = new Uint8Array(bytes);
    broken.set([0, 0, 0, 3], 0);  // a box smaller than its own header
    window.corrupted = 1;
    return realAppend.call(this, broken);
  }
  return realAppend.call(this, data);
};
"""


async def test_a_player_that_hits_a_decode_error_rebuilds_itself_on_the_same_socket(
        camera_640: Camera, nursery: trio.Nursery, tmp_path: Path) -> None:
    """One corrupt fragment: the media element reports a decode error (code 3); the tile's
    player builds a new MediaSource, gets a fresh init segment and the latest keyframe on
    the same socket, says so in the tile, and plays on (it froze for good, its tile
    saying `playing`)."""
    server = await start_server(nursery)
    await server.create(camera_640.url())

    def script(page: Any) -> tuple[str, str, int, int, str, tuple[float, int, int]]:
        until(page, "window.corrupted === 1", within=20)
        until(page, "document.querySelector('.tile').dataset.rebuilds === '1'")
        until(page, "document.querySelector('.tile video').error === null"
                    " && document.querySelector('.tile .phase').textContent === 'playing'")
        moves_on(page, 1)  # past the new start
        steady = plays_on(page)
        return (page.text_content(".tile .note"),
                page.evaluate("document.querySelector('.tile').dataset.player"), page.evaluate("window.sockets"),
                page.evaluate("[...window.tiles.values()][0].messages.filter(m => m.phase === 'stopped').length"),
                page.text_content(".tile .phase"), steady)

    note, player, sockets, stops, phase, (rate, presented, dropped) = await drive(
        f"{server.base}/", script, tmp_path / "decode-error.png", init_script=CORRUPT_ONE_FRAGMENT)
    assert "media error 3" in note and "rebuilt the player" in note, note  # 3: MEDIA_ERR_DECODE
    assert (player, sockets, stops, phase) == ("mse", 1, 1, "playing")  # one socket: stop, start on it
    assert 0.8 <= rate <= 1.2 and presented >= 0.8 * 25 * 3, (rate, presented, dropped)


async def test_the_add_form_shows_a_validation_message_at_its_field(server: Server, tmp_path: Path) -> None:
    def script(page: Any) -> tuple[str, str, int]:
        page.fill("input[name=name]", "garage")
        page.fill("input[name=url]", "http://camera/stream")
        page.click("#save")
        until(page, "document.querySelector('.field-error[data-for=url]').textContent !== ''")
        return (page.text_content(".field-error[data-for=url]"), page.text_content(".field-error[data-for=name]"),
                page.evaluate("document.querySelectorAll('#rows tr').length"))

    url_error, name_error, rows = await drive(f"{server.base}/", script, tmp_path / "validation.png")
    assert url_error == "scheme must be rtsp or rtsps" and name_error == "" and rows == 0
    async with server.http() as http:
        assert (await http.get("/api/streams/")).json() == []  # nothing stored


async def test_auth_is_shown_in_the_tile_and_not_retried(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start_server(nursery)
    cam = Camera(auth="digest")
    await nursery.start(cam.run)
    await server.create(cam.url(password="wrong-pass"))

    def script(page: Any) -> tuple[str, list[str], bool, bool]:
        until(page, "document.querySelector('.tile .error').textContent.startsWith('AUTH')")
        until(page, f"({TILE_MESSAGES})().at(-1) === 'stopped'")
        tile = "[...window.tiles.values()][0]"
        return (page.text_content(".tile .error"), page.evaluate(TILE_MESSAGES), page.evaluate(f"{tile}.stopped"),
                page.evaluate(f"{tile}.socket !== null"))

    error, messages, stopped, socket_open = await drive(f"{server.base}/", script, tmp_path / "auth.png")
    assert error.startswith("AUTH:") and "wrong-pass" not in error
    # (a joiner of the snapshot's connecting upstream heard nothing of it before issue 21)
    assert messages == ["connected", "connecting", "AUTH", "stopped"], messages
    # nothing will retry: the server's upstream has ended for good, the tile schedules
    # no new socket (AUTH is final) and keeps the one it has
    assert server.registry is not None and server.registry.statistics().running == 0
    assert stopped and socket_open


async def test_leaving_the_page_releases_its_viewer_by_closing_its_socket(
        camera_640: Camera, nursery: trio.Nursery, tmp_path: Path) -> None:
    """The page closes its sockets when it goes (`pagehide`): the server drops the viewer
    on that close, long before its dead-peer time (25 s) could (how soon is not timed
    here: the machine is shared)."""
    server = await start_server(nursery)
    await server.create(camera_640.url())
    assert server.registry is not None
    left: list[float] = []

    def script(page: Any) -> None:
        until(page, "document.querySelector('.tile video').videoWidth > 0")
        page.goto("about:blank")
        left.append(time.monotonic())

    await drive(f"{server.base}/", script, tmp_path / "left.png")
    await wait_for(lambda: server.registry.statistics().viewers == 0, within=10, step=0.02)
    assert time.monotonic() - left[0] < DEAD_AFTER / 2


@pytest.mark.own_camera
@pytest.mark.slow
@pytest.mark.parametrize("how", ["reconnect", "stop and start beyond LINGER", "camera outage"])
async def test_one_player_plays_on_across_a_reconnect_a_stop_and_start_or_an_outage(
        camera_640: Camera, nursery: trio.Nursery, tmp_path: Path, how: str) -> None:
    """The tile's buttons, or a camera that goes silent and drops its sessions until the
    server gives up on it: the tile keeps its one socket and player, the picture moves
    again after the next `playing` and then plays at real-time rate (how soon it moves
    is not asserted: the machine is shared; a test waits for conditions, never times)."""
    server = await start_server(nursery, linger=0.5, ffmpeg_timeout=1.5)
    await server.create(camera_640.url())
    assert server.registry is not None
    registry = server.registry

    def script(page: Any) -> tuple[float, float, tuple[float, int, int], list[str], bool]:
        until(page, "document.querySelector('.tile video').videoWidth > 0")
        page.evaluate("window.firstPlayer = [...window.tiles.values()][0].player")
        moves_on(page, 1.5)
        if how == "reconnect":
            page.click(".tile button[data-action=reconnect]")
        elif how == "camera outage":
            trio.from_thread.run_sync(camera_640.stall)
            trio.from_thread.run_sync(camera_640.drop)
            # silent until the server has given up on the camera (FFMPEG_TIMEOUT 1.5 s) and the tile says so
            until(page, "document.querySelector('.tile .phase').textContent !== 'playing'", within=15)
            trio.from_thread.run_sync(camera_640.resume)
        else:
            page.click(".tile button[data-action=stop]")
            until(page, "document.querySelector('.tile .phase').textContent === 'stopped'")
            trio.from_thread.run(partial(wait_for, lambda: registry.statistics().running == 0, within=10))  # LINGER 0.5 s
            page.click(".tile button[data-action=start]")
        before = sample(page).position
        until(page, f"({TILE_MESSAGES})().filter(p => p === 'playing').length >= 2")
        moved = moves_on(page, 0.5)  # the picture moves again
        steady = plays_on(page)
        same = page.evaluate("window.firstPlayer === [...window.tiles.values()][0].player")
        return before, moved, steady, page.evaluate(TILE_MESSAGES), same

    _, moved, (rate, presented, _), messages, same = await drive(f"{server.base}/", script, tmp_path / "resume.png")
    assert same, "the tile made a new player"
    assert messages.count("connected") == 1, messages  # one socket
    assert moved >= 0.5, f"the picture moved {moved:.2f} s after playing"
    assert 0.8 <= rate <= 1.2 and presented > 0, (rate, presented)


async def test_a_tile_whose_socket_closes_opens_a_new_one_by_itself(
        camera_640: Camera, nursery: trio.Nursery, tmp_path: Path) -> None:
    """The server closes every viewer's socket (1001, as on shutdown): the tile waits its
    backoff (about 1 s), opens a new socket, and plays again."""
    server = await start_server(nursery)
    await server.create(camera_640.url())
    assert server.registry is not None
    registry = server.registry

    def script(page: Any) -> tuple[list[str], int]:
        until(page, "document.querySelector('.tile video').videoWidth > 0")
        trio.from_thread.run_sync(registry.shutdown)  # stopped + 1001 to every viewer
        until(page, f"({TILE_MESSAGES})().filter(p => p === 'playing').length >= 2", within=15)
        moves_on(page, 1)  # and nothing else said meanwhile
        return page.evaluate(TILE_MESSAGES), page.evaluate("document.querySelector('.tile video').videoWidth")

    messages, width = await drive(f"{server.base}/", script, tmp_path / "reopened.png")
    assert messages.count("connected") == 2 and messages[-1] == "playing" and width == 640, messages


async def test_a_page_back_from_the_back_forward_cache_plays_again(
        camera_640: Camera, nursery: trio.Nursery, tmp_path: Path) -> None:
    """Going to another page puts this one in Chromium's back/forward cache (its sockets
    closed on `pagehide`, so the server drops the viewer); going back restores it from
    the cache (`pageshow` with `persisted`) and its tile plays again on a new socket."""
    server = await start_server(nursery)
    await server.create(camera_640.url())
    assert server.registry is not None
    registry = server.registry

    def script(page: Any) -> tuple[int, bool, list[str], int]:
        until(page, "document.querySelector('.tile video').videoWidth > 0")
        page.evaluate("window.addEventListener('pageshow', (e) => { window.restored = e.persisted; })")
        page.goto(f"{server.base}/static/vendor/README")
        trio.from_thread.run(partial(wait_for, lambda: registry.statistics().viewers == 0, within=5, step=0.02))
        away = registry.statistics().viewers
        page.go_back(wait_until="commit")  # a page restored from the cache fires no load
        until(page, f"({TILE_MESSAGES})().filter(p => p === 'playing').length >= 2")
        until(page, "document.querySelector('.tile video').currentTime > 0")
        moving = moves_on(page, 1.0)
        return away, page.evaluate("window.restored === true"), page.evaluate(TILE_MESSAGES), moving

    away, restored, messages, moving = await drive(f"{server.base}/", script, tmp_path / "bfcache.png", bfcache=True)
    assert away == 0
    assert restored, "the page was loaded anew, not restored from the back/forward cache"
    assert messages.count("connected") == 2 and messages[-1] == "playing", messages
    assert moving >= 1.0, f"the picture moved {moving:.2f} s"
    assert registry.statistics().viewers == 0  # the browser is closed


async def test_edit_and_delete_through_the_form(camera_640: Camera, nursery: trio.Nursery, tmp_path: Path) -> None:
    """Edit renames a stream and keeps its password (the form does not send back the
    masked URL), shows a field's error at the field, and delete removes the row, the
    tile, the stored stream and its viewer."""
    server = await start_server(nursery)
    cam = Camera(auth="digest", feeds={"live": Feed(size="640x360", bitrate="1M")})
    await nursery.start(cam.run)
    stream_id = await server.create(cam.url(), name="porch")
    assert server.registry is not None
    registry = server.registry

    def script(page: Any) -> tuple[str, str, str, int, int]:
        until(page, "document.querySelector('.tile video').videoWidth > 0")
        page.click("#rows tr:first-child button:text('edit')")
        page.fill("input[name=name]", "")
        page.click("#save")
        until(page, "document.querySelector('.field-error[data-for=name]').textContent !== ''")
        name_error = page.text_content(".field-error[data-for=name]")
        page.fill("input[name=name]", "back porch")
        page.click("#save")
        until(page, "document.querySelector('#rows td').textContent === 'back porch'")
        until(page, "document.querySelector('.tile h2').textContent === 'back porch'")
        tile_name = page.text_content(".tile h2")
        stored = trio.from_thread.run(partial(_get, server, stream_id))
        page.click(".tile button[data-action=reconnect]")  # a new camera session: the password still opens it
        until(page, f"({TILE_MESSAGES})().filter(p => p === 'playing').length >= 2")
        messages = page.evaluate(TILE_MESSAGES)
        page.on("dialog", lambda dialog: dialog.accept())
        page.click("#rows tr:first-child button:text('delete')")
        until(page, "document.querySelectorAll('#rows tr').length === 0")
        until(page, "document.querySelectorAll('.tile').length === 0")
        trio.from_thread.run(partial(wait_for, lambda: registry.statistics().viewers == 0, within=5, step=0.02))
        return name_error, tile_name, stored, messages, registry.statistics().viewers

    name_error, tile_name, stored, messages, after = await drive(f"{server.base}/", script, tmp_path / "edit.png")
    assert name_error and tile_name == "back porch"
    assert stored["url"] == cam.url().replace(cam.password, "***") and stored["status"]["viewers"] == 1, stored
    assert "AUTH" not in messages and messages[-1] == "playing", messages
    assert after == 0
    async with server.http() as http:
        assert (await http.get("/api/streams/")).json() == []


async def _get(server: Server, stream_id: int) -> Any:
    async with server.http() as http:
        return (await http.get(f"/api/streams/{stream_id}/")).json()


async def test_static_files_revalidate_with_an_etag_and_nothing_outside_is_served(server: Server) -> None:
    async with server.http() as http:
        first = await http.get("/static/vendor/mpegts.js")
        etag = first.headers["etag"]
        again = await http.get("/static/vendor/mpegts.js", headers={"If-None-Match": etag})
        head = await http.head("/static/viewer.css")
        outside = [await http.get(path) for path in (
            "/static/../page.py", "/static/%2e%2e/page.py", "/static/..%2fpage.py", "/static/nope.js", "/static/")]
    assert first.status_code == 200 and first.headers["content-type"] == "text/javascript; charset=utf-8"
    assert first.headers["cache-control"] == "no-cache" and b"mpegts" in first.content[:100]
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    assert head.status_code == 200 and head.headers["content-type"] == "text/css; charset=utf-8"
    for response in outside:
        assert response.status_code == 404 and response.json()["error"]["code"] == "NOT_FOUND", response.text


async def test_the_page_carries_the_stream_list_and_a_name_cannot_break_out_of_it(
        server: Server, tmp_path: Path) -> None:
    """The list in the page is what REST returns, and a name made to end the script
    element that holds it (or to run its own) is shown as text, never run."""
    name = "</script><script>window.pwned = 1</script><!-- é &amp; --> end"
    await server.create("rtsp://127.0.0.1:9/cam", name=name)
    async with server.http() as http:
        page = await http.get("/")
        listed = (await http.get("/api/streams/")).json()
    assert page.headers["cache-control"] == "no-cache" and b"<script>window.pwned" not in page.content
    embedded = page.text.split('<script id="stream-list" type="application/json">')[1].split("</script>")[0]
    assert [s["name"] for s in json.loads(embedded)] == [s["name"] for s in listed] == [name]

    def script(page: Any) -> tuple[str, str, bool]:
        until(page, "document.querySelectorAll('#rows tr').length === 1")
        return (page.text_content("#rows td"), page.text_content(".tile h2"),
                page.evaluate("window.pwned === undefined"))

    assert await drive(f"{server.base}/", script, tmp_path / "name.png") == (name, name, True)


async def test_with_api_token_the_page_asks_for_it_once_and_plays(
        camera_640: Camera, nursery: trio.Nursery, tmp_path: Path) -> None:
    """The page (served without the list) gets 401, shows the token form; with the token
    it lists the stream and its tile plays (the socket offers `bearer.<token>`); the
    token stays in the tab's sessionStorage across a reload."""
    token = "page-token-0123456789abcdef"
    server = await start_server(nursery, api_token=token)
    async with server.http() as http:
        created = await http.post("/api/streams/", json={"name": "yard", "url": camera_640.url()},
                                  headers={"Authorization": f"Bearer {token}"})
    assert created.status_code == 201

    def script(page: Any) -> tuple[bool, int, int, bool]:
        until(page, "!document.getElementById('login').hidden")
        asked = page.evaluate("document.querySelectorAll('.tile').length === 0")
        page.fill("#login input[name=token]", token)
        page.click("#login button")
        until(page, "document.querySelector('.tile video') && document.querySelector('.tile video').videoWidth > 0")
        width = page.evaluate("document.querySelector('.tile video').videoWidth")
        page.reload()
        until(page, "document.querySelector('.tile video') && document.querySelector('.tile video').videoWidth > 0")
        return asked, width, page.evaluate("document.querySelectorAll('#rows tr').length"), page.evaluate(
            "document.getElementById('login').hidden")

    asked, width, rows, hidden = await drive(f"{server.base}/", script, tmp_path / "token.png")
    assert asked and width == 640 and rows == 1 and hidden


def test_the_page_carries_its_scripts_and_style_inline_but_never_one_that_could_end_its_element() -> None:
    from app.http.page import Asset, _inline

    page = (b'<link rel="stylesheet" href="/static/a.css"><script src="/static/a.js"></script>'
            b'<script src="/static/b.js"></script>')
    assets = {"a.css": Asset.of(b"p{}", "text/css"), "a.js": Asset.of(b"let a = 1;", "text/javascript"),
              "b.js": Asset.of(b'let b = "</SCRIPT><script>alert(1)";', "text/javascript")}
    assert _inline(page, assets) == (b'<style>p{}</style><script>let a = 1;</script>'
                                     b'<script src="/static/b.js"></script>')


async def test_users_sign_in_on_the_page_a_viewer_sees_its_camera_an_admin_adds_one(
        camera_640: Camera, nursery: trio.Nursery, tmp_path: Path) -> None:
    """With users, the page shows its sign-in form. The viewer vera sees only the stream
    granted to her, whose tile plays, and no add / edit / delete; her session cookie is
    out of the page's reach (HttpOnly). She signs out; the admin ada signs in and adds a
    camera through the form. A page of another origin (same site: another port) posting
    with ada's cookie is refused, and nothing is added."""
    server = await start_server(nursery)
    other = await start_server(nursery)  # another origin's page
    password = "correct horse battery"
    async with server.http() as http:
        yard = (await http.post("/api/streams/", json={"name": "yard", "url": camera_640.url()})).json()["id"]
        await http.post("/api/streams/", json={"name": "garage", "url": camera_640.url()})
        for name, role, streams in (("ada", "admin", []), ("vera", "viewer", [yard])):
            answer = await http.post("/api/users/", json={"username": name, "password": password, "role": role,
                                                          "streams": streams}, auth=("ada", password))
            assert answer.status_code == 201, answer.text

    def sign_in(page: Any, name: str) -> None:
        until(page, "!document.getElementById('login').hidden")
        page.fill("#login input[name=username]", name)
        page.fill("#login input[name=password]", password)
        page.click("#login button")
        until(page, f"document.getElementById('username').textContent === {name!r}")

    def script(page: Any) -> dict[str, object]:
        seen: dict[str, object] = {}
        until(page, "!document.getElementById('login').hidden")
        seen["tiles before"] = page.evaluate("document.querySelectorAll('.tile').length")
        sign_in(page, "vera")
        until(page, "document.querySelector('.tile video') && document.querySelector('.tile video').videoWidth > 0",
              within=20)
        seen["vera"] = page.evaluate("""() => ({
            tiles: document.querySelectorAll('.tile').length, rows: document.querySelectorAll('#rows tr').length,
            buttons: document.querySelectorAll('#rows button').length, form: document.getElementById('edit').hidden,
            cookie: document.cookie, width: document.querySelector('.tile video').videoWidth})""")
        page.click("#logout")
        until(page, "!document.getElementById('login').hidden && document.querySelectorAll('.tile').length === 0")
        sign_in(page, "ada")
        until(page, "document.querySelectorAll('#rows tr').length === 2")
        page.fill("input[name=name]", "porch")
        page.fill("input[name=url]", camera_640.url())
        page.click("#save")
        until(page, "document.querySelectorAll('#rows tr').length === 3")
        page.goto(f"{other.base}/static/minimal.html")
        seen["cross-site"] = page.evaluate("""async (target) => {
            const sent = await fetch(target + '/api/streams/', {method: 'POST', credentials: 'include',
                mode: 'no-cors', headers: {'Content-Type': 'text/plain'},
                body: JSON.stringify({name: 'evil', url: 'rtsp://127.0.0.1:9/'})});
            return sent.type;
        }""", server.base)
        return seen

    seen = await drive(f"{server.base}/", script, tmp_path / "users.png")
    assert seen["tiles before"] == 0
    assert seen["vera"] == {"tiles": 1, "rows": 1, "buttons": 0, "form": True, "cookie": "", "width": 640}, seen
    assert seen["cross-site"] == "opaque"
    async with server.http() as http:
        names = [s["name"] for s in (await http.get("/api/streams/", auth=("ada", password))).json()]
    assert names == ["yard", "garage", "porch"]
