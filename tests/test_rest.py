"""The REST registry over real HTTP (SPEC §3): routes, errors, validation, masking, storage."""

from __future__ import annotations

import sqlite3
import time
from functools import partial
from pathlib import Path

import attrs
import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from app.db import Tx
from app.db.sqlite import SqliteDatabase
from app.store import Store
from supervisors import Transport, mask_url
from tests.camera import Camera, bundled_ffmpeg
from tests.helpers import Server, start_server
from tests.postgres import Postgres

URL = "rtsp://admin:s3cr3t-pw@10.0.0.5:554/Streaming/101"


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


@pytest.fixture
async def server(nursery: trio.Nursery, database_url: str) -> Server:
    """The REST tests run against SQLite and against PostgreSQL (`database_url`)."""
    return await start_server(nursery, database_url=database_url, secret_key="s" * 32)


async def test_create_list_get_patch_delete(server: Server) -> None:
    async with server.http() as http:
        created = await http.post("/api/streams/", json={"name": "  Front door ", "url": URL})
        assert created.status_code == 201
        stream = created.json()
        assert created.headers["location"] == f"/api/streams/{stream['id']}/"
        assert stream["name"] == "Front door"
        assert stream["url"] == "rtsp://admin:***@10.0.0.5:554/Streaming/101"
        assert stream["transport"] == "tcp"
        assert stream["created_at"].endswith("Z") and stream["updated_at"] == stream["created_at"]
        assert stream["status"] == {"phase": "idle", "viewers": 0, "since": None, "error": None,
                                    "video": None, "bytes_in": 0, "drops": 0, "restarts": 0,
                                    "transcoding": False, "cpu_percent": None}
        assert (stream["video"], stream["audio"], stream["max_height"]) == ("copy", False, None)  # the profile
        second = (await http.post("/api/streams", json={"name": "b", "url": "rtsp://h/x",
                                                          "transport": "udp"})).json()
        listed = (await http.get("/api/streams")).json()
        assert [s["id"] for s in listed] == [stream["id"], second["id"]]
        for path in (f"/api/streams/{stream['id']}/", f"/api/streams/{stream['id']}"):
            assert (await http.get(path)).json()["name"] == "Front door"
        patched = await http.patch(f"/api/streams/{stream['id']}", json={"name": "Back door"})
        assert patched.status_code == 200
        assert patched.json()["name"] == "Back door" and patched.json()["url"] == stream["url"]
        assert (await http.delete(f"/api/streams/{stream['id']}/")).status_code == 204
        error_of(await http.get(f"/api/streams/{stream['id']}/"), 404, "NOT_FOUND")
        error_of(await http.delete(f"/api/streams/{stream['id']}/"), 404, "NOT_FOUND")
        error_of(await http.patch(f"/api/streams/{stream['id']}/", json={}), 404, "NOT_FOUND")
        assert [s["id"] for s in (await http.get("/api/streams/")).json()] == [second["id"]]


@pytest.mark.parametrize(("body", "fields"), [
    ({"url": URL}, {"name"}),
    ({"name": "x"}, {"url"}),
    ({"name": "", "url": URL}, {"name"}),
    ({"name": "   ", "url": URL}, {"name"}),
    ({"name": "x" * 201, "url": URL}, {"name"}),
    ({"name": "a\x07b", "url": URL}, {"name"}),
    ({"name": 5, "url": URL}, {"name"}),
    ({"name": "x", "url": "http://h/x"}, {"url"}),
    ({"name": "x", "url": "rtsp://"}, {"url"}),
    ({"name": "x", "url": "rtsp://h:0/x"}, {"url"}),
    ({"name": "x", "url": "rtsp://h:65536/x"}, {"url"}),
    ({"name": "x", "url": "rtsp://h/a b"}, {"url"}),
    ({"name": "x", "url": "rtsp://h/a\nb"}, {"url"}),
    ({"name": "x", "url": "-rtsp://h/x"}, {"url"}),
    ({"name": "x", "url": "rtsp://h/" + "a" * 2048}, {"url"}),
    ({"name": "x", "url": None}, {"url"}),
    ({"name": "x", "url": URL, "transport": "http"}, {"transport"}),
    ({"name": "x", "url": URL, "extra": 1}, {"extra"}),
    ({"name": "", "url": "ftp://h", "transport": 1, "zzz": 2}, {"name", "url", "transport", "zzz"}),
])
async def test_validation_names_every_failing_field(server: Server, body: dict[str, object],
                                                    fields: set[str]) -> None:
    async with server.http() as http:
        error = error_of(await http.post("/api/streams/", json=body), 400, "VALIDATION")
        assert set(error["fields"]) == fields  # type: ignore[arg-type]
        assert "s3cr3t-pw" not in str(error)
        assert (await http.get("/api/streams/")).json() == []


async def test_patch_validates_and_keeps_stored_data_on_error(server: Server) -> None:
    stream_id = await server.create(URL)
    async with server.http() as http:
        error = error_of(await http.patch(f"/api/streams/{stream_id}/",
                                          json={"url": "http://x", "colour": "red"}), 400, "VALIDATION")
        assert set(error["fields"]) == {"url", "colour"}  # type: ignore[arg-type]
        assert (await http.get(f"/api/streams/{stream_id}/")).json()["url"].endswith("/Streaming/101")


async def test_body_errors(server: Server) -> None:
    async with server.http() as http:
        error_of(await http.post("/api/streams/", content=b'{"name":"x","url":"rtsp://h/"}',
                                 headers={"content-type": "text/plain"}), 415, "UNSUPPORTED_MEDIA_TYPE")
        error_of(await http.post("/api/streams/", content=b"{nope",
                                 headers={"content-type": "application/json"}), 400, "VALIDATION")
        error_of(await http.post("/api/streams/", json=[1, 2]), 400, "VALIDATION")
        big = b'{"name": "' + b"x" * (65 * 1024) + b'", "url": "rtsp://h/"}'
        error_of(await http.post("/api/streams/", content=big,
                                 headers={"content-type": "application/json"}), 413, "TOO_LARGE")
        error_of(await http.get("/api/streams/abc/"), 404, "NOT_FOUND")
        error_of(await http.get("/api/nothing"), 404, "NOT_FOUND")
        error_of(await http.put("/api/streams/"), 405, "METHOD_NOT_ALLOWED")
        assert (await http.get("/api/streams/")).json() == []


# httpx stops sending a body when the response comes first, and leaves its generator over
# it to the garbage collector: the client's business, not the server's
@pytest.mark.filterwarnings(r"ignore:Async generator 'httpx\._content\.:ResourceWarning")
@pytest.mark.parametrize(("content_type", "status"), [("application/json", 413), ("text/plain", 415)])
async def test_an_early_error_leaves_a_keep_alive_client_able_to_send_its_next_request(
        server: Server, content_type: str, status: int) -> None:
    """One client, as a browser or httpx keeps its connection: a 2 MiB body is refused
    before it is read, so the server ends the connection, and the next request works at
    once (it used to wait on the unread body until the client gave up)."""
    async with httpx.AsyncClient(base_url=server.base, timeout=3) as client:
        for _ in range(3):  # the hang was a race the server usually lost: try it a few times
            response = await client.post("/api/streams/", content=b"x" * (2 << 20),
                                         headers={"content-type": content_type})
            assert response.status_code == status and response.headers["connection"] == "close"
            assert (await client.get("/api/streams/")).status_code == 200
        read = await client.post("/api/streams/", content=b"{nope", headers={"content-type": "application/json"})
        assert read.status_code == 400 and read.headers.get("connection") != "close"  # body read: kept


@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
async def test_a_chunked_body_refused_unread_says_connection_close(server: Server, content_type: str) -> None:
    """No Content-Length: the refusal comes once the body passes the limit (413) or at
    once (415), with `Connection: close`, so the client sends its next request on a new
    connection instead of behind a body nobody read."""
    host, port = server.base.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    received = b""
    async with stream:
        await stream.send_all(f"POST /api/streams/ HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n".encode())
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:

                async def upload() -> None:
                    try:
                        for _ in range(32):
                            await stream.send_all(b"10000\r\n" + b"x" * 0x10000 + b"\r\n")
                        await stream.send_all(b"0\r\n\r\n")
                    except trio.BrokenResourceError:
                        pass  # the server has answered and gone

                nursery.start_soon(upload)
                while b"\r\n\r\n" not in received:
                    received += await stream.receive_some(65536)
                nursery.cancel_scope.cancel()
    head = received.partition(b"\r\n\r\n")[0].decode().lower()
    assert head.startswith(f"http/1.1 {413 if content_type == 'application/json' else 415}")
    assert "connection: close" in head


async def test_health_reports_ffmpeg_and_counts(server: Server, camera: Camera) -> None:
    async with server.http() as http:
        health = await http.get("/api/health/")
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "ok" and body["version"]
        assert body["ffmpeg"]["path"].endswith(("ffmpeg", "v9.0.2")) or "ffmpeg" in body["ffmpeg"]["path"]
        assert body["ffmpeg"]["version"]
        assert body["streams"] == {"running": 0, "max": 10, "transcoding": 0, "cpu_percent": 0.0} and body["viewers"] == 0
        async with server.viewer(f"url={camera.url()}") as viewer:
            await viewer.play()
            body = (await http.get("/api/health")).json()
            assert body["streams"]["running"] == 1 and body["viewers"] == 1


async def test_health_is_degraded_when_ffmpeg_cannot_run(nursery: trio.Nursery) -> None:
    server = await start_server(nursery, ffmpeg_bin="/nonexistent/ffmpeg")
    async with server.http() as http:
        health = await http.get("/api/health/")
    assert health.status_code == 503
    assert health.json()["status"] == "degraded" and "ffmpeg" in health.json()["reason"]
    assert "/nonexistent" not in health.text  # the open endpoint names no file-system path


async def test_a_crowd_of_health_requests_runs_one_ffmpeg_check_and_shows_no_path(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    """Health is open and exempt from RATE_LIMIT: 200 requests at once start one `ffmpeg
    -version` (the others wait for its answer), and it tells FFmpeg's file name and
    version, not where it is installed."""
    starts = tmp_path / "starts"
    wrapper = tmp_path / "ffmpeg"
    wrapper.write_text(f'#!/bin/sh\necho started >> "{starts}"\nexec "{bundled_ffmpeg()}" "$@"\n')
    wrapper.chmod(0o755)
    server = await start_server(nursery, ffmpeg_bin=str(wrapper))
    answers: list[httpx.Response] = []
    async with httpx.AsyncClient(base_url=server.base, timeout=30, limits=httpx.Limits(max_connections=200)) as http:

        async def ask() -> None:
            answers.append(await http.get("/api/health/"))

        async with trio.open_nursery() as crowd:
            for _ in range(200):
                crowd.start_soon(ask)
    assert [a.status_code for a in answers] == [200] * 200
    assert starts.read_text().count("started") == 1
    body = answers[0].json()
    assert body["ffmpeg"]["path"] == "ffmpeg" and body["ffmpeg"]["version"]
    assert not any(str(tmp_path) in a.text for a in answers)


async def test_streams_survive_a_restart(tmp_path: object, database_url: str) -> None:
    url = f"sqlite:///{tmp_path}/sub/streams.db" if database_url.startswith("sqlite") else database_url
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, database_url=url)
        first = await server.create(URL, name="one")
        await server.create("rtsp://h/2", name="two")
        async with server.http() as http:
            await http.patch(f"/api/streams/{first}/", json={"transport": "udp"})
        nursery.cancel_scope.cancel()
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, database_url=url)
        async with server.http() as http:
            streams = (await http.get("/api/streams/")).json()
        nursery.cancel_scope.cancel()
    assert [(s["name"], s["transport"]) for s in streams] == [("one", "udp"), ("two", "tcp")]


@pytest.fixture
def blocked_path(tmp_path: Path) -> str:
    """A file where the database's folder should be: SQLite cannot open a file under it."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    return str(blocker)


async def test_unavailable_storage_gives_503_not_a_crash(nursery: trio.Nursery, blocked_path: str) -> None:
    blocker = blocked_path
    server = await start_server(nursery, database_url=f"sqlite:///{blocker}/streams.db")
    async with server.http() as http:
        health = await http.get("/api/health/")
        assert health.status_code == 503 and "storage" in health.json()["reason"]
        assert blocker not in health.text  # open to anyone: no file-system path
        error_of(await http.get("/api/streams/"), 503, "STORAGE_UNAVAILABLE")
        error_of(await http.post("/api/streams/", json={"name": "x", "url": "rtsp://h/"}), 503,
                 "STORAGE_UNAVAILABLE")
    async with server.viewer("id=1") as viewer:
        assert (await viewer.error("STREAM_ERROR"))["message"] == "storage is unavailable"
        assert await viewer.closed() == 1011


async def test_the_list_pages_with_limit_and_offset(server: Server) -> None:
    ids = [await server.create(f"rtsp://10.0.0.{n}/x", name=f"cam {n}") for n in range(1, 6)]
    async with server.http() as http:
        assert [s["id"] for s in (await http.get("/api/streams/")).json()] == ids
        assert [s["id"] for s in (await http.get("/api/streams/?limit=2")).json()] == ids[:2]
        assert [s["id"] for s in (await http.get("/api/streams/?limit=2&offset=3")).json()] == ids[3:]
        assert [s["id"] for s in (await http.get("/api/streams/?offset=4")).json()] == ids[4:]
        assert (await http.get("/api/streams/?offset=9223372036854775807")).json() == []
        for bad in ("limit=0", "limit=1001", "limit=x", "offset=-1", "limit=%C2%B2", "limit=1&limit=2",
                    f"offset={'9' * 30}"):
            response = await http.get(f"/api/streams/?{bad}")
            assert response.status_code == 400 and response.json()["error"]["code"] == "VALIDATION", (bad, response.text)
            assert set(response.json()["error"]["fields"]) <= {"limit", "offset"}


async def test_a_socket_path_over_plain_http_is_a_400_that_says_so(server: Server) -> None:
    """The sockets are served before Quart; a plain HTTP request to their paths (with or
    without a trailing slash) still gets the error body, not a 404."""
    async with server.http() as http:
        for path in ("/ws/stream?id=1", "/ws/stream/", "/ws/stream.ts?url=rtsp://h/x", "/ws/stream.ts/"):
            error = error_of(await http.get(path), 400, "BAD_REQUEST")
            assert "WebSocket" in str(error["message"])
        error_of(await http.get("/ws/other"), 404, "NOT_FOUND")


async def test_concurrent_patches_of_different_fields_all_survive(server: Server) -> None:
    """Two (here three) PATCHes of different fields of one stream at the same time, 25
    rounds: every field each one sent is stored (each merges onto the stream as it is
    when it is written, in one transaction)."""
    async with server.http() as http:
        for n in range(25):
            stream_id = await server.create(URL, name="before")

            async def patch(body: dict[str, object], stream_id: int = stream_id) -> None:
                assert (await http.patch(f"/api/streams/{stream_id}/", json=body)).status_code == 200

            async with trio.open_nursery() as edits:
                for body in ({"name": f"after {n}"}, {"transport": "udp"}, {"max_height": 480, "video": "h264"}):
                    edits.start_soon(patch, body)
            stored = (await http.get(f"/api/streams/{stream_id}/")).json()
            assert (stored["name"], stored["transport"], stored["max_height"], stored["video"]) == \
                (f"after {n}", "udp", 480, "h264"), (n, stored)


FIELD_VALUES: dict[str, list[object]] = {
    "name": ["a", "b", "c"], "transport": ["tcp", "udp"], "video": ["copy", "h264"], "audio": [True, False],
    "max_height": [None, 240, 720], "url": ["rtsp://10.0.0.6/1", "rtsp://10.0.0.7/2"]}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(sorted(FIELD_VALUES)), st.integers(0, 2), min_size=1, max_size=3),
                min_size=2, max_size=4))
def test_concurrent_patches_never_lose_a_field_one_of_them_set(patches: list[dict[str, int]]) -> None:
    """Any number of PATCHes of any fields at once: afterwards each field holds the value
    one of the PATCHes that sent it sent (the last to be written), or, if none sent it,
    what it held before; and the ETag's version went up once per PATCH. (A server per
    example, in its own trio.run: Hypothesis runs each example on its own.)"""
    _patch_at_once(patches, "sqlite:///:memory:")


def test_concurrent_patches_never_lose_a_field_on_postgresql(postgres_server: Postgres) -> None:
    """The same on PostgreSQL (its row lock instead of SQLite's write lock), one database
    for every example."""
    url = postgres_server.new_database()

    @settings(max_examples=25, deadline=None)
    @given(st.lists(st.dictionaries(st.sampled_from(sorted(FIELD_VALUES)), st.integers(0, 2), min_size=1,
                                    max_size=3), min_size=2, max_size=4))
    def check(patches: list[dict[str, int]]) -> None:
        _patch_at_once(patches, url)

    check()


def _patch_at_once(patches: list[dict[str, int]], database_url: str) -> None:
    bodies = [{field: FIELD_VALUES[field][pick % len(FIELD_VALUES[field])] for field, pick in patch.items()}
              for patch in patches]

    async def edit() -> tuple[dict[str, object], httpx.Response]:
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, database_url=database_url, secret_key="s" * 32)
            async with server.http() as http:
                created = await http.post("/api/streams/", json={"name": "z", "url": URL})
                stream_id = created.json()["id"]
                async with trio.open_nursery() as edits:
                    for body in bodies:
                        edits.start_soon(partial(http.patch, f"/api/streams/{stream_id}/", json=body))
                after = await http.get(f"/api/streams/{stream_id}/")
            nursery.cancel_scope.cancel()
        return created.json(), after

    before, after = trio.run(edit)
    stream_id, stored = before["id"], after.json()
    for field in FIELD_VALUES:
        sent = [body[field] for body in bodies if field in body]
        shown = [mask_url(str(v)) for v in sent] if field == "url" else sent
        assert stored[field] in (shown or [before[field]]), (field, stored[field], bodies)
    assert after.headers["ETag"] == f'"{stream_id}-{1 + len(bodies)}"'


async def test_if_match_makes_a_patch_or_delete_of_a_changed_stream_412(server: Server) -> None:
    """GET, POST and PATCH give the stream's ETag (its stored version); a PATCH or DELETE
    with If-Match of an older one is 412 PRECONDITION_FAILED and changes nothing; `*`
    matches any version; a weak tag never matches (strong comparison)."""
    async with server.http() as http:
        created = await http.post("/api/streams/", json={"name": "a", "url": URL})
        stream_id, first = created.json()["id"], created.headers["ETag"]
        path = f"/api/streams/{stream_id}/"
        assert (await http.get(path)).headers["ETag"] == first
        renamed = await http.patch(path, json={"name": "b"}, headers={"If-Match": first})
        assert renamed.status_code == 200 and renamed.headers["ETag"] != first
        stale = await http.patch(path, json={"name": "c"}, headers={"If-Match": first})
        error_of(stale, 412, "PRECONDITION_FAILED")
        error_of(await http.delete(path, headers={"If-Match": first}), 412, "PRECONDITION_FAILED")
        error_of(await http.patch(path, json={"name": "c"}, headers={"If-Match": f"W/{renamed.headers['ETag']}"}),
                 412, "PRECONDITION_FAILED")
        assert (await http.get(path)).json()["name"] == "b"
        listed = f'"nope", {renamed.headers["ETag"]}'
        assert (await http.patch(path, json={"name": "d"}, headers={"If-Match": listed})).status_code == 200
        assert (await http.patch(path, json={"name": "e"}, headers={"If-Match": "*"})).status_code == 200
        assert (await http.delete(path, headers={"If-Match": (await http.get(path)).headers["ETag"]})).status_code == 204
        error_of(await http.patch(path, json={"name": "f"}, headers={"If-Match": "*"}), 404, "NOT_FOUND")


async def test_a_change_that_committed_is_not_a_503_when_the_checkpoint_after_it_fails(tmp_path: Path) -> None:
    """The write-ahead log is checkpointed after each change (old passwords out of it);
    a checkpoint that fails is logged, and the change that committed is reported as done."""
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    await store.open()
    record = await store.create("a", URL, Transport.TCP)
    db = store.db
    assert isinstance(db, SqliteDatabase)

    class FailingCheckpoints:
        def __init__(self, connection: sqlite3.Connection) -> None:
            self.connection = connection

        def __getattr__(self, name: str) -> object:
            return getattr(self.connection, name)

        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            if "wal_checkpoint" in sql:
                raise sqlite3.OperationalError("database table is locked")
            return self.connection.execute(sql, *args)

    db._db = FailingCheckpoints(db._db)  # type: ignore[assignment, arg-type]
    changed = await store.patch(record.id, lambda stored: attrs.evolve(stored, name="b"))
    assert changed is not None and changed[1].name == "b"
    assert await store.delete(record.id)
    assert await store.get(record.id) is None
    await store.close()


async def test_the_store_closes_only_when_no_call_is_using_it(tmp_path: Path) -> None:
    """Closing waits for a call in the worker thread to finish (under the database's
    lock): that call is not cut off with a closed database."""
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    await store.open()
    answers: list[object] = []

    def slow(tx: Tx) -> object:
        time.sleep(0.3)
        return tx.one("SELECT 42")[0]  # type: ignore[index]

    async def call() -> None:
        answers.append(await store.db.run(slow))

    async with trio.open_nursery() as both:
        both.start_soon(call)
        await trio.sleep(0.05)  # the call is in its thread now
        both.start_soon(store.close)
    assert answers == [42]
